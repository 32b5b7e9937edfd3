"""The harvest's bulk path (auditor.store.bulk) against the record-by-record path.

The bulk path only ever accepts: whatever it is unsure of goes down the slow path. So the
property under test is that a record it accepts is one the slow path accepts, with the
same CID, type and rows, and that it does accept the records of real elections (or it
would be a slow path under another name).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

import orjson
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditor import sources
from auditor.errors import EncodingError
from auditor.harvest import ArchiveSource, harvest
from auditor.model.encoding import b64u_decode, b64u_encode, b64u_pattern, cid_of, cid_to_binary, jcs
from auditor.model.schema import Plan
from auditor.sim.tampers import TAMPERS
from auditor.sources import RawRecord, chunked, iter_source
from auditor.store.bulk import (
    _NO,
    _column_check_of,
    b64u_accepts,
    cid_binaries,
    cid_texts,
    decode_b64u,
    prepare_batch,
)
from auditor.store.car import CarWriter, read_car
from auditor.store.evidence import EvidenceStore, HarvestStats, connect
from tests.fuzzing import batch_agrees, bulk_agrees, mutate


def _records(election: Path) -> list[RawRecord]:
    return list(iter_source(election / "evidence.car"))


# ---------------------------------------------------------------------------- the atoms


def test_orjson_writes_every_character_as_jcs_does() -> None:
    """The canonical round trip rests on this: orjson's output is the JCS form."""
    for code in range(0x110000):
        if 0xD800 <= code <= 0xDFFF:
            continue
        text = chr(code)
        assert orjson.dumps(text) == jcs(text), hex(code)
    value = {"b": [1, -(2**53) + 1, True, None, {"z": "é\u2028\x7f", "a": ""}], "a": 2**53 - 1}
    assert orjson.dumps(value, option=orjson.OPT_SORT_KEYS) == jcs(value)


_B64U_CHARS = st.text(alphabet="ABCQgwAEIaz09_-+/=\n é", max_size=12)


@settings(max_examples=400)
@given(text=st.one_of(_B64U_CHARS, st.binary(max_size=70).map(b64u_encode)))
def test_the_base64url_pattern_accepts_what_the_decoder_accepts(text: str) -> None:
    try:
        expected: bytes | None = b64u_decode(text)
    except EncodingError:
        expected = None
    assert b64u_accepts(text) == (expected is not None)
    if expected is not None:
        assert decode_b64u([text]) == [expected]
    for length in (1, 2, 3, 32, 64):
        assert bool(b64u_pattern(length).fullmatch(text)) == (
            expected is not None and len(expected) == length
        )


@settings(max_examples=300)
@given(
    texts=st.lists(st.one_of(_B64U_CHARS, st.binary(max_size=40).map(b64u_encode)), min_size=1, max_size=6)
)
def test_a_column_is_accepted_only_if_every_text_is(texts: list[str]) -> None:
    """Whole-column base64url checks (one decoder call for the column) against the
    strict decoder, text by text: '+', '/', '=', spaces, non-ASCII and set unused bits
    anywhere in the column refuse it."""
    try:
        expected: list[bytes] | None = [b64u_decode(t) for t in texts]
    except EncodingError:
        expected = None
    column = _column_check_of(Plan("b64u"))(texts)
    assert (None if column is _NO else column.to_pylist()) == expected
    for length in {len(t) * 3 // 4 for t in texts} - {0}:
        fixed = _column_check_of(Plan("b64u", length=length))(texts)
        same_length = expected is not None and all(len(b) == length for b in expected)
        assert (None if fixed is _NO else fixed.to_pylist()) == (expected if same_length else None)


@settings(max_examples=100)
@given(values=st.lists(st.binary(max_size=80), min_size=1, max_size=30))
def test_a_column_decodes_in_one_call(values: list[bytes]) -> None:
    """Texts of every length mod 4, side by side: padding must not end the decoding."""
    assert decode_b64u([b64u_encode(v) for v in values]) == values


@settings(max_examples=50)
@given(data=st.lists(st.binary(max_size=40), max_size=20))
def test_cid_binaries_undo_cid_texts(data: list[bytes]) -> None:
    texts = [cid_of(d) for d in data]
    assert cid_binaries(texts) == [cid_to_binary(t) for t in texts]


def test_cid_binaries_are_made_a_slice_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """A million CIDs at once would take hundreds of MB of arrays (the roll's peak)."""
    from auditor.store import bulk

    texts = [cid_of(bytes([i])) for i in range(10)]
    monkeypatch.setattr(bulk, "_CID_SLICE", 3)
    assert cid_binaries(texts) == [cid_to_binary(t) for t in texts]
    assert cid_binaries([]) == []


def test_cid_binaries_take_canonical_cids_only() -> None:
    good = cid_of(b"{}")
    for bad in (good[:-1], good[:-1] + "b", good.upper(), good[:-1] + "1", "x" * 61):
        with pytest.raises(ValueError):
            cid_binaries([good, bad])


@settings(max_examples=50)
@given(data=st.lists(st.binary(max_size=40), max_size=20))
def test_cid_texts_are_the_cids(data: list[bytes]) -> None:
    import hashlib

    assert cid_texts([hashlib.sha256(d).digest() for d in data]) == [cid_of(d) for d in data]


# ---------------------------------------------------------------------------- records


def test_every_record_of_an_election_takes_the_fast_path(sim_election: Path) -> None:
    records = _records(sim_election)
    assert all(bulk_agrees(r) for r in records)
    batch = prepare_batch(records)
    assert batch.fast == len(records) and not batch.rejected
    # and the texts of files (claimed by name) and unclaimed NDJSON lines too
    unclaimed = [RawRecord(r.raw, None, "line") for r in records[:50]]
    assert prepare_batch(unclaimed).fast == 50


@pytest.mark.parametrize("tamper", sorted(TAMPERS))
def test_tampered_elections_give_the_same_rows(sims: Callable[[str | None], Path], tamper: str) -> None:
    for record in _records(sims(tamper)):
        bulk_agrees(record)


def _variants(raw: bytes) -> dict[str, bytes]:
    """Edits of one canonical record that the fast path must leave to the slow one."""
    doc = json.loads(raw)
    text = raw.decode()
    first = text.index('":') + 2  # after the first member name
    return {
        "whitespace": json.dumps(doc, indent=1, sort_keys=True).encode(),
        "unsorted": json.dumps(dict(reversed(list(doc.items()))), separators=(",", ":")).encode(),
        "duplicate member": raw[:-1] + b',"v":1}',
        "float v": raw.replace(b'"v":1}', b'"v":1.0}'),
        "true v": raw.replace(b'"v":1}', b'"v":true}'),
        "negative zero": raw.replace(b'"v":1}', b'"v":-0}'),
        "big integer": raw.replace(b'"v":1}', b'"v":18446744073709551617}'),
        "escaped letter": (text[:first] + text[first:].replace("a", "\\u0061", 1)).encode(),
        "lone surrogate": raw.replace(b'"body":{', b'"body":{"\\ud800":1,', 1),
        "non-ascii member": raw.replace(b'"body":{', '"body":{"é":1,'.encode(), 1),
        "invalid utf-8": raw.replace(b'"body":{', b'"body":{"\xff":1,', 1),
        "deep nesting": raw.replace(b'"body":{', b'"body":{"a":' + b"[" * 100 + b"]" * 100 + b",", 1),
        "trailing newline": raw + b"\n",
        "padding": raw.replace(b'"sig":"', b'"sig":"==', 1),
        "plus": raw.replace(b'"sig":"', b'"sig":"+', 1),
    }


def test_edited_records_go_down_the_slow_path(sim_election: Path) -> None:
    by_type: dict[str, RawRecord] = {}
    for record in _records(sim_election):
        by_type.setdefault(json.loads(record.raw)["type"], record)
    for record_type, record in by_type.items():
        for name, data in _variants(record.raw).items():
            for claimed in (None, cid_of(data), record.claimed_cid):
                took_fast = bulk_agrees(RawRecord(data, claimed, name))
                assert not took_fast or (name == "trailing newline" and claimed is None), (record_type, name)


def _edit_body(raw: bytes, edit: Callable[[dict], None]) -> bytes:
    doc = json.loads(raw)
    edit(doc["body"])
    return jcs(doc)


def _unused_bits_set(text: str) -> str:
    """``text`` made to end in a character whose unused low bits are not zero."""
    return text[:-1] + "B" if len(text) & 3 else text + "AB"


_EDITS: list[tuple[str, Callable[[dict], None]]] = [
    ("registrant", lambda b: b.update(key=b["key"][:-1])),
    ("registrant", lambda b: b.update(key=b["key"][:-1] + "B")),  # unused bits set
    ("registrant", lambda b: b.update(registered=-1)),
    ("registrant", lambda b: b.update(registered=2**53)),
    ("registrant", lambda b: b.update(district=["north"])),
    ("registrant", lambda b: b.pop("district")),
    ("registrant", lambda b: b.update(registered=True)),
    ("registrant", lambda b: b.update(registered=1.5)),
    ("registrant", lambda b: b.update(registrationAuthority=b["registrationAuthority"][:-1])),  # 60 + 62
    ("registrant", lambda b: b.update(registrationAuthority=b["registrationAuthority"] + "a")),
    ("registrant", lambda b: b.update(registrationAuthority=b["registrationAuthority"][:-1] + "b")),
    ("registrant", lambda b: b.update(district=None)),
    (
        "vote_block",
        lambda b: b.update(
            votes=[*b["votes"][:-1], b["votes"][-1] + "A" * ((1 - len(b["votes"][-1])) % 4 or 4)]
        ),
    ),  # 1 mod 4
    ("vote_block", lambda b: b.update(votes=[*b["votes"][:-1], _unused_bits_set(b["votes"][-1])])),
    ("vote_block", lambda b: b.update(voters=[*b["voters"][:-1], 7])),
    ("vote_block", lambda b: b.update(voters=[*b["voters"][:-1], b["voters"][-1].replace("A", "+", 1)])),
    ("vote_block", lambda b: b.update(members="members")),
    ("receipt", lambda b: b.update(result=["accepted"])),
    (
        "receipt",
        lambda b: b.update(
            registrants=[*b["registrants"], b["registrants"][0][:-1] if b["registrants"] else "x"]
        ),
    ),
    ("dispute", lambda b: b.update(claim="missing\n")),
    ("vote_block", lambda b: b.update(votes=[*b["votes"][:-1], b["votes"][-1][:40]])),  # too short
    ("vote_block", lambda b: b.update(members=[*b["members"], "B" * 43])),  # unused bits set
    ("vote_block", lambda b: b.update(members=b["members"] * 1000)),  # over the limit
    ("receipt", lambda b: b.update(result="maybe")),
    ("tally_node", lambda b: b.update(end=b["start"])),
    ("tally_node", lambda b: b.update(children=b["children"] * 3)),
    ("tally_node", lambda b: b["counts"].update({"é": b["counts"][next(iter(b["counts"]))]})),
    ("registration_roll", lambda b: b["districts"].update({"é": 1})),
    ("administration", lambda b: b.update(threshold=len(b["administrators"]) + 1)),
]


def _schema_edits(by_type: dict[str, list[RawRecord]]) -> list[tuple[str, bytes]]:
    """Canonical records that break the schema, one per edit of _EDITS."""
    return [(t, _edit_body(by_type[t][0].raw, edit)) for t, edit in _EDITS if t in by_type]


def test_schema_edits_in_canonical_form_agree(sim_election: Path) -> None:
    """Canonical records that break the schema: refused by both paths, with one reason."""
    by_type: dict[str, list[RawRecord]] = {}
    for record in _records(sim_election):
        by_type.setdefault(json.loads(record.raw)["type"], []).append(record)
    for record_type, data in _schema_edits(by_type):
        assert not bulk_agrees(RawRecord(data, cid_of(data), record_type)), record_type


def test_mutated_records_agree(sim_election: Path) -> None:
    rng = random.Random(7)
    records = [r.raw for r in _records(sim_election)]
    for _ in range(1500):
        data = mutate(rng, rng.choice(records))
        bulk_agrees(RawRecord(data, rng.choice([None, cid_of(data)]), "mutant"))


# ---------------------------------------------------------------------------- CAR ranges


def _broken_car(election: Path, path: Path) -> None:
    """The election's CAR with a bad block, a CID of another kind, a zero run and a
    truncated last section in the middle and at the end."""
    with open(election / "evidence.car", "rb") as f:
        header, sections = read_car(f)
        blocks = [s for s in sections if hasattr(s, "data")]
    with open(path, "wb") as out:
        writer = CarWriter(out, header.roots)
        for i, block in enumerate(blocks):
            data = block.data
            if i == 5:
                data = data.replace(b'"v":1', b'"v":2')  # no longer its CID's bytes
            if i == 9:
                writer.add(bytes([0x01, 0x55, 0x12, 0x20]) + bytes(32), b"raw codec")  # another CID kind
            writer.add(block.cid, data)
            if i == len(blocks) // 2:
                out.write(bytes(7))  # zero-length sections: the walk stops, the tail is read here
        out.write(bytes([0x80, 0x01]) + b"\x01")  # a section cut short


def test_car_ranges_read_by_workers_equal_a_whole_file_read(
    sim_election: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    car = tmp_path / "broken.car"
    _broken_car(sim_election, car)
    monkeypatch.setattr(sources, "CHUNK_RECORDS", 16)  # many ranges
    harvest([ArchiveSource(car)], tmp_path / "ranges", workers=2)
    plain = EvidenceStore(tmp_path / "plain")
    name = ArchiveSource(car).name
    plain.add_all(name, chunked(iter_source(car)), HarvestStats())  # every section read here, in order
    plain.write_views()
    queries = [
        "select cid, type, digest, raw from envelopes order by cid",
        "select * from signatures order by cid, idx",
        "select * from timestamps order by cid, idx",
        "select * from vote_block order by cid",
        "select * from tally_node order by cid",
        "select cid, source, location from provenance order by location",
        "select source, location, claimed_cid, check_id, reason, raw from quarantine order by location",
    ]
    for query in queries:
        ours = connect(tmp_path / "ranges").sql(query).fetchall()
        assert ours == connect(tmp_path / "plain").sql(query).fetchall(), query
    reasons = [r for (r,) in connect(tmp_path / "ranges").sql("select reason from quarantine").fetchall()]
    assert len(reasons) == 4, reasons  # the edited block, the raw CID, the zeros, the cut section
    cursor = EvidenceStore(tmp_path / "ranges").cursor(name)
    assert cursor == EvidenceStore(tmp_path / "plain").cursor(name)


def test_a_chunk_of_one_kind_of_table_only_builds_its_tables(sim_election: Path) -> None:
    registrants = [r for r in _records(sim_election) if b'"type":"registrant"' in r.raw][:20]
    batch = prepare_batch(registrants)
    assert set(batch.tables) == {"envelopes", "signatures", "registrant"}
    assert batch.tables["registrant"].schema.field("key").type == pa.binary()
    assert all(len(k) == 32 for k in batch.tables["registrant"].column("key").to_pylist())


# ---------------------------------------------------------------------------- whole columns


def test_a_clean_batch_is_checked_a_column_at_a_time(sim_election: Path) -> None:
    records = _records(sim_election)
    assert batch_agrees(records) == len(records)
    assert batch_agrees(records + records[:5]) == len(records) + 5  # copies: provenance only


def test_one_bad_record_in_a_column_leaves_the_others_fast(sim_election: Path) -> None:
    """Each schema edit and each non-canonical variant, put among records of its type:
    the column is refused, halved until the record is found, and it alone goes slow."""
    by_type: dict[str, list[RawRecord]] = {}
    for record in _records(sim_election):
        by_type.setdefault(json.loads(record.raw)["type"], []).append(record)
    rng = random.Random(3)
    bad: list[tuple[str, bytes]] = [(t, d) for t, d in _schema_edits(by_type)]
    bad += [(t, d) for t, rs in by_type.items() for d in _variants(rs[0].raw).values()]
    for record_type, data in bad:
        batch = list(by_type[record_type][:40])
        batch.insert(rng.randrange(len(batch) + 1), RawRecord(data, cid_of(data), "edited"))
        fast = batch_agrees(batch)
        assert fast >= len(batch) - 1, (record_type, data[:80])


def test_mutated_batches_agree(sim_election: Path) -> None:
    rng = random.Random(11)
    records = _records(sim_election)
    for _ in range(25):
        batch = rng.sample(records, min(60, len(records)))
        for _ in range(6):
            data = mutate(rng, rng.choice(records).raw)
            batch.insert(
                rng.randrange(len(batch) + 1), RawRecord(data, rng.choice([None, cid_of(data)]), "m")
            )
        batch.append(batch[rng.randrange(len(batch))])  # a copy, accepted or not
        batch_agrees(batch)


def test_envelope_edits_in_a_column_agree(sim_election: Path) -> None:
    """The signatures and tokens checked a column at a time: each edit, among good records."""
    records = [r for r in _records(sim_election) if b'"type":"receipt"' in r.raw][:30]
    edits: list[Callable[[dict], None]] = [
        lambda d: d["signatures"][0].update(extra=1),
        lambda d: d["signatures"][0].update(key=d["signatures"][0]["key"][:-1]),
        lambda d: d["signatures"][0].update(sig=d["signatures"][0]["sig"] + "AAAA"),
        lambda d: d.update(signatures=d["signatures"][0]),
        lambda d: d.update(signatures=[*d["signatures"], "sig"]),
        lambda d: d.update(timestamps=[*d["timestamps"], "A"]),
        lambda d: d.update(timestamps=[*d["timestamps"], 5]),
        lambda d: d.update(timestamps=d["timestamps"] * 17),
        lambda d: d.update(timestamps=[]),
        lambda d: d.update(signatures=[]),
    ]
    for k, edit in enumerate(edits):
        doc = json.loads(records[0].raw)
        edit(doc)
        data = jcs(doc)
        batch = list(records)
        batch.insert(k % len(batch), RawRecord(data, cid_of(data), "edited"))
        assert batch_agrees(batch) >= len(records)


def test_texts_cut_elsewhere_do_not_pass_as_a_column(sim_election: Path) -> None:
    """A column is checked by one pattern over its texts end to end: two values that end
    to end spell two good ones (one a character short, the next a character long) must
    still be refused."""
    registrants = [r for r in _records(sim_election) if b'"type":"registrant"' in r.raw][:20]
    first, second = (json.loads(r.raw)["body"] for r in registrants[:2])
    for member in ("registrationAuthority", "key", "publicDetails"):
        a, b = first[member], second[member]
        cut = [(member, a[:-1]), (member, a[-1] + b)]
        edited = []
        for (name, value), record in zip(cut, registrants[:2], strict=True):
            doc = json.loads(record.raw)
            doc["body"][name] = value
            data = jcs(doc)
            edited.append(RawRecord(data, cid_of(data), "cut"))
        assert batch_agrees([*edited, *registrants[2:]]) == len(registrants) - 2, member


def test_plain_ranges_are_read_as_the_section_reader_reads_them(
    sim_election: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A range of plain sections is read in one loop; the same records, CIDs, locations
    and cursors as the section-by-section reader's."""
    car = tmp_path / "broken.car"
    _broken_car(sim_election, car)
    monkeypatch.setattr(sources, "CHUNK_RECORDS", 16)
    chunks = list(sources.car_chunks(car))
    plain = sources._plain_sections
    read_plainly = []

    def counted(data: bytes, chunk: sources.CarRange) -> object:
        out = plain(data, chunk)
        read_plainly.append(out is not None)
        return out

    monkeypatch.setattr(sources, "_plain_sections", counted)
    fast = [sources.open_chunk_records(c) for c in chunks]
    monkeypatch.setattr(sources, "_plain_sections", lambda data, chunk: None)
    slow = [sources.open_chunk_records(c) for c in chunks]
    assert fast == slow
    assert sum(read_plainly) > 3 and not all(read_plainly)  # the broken ranges went section by section
