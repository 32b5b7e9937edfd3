"""The per-batch work on a Dask cluster (`--cluster`): the same findings and report body
as on this machine, batches in order, per-worker state sent once, no batch lost when a
worker dies, and clear errors for a scheduler that cannot be used.

Each test starts a `distributed.LocalCluster` of two single-threaded worker processes on
loopback: what `dask scheduler` and two `dask worker --nthreads 1` would be.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dask
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from distributed import LocalCluster
from distributed.diagnostics.plugin import SchedulerPlugin

import auditor
from auditor import parallel
from auditor.cli import main
from auditor.cluster import DaskRunner
from auditor.errors import ClusterError
from auditor.model.encoding import jcs, parse_json
from auditor.parallel import LocalRunner, Task
from auditor.report import keys as report_keys
from auditor.verify import context, recount

pytestmark = pytest.mark.slow


class TaskLog(SchedulerPlugin):
    """Which tasks finished on which worker, by the key's stage ("vtaudit-recount-…")."""

    def __init__(self) -> None:
        self.done: list[tuple[str, str]] = []

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if start == "processing" and finish == "memory":
            self.done.append((_stage(str(key)), str(kwargs.get("worker"))))

    def stages(self) -> Counter[str]:
        return Counter(stage for stage, _ in self.done)

    def workers(self) -> set[str]:
        return {worker for _, worker in self.done}


def _stage(key: str) -> str:
    words = key.split("-")
    return "-".join(words[:3] if words[2] == "init" else words[:2])


def _local_cluster(**kwargs: Any) -> LocalCluster:
    return LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=":0", **kwargs
    )


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[str, TaskLog]]:
    log = TaskLog()
    with _local_cluster() as local:
        local.scheduler.add_plugin(log)
        yield local.scheduler_address, log


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> report_keys.KeyFolder:
    return report_keys.generate(tmp_path_factory.mktemp("keys") / "k", "Test audit desk")


# ---------------------------------------------------------------------------- same findings, same report


def _audit(election: Path, out: Path, keys: Path, *extra: str) -> int:
    result = CliRunner().invoke(
        main,
        [
            "audit",
            str(election / "evidence.car"),
            "--trust",
            str(election / "trust.toml"),
            "--keys",
            str(keys),
            "--out",
            str(out),
            "--no-pdf",
            "--quiet",
            "--workers",
            "2",
            *extra,
        ],
    )
    assert result.exit_code in (0, 1), result.output
    return result.exit_code


@pytest.mark.parametrize(
    ("tamper", "found"),
    [(None, set()), ("ballot-invalid", {"BAL-VALID"}), ("tally-leaf-miscount", {"TALLY-TREE", "RES-MATCH"})],
)
def test_a_cluster_gives_the_same_findings_and_report_body(
    tamper: str | None,
    found: set[str],
    sims: Callable[[str | None], Path],
    cluster: tuple[str, TaskLog],
    keys: report_keys.KeyFolder,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # small batches: several per stage, so that both workers work and the order matters
    monkeypatch.setattr(context, "SIG_BATCH", 128)
    monkeypatch.setattr(context, "TOKEN_BATCH", 8)
    monkeypatch.setattr(recount, "BATCH", 4)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1790000000")
    election = sims(tamper)
    address, log = cluster
    log.done.clear()
    here = _audit(election, tmp_path / "local", keys.folder)
    there = _audit(election, tmp_path / "cluster", keys.folder, "--cluster", address)

    assert here == there
    local, remote = (parse_json((tmp_path / d / "report.json").read_bytes()) for d in ("local", "cluster"))
    assert jcs(remote["body"]) == jcs(local["body"])
    assert (tmp_path / "cluster" / "report.json").read_bytes() == (
        tmp_path / "local" / "report.json"
    ).read_bytes()
    for name in ("findings.parquet", "checks.parquet", "answers.parquet"):
        assert pq.read_table(tmp_path / "cluster" / "findings" / name).equals(
            pq.read_table(tmp_path / "local" / "findings" / name)
        ), name
    failed = {c["id"] for c in local["body"]["checks"] if c["status"] == "fail"} - {"RUN-TRIGGER"}
    assert found <= failed
    assert {f["check"] for f in remote["body"]["findings"]} >= found

    # the work ran on both workers, each stage's per-worker state was sent once
    stages = log.stages()
    assert stages["vtaudit-signatures"] > 1 and stages["vtaudit-tokens"] > 1 and stages["vtaudit-recount"] > 1
    assert stages["vtaudit-tokens-init"] == 1 and stages["vtaudit-recount-init"] == 1
    assert len(log.workers()) == 2


# ---------------------------------------------------------------------------- the runner itself

_inits: list[int] = []


def _init_scale(factor: int) -> None:
    _inits.append(factor)


def _scale(batch: list[int]) -> tuple[list[int], int, int]:
    return [x * _inits[-1] for x in batch], os.getpid(), len(_inits)


def test_batches_come_back_in_order_and_each_worker_initialises_once(cluster: tuple[str, TaskLog]) -> None:
    task = Task("toy", _scale, _init_scale, (3,))
    batches = [list(range(i, i + 5)) for i in range(0, 200, 5)]
    runner = DaskRunner(cluster[0])
    try:
        results = list(runner.map(task, batches))
        assert "cluster at " + cluster[0] in runner.describe()
    finally:
        runner.close()
    assert [x for part, _, _ in results for x in part] == [3 * x for x in range(200)]
    by_worker = {pid: inits for _, pid, inits in results}
    assert len(by_worker) == 2 and set(by_worker.values()) == {1}
    local = list(LocalRunner(2).map(task, batches))
    assert [part for part, _, _ in local] == [part for part, _, _ in results]


def _die_once(marker_and_batch: tuple[str, list[int]]) -> list[int]:
    marker, batch = marker_and_batch
    if batch[0] == 10 and not os.path.exists(marker):
        Path(marker).touch()
        os._exit(1)  # the worker process dies in the middle of the batch
    return batch


def _die_always(batch: list[int]) -> list[int]:
    os._exit(1)


def test_a_batch_whose_worker_dies_is_run_again_and_never_dropped(tmp_path: Path) -> None:
    marker = str(tmp_path / "died")
    batches = [(marker, [i, i + 1]) for i in range(0, 40, 2)]
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}), _local_cluster() as local:
        runner = DaskRunner(local.scheduler_address)
        try:
            results = list(runner.map(Task("toy", _die_once), batches))
            assert Path(marker).exists()  # a worker did die
            assert [x for part in results for x in part] == list(range(40))
            with pytest.raises(ClusterError, match="batch 0 of the toy stage could not be done"):
                list(runner.map(Task("toy", _die_always), [[1]]))
        finally:
            runner.close()


# ---------------------------------------------------------------------------- a scheduler that cannot be used


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def _empty_scheduler() -> Iterator[str]:
    """`dask scheduler` in its own process, with no worker: its address.

    Its own process rather than a second `LocalCluster(n_workers=0)` in this one, whose
    start beside the module's cluster now and then failed inside Dask (`assert loop is
    not None`)."""
    address = f"tcp://127.0.0.1:{_free_port()}"
    scheduler = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("dask")),
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            address.rsplit(":", 1)[1],
            "--dashboard-address",
            ":0",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", int(address.rsplit(":", 1)[1])), timeout=1).close()
                break
            except OSError:
                assert scheduler.poll() is None, "dask scheduler stopped at its start"
                assert time.monotonic() < deadline, "dask scheduler did not listen within 30 s"
                time.sleep(0.1)
        yield address
    finally:
        scheduler.terminate()
        scheduler.wait(timeout=30)


@pytest.mark.parametrize("address", ["tcp://127.0.0.1:{port}", "no-port-here"])
def test_an_unreachable_scheduler_is_an_input_error(address: str, sims: Callable[[str | None], Path]) -> None:
    address = address.format(port=_free_port())
    election = sims(None)
    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        result = CliRunner().invoke(
            main,
            [
                "verify",
                str(election / "evidence.car"),
                "--trust",
                str(election / "trust.toml"),
                "--cluster",
                address,
            ],
        )
    assert result.exit_code == 2, result.output
    assert f"--cluster {address}: no Dask scheduler answers there" in result.output
    assert "dask scheduler" in result.output and "Traceback" not in result.output


def test_a_scheduler_without_workers_or_with_another_vtaudit_is_refused(
    cluster: tuple[str, TaskLog], monkeypatch: pytest.MonkeyPatch
) -> None:
    with (
        _empty_scheduler() as empty,
        pytest.raises(ClusterError, match="the scheduler has no workers after 1 s") as refused,
    ):
        DaskRunner(empty, wait=1)
    assert "dask worker " + empty in str(refused.value)
    real = auditor.__version__
    monkeypatch.setattr(auditor, "__version__", "0.0.0-other")
    with pytest.raises(ClusterError, match=r"every worker must run vtaudit 0\.0\.0-other") as refused:
        DaskRunner(cluster[0])
    assert f"(vtaudit {real})" in str(refused.value)


# ---------------------------------------------------------------------------- lost work stops the audit


class _LosesTheRecount(LocalRunner):
    """A cluster that loses a batch of the recount (its workers kept dying)."""

    def map(self, task: Task[Any, Any], batches: Iterable[Any], *, small: bool = False) -> Iterator[Any]:
        if task.name == "recount":
            raise ClusterError("--cluster tcp://lost:8786: batch 0 of the recount stage could not be done")
        return super().map(task, batches, small=small)


def test_work_lost_by_the_cluster_stops_the_audit_without_a_verdict(
    sims: Callable[[str | None], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(parallel, "open_runner", lambda cluster, workers: _LosesTheRecount(workers))
    election = sims(None)
    out = tmp_path / "findings"
    result = CliRunner().invoke(
        main,
        [
            "verify",
            str(election / "evidence.car"),
            "--trust",
            str(election / "trust.toml"),
            "--findings",
            str(out),
            "--cluster",
            "tcp://lost:8786",
        ],
    )
    assert result.exit_code == 2, result.output
    assert "batch 0 of the recount stage could not be done" in result.output
    assert "VERIFIED" not in result.output and "internal error" not in result.output
    assert not (out / "findings.parquet").exists() and not (out / "answers.parquet").exists()
