"""The same store verified on the local pool and on a Dask cluster, in one run.

    .venv/bin/python bench/cluster_speed.py --store /tmp/dask-10k --trust /tmp/s10k/trust.toml
    .venv/bin/python bench/cluster_speed.py --store S --trust T --cluster tcp://10.0.0.5:8786

Without ``--cluster`` it starts a ``distributed.LocalCluster`` of ``--workers``
single-threaded worker processes on this machine (its start-up is timed apart). Then,
``--rounds`` times, it verifies the store with ``--workers`` local threads/processes and
on the cluster, alternately, and prints each run's wall time and the stages that use
the runner; first, what one batch costs on the cluster beyond its work (400 batches of
64 × 700 bytes whose task only counts them). The report bodies of every run must be
identical (it says so, or stops).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from auditor.model.encoding import jcs
from auditor.parallel import LocalRunner, Runner, Task
from auditor.report.body import report_body
from auditor.trust import load_trust
from auditor.verify.engine import verify_store

STAGES = ("signatures", "timestamps", "recount")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--store", type=Path, required=True, help="an evidence store (vtaudit harvest)")
    parser.add_argument("--trust", type=Path, required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--cluster", metavar="ADDRESS", help="an existing scheduler instead of a LocalCluster"
    )
    args = parser.parse_args()
    trust = load_trust(args.trust)
    with ExitStack() as stack:
        address = args.cluster
        if address is None:
            from distributed import LocalCluster

            started = time.perf_counter()
            local = stack.enter_context(
                LocalCluster(
                    n_workers=args.workers,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address=":0",
                )
            )
            address = local.scheduler_address
            took = time.perf_counter() - started
            print(f"LocalCluster of {args.workers} worker processes started in {took:.1f} s")
        from auditor.cluster import DaskRunner

        started = time.perf_counter()
        dask = DaskRunner(address)
        stack.callback(dask.close)
        print(f"connected to {address} in {time.perf_counter() - started:.2f} s")
        empty = [[b"x" * 700] * 64 for _ in range(400)]  # a recount batch's worth of bytes, no work
        started = time.perf_counter()
        assert list(dask.map(Task("empty", len), empty)) == [64] * len(empty)
        took = time.perf_counter() - started
        print(
            f"cost of a batch on the cluster: {took / len(empty) * 1000:.1f} ms ({len(empty)} empty batches)"
        )
        bodies = set()
        print(f"{'run':<10}{'wall':>8}" + "".join(f"{s:>12}" for s in STAGES) + "  verdict")
        for _ in range(args.rounds):
            runner: Runner
            for name, runner in (("local", LocalRunner(args.workers)), ("cluster", dask)):
                with tempfile.TemporaryDirectory(prefix="vtaudit-bench-") as out:
                    started = time.perf_counter()
                    result = verify_store(
                        args.store, trust, workers=args.workers, audit_dir=Path(out), runner=runner
                    )
                    wall = time.perf_counter() - started
                seconds: dict[str, float] = {}
                for stage in result.stages:  # the first "signatures" is the work, the second SIG-VALID
                    seconds.setdefault(stage.name, stage.seconds)
                print(
                    f"{name:<10}{wall:7.1f}s"
                    + "".join(f"{seconds.get(s, 0.0):11.1f}s" for s in STAGES)
                    + f"  {result.verdict}",
                    flush=True,
                )
                bodies.add(jcs(report_body(result, args.store, now=0)))
        if len(bodies) != 1:
            raise SystemExit("the report bodies differ between runs")
        print("report bodies: identical in every run")


if __name__ == "__main__":
    main()
