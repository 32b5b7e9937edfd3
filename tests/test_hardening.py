"""Hardening (issue 9): crash safety, determinism, and that nothing from the evidence runs.

- `vtaudit audit` killed with SIGKILL at 20 random moments (during the harvest, the
  verification or the writing of the reports) and resumed each time ends with the very
  same signed report as one uninterrupted run, and a consistent store.
- The same evidence harvested from a CAR file, from the record files, from a shuffled
  NDJSON file and from network nodes, verified with one or two workers, gives a
  byte-identical report body.
"""

from __future__ import annotations

import ast
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from auditor.harvest import ArchiveSource, harvest
from auditor.model.encoding import jcs, parse_json
from auditor.net import HttpNodesSource, NetOptions, NodeServer, load_content
from auditor.report import keys as report_keys
from auditor.report.body import report_body
from auditor.sim.election import SimConfig, simulate
from auditor.store.evidence import connect
from auditor.trust import load_trust
from auditor.verify.engine import verify_store

NOW = 1_790_000_000_000
AUDITOR = Path(__file__).resolve().parents[1] / "auditor"


@pytest.fixture(scope="module")
def election(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hardening") / "e"
    simulate(SimConfig(voters=400, seed=17, workers=1, formats=("dir", "car", "ndjson")), out)
    return out


def _audit_command(election: Path, keys: Path, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "auditor.cli", "audit", str(election / "evidence.car"),
        "--trust", str(election / "trust.toml"), "--keys", str(keys), "--out", str(out),
        "--no-pdf", "--quiet",
    ]  # fmt: skip


@pytest.mark.slow
def test_audit_killed_at_20_random_moments_resumes_to_the_same_signed_report(
    tmp_path: Path, election: Path
) -> None:
    keys = tmp_path / "keys"
    report_keys.generate(keys, "Kill test")
    env = dict(os.environ, VTAUDIT_STORE_BATCH="100", SOURCE_DATE_EPOCH="1790000000")
    reference = tmp_path / "reference"
    started = time.monotonic()
    subprocess.run(_audit_command(election, keys, reference), env=env, check=True, capture_output=True)
    whole = time.monotonic() - started  # the moments are drawn within a whole run, however fast the machine
    run = tmp_path / "run"
    rng = random.Random(9)
    kills = 0
    for _ in range(20):
        process = subprocess.Popen(
            _audit_command(election, keys, run), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        time.sleep(rng.uniform(0.05, 0.8) * whole)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
    subprocess.run(_audit_command(election, keys, run), env=env, check=True, capture_output=True)
    assert kills >= 10
    # Ed25519 is deterministic and generatedAt is pinned: the whole signed file is identical
    assert (run / "report.json").read_bytes() == (reference / "report.json").read_bytes()
    assert (run / "report.html").read_bytes() == (reference / "report.html").read_bytes()
    con = connect(run / "evidence")
    assert con.execute("select count(*) - count(distinct cid) from envelopes").fetchone() == (0,)
    assert not list(run.glob(".*.tmp")) and not list((run / "findings").glob(".*.tmp"))


def _body(store: Path, election: Path, workers: int = 1) -> bytes:
    trust = load_trust(election / "trust.toml")
    return jcs(report_body(verify_store(store, trust, workers=workers), store, now=NOW))


def _shuffled_ndjson(election: Path, path: Path) -> Path:
    lines = (election / "evidence.ndjson").read_text(encoding="utf-8").splitlines()
    random.Random(3).shuffle(lines)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_the_report_body_is_the_same_whatever_the_harvest_order_sources_and_workers(
    tmp_path: Path, election: Path
) -> None:
    assert (election / "evidence.ndjson").exists()
    stores: dict[str, Path] = {}

    def harvested(name: str, make: Callable[[], list[object]]) -> Path:
        store = tmp_path / name
        harvest(make(), store)  # type: ignore[arg-type]
        stores[name] = store
        return store

    harvested("car", lambda: [ArchiveSource(election / "evidence.car")])
    harvested("records", lambda: [ArchiveSource(election / "records")])
    shuffled = _shuffled_ndjson(election, tmp_path / "shuffled.ndjson")
    harvested("shuffled", lambda: [ArchiveSource(shuffled)])
    nodes = [
        NodeServer(load_content(election / "evidence.car"), host="127.0.0.1", port=0).start()
        for _ in range(2)
    ]
    try:
        options = NetOptions(connect_timeout=2.0, read_timeout=2.0, seed=0)
        harvested("nodes", lambda: [HttpNodesSource([n.url for n in nodes], options)])
    finally:
        for node in nodes:
            node.stop()
    reference = _body(stores["car"], election, workers=1)
    assert parse_json(reference)["verdict"] == "verified"
    assert _body(stores["car"], election, workers=2) == reference
    for name in ("records", "shuffled", "nodes"):
        assert _body(stores[name], election, workers=2) == reference, f"the body from {name} differs"


def test_set_aside_bytes_give_the_same_body_wherever_and_however_often_they_were_found(
    tmp_path: Path, election: Path
) -> None:
    """§11: the same evidence gives the same body. A malformed record and bytes that do not
    match the CID their name claims, harvested from folders at other paths, and seen
    twice in one of them, give the same findings and the same quarantined count (a review
    found the archive's absolute path in the findings and every sighting counted)."""
    records = sorted((election / "records").rglob("*.json"))
    wrong_cid = records[0].name  # a name claiming a CID, holding another record's bytes
    bad = {"broken.json": b'{"v": 1, "type": ', wrong_cid: records[1].read_bytes()}

    def folder(root: Path, copies: int) -> Path:
        for i in range(copies):
            for name, raw in bad.items():
                path = root / f"bad{i}" / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(raw)
        return root

    bodies = []
    for name, copies in (("first/place", 1), ("elsewhere", 2)):
        store = tmp_path / name / "store"
        harvest([ArchiveSource(election / "evidence.car"), ArchiveSource(folder(tmp_path / name / "in", copies))], store)
        bodies.append(_body(store, election))
    assert bodies[0] == bodies[1]
    body = parse_json(bodies[0])
    assert body["evidence"]["quarantined"] == 2
    set_aside = [f for f in body["findings"] if f["check"] in ("REC-CID", "REC-SCHEMA")]
    assert {f["check"] for f in set_aside} == {"REC-CID", "REC-SCHEMA"}
    assert all(str(tmp_path) not in f["message"] and "archive" in f["message"] for f in set_aside)


# ---------------------------------------------------------------------------- nothing runs


FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__"}
FORBIDDEN_ATTRIBUTES = {("os", "system"), ("os", "popen"), ("pickle", "loads"), ("pickle", "load"),
                        ("marshal", "loads"), ("importlib", "import_module")}  # fmt: skip


def test_no_code_in_vtaudit_evaluates_or_unpickles_anything() -> None:
    """Nothing from the evidence is ever executed (VoteTorrent's design mentions validation
    snippets in JavaScript: the spec gives them no field, so they are unknown members,
    REC-SCHEMA, and never run). The auditor's own code has no eval, exec, dynamic import,
    shell or unpickling of data: the worker pools pickle only our own values."""
    offences = []
    for path in sorted(AUDITOR.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                func = node.func
                if isinstance(func, ast.Name) and func.id in FORBIDDEN_CALLS:
                    offences.append(f"{path.name}:{node.lineno} {func.id}()")
                if (
                    isinstance(func, ast.Attribute)
                    and isinstance(func.value, ast.Name)
                    and (func.value.id, func.attr) in FORBIDDEN_ATTRIBUTES
                ):
                    offences.append(f"{path.name}:{node.lineno} {func.value.id}.{func.attr}()")
                for keyword in node.keywords:
                    if (
                        keyword.arg == "shell"
                        and isinstance(keyword.value, ast.Constant)
                        and keyword.value.value
                    ):
                        offences.append(f"{path.name}:{node.lineno} shell=True")
    assert offences == []


def test_a_template_carrying_a_script_is_a_schema_error_and_nothing_runs(
    tmp_path: Path, election: Path
) -> None:
    """A ballot template with a JavaScript validation snippet: the record is refused as
    malformed (REC-SCHEMA), the audit goes on, and the snippet is never run."""
    template_dir = election / "records" / "ballot_template"
    original = json.loads(next(template_dir.glob("*.json")).read_text(encoding="utf-8"))
    marker = tmp_path / "ran"
    original["body"]["validation"] = f"require('fs').writeFileSync('{marker}', 'x')"
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "template.json").write_bytes(jcs(original))
    store = tmp_path / "store"
    harvest([ArchiveSource(election / "evidence.car"), ArchiveSource(evil)], store)
    result = verify_store(store, load_trust(election / "trust.toml"), workers=1)
    outcome = {o.id: o for o in result.outcomes}
    assert outcome["REC-SCHEMA"].status == "fail"
    assert any("validation" in f.message for f in result.findings if f.check == "REC-SCHEMA")
    assert not marker.exists()
    assert outcome["RES-MATCH"].status == "pass"  # the rest of the audit went on
