"""Envelopes and record bodies (spec §3-§4): the vector record, every simulated record,
and malformed records, each rejected with a message naming the member, got and expected."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from auditor.errors import CidMismatchError, EncodingError, SchemaError
from auditor.model import envelope as envelope_module
from auditor.model.encoding import (
    MAX_ENVELOPE_BYTES,
    b64u_encode,
    cid_of,
    jcs,
    parse_json,
)
from auditor.model.envelope import (
    SIGNING_PREFIX,
    envelope_json,
    parse_envelope,
    record_digest,
    signed_message,
)
from auditor.model.records import (
    BODY_TYPES,
    TIMELINE_ORDER,
    BallotTemplate,
    Keyholder,
    Question,
    Timeline,
    parse_body,
)
from auditor.model.schema import ELL
from auditor.sim.election import SimConfig, simulate
from tests.conftest import load_vectors

RECORD = load_vectors()["record"]

# ---------------------------------------------------------------------------- the vector record


def test_vector_record_parses_with_cid_digest_and_message() -> None:
    data = RECORD["envelope_jcs_utf8"].encode("utf-8")
    env = parse_envelope(data, cid=RECORD["cid"])
    assert env.cid == RECORD["cid"] == cid_of(data)
    assert env.raw == data
    assert env.type == "keyholder"
    assert isinstance(env.body, Keyholder)
    assert env.body.to_json() == RECORD["body"]
    assert env.digest.hex() == RECORD["digest_hex"]
    assert env.signed_message.hex() == RECORD["signed_message_hex"]
    assert len(env.signed_message) == 46
    assert env.signed_message.startswith(SIGNING_PREFIX)
    assert env.timestamps == ()
    assert env.signer_keys == {RECORD["body"]["registrantKey"]}
    # The free functions agree with the parsed record.
    assert record_digest("keyholder", RECORD["body"]).hex() == RECORD["digest_hex"]
    assert signed_message(env.digest).hex() == RECORD["signed_message_hex"]
    signatures = [{"key": s.key, "sig": s.sig} for s in env.signatures]
    assert jcs(envelope_json("keyholder", RECORD["body"], signatures, [])) == data


def test_vector_record_without_cid_tolerates_formatting() -> None:
    obj = json.loads(RECORD["envelope_jcs_utf8"])
    loose = json.dumps(obj, indent=2, ensure_ascii=True).encode("ascii")
    env = parse_envelope(loose)
    assert env.cid == RECORD["cid"]
    assert env.raw == RECORD["envelope_jcs_utf8"].encode("utf-8")
    assert env.digest.hex() == RECORD["digest_hex"]


# ---------------------------------------------------------------------------- simulated records


@pytest.fixture(scope="module")
def key_early_election(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default simulation publishes no key_disclosure; this small one does."""
    out = tmp_path_factory.mktemp("key-early")
    simulate(SimConfig(voters=30, seed=5, workers=1, tamper="key-early", formats=("dir",)), out)
    return out


def _records_of(root: Path, record_type: str) -> list[Path]:
    return sorted((root / "records" / record_type).glob("*.json"))


def test_simulated_election_has_only_known_types(sim_election: Path) -> None:
    folders = {p.name for p in (sim_election / "records").iterdir()}
    assert folders <= set(BODY_TYPES)
    assert set(BODY_TYPES) - folders <= {"key_disclosure"}  # that one needs a tampered run


@pytest.mark.parametrize("record_type", sorted(BODY_TYPES))
def test_every_simulated_record_parses(
    record_type: str, sim_election: Path, request: pytest.FixtureRequest
) -> None:
    root = sim_election
    if record_type == "key_disclosure":
        root = request.getfixturevalue("key_early_election")
    files = _records_of(root, record_type)
    assert files, f"the simulation published no {record_type}"
    for path in files:
        data = path.read_bytes()
        env = parse_envelope(data, cid=path.stem)
        assert env.type == record_type
        assert type(env.body) is BODY_TYPES[record_type]
        assert env.cid == path.stem
        assert env.raw == data
        body = parse_json(data)["body"]
        assert env.body.to_json() == body  # nothing lost or changed in the typed body
        assert env.digest == record_digest(record_type, body)
        assert env.signatures  # every record type is signed by someone
        assert type(parse_body(record_type, body)) is BODY_TYPES[record_type]


def test_simulated_templates_and_timelines_are_coherent(sim_election: Path) -> None:
    for path in _records_of(sim_election, "ballot_template"):
        assert parse_envelope(path.read_bytes()).body.problems() == []
    for path in _records_of(sim_election, "election_revision"):
        assert parse_envelope(path.read_bytes()).body.timeline.order_problems() == []


# ---------------------------------------------------------------------------- malformed records


def _first(root: Path, record_type: str) -> dict[str, Any]:
    return parse_json(_records_of(root, record_type)[0].read_bytes())


def _with(record_type: str, change: Callable[[dict[str, Any]], None]) -> Any:
    """A case builder: the first simulated record of a type, changed, as canonical bytes."""

    def build(root: Path) -> tuple[bytes, str | None]:
        obj = copy.deepcopy(_first(root, record_type))
        change(obj)
        return jcs(obj), None

    return build


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """Set (or with value _DELETE, delete) a dotted member path such as body.timeline.KA."""

    def change(obj: dict[str, Any]) -> None:
        *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        target: Any = obj
        for part in parents:
            target = target[part]
        if value is _DELETE:
            del target[last]
        else:
            target[last] = value(target[last]) if callable(value) else value

    return change


_DELETE = object()
IDENTITY = bytes([1]) + bytes(31)  # the neutral element: small order
ORDER_8 = bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a")
P = 2**255 - 19


def _b64u_int(n: int) -> str:
    return b64u_encode(n.to_bytes(32, "little"))


def _raw_replace(record_type: str, old: bytes, new: bytes) -> Any:
    def build(root: Path) -> tuple[bytes, str | None]:
        data = jcs(_first(root, record_type))
        assert data.count(old) == 1
        return data.replace(old, new), None

    return build


def _unsorted_text_case(root: Path) -> tuple[bytes, str | None]:
    """A result whose text answers (question "comment") are listed in reverse order."""
    for path in _records_of(root, "result"):
        obj = parse_json(path.read_bytes())
        values = obj["body"]["counts"]["comment"]["values"]
        if len(values) > 1:
            values.reverse()
            return jcs(obj), None
    raise AssertionError("no result with two different text answers")


def _too_big(root: Path) -> tuple[bytes, str | None]:
    return b"{" + b" " * MAX_ENVELOPE_BYTES + b"}", None


def _non_canonical_with_cid(root: Path) -> tuple[bytes, str | None]:
    data = json.dumps(_first(root, "dispute"), indent=1).encode("utf-8")
    return data, cid_of(data)  # the CID matches, but the bytes are not the JCS bytes


# (id, build(root) -> (bytes, claimed CID), member path, text in got, text in expected)
MALFORMED = [
    (
        "float",
        _with("keyholder", _set("body.title", 1.5)),
        "envelope",
        "1.5 (floating point)",
        "spec §2",
    ),
    (
        "duplicate member",
        _raw_replace("keyholder", b'"name":', b'"name":"Eve","name":'),
        "envelope",
        "duplicate member name 'name'",
        "spec §2",
    ),
    (
        "huge integer",
        _raw_replace("keyholder", b'"v":1', b'"v":' + b"9" * 5000),
        "envelope",
        "outside",
        "spec §2",
    ),
    (
        "missing body member",
        _with("keyholder", _set("body.title", _DELETE)),
        "body",
        "missing title",
        "exactly the members",
    ),
    (
        "unknown body member",
        _with("dispute", _set("body.note", "x")),
        "body",
        "unknown note",
        "exactly the members",
    ),
    (
        "missing envelope member",
        _with("dispute", _set("timestamps", _DELETE)),
        "envelope",
        "members body, signatures, type, v",
        "exactly v, type",
    ),
    (
        "unknown envelope member",
        _with("dispute", _set("cid", "x")),
        "envelope",
        "members body, cid,",
        "exactly v, type",
    ),
    (
        "unknown type",
        _with("dispute", _set("type", "complaint")),
        "type",
        "'complaint'",
        "a record type of spec §4",
    ),
    (
        "type not a string",
        _with("dispute", _set("type", ["dispute"])),
        "type",
        "an array of 1",
        "a record type",
    ),
    ("v is 2", _with("dispute", _set("v", 2)), "v", "the integer 2", "1"),
    ("v is true", _with("dispute", _set("v", True)), "v", "true", "1"),
    (
        "b64u padding",
        _with("keyholder", _set("body.registrantKey", "AA==")),
        "body.registrantKey",
        "'AA=='",
        "b64u of 32 bytes",
    ),
    (
        "b64u alphabet",
        _with("keyholder", _set("body.registrantKey", "+/8")),
        "body.registrantKey",
        "'+/8'",
        "b64u of 32 bytes",
    ),
    (
        "31-byte key",
        _with("keyholder", _set("body.registrantKey", b64u_encode(bytes(31)))),
        "body.registrantKey",
        "31 bytes",
        "32 bytes",
    ),
    (
        "31-byte signer key",
        _with("keyholder", _set("signatures.0.key", b64u_encode(bytes(31)))),
        "signatures[0].key",
        "31 bytes",
        "32 bytes",
    ),
    (
        "63-byte signature",
        _with("keyholder", _set("signatures.0.sig", b64u_encode(bytes(63)))),
        "signatures[0].sig",
        "63 bytes",
        "64 bytes",
    ),
    (
        "signatures not an array",
        _with("keyholder", _set("signatures", {})),
        "signatures",
        "an object",
        "an array",
    ),
    (
        "timestamp not b64u",
        _with("result", _set("timestamps.0", "MII=")),
        "timestamps[0]",
        "MII=",
        "without padding",
    ),
    (
        "empty timestamp",
        _with("result", _set("timestamps.0", "")),
        "timestamps[0]",
        "an empty token",
        "TimeStampToken",
    ),
    (
        "bad CID member",
        _with("dispute", _set("body.receipt", lambda c: c[:-1] + "b")),
        "body.receipt",
        "the string",
        "unused trailing bits",
    ),
    (
        "small-order point (identity)",
        _with("keyholder", _set("body.electionKey", b64u_encode(IDENTITY))),
        "body.electionKey",
        "not a valid point",
        "prime-order",
    ),
    (
        "small-order point (order 8)",
        _with("keyholder", _set("body.electionKey", b64u_encode(ORDER_8))),
        "body.electionKey",
        "not a valid point",
        "prime-order",
    ),
    (
        "non-canonical point (y = p + 1)",
        _with("keyholder", _set("body.electionKey", _b64u_int(P + 1))),
        "body.electionKey",
        "not a valid point",
        "prime-order",
    ),
    (
        "non-canonical point (y = 2^255 - 1)",
        _with("keyholder", _set("body.electionKey", _b64u_int(2**255 - 1))),
        "body.electionKey",
        "not a valid point",
        "prime-order",
    ),
    (
        "point not on the curve",
        _with("keyholder", _set("body.electionKey", _b64u_int(2))),
        "body.electionKey",
        "not a valid point",
        "prime-order",
    ),
    (
        "revision key small order",
        _with("election_revision", _set("body.electionKey", b64u_encode(IDENTITY))),
        "body.electionKey",
        "not a valid point",
        "prime-order",
    ),
    (
        "zero scalar",
        _with("key_release", _set("body.privateKey", _b64u_int(0))),
        "body.privateKey",
        "zero or not reduced",
        "0 < k < ℓ",
    ),
    (
        "scalar = ℓ",
        _with("key_release", _set("body.privateKey", _b64u_int(ELL))),
        "body.privateKey",
        "zero or not reduced",
        "0 < k < ℓ",
    ),
    (
        "scalar = 2^256 - 1",
        _with("key_release", _set("body.privateKey", b64u_encode(b"\xff" * 32))),
        "body.privateKey",
        "zero or not reduced",
        "0 < k < ℓ",
    ),
    (
        "threshold > administrators",
        _with(
            "administration",
            lambda o: o["body"].update(administrators=o["body"]["administrators"][:2], threshold=3),
        ),
        "body.threshold",
        "3",
        "at most the 2 administrators",
    ),
    (
        "threshold 0",
        _with("administration", _set("body.threshold", 0)),
        "body.threshold",
        "the integer 0",
        "≥ 1",
    ),
    (
        "no administrators",
        _with("administration", _set("body.administrators", [])),
        "body.administrators",
        "0 items",
        "at least 1",
    ),
    (
        "timeline missing KA",
        _with("election_revision", _set("body.timeline.KA", _DELETE)),
        "body.timeline",
        "missing KA",
        "exactly the members KI, KA",
    ),
    (
        "negative time",
        _with("election_revision", _set("body.timeline.VS", -1)),
        "body.timeline.VS",
        "the integer -1",
        "≥ 0",
    ),
    (
        "one participant",
        _with("election_revision", _set("body.runoff.participants", 1)),
        "body.runoff.participants",
        "the integer 1",
        "≥ 2",
    ),
    (
        "negative ballots",
        _with("result", _set("body.counts.mayor.ballots", -1)),
        "body.counts.mayor.ballots",
        "the integer -1",
        "a count ≥ 0",
    ),
    (
        "negative option count",
        _with("result", _set("body.counts.transit.options.yes", -3)),
        "body.counts.transit.options.yes",
        "the integer -3",
        "a count ≥ 0",
    ),
    (
        "negative rank count",
        _with("result", _set("body.counts.route.options.river.0", -1)),
        "body.counts.route.options.river[0]",
        "the integer -1",
        "a count ≥ 0",
    ),
    (
        "unknown histogram type",
        _with("result", _set("body.counts.mayor.type", "approval")),
        "body.counts.mayor.type",
        "'approval'",
        "select, rank, score or text",
    ),
    (
        "histogram type an array",
        _with("tally_node", _set("body.counts.mayor.type", [])),
        "body.counts.mayor.type",
        "an array of 0",
        "select, rank, score or text",
    ),
    (
        "score entry extra member",
        _with("result", _set("body.counts.budget.options.parks.mean", 2)),
        "body.counts.budget.options.parks",
        "members count, mean, sum",
        "exactly count, sum",
    ),
    (
        "text values unsorted",
        _unsorted_text_case,
        "body.counts.comment.values[1]",
        "after a text ≥ it",
        "texts sorted by UTF-8 bytes, distinct",
    ),
    (
        "bool for an int",
        _with("election", _set("body.date", True)),
        "body.date",
        "true",
        "an integer",
    ),
    (
        "bool for a count",
        _with("registration_roll", _set("body.count", False)),
        "body.count",
        "false",
        "an integer",
    ),
    (
        "int for a bool",
        _with("election_revision", _set("body.runoff.disputeMargin", 1)),
        "body.runoff.disputeMargin",
        "the integer 1",
        "true or false",
    ),
    (
        "string for an int",
        _with("result", _set("body.voters", "37")),
        "body.voters",
        "the string '37'",
        "an integer",
    ),
    (
        "unknown receipt result",
        _with("receipt", _set("body.result", "lost")),
        "body.result",
        "'lost'",
        "one of 'accepted'",
    ),
    (
        "short ciphertext",
        _with("vote_block", _set("body.votes.0", b64u_encode(bytes(47)))),
        "body.votes[0]",
        "47 bytes",
        "at least 48 bytes",
    ),
    (
        "tally node one child for two leaves",
        _with(
            "tally_node",
            lambda o: o["body"].update(start=0, end=2, children=o["body"]["children"][:1]),
        ),
        "body.children",
        "1 children",
        "2 for [0, 2)",
    ),
    (
        "body not an object",
        _with("dispute", _set("body", [])),
        "body",
        "an array of 0",
        "an object",
    ),
    (
        "envelope over 8 MiB",
        _too_big,
        "envelope",
        f"{MAX_ENVELOPE_BYTES + 2} bytes",
        f"at most {MAX_ENVELOPE_BYTES} bytes",
    ),
    (
        "non-canonical bytes under a CID",
        _non_canonical_with_cid,
        "envelope",
        "not canonical JSON",
        "JCS",
    ),
    (
        "top level not an object",
        lambda root: (b"[]", None),
        "envelope",
        "an array of 0",
        "a JSON object",
    ),
]


@pytest.mark.parametrize(
    ("build", "path", "got", "expected"), [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED]
)
def test_malformed_record_rejected(
    build: Callable[[Path], tuple[bytes, str | None]],
    path: str,
    got: str,
    expected: str,
    sim_election: Path,
) -> None:
    data, cid = build(sim_election)
    with pytest.raises(SchemaError) as info:
        parse_envelope(data, cid=cid)
    error = info.value
    assert error.path == path
    assert got in error.got
    assert expected in error.expected
    message = str(error)
    assert f"{path}: got {error.got}, expected {error.expected}" in message
    assert error.record  # the record is named: its type and CID, or "envelope"


def test_body_errors_name_the_record_type_and_cid(sim_election: Path) -> None:
    obj = _first(sim_election, "keyholder")
    obj["body"]["registrantKey"] = b64u_encode(bytes(31))
    data = jcs(obj)
    with pytest.raises(SchemaError) as info:
        parse_envelope(data)
    assert info.value.record == f"keyholder {cid_of(data)}"
    assert str(info.value).startswith(f"keyholder {cid_of(data)} body.registrantKey: got 31 bytes")


def test_oversized_envelope_rejected_before_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_parsing(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("parse_json must not be reached")

    monkeypatch.setattr(envelope_module, "parse_json", no_parsing)
    monkeypatch.setattr(envelope_module, "cid_of", no_parsing)  # nor hashed
    with pytest.raises(SchemaError, match="8388609 bytes"):
        parse_envelope(b"x" * (MAX_ENVELOPE_BYTES + 1), cid=RECORD["cid"])


def test_envelope_of_exactly_8_mib_is_accepted() -> None:
    data = RECORD["envelope_jcs_utf8"].encode("utf-8")
    padded = data[:-1] + b" " * (MAX_ENVELOPE_BYTES - len(data)) + b"}"
    assert len(padded) == MAX_ENVELOPE_BYTES
    assert parse_envelope(padded).cid == RECORD["cid"]


def test_cid_mismatch(sim_election: Path) -> None:
    first, second = _records_of(sim_election, "dispute")[:2]
    data = first.read_bytes()
    with pytest.raises(CidMismatchError) as info:
        parse_envelope(data, cid=second.stem)
    error = info.value
    assert isinstance(error, EncodingError)
    assert (error.claimed, error.actual) == (second.stem, first.stem)
    assert (
        str(error)
        == f"bytes served as {second.stem}: got bytes hashing to {first.stem}, expected {second.stem}"
    )


def test_cid_mismatch_is_checked_before_the_json(sim_election: Path) -> None:
    with pytest.raises(CidMismatchError):
        parse_envelope(b"not json", cid=_records_of(sim_election, "dispute")[0].stem)


def test_lone_surrogate_is_rejected(sim_election: Path) -> None:
    data = jcs(_first(sim_election, "keyholder")).replace(b'"title":"', b'"title":"\\ud800', 1)
    with pytest.raises(SchemaError) as info:
        parse_envelope(data)
    assert info.value.path == "envelope"


# ---------------------------------------------------------------------------- timeline order


def _timeline(**changes: int) -> Timeline:
    values = {code: 1000 + 10 * i for i, code in enumerate(TIMELINE_ORDER)}
    values.update(changes)
    return Timeline.parse(values, "timeline")


STRICT = {("VS", "AV"), ("AV", "HV"), ("HV", "RK"), ("RK", "TS")}
EDGES = list(pairwise(TIMELINE_ORDER))


def test_timeline_in_order() -> None:
    assert _timeline().order_problems() == []
    assert len(EDGES) == 12 and len(STRICT) == 4


@pytest.mark.parametrize(("a", "b"), EDGES, ids=[f"{a}-{b}" for a, b in EDGES])
def test_timeline_equal_times(a: str, b: str) -> None:
    timeline = _timeline(**{b: 1000 + 10 * TIMELINE_ORDER.index(a)})
    if (a, b) in STRICT:  # VS < AV < HV < RK < TS
        assert timeline.order_problems() == [
            f"{a} ({getattr(timeline, a)}) is not before {b} ({getattr(timeline, b)})"
        ]
    else:  # KI ≤ KA ≤ KR ≤ RE ≤ BF ≤ VS, TS ≤ V ≤ CS ≤ C
        assert timeline.order_problems() == []


@pytest.mark.parametrize(("a", "b"), EDGES, ids=[f"{a}-{b}" for a, b in EDGES])
def test_timeline_reversed_pair(a: str, b: str) -> None:
    timeline = _timeline(**{b: 1000 + 10 * TIMELINE_ORDER.index(a) - 1})
    problems = timeline.order_problems()
    assert len(problems) == 1
    verb = "is not before" if (a, b) in STRICT else "is after"
    assert problems[0] == f"{a} ({getattr(timeline, a)}) {verb} {b} ({getattr(timeline, b)})"


def test_timeline_reports_every_violation() -> None:
    # KR before KA (the simulator's timeline-order tamper) and AV == VS at once.
    timeline = _timeline(KR=1005, AV=1050)
    assert timeline.order_problems() == [
        "KA (1010) is after KR (1005)",
        "VS (1050) is not before AV (1050)",
    ]


# ---------------------------------------------------------------------------- template coherence

CID = load_vectors()["cid"][0]["cid"]


def _question(code: str = "q", type_: str = "select", **changes: Any) -> dict[str, Any]:
    q: dict[str, Any] = {
        "code": code,
        "title": code.upper(),
        "type": type_,
        "options": [{"code": "a", "title": "A"}, {"code": "b", "title": "B"}],
        "min": 0,
        "max": 1,
        "score": None,
        "required": False,
        "dependsOn": None,
    }
    if type_ == "text":
        q.update(options=[], min=1, max=100)
    if type_ == "score":
        q.update(min=0, max=0, score={"min": 0, "max": 5, "step": 1})
    q.update(changes)
    return q


def _template(*questions: dict[str, Any]) -> BallotTemplate:
    body = {
        "election": CID,
        "authority": CID,
        "administration": CID,
        "district": "north",
        "revision": 1,
        "questions": list(questions),
    }
    return BallotTemplate.parse(body)


QUESTION_CASES = [
    ("valid select", _question(), None),
    ("valid rank", _question(type_="rank", max=2), None),
    ("valid score", _question(type_="score"), None),
    ("valid text", _question(type_="text"), None),
    (
        "negative score range ok",
        _question(type_="score", score={"min": -2, "max": 4, "step": 2}),
        None,
    ),
    (
        "duplicate option codes",
        _question(options=[{"code": "a", "title": "A"}, {"code": "a", "title": "B"}]),
        "option codes are not distinct",
    ),
    (
        "text with options",
        _question(type_="text", options=[{"code": "a", "title": "A"}]),
        "a text question has 1 options, expected none",
    ),
    ("select without options", _question(options=[], max=0), "a select question has no options"),
    (
        "score without range",
        _question(type_="score", score=None),
        "a score question has score null",
    ),
    (
        "score min > max",
        _question(type_="score", score={"min": 5, "max": 1, "step": 1}),
        "score min 5 > max 1",
    ),
    ("score with min/max", _question(type_="score", max=1), "a score question has min/max 0/1, expected 0/0"),
    (
        "select with score range",
        _question(score={"min": 0, "max": 1, "step": 1}),
        "a select question has a score range",
    ),
    ("min > max", _question(min=2, max=1), "min 2 > max 1"),
    ("text min > max", _question(type_="text", min=10, max=5), "min 10 > max 5"),
    ("rank max > options: unreachable, not malformed (§4.5)", _question(type_="rank", max=3), None),
    ("select max > options", _question(max=5), None),
    ("rank max over the limit", _question(type_="rank", max=1025), "max 1,025 is over the limit of 1,024 (D35)"),
]


@pytest.mark.parametrize(
    ("question", "problem"), [c[1:] for c in QUESTION_CASES], ids=[c[0] for c in QUESTION_CASES]
)
def test_question_problems(question: dict[str, Any], problem: str | None) -> None:
    problems = Question.parse(question, "q").problems()
    assert problems == ([] if problem is None else [f"question q: {problem}"])


def _depends(question: str, *values: str) -> dict[str, Any]:
    return {"question": question, "values": list(values)}


TEMPLATE_CASES = [
    ("valid dependsOn", [_question("p"), _question("c", dependsOn=_depends("p", "b"))], []),
    (
        "dependsOn a text answer",
        [_question("p", "text"), _question("c", dependsOn=_depends("p", "yes"))],
        [],
    ),
    (
        "duplicate question codes",
        [_question("p"), _question("p", "text")],
        ["question code p appears twice"],
    ),
    (
        "dependsOn an unknown question",
        [_question("p"), _question("c", dependsOn=_depends("zz", "a"))],
        ["question c depends on zz, which is not an earlier question"],
    ),
    (
        "dependsOn a later question",
        [_question("c", dependsOn=_depends("p", "a")), _question("p")],
        ["question c depends on p, which is not an earlier question"],
    ),
    (
        "dependsOn itself",
        [_question("c", dependsOn=_depends("c", "a"))],
        ["question c depends on c, which is not an earlier question"],
    ),
    (
        "dependsOn an unknown option",
        [_question("p"), _question("c", dependsOn=_depends("p", "a", "zz"))],
        ["question c depends on unknown option zz"],
    ),
    (
        "question problems are included",
        [_question("p", min=2, max=1)],
        ["question p: min 2 > max 1"],
    ),
]


@pytest.mark.parametrize(
    ("questions", "problems"), [c[1:] for c in TEMPLATE_CASES], ids=[c[0] for c in TEMPLATE_CASES]
)
def test_template_problems(questions: list[dict[str, Any]], problems: list[str]) -> None:
    template = _template(*questions)
    assert template.problems() == problems


def test_template_question_lookup() -> None:
    template = _template(_question("p"), _question("c", "text"))
    assert template.question("c") is template.questions[1]
    assert template.question("zz") is None


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"type": "approval"}, "q.type"),
        ({"code": "has space"}, "q.code"),
        ({"code": "x" * 65}, "q.code"),
        ({"min": -1}, "q.min"),
        ({"score": {"min": 0, "max": 1, "step": 0}}, "q.score.step"),
        ({"dependsOn": {"question": "p", "values": ["bad code"]}}, "q.dependsOn.values[0]"),
        ({"options": [{"code": "a"}]}, "q.options[0]"),
    ],
)
def test_question_schema_errors(change: dict[str, Any], path: str) -> None:
    with pytest.raises(SchemaError) as info:
        Question.parse(_question(**change), "q")
    assert info.value.path == path


def test_a_template_may_have_no_questions() -> None:
    """Spec §4.5 gives `questions` [Question] with no bound (unlike `keyholders`, ≥ 1):
    a template without questions is well formed, its histogram {} and every vote of it
    (no answers) valid."""
    from auditor.model.ballot import valid_vote_check, vote_problems
    from auditor.model.entries import VoteEntry
    from auditor.model.histogram import zero
    from auditor.model.records import BallotTemplate

    cid = "bagaaiera" + "a" * 52
    body = {"election": cid, "authority": cid, "administration": cid, "district": "x", "revision": 1}
    template = BallotTemplate.parse({**body, "questions": []}, "body")
    assert template.problems() == [] and zero(template) == {}
    vote = VoteEntry(cid, "A" * 22, ())
    assert vote_problems(template, vote) == [] and valid_vote_check(template)(vote)
