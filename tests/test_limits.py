"""Resource limits (issue 9, docs/limits.md): just under each limit passes, just over is
refused with a message naming the limit, before the work it bounds; a harvested store
with over-limit records still verifies everything else."""

from __future__ import annotations

import io
import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from auditor import limits
from auditor.cli import main
from auditor.crypto.rfc3161 import parse_token, verify_token
from auditor.errors import EncodingError, InputError, SchemaError, TimestampError
from auditor.harvest import ArchiveSource, harvest
from auditor.limits import (
    MAX_BLOCK_MEMBERS,
    MAX_CERTIFICATE_BYTES,
    MAX_ENVELOPE_BYTES,
    MAX_JSON_CONTAINERS,
    MAX_JSON_DEPTH,
    MAX_LOG_LINE_BYTES,
    MAX_NDJSON_LINE_BYTES,
    MAX_OPTIONS,
    MAX_QUESTIONS,
    MAX_SIGNATURES,
    MAX_TEXT_CHARS,
    MAX_TIMESTAMP_AUTHORITIES,
    MAX_TIMESTAMPS,
    MAX_TOKEN_BYTES,
    MAX_TRUST_FILE_BYTES,
    MAX_TRUST_ROOTS,
)
from auditor.model import encoding
from auditor.model.encoding import b64u_encode, cid_binary, jcs, parse_json
from auditor.model.entries import VoteEntry
from auditor.model.envelope import parse_envelope
from auditor.model.histogram import histogram, zero
from auditor.model.records import BallotTemplate, Election, Receipt, VoteBlock
from auditor.model.schema import text
from auditor.net.client import NetOptions, parse_log_page
from auditor.sources import RawRecord, Rejection, iter_source, open_record
from auditor.store.car import CarDefect, CarError, CarWriter, iter_sections, read_car, read_header
from auditor.trust import load_trust

KEY = b64u_encode(bytes(range(32)))
CIPHERTEXT = b64u_encode(bytes(range(48)))
CID = "bagaaiera" + "a" * 52


def _record(sim: Path, record_type: str) -> dict[str, Any]:
    path = next((sim / "records" / record_type).glob("*.json"))
    value: dict[str, Any] = json.loads(path.read_bytes())
    return value


# ---------------------------------------------------------------------------- JSON


def test_json_nesting_at_the_limit_parses_one_more_is_refused() -> None:
    at = b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH
    assert parse_json(at) is not None
    over = b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1)
    with pytest.raises(EncodingError, match="nested more than 64 deep, at most 64"):
        parse_json(over)
    objects = b'{"a":' * (MAX_JSON_DEPTH + 1) + b"1" + b"}" * (MAX_JSON_DEPTH + 1)
    with pytest.raises(EncodingError, match="nested more than 64 deep"):
        parse_json(objects)
    # brackets inside strings are text, not nesting
    assert parse_json(b'["' + b"[" * 10_000 + b'"]') == ["[" * 10_000]


def test_a_million_deep_json_is_refused_at_once_without_recursion(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_json_loads(*args: object, **kwargs: object) -> object:
        raise AssertionError("json.loads must not see this document")

    monkeypatch.setattr(json, "loads", no_json_loads)  # the module auditor.model.encoding calls
    for data in (b"[" * 10**6, b"[" * 10**6 + b"]" * 10**6, b'{"a":' * 10**6, b'[1,"x",' * 10**6):
        started = time.perf_counter()
        with pytest.raises(EncodingError, match="nested more than 64 deep") as caught:
            parse_json(data)
        assert time.perf_counter() - started < 1.0
        assert not isinstance(caught.value.__cause__, RecursionError)


def test_the_depth_pre_scan_is_fast_on_the_worst_8_mib() -> None:
    worst = [
        b'"' * MAX_ENVELOPE_BYTES + b"[" * 70,  # millions of empty strings
        b'"[",[],' * (MAX_ENVELOPE_BYTES // 7) + b"[" * 70,  # millions of strings holding brackets
        (b"[" * 64 + b"]" * 64) * (MAX_ENVELOPE_BYTES // 128 // 5),  # near the limit, everywhere
    ]
    for data in worst:
        started = time.process_time()  # CPU time: a loaded machine must not fail the test
        encoding.json_shape_problem(data)
        assert time.process_time() - started < 1.0


def test_json_containers_at_the_limit_parse_one_more_is_refused() -> None:
    at = b"[" + b"[]," * (MAX_JSON_CONTAINERS - 2) + b"[]]"
    assert len(parse_json(at)) == MAX_JSON_CONTAINERS - 1
    over = b"[" + b"[]," * (MAX_JSON_CONTAINERS - 1) + b"[]]"
    with pytest.raises(EncodingError, match="1,048,577 arrays and objects, at most 1,048,576"):
        parse_json(over)


def test_a_deep_record_is_a_schema_error_naming_the_limit() -> None:
    deep = b'{"v":1,"type":"dispute","body":' + b"[" * 100 + b"]" * 100 + b',"signatures":[],"timestamps":[]}'
    opened = open_record(RawRecord(deep, None, "deep.json"))
    assert isinstance(opened, Rejection) and opened.check == "REC-SCHEMA"
    assert "nested more than 64 deep, at most 64 (docs/limits.md)" in opened.reason


# ---------------------------------------------------------------------------- strings


def test_text_at_the_limit_passes_one_more_character_is_refused() -> None:
    assert text("é" * MAX_TEXT_CHARS, "body.title") == "é" * MAX_TEXT_CHARS
    with pytest.raises(SchemaError, match="1,048,577 characters, expected at most 1,048,576"):
        text("é" * (MAX_TEXT_CHARS + 1), "body.title")


# ---------------------------------------------------------------------------- envelopes


def _with(sim: Path, record_type: str, **members: Any) -> bytes:
    return jcs(dict(_record(sim, record_type), **members))


def test_signatures_and_timestamps_per_record(sim_election: Path) -> None:
    record = _record(sim_election, "result")
    signature = record["signatures"][0]
    token = record["timestamps"][0]
    assert parse_envelope(_with(sim_election, "result", signatures=[signature] * MAX_SIGNATURES))
    with pytest.raises(SchemaError, match="signatures: got 8,193 signatures, expected at most 8,192"):
        parse_envelope(_with(sim_election, "result", signatures=[signature] * (MAX_SIGNATURES + 1)))
    assert parse_envelope(_with(sim_election, "result", timestamps=[token] * MAX_TIMESTAMPS))
    with pytest.raises(SchemaError, match="timestamps: got 17 timestamps, expected at most 16"):
        parse_envelope(_with(sim_election, "result", timestamps=[token] * (MAX_TIMESTAMPS + 1)))


def test_token_size(sim_election: Path) -> None:
    at = b64u_encode(b"\x30" + bytes(MAX_TOKEN_BYTES - 1))
    assert parse_envelope(_with(sim_election, "result", timestamps=[at]))
    over = b64u_encode(b"\x30" + bytes(MAX_TOKEN_BYTES))
    with pytest.raises(SchemaError, match=r"timestamps\[0\]: got 65,537 bytes, expected at most 65,536"):
        parse_envelope(_with(sim_election, "result", timestamps=[over]))
    with pytest.raises(TimestampError, match="token size"):
        parse_token(b"\x30" + bytes(MAX_TOKEN_BYTES))
    outcome = verify_token(b"\x30" + bytes(MAX_TOKEN_BYTES), bytes(32), [])
    assert not outcome.ok and "65,537 bytes" in outcome.token_problems[0]


# ---------------------------------------------------------------------------- bodies


def test_members_votes_voters_per_block(sim_election: Path) -> None:
    body = _record(sim_election, "vote_block")["body"]
    for name, item in (("members", KEY), ("votes", CIPHERTEXT), ("voters", CIPHERTEXT)):
        VoteBlock.parse(dict(body, **{name: [item] * MAX_BLOCK_MEMBERS}))  # sorting is BLK-SHAPE's
        with pytest.raises(SchemaError, match=rf"body\.{name}: got 4,097 {name}, expected at most 4,096"):
            VoteBlock.parse(dict(body, **{name: [item] * (MAX_BLOCK_MEMBERS + 1)}))
    with pytest.raises(SchemaError, match=r"got 10,000 members, expected at most 4,096 \(docs/limits.md\)"):
        VoteBlock.parse(dict(body, members=[KEY] * 10_000))
    receipt = _record(sim_election, "receipt")["body"]
    Receipt.parse(dict(receipt, registrants=[KEY] * MAX_BLOCK_MEMBERS))
    with pytest.raises(SchemaError, match="4,097 registrants"):
        Receipt.parse(dict(receipt, registrants=[KEY] * (MAX_BLOCK_MEMBERS + 1)))


def test_the_members_limit_is_checked_before_any_member() -> None:
    body = {
        "election": CID,
        "template": CID,
        "members": [1] * (MAX_BLOCK_MEMBERS + 1),
        "votes": [],
        "voters": [],
    }
    with pytest.raises(SchemaError, match="4,097 members"):  # not "got the integer 1"
        VoteBlock.parse(body)


def _question(code: str, options: int) -> dict[str, Any]:
    return {
        "code": code,
        "title": code,
        "type": "select",
        "options": [{"code": f"o{i}", "title": "x"} for i in range(options)],
        "min": 0,
        "max": 1,
        "score": None,
        "required": False,
        "dependsOn": None,
    }


def test_questions_and_options_per_template(sim_election: Path) -> None:
    body = _record(sim_election, "ballot_template")["body"]
    ok = BallotTemplate.parse(dict(body, questions=[_question(f"q{i}", 2) for i in range(MAX_QUESTIONS)]))
    assert len(ok.questions) == MAX_QUESTIONS and not ok.problems()
    with pytest.raises(SchemaError, match=r"body\.questions: got 257 questions, expected at most 256"):
        BallotTemplate.parse(dict(body, questions=[_question(f"q{i}", 2) for i in range(MAX_QUESTIONS + 1)]))
    wide = BallotTemplate.parse(dict(body, questions=[_question("q", MAX_OPTIONS)]))
    assert len(wide.questions[0].options) == MAX_OPTIONS
    with pytest.raises(
        SchemaError, match=r"questions\[0\].options: got 1,025 options, expected at most 1,024"
    ):
        BallotTemplate.parse(dict(body, questions=[_question("q", MAX_OPTIONS + 1)]))
    depends = dict(_question("r", 2), dependsOn={"question": "q", "values": ["o1"] * (MAX_OPTIONS + 1)})
    with pytest.raises(SchemaError, match="1,025 option codes"):
        BallotTemplate.parse(dict(body, questions=[_question("q", 2), depends]))


def test_a_malformed_rank_template_cannot_take_all_memory() -> None:
    question = dict(_question("q", 2), type="rank", max=2**53 - 1)
    template = BallotTemplate.parse(
        {
            "election": CID,
            "authority": CID,
            "administration": CID,
            "district": "d",
            "revision": 1,
            "questions": [question],
        }
    )
    assert template.problems()  # TPL-VALID: max over the limit of options (D35)
    assert zero(template)["q"]["options"] == {"o0": [0] * MAX_OPTIONS, "o1": [0] * MAX_OPTIONS}


def test_a_rank_question_keeps_max_counters_even_above_its_options() -> None:
    """§6: a rank entry counts ranks 1..max; max above the options is unreachable, not
    malformed (§4.5 sets no bound), and the ranks past the options stay 0."""
    question = dict(_question("q", 2), type="rank", max=3)
    template = BallotTemplate.parse(
        {"election": CID, "authority": CID, "administration": CID, "district": "d", "revision": 1,
         "questions": [question]}
    )  # fmt: skip
    assert template.problems() == []
    assert zero(template)["q"]["options"] == {"o0": [0, 0, 0], "o1": [0, 0, 0]}


def test_answers_and_values_per_vote_entry() -> None:
    entry = {"template": CID, "nonce": b64u_encode(bytes(16))}
    VoteEntry.parse(dict(entry, answers=[{"question": "q", "values": "t"}] * MAX_QUESTIONS))
    with pytest.raises(SchemaError, match="257 answers"):
        VoteEntry.parse(dict(entry, answers=[{"question": "q", "values": "t"}] * (MAX_QUESTIONS + 1)))
    VoteEntry.parse(dict(entry, answers=[{"question": "q", "values": ["a"] * MAX_OPTIONS}]))
    with pytest.raises(SchemaError, match="1,025 options"):
        VoteEntry.parse(dict(entry, answers=[{"question": "q", "values": ["a"] * (MAX_OPTIONS + 1)}]))
    scores = {f"o{i}": 1 for i in range(MAX_OPTIONS + 1)}
    with pytest.raises(SchemaError, match="1,025 options"):
        VoteEntry.parse(dict(entry, answers=[{"question": "q", "values": scores}]))


def test_questions_options_and_ranks_per_histogram() -> None:
    select = {"type": "select", "ballots": 0, "options": {"a": 0}}
    histogram({f"q{i}": select for i in range(MAX_QUESTIONS)}, "counts")
    with pytest.raises(SchemaError, match="257 questions"):
        histogram({f"q{i}": select for i in range(MAX_QUESTIONS + 1)}, "counts")
    wide = {"type": "select", "ballots": 0, "options": {f"o{i}": 0 for i in range(MAX_OPTIONS + 1)}}
    with pytest.raises(SchemaError, match="1,025 options"):
        histogram({"q": wide}, "counts")
    rank = {"type": "rank", "ballots": 0, "options": {"a": [0] * (MAX_OPTIONS + 1)}}
    with pytest.raises(SchemaError, match="1,025 ranks"):
        histogram({"q": rank}, "counts")


def test_tsa_certificates_per_election(sim_election: Path) -> None:
    body = _record(sim_election, "election")["body"]
    tsa = body["timestampAuthorities"][0]
    Election.parse(dict(body, timestampAuthorities=[tsa] * MAX_TIMESTAMP_AUTHORITIES))
    with pytest.raises(SchemaError, match="65 timestamp authorities"):
        Election.parse(dict(body, timestampAuthorities=[tsa] * (MAX_TIMESTAMP_AUTHORITIES + 1)))
    big = dict(tsa, certificate=b64u_encode(bytes(MAX_CERTIFICATE_BYTES)))
    Election.parse(dict(body, timestampAuthorities=[big]))
    bigger = dict(tsa, certificate=b64u_encode(bytes(MAX_CERTIFICATE_BYTES + 1)))
    with pytest.raises(SchemaError, match="65,537 bytes, expected at most 65,536"):
        Election.parse(dict(body, timestampAuthorities=[bigger]))


# ---------------------------------------------------------------------------- archives


class _Recording(io.BytesIO):
    """A stream that remembers the largest read asked of it."""

    largest = 0

    def read(self, size: int | None = -1, /) -> bytes:
        self.largest = max(self.largest, size if size is not None else -1)
        return super().read(size)


def test_a_car_section_claiming_petabytes_is_refused_before_it_is_read() -> None:
    head = io.BytesIO()
    CarWriter(head, [cid_binary(b"x")])
    claim = bytes([0xFF] * 7 + [0x7F])  # a minimal varint of 2^56 - 1
    stream = _Recording(head.getvalue() + claim + b"rest")
    header = read_header(stream)
    items = list(iter_sections(stream, offset=header.header_end_offset))
    assert len(items) == 1 and isinstance(items[0], CarDefect)
    assert f"over the limit of {limits.MAX_CAR_SECTION_BYTES}" in items[0].reason
    assert stream.largest <= 1 << 20  # the 1 MiB chunk, never the claimed length


def test_a_car_section_at_the_limit_is_read_one_more_byte_is_not() -> None:
    cid = cid_binary(b"x")
    for size, ok in ((limits.MAX_CAR_SECTION_BYTES, True), (limits.MAX_CAR_SECTION_BYTES + 1, False)):
        out = io.BytesIO()
        writer = CarWriter(out, [cid])
        writer.add(cid, bytes(size - len(cid)))
        _header, sections = read_car(io.BytesIO(out.getvalue()))
        item = next(iter(sections))
        assert isinstance(item, CarDefect) != ok


def test_a_car_varint_that_never_ends() -> None:
    head = io.BytesIO()
    CarWriter(head, [cid_binary(b"x")])
    items = list(read_car(io.BytesIO(head.getvalue() + b"\xff" * 100_000))[1])
    assert isinstance(items[0], CarDefect) and "varint longer than 9 bytes" in items[0].reason
    with pytest.raises(CarError, match="varint longer than 9 bytes"):
        read_header(io.BytesIO(b"\xff" * 100_000))
    with pytest.raises(CarError, match="header length of 1048577 bytes"):
        read_header(io.BytesIO(bytes([0x81, 0x80, 0x40]) + bytes(10)))  # 2^20 + 1


def test_an_ndjson_line_over_the_limit_is_skipped_and_reported(tmp_path: Path, sim_election: Path) -> None:
    good = jcs(_record(sim_election, "dispute"))
    at = b"{" + b"x" * (MAX_NDJSON_LINE_BYTES - 1)
    over = b"{" + b"x" * (MAX_NDJSON_LINE_BYTES + 10)
    path = tmp_path / "records.ndjson"
    path.write_bytes(b"\n".join([good, at, over, good]) + b"\n")
    found = list(iter_source(path))
    assert [r.raw == good for r in found] == [True, False, False, True]
    assert found[1].raw == at and found[1].defect is None  # read, then refused as JSON
    assert found[2].raw == b"" and found[2].defect == "line over the 8 MiB limit"  # never held whole
    for raw in found[1:3]:
        opened = open_record(raw)
        assert isinstance(opened, Rejection) and opened.check == "REC-SCHEMA"


# ---------------------------------------------------------------------------- network, trust file, report


def test_http_limits_come_from_one_place() -> None:
    options = NetOptions()
    assert (options.connect_timeout, options.read_timeout, options.deadline) == (
        limits.HTTP_CONNECT_TIMEOUT,
        limits.HTTP_READ_TIMEOUT,
        limits.HTTP_DEADLINE,
    )
    assert options.max_car_bytes == limits.MAX_CAR_ANSWER_BYTES
    assert options.max_rounds == limits.MAX_LOG_PAGES


def test_node_log_lines() -> None:
    line = b'{"seq":1,"cid":"' + CID.encode() + b'","type":"x"}'
    padded = line[:-1] + b"," + b'"p":"' + b"x" * (MAX_LOG_LINE_BYTES - len(line) - 7) + b'"}'
    assert len(padded) == MAX_LOG_LINE_BYTES
    assert parse_log_page(padded + b"\n", 0) == ([(1, CID)], None)
    entries, problem = parse_log_page(line + b"\n" + padded[:-1] + b" }\n", 0)
    assert entries == [(1, CID)] and problem == "line 2: 2,049 bytes, at most 2,048"
    entries, problem = parse_log_page(b'{"seq": ' + b"[" * 1000 + b"\n", 0)  # was a RecursionError
    assert entries == [] and problem == "line 1: not a JSON object"


def test_trust_file_size_and_roots(tmp_path: Path, sim_election: Path) -> None:
    trust = (sim_election / "trust.toml").read_text()
    shutil.copy(sim_election / "tsa-root.pem", tmp_path / "tsa-root.pem")
    path = tmp_path / "trust.toml"
    path.write_text(trust + "#" * (MAX_TRUST_FILE_BYTES - len(trust.encode())))
    assert load_trust(path).election
    path.write_text(trust + "#" * (MAX_TRUST_FILE_BYTES - len(trust.encode()) + 1))
    with pytest.raises(InputError, match="larger than 1,048,576 bytes"):
        load_trust(path)
    head = trust.split("[tsa]")[0]
    path.write_text(head + "[tsa]\nroots = [" + ", ".join(['"tsa-root.pem"'] * MAX_TRUST_ROOTS) + "]\n")
    assert len(load_trust(path).tsa_roots) == MAX_TRUST_ROOTS
    path.write_text(head + "[tsa]\nroots = [" + ", ".join(['"tsa-root.pem"'] * (MAX_TRUST_ROOTS + 1)) + "]\n")
    with pytest.raises(InputError, match="65 TSA root files, at most 64"):
        load_trust(path)
    path.write_text(head + "[tsa]\nroot = []\n")  # a typo must not drop the roots silently
    with pytest.raises(InputError, match=r"unknown keys in \[tsa\]: root"):
        load_trust(path)


def test_report_reader_limits() -> None:
    from auditor.report.signed import MAX_REPORT_BYTES, verify_report

    assert MAX_REPORT_BYTES == limits.MAX_REPORT_BYTES
    check = verify_report(b"[" * 10**6)
    assert not check.ok and "nested more than 64 deep" in check.problems[0]


# ---------------------------------------------------------------------------- a whole audit


def test_over_limit_records_are_findings_and_vtaudit_verify_goes_on(
    tmp_path: Path, sim_election: Path
) -> None:
    """A harvested store with over-limit records (a block of 4,097 members, 65 deep JSON,
    17 timestamps, an 8 MiB + 1 record) verifies everything else; each is a REC-SCHEMA
    finding that names the limit."""
    evidence = tmp_path / "records"
    shutil.copytree(sim_election / "records", evidence)
    block = _record(sim_election, "vote_block")
    result = _record(sim_election, "result")
    oversized = {
        "big-block.json": jcs(dict(block, body=dict(block["body"], members=[KEY] * (MAX_BLOCK_MEMBERS + 1)))),
        "deep.json": jcs(dict(result, body=dict(result["body"], extra=json.loads(b"[" * 70 + b"]" * 70)))),
        "stamps.json": jcs(dict(result, timestamps=result["timestamps"] * 17)),
        "huge.json": b"{" + b" " * MAX_ENVELOPE_BYTES + b"}",
    }
    for name, raw in oversized.items():
        (evidence / name).write_bytes(raw)
    store = tmp_path / "store"
    harvest([ArchiveSource(evidence)], store)
    runner = CliRunner()
    out = runner.invoke(
        main, ["verify", str(store), "--trust", str(sim_election / "trust.toml"), "--json", "--workers", "1"]
    )
    assert out.exit_code == 0, out.output  # verified with warnings: REC-SCHEMA is an error check
    summary = json.loads(out.output)
    checks = {c["id"]: c for c in summary["checks"]}
    assert checks["REC-SCHEMA"]["status"] == "fail" and checks["REC-SCHEMA"]["failures"] == len(oversized)
    for check in ("REC-CID", "SIG-VALID", "AUTH-CHAIN", "BLK-SHAPE", "TREE-ROOT", "TALLY-TREE", "RES-MATCH"):
        assert checks[check]["status"] == "pass", check
    messages = " ".join(f["message"] for f in summary["sample"] if f["check"] == "REC-SCHEMA")
    assert "4,097 members, expected at most 4,096 (docs/limits.md)" in messages
    assert "nested more than 64 deep, at most 64 (docs/limits.md)" in messages
    assert "17 timestamps, expected at most 16" in messages
    assert "over the 8 MiB limit" in messages


def test_duckdb_keeps_to_its_memory_budget_and_spills(
    tmp_path: Path, sim_election: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """verify sets DuckDB's memory limit (DUCKDB_MEMORY, or VTAUDIT_DUCKDB_MEMORY) and its
    spill folder; a budget too small to hold the queries' data spills and changes nothing."""
    from auditor.verify.engine import verify_store

    harvest([ArchiveSource(sim_election / "evidence.car")], tmp_path / "store")
    trust = load_trust(sim_election / "trust.toml")
    plain = verify_store(tmp_path / "store", trust, workers=1, audit_dir=tmp_path / "a")
    # 48 MB: at 32 MB the references step's anti-join ran out of DuckDB's budget in about
    # one run in six (session 11's code too: its fixed buffers leave too little); 48 MB
    # held in 30 runs of 30
    monkeypatch.setenv("VTAUDIT_DUCKDB_MEMORY", "48MB")
    small = verify_store(tmp_path / "store", trust, workers=1, audit_dir=tmp_path / "b")
    assert [f.to_json() for f in small.findings] == [f.to_json() for f in plain.findings]
    assert small.verdict == plain.verdict == "verified"
    assert not (tmp_path / "b" / "spill").exists()  # removed when the audit closed
    # a budget too small is an error that says what to do, never a verdict
    monkeypatch.setenv("VTAUDIT_DUCKDB_MEMORY", "4MB")
    with pytest.raises(InputError, match=r"memory budget \(4MB\).*VTAUDIT_DUCKDB_MEMORY=8GB"):
        verify_store(tmp_path / "store", trust, workers=1, audit_dir=tmp_path / "d")
    from auditor.verify.context import Audit

    monkeypatch.setenv("VTAUDIT_DUCKDB_MEMORY", "32MB")
    audit = Audit(tmp_path / "store", trust, out=tmp_path / "c")
    try:
        limit = audit.rows("SELECT current_setting('memory_limit')")[0][0]
        assert limit.replace(" ", "").upper() in ("30.5MIB", "32.0MB", "32MB")
        assert audit.rows("SELECT current_setting('temp_directory')")[0][0] == str(tmp_path / "c" / "spill")
    finally:
        audit.close()
