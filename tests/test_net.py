"""Harvesting from network nodes (spec §7.1): real HTTP nodes on 127.0.0.1, some misbehaving.

Every node here is a :class:`NodeServer` in a thread of this process, bound to
127.0.0.1 on a free port; nothing else is contacted. Faults are deterministic for a
seed (auditor/net/faults.py), and the client's options are short so that each test
that waits for a timeout stays within a few seconds.
"""

from __future__ import annotations

import dataclasses
import http.server
import io
import json
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from click.testing import CliRunner

from auditor.cli import main
from auditor.errors import InputError
from auditor.harvest import ArchiveSource, harvest
from auditor.model.encoding import cid_from_binary, cid_of, jcs
from auditor.net import (
    Faults,
    HttpNodesSource,
    NetOptions,
    NodeContent,
    NodeServer,
    load_content,
    parse_faults,
)
from auditor.net.client import normalize_url
from auditor.sim.election import SimConfig, simulate
from auditor.store.car import CarBlock, iter_sections, read_header
from auditor.store.evidence import EvidenceStore, connect

FAST = NetOptions(
    connect_timeout=1.0,
    read_timeout=0.5,
    deadline=10.0,
    attempts=4,
    backoff=0.01,
    backoff_max=0.05,
    max_consecutive_failures=6,
    seed=0,
)

Serve = Callable[..., NodeServer]


@pytest.fixture(scope="module")
def election(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("net") / "e"
    simulate(SimConfig(voters=150, seed=21, districts=2, workers=1, formats=("car",)), out)
    return out


@pytest.fixture(scope="module")
def content(election: Path) -> NodeContent:
    return load_content(election / "evidence.car")


@pytest.fixture(scope="module")
def reference(election: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The evidence store of a harvest of the CAR file."""
    out = tmp_path_factory.mktemp("net-ref") / "ev"
    harvest([ArchiveSource(election / "evidence.car")], out)
    return out


@pytest.fixture
def serve(content: NodeContent) -> Iterator[Serve]:
    """Start nodes on 127.0.0.1 (port 0) for one test; stop them all afterwards."""
    started: list[NodeServer] = []

    def start(faults: Faults | None = None, of: NodeContent | None = None) -> NodeServer:
        node = NodeServer(of or content, host="127.0.0.1", port=0, faults=faults).start()
        started.append(node)
        return node

    yield start
    for node in started:
        node.stop()


def _cids(root: Path) -> set[str]:
    return {cid for (cid,) in connect(root).sql("select cid from envelopes").fetchall()}


def _quarantine(root: Path) -> list[dict[str, Any]]:
    return EvidenceStore(root, create=False).table("quarantine").to_pylist()  # type: ignore[no-any-return]


def _options(**changes: Any) -> NetOptions:
    return dataclasses.replace(FAST, **changes)


# ---------------------------------------------------------------------------- the node


def test_node_serves_log_pages_records_and_cars(serve: Serve, content: NodeContent) -> None:
    node = serve()
    cids = content.cids()
    with httpx.Client(base_url=node.url, trust_env=False) as http:
        page = http.get("/v1/log", params={"after": 0, "limit": 10})
        assert page.headers["content-type"] == "application/x-ndjson"
        lines = [json.loads(x) for x in page.text.splitlines()]
        assert [x["seq"] for x in lines] == list(range(1, 11))
        assert [x["cid"] for x in lines] == cids[:10] and all(x["type"] for x in lines)
        assert http.get("/v1/log", params={"after": len(cids)}).content == b""
        assert len(http.get("/v1/log", params={"limit": 10**9}).text.splitlines()) == len(cids)  # capped
        assert http.get("/v1/log", params={"after": -1}).status_code == 400
        one = http.get(f"/ipfs/{cids[5]}")
        assert one.status_code == 200 and cid_of(one.content) == cids[5]
        assert http.get(f"/ipfs/{cid_of(b'nothing')}").status_code == 404
        assert http.get("/ipfs/not-a-cid").status_code == 400
        assert http.get("/elsewhere").status_code == 404
        car = http.get("/v1/car", params={"after": 3, "limit": 4})
        assert car.headers["content-type"] == "application/vnd.ipld.car"
        stream = io.BytesIO(car.content)
        header = read_header(stream)
        sections = list(iter_sections(stream, offset=header.header_end_offset))
        blocks = [b for b in sections if isinstance(b, CarBlock)]
        assert len(blocks) == len(sections) == 4
        assert [cid_from_binary(b.cid) for b in blocks] == cids[3:7]
        assert [cid_from_binary(r) for r in header.roots] == [cids[3]]
        assert all(cid_of(b.data) == cid_from_binary(b.cid) for b in blocks)
        assert http.get("/v1/car", params={"after": len(cids)}).status_code == 204


def test_faults_are_deterministic_for_a_seed(content: NodeContent) -> None:
    one, two = Faults(seed=4, wrong=0.1, omit=0.1), Faults(seed=4, wrong=0.1, omit=0.1)
    assert content.with_faults(one).cids() == content.with_faults(two).cids() != content.cids()
    served = [one.serve(r.cid, r.raw) for r in content.records]
    assert served == [two.serve(r.cid, r.raw) for r in content.records]
    assert 0 < sum(s != r.raw for s, r in zip(served, content.records, strict=True)) < len(served)
    other = Faults(seed=5, wrong=0.1)
    assert [other.serve(r.cid, r.raw) for r in content.records] != served
    assert parse_faults("error=0.2, stall=1.5,seed=3,endpoints=ipfs+car") == Faults(
        seed=3, error=0.2, stall=1.5, endpoints=frozenset({"ipfs", "car"})
    )
    for bad in ("error=2", "nonsense=1", "error", "stall=soon", "wrong-cid=xyz", "endpoints=ftp"):
        with pytest.raises(InputError):
            parse_faults(bad)


# ---------------------------------------------------------------------------- harvesting


@pytest.mark.parametrize("bulk", [True, False], ids=["car", "ipfs"])
def test_harvest_over_http_equals_harvest_of_the_car(
    serve: Serve, reference: Path, tmp_path: Path, bulk: bool
) -> None:
    node = serve()
    source = HttpNodesSource([node.url + "/"], _options(bulk=bulk, page=100))
    assert source.name == f"http:{node.url}"
    _, stats = harvest([source], tmp_path / "ev")
    assert stats.quarantined == 0 and _cids(tmp_path / "ev") == _cids(reference)
    locations = connect(tmp_path / "ev").sql("select distinct source, location from provenance").fetchall()
    assert {s for s, _ in locations} == {source.name}
    marker = f"{node.url}/v1/car?" if bulk else f"{node.url}/ipfs/"
    assert all(location.startswith(marker) for _, location in locations)


def test_second_harvest_fetches_nothing_new(serve: Serve, content: NodeContent, tmp_path: Path) -> None:
    node = serve()
    source = HttpNodesSource([node.url], FAST)
    harvest([source], tmp_path / "ev")
    store = EvidenceStore(tmp_path / "ev", create=False)
    assert json.loads(store.cursor(source.name) or "") == {node.url: len(content)}
    before = node.requests
    _, stats = harvest([source], tmp_path / "ev")
    assert stats.read == 0 and node.requests - before == 1  # one /v1/log answer: nothing newer
    assert connect(tmp_path / "ev").sql("select count(*) from provenance").fetchall() == [(len(content),)]


def test_a_node_serving_an_evidence_store(serve: Serve, reference: Path, tmp_path: Path) -> None:
    node = serve(of=load_content(reference))
    harvest([HttpNodesSource([node.url], FAST)], tmp_path / "ev")
    assert _cids(tmp_path / "ev") == _cids(reference)


def test_records_missing_on_one_node_come_from_the_other(
    serve: Serve, content: NodeContent, reference: Path, tmp_path: Path
) -> None:
    cids = content.cids()
    a = serve(Faults(omit_cids=frozenset(cids[::3])))
    b = serve(Faults(omit_cids=frozenset(cids[1::3])))
    source = HttpNodesSource([a.url, b.url], _options(page=40))
    _, stats = harvest([source], tmp_path / "ev")
    assert stats.quarantined == 0 and _cids(tmp_path / "ev") == _cids(reference)
    assert not source.report.unavailable
    cursor = json.loads(EvidenceStore(tmp_path / "ev", create=False).cursor(source.name) or "")
    assert cursor == {a.url: len(cids) - len(cids[::3]), b.url: len(cids) - len(cids[1::3])}
    _, again = harvest([source], tmp_path / "ev")
    assert again.read == 0


@pytest.mark.parametrize("bulk", [True, False], ids=["car", "ipfs"])
@pytest.mark.parametrize("kind", ["wrong", "truncate"])
def test_wrong_bytes_are_quarantined_against_the_node_and_fetched_elsewhere(
    serve: Serve, content: NodeContent, reference: Path, tmp_path: Path, kind: str, bulk: bool
) -> None:
    bad_cids = set(content.cids()[10:13])
    chosen = frozenset(bad_cids)
    bad = serve(Faults(wrong_cids=chosen) if kind == "wrong" else Faults(truncate_cids=chosen))
    good = serve(Faults(hide_cids=frozenset(bad_cids)))  # has them, does not announce them: asked last
    source = HttpNodesSource([bad.url, good.url], _options(bulk=bulk))
    _, stats = harvest([source], tmp_path / "ev")
    assert _cids(tmp_path / "ev") == _cids(reference)
    rows = _quarantine(tmp_path / "ev")
    assert stats.quarantined == len(rows) == len(bad_cids)
    assert {r["claimed_cid"] for r in rows} == bad_cids
    for row in rows:
        assert row["check_id"] == "REC-CID" and row["source"] == source.name
        assert row["location"].startswith(bad.url + "/") and "hash to" in row["reason"]
        served = content.with_faults(Faults()).by_cid[row["claimed_cid"]]
        assert bytes(row["raw"]) != served and (kind == "wrong" or served.startswith(bytes(row["raw"])))
    assert sorted(source.report.nodes[bad.url].wrong) == sorted(bad_cids)
    assert not source.report.unavailable and source.report.problems
    query = "select location from provenance where cid in (select unnest(?::varchar[]))"
    goods = connect(tmp_path / "ev").sql(query, params=[sorted(bad_cids)]).fetchall()
    assert len(goods) == len(bad_cids) and all(loc.startswith(good.url) for (loc,) in goods)


def test_a_stalling_node_times_out_and_the_other_serves_in_bounded_time(
    serve: Serve, reference: Path, tmp_path: Path
) -> None:
    stalled = serve(Faults(stall=30.0, endpoints=frozenset({"car", "ipfs"})))
    good = serve()
    source = HttpNodesSource([stalled.url, good.url], _options(attempts=2))
    started = time.monotonic()
    harvest([source], tmp_path / "ev")
    assert time.monotonic() - started < 10
    assert _cids(tmp_path / "ev") == _cids(reference)
    report = source.report.nodes[stalled.url]
    assert report.failed >= 2 and "timed out" in (report.last_error or "")


def test_a_node_that_stalls_everything_is_left_behind(serve: Serve, reference: Path, tmp_path: Path) -> None:
    stalled = serve(Faults(stall=30.0))
    slow = serve(Faults(slow=0.3, slow_chunk=1024, endpoints=frozenset({"car"})))  # past the deadline
    good = serve()
    source = HttpNodesSource([stalled.url, slow.url, good.url], _options(attempts=2, deadline=1.0))
    started = time.monotonic()
    harvest([source], tmp_path / "ev")
    assert time.monotonic() - started < 15
    assert _cids(tmp_path / "ev") == _cids(reference)
    assert "timed out" in (source.report.nodes[stalled.url].log_error or "")
    assert "not complete after 1.0 s" in (source.report.nodes[slow.url].last_error or "")


def test_a_node_that_keeps_failing_is_skipped_and_its_cursor_kept(serve: Serve, tmp_path: Path) -> None:
    broken = serve(Faults(error=1.0, endpoints=frozenset({"car", "ipfs"})))
    source = HttpNodesSource([broken.url], _options(max_consecutive_failures=3, page=50))
    started = time.monotonic()
    _, stats = harvest([source], tmp_path / "ev")
    assert time.monotonic() - started < 10 and stats.read == 0
    report = source.report
    assert "HTTP 500" in (report.nodes[broken.url].skipped or "")
    assert report.unavailable and report.problems
    assert any("skipped" in line.lower() for line in report.lines())
    # nothing was delivered: the next run starts again from the beginning
    cursor = EvidenceStore(tmp_path / "ev", create=False).cursor(source.name)
    assert cursor in (None, json.dumps({broken.url: 0}))


@pytest.mark.parametrize("bulk", [True, False], ids=["car", "ipfs"])
def test_resets_cuts_and_500s_are_retried(serve: Serve, reference: Path, tmp_path: Path, bulk: bool) -> None:
    flaky = serve(Faults(seed=11, reset=0.15, cut=0.1, error=0.15))
    options = _options(bulk=bulk, page=60, attempts=10, max_consecutive_failures=30)
    source = HttpNodesSource([flaky.url], options)
    _, stats = harvest([source], tmp_path / "ev")
    assert stats.quarantined == 0 and _cids(tmp_path / "ev") == _cids(reference)
    report = source.report.nodes[flaky.url]
    assert report.retries > 0 and report.failed > 0 and not report.skipped


def test_nodes_with_different_logs_keep_both_results(
    serve: Serve, content: NodeContent, reference: Path, tmp_path: Path
) -> None:
    """One node announces a second `result` for a template (an equivocation): both are evidence."""
    first = next(r for r in content.records if r.type == "result")
    envelope = json.loads(first.raw)
    envelope["body"]["voters"] += 1
    second = jcs(envelope)
    a = serve(Faults(extra=(second,)))
    b = serve()
    source = HttpNodesSource([b.url, a.url], FAST)
    _, stats = harvest([source], tmp_path / "ev")
    assert stats.quarantined == 0
    assert _cids(tmp_path / "ev") == _cids(reference) | {cid_of(second)}
    con = connect(tmp_path / "ev")
    template = envelope["body"]["template"]
    results = con.sql("select cid from result where template = ?", params=[template]).fetchall()
    assert {c for (c,) in results} == {first.cid, cid_of(second)}
    locations = con.sql("select location from provenance where cid = ?", params=[cid_of(second)]).fetchall()
    assert len(locations) == 1 and locations[0][0].startswith(a.url)
    cursor = json.loads(EvidenceStore(tmp_path / "ev", create=False).cursor(source.name) or "")
    assert cursor == {a.url: len(content) + 1, b.url: len(content)}


# ---------------------------------------------------------------------------- errors and the CLI


def test_bad_urls_cursors_and_dead_nodes_are_clear_errors(tmp_path: Path) -> None:
    for url in ("ftp://127.0.0.1:1", "http://", "http://127.0.0.1:1?x=1", "http://127.0.0.1:99999"):
        with pytest.raises(InputError, match="node URL"):
            normalize_url(url)
    with pytest.raises(InputError, match="no node URL"):
        HttpNodesSource([])
    source = HttpNodesSource(["http://127.0.0.1:1"], _options(attempts=1))
    with pytest.raises(InputError, match="stored cursor"):
        next(iter(source.records("[1, 2]")))
    with pytest.raises(InputError, match="no node answered"):
        list(source.records(None))


def test_cli_harvest_from_urls_and_node_serve(election: Path, reference: Path, tmp_path: Path) -> None:
    car = str(election / "evidence.car")
    command = [sys.executable, "-m", "auditor.cli", "node", "serve", car, "--port", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        first = process.stdout.readline()  # "serving N records of PATH at URL"
        url = first.rsplit(" ", 1)[-1].strip()
        assert url.startswith("http://127.0.0.1:"), first
        result = CliRunner().invoke(main, ["harvest", url, "--out", str(tmp_path / "ev"), "--quiet"])
        assert result.exit_code == 0, result.output
        assert f"{url}: {len(_cids(reference))} log entries" in result.output
        assert _cids(tmp_path / "ev") == _cids(reference)
    finally:
        process.terminate()
        process.wait(timeout=10)
    missing = str(tmp_path / "nothing-here")
    result = CliRunner().invoke(main, ["harvest", missing, "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "node URL" in result.output


def test_a_node_serving_a_directory_announces_only_typed_records(
    content: NodeContent, tmp_path: Path
) -> None:
    """Every file of a directory archive is read (spec §7.2), but a node announces and
    serves only records: not a simulator's manifest or its voters' secrets beside them."""
    first = content.records[0]
    (tmp_path / "secrets").mkdir()
    (tmp_path / f"{first.cid}.json").write_bytes(first.raw)
    (tmp_path / "manifest.json").write_text('{"records": 1}')
    (tmp_path / "secrets" / "voters.ndjson").write_text('{"voter": 0}\n{"voter": 1}\n')
    (tmp_path / "trust.toml").write_text("[authorities]\n")
    served = load_content(tmp_path)
    assert [r.cid for r in served.records] == [first.cid] and set(served.by_cid) == {first.cid}


class _ZeroBasedLog(http.server.BaseHTTPRequestHandler):
    """A §7.1 node whose log starts at seq 0 (the spec does not say where seq starts): it
    answers ``after=k`` with the entries above k, and no ``after`` with the whole log."""

    content: ClassVar[NodeContent]

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        if url.path == "/v1/log":
            after = int(query["after"][0]) if "after" in query else None
            lines = [
                json.dumps({"seq": seq, "cid": r.cid, "type": r.type}).encode() + b"\n"
                for seq, r in enumerate(self.content.records)
                if after is None or seq > after
            ]
            self._answer(200, b"".join(lines))
        elif url.path.startswith("/ipfs/") and url.path[6:] in self.content.by_cid:
            self._answer(200, self.content.by_cid[url.path[6:]])
        else:
            self._answer(404, b"")

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's name)
        pass


def test_a_log_whose_seq_starts_at_zero_loses_nothing(
    content: NodeContent, reference: Path, tmp_path: Path
) -> None:
    """The first page is asked for without ``after``: a review found ``after=0`` skipped
    the record at seq 0 of such a node, silently."""
    handler = type("Handler", (_ZeroBasedLog,), {"content": content})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        source = HttpNodesSource([url], _options(bulk=False, page=50))
        _, stats = harvest([source], tmp_path / "ev")
        assert stats.quarantined == 0 and _cids(tmp_path / "ev") == _cids(reference)
        store = EvidenceStore(tmp_path / "ev", create=False)
        assert json.loads(store.cursor(source.name) or "") == {url: len(content) - 1}
        _, again = harvest([source], tmp_path / "ev")  # resumes after the last seq: nothing new
        assert again.read == 0
    finally:
        server.shutdown()
        server.server_close()


def test_wrong_bytes_from_the_only_node_are_findings_naming_that_node(
    serve: Serve, content: NodeContent, election: Path, tmp_path: Path
) -> None:
    """D32: REC-CID names the node that served the wrong bytes (read from each copy's
    location: a network source names every node of its run), and no path of this machine."""
    from auditor.trust import load_trust
    from auditor.verify.engine import verify_store

    bad_cids = set(content.cids()[10:12])
    bad = serve(Faults(wrong_cids=frozenset(bad_cids)))
    other = serve(Faults(hide_cids=frozenset(bad_cids), wrong_cids=frozenset(bad_cids)))
    harvest([HttpNodesSource([bad.url, other.url], _options(bulk=False))], tmp_path / "ev")
    result = verify_store(tmp_path / "ev", load_trust(election / "trust.toml"), workers=1)
    findings = [f for f in result.findings if f.check == "REC-CID"]
    assert {f.subject for f in findings} == bad_cids
    for finding in findings:
        assert set(finding.evidence["nodes"]) <= {bad.url, other.url} and bad.url in finding.evidence["nodes"]
        assert "served by " in finding.message and bad.url in finding.message
        assert str(tmp_path) not in finding.message
