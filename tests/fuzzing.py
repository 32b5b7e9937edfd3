"""Fuzz targets for every parser of hostile input, their seeds and the mutations that feed them.

Shared by ``tests/test_fuzz.py`` (hypothesis: a few thousand inputs in the suite) and
``bench/fuzz.py`` (the long job before a release: 100,000 inputs and more).

A *target* takes bytes and runs one parser the way vtaudit runs it on evidence, and what
runs on its output (a parsed template is checked, zeroed and voted on; a parsed entry is
validated against every template and counted). The contract: the target returns, or it
raises one of its ``refusals``, our own error types; any other exception is a *crash*, a
bug in vtaudit. Targets whose ``refusals`` is empty (``open_record``, ``verify_token``,
``verify_report``, the node log reader) must never raise at all. Where a round trip is
defined (b64u, CIDs, JCS, canonical envelopes) the target asserts it, so a broken round
trip is a crash too.

Seeds are the records of a small simulated election (60 voters) and what is derived
from them: its CAR and NDJSON, its timestamp tokens and TSA certificates, its
ciphertexts and their decrypted entries, templates, histograms, its trust file, a
signed report and a node log page.
"""

from __future__ import annotations

import contextlib
import io
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from auditor.checkids import CHECK_IDS
from auditor.crypto import rfc3161
from auditor.crypto.ecies import combine_private, decrypt
from auditor.crypto.ed25519 import SigningKey
from auditor.errors import CryptoError, EncodingError, InputError, SchemaError, TimestampError
from auditor.model.ballot import NotedCheck, count_vote, valid_vote_check, vote_problems
from auditor.model.encoding import (
    b64u_decode,
    b64u_encode,
    canonical_value,
    cid_binary,
    cid_from_binary,
    cid_of,
    cid_to_binary,
    is_cid_text,
    jcs,
    parse_json,
)
from auditor.model.entries import (
    VoteEntry,
    VoteReader,
    VoterEntry,
    accept_vote_entry,
    accept_voter_entry,
    read_voter_entry,
)
from auditor.model.envelope import Envelope, parse_envelope
from auditor.model.histogram import add, histogram, zero
from auditor.model.records import BallotTemplate
from auditor.net.client import parse_log_page
from auditor.report.signed import sign_report, verify_report
from auditor.sim.election import SimConfig, simulate
from auditor.sources import RawRecord, Rejection, iter_source, open_record
from auditor.store.bulk import prepare_batch, table_schema
from auditor.store.car import read_car, write_car
from auditor.store.evidence import Prepared, prepare
from auditor.trust import load_trust
from auditor.verify.recount import parse_entry

__all__ = ["TARGETS", "Corpus", "Target", "build_corpus", "bulk_agrees", "mutate", "run_target"]


# ---------------------------------------------------------------------------- the corpus


@dataclass
class Corpus:
    """Seeds from one simulated election, and a scratch folder for targets that read files."""

    root: Path
    scratch: Path
    records: list[bytes]
    envelopes: list[Envelope]
    car: bytes
    ndjson: bytes
    tokens: list[tuple[bytes, bytes]]  # (DER token, the digest it covers)
    tsa_certificates: list[bytes]
    tsa_roots: list[bytes]
    private_key: bytes
    ciphertexts: list[tuple[bytes, str]]  # (ciphertext, template CID)
    entries: list[bytes]  # the decrypted entries' bytes (JCS)
    templates: list[BallotTemplate]
    votes: list[VoteEntry]
    histograms: list[bytes]
    trust: bytes
    report: bytes
    log: bytes
    strings: list[bytes] = field(default_factory=list)  # b64u and CID texts from the records
    small_car: bytes = b""  # the first records only, so that one input costs little
    small_ndjson: bytes = b""

    def digest_for(self, token: bytes) -> bytes:
        """The digest a seed token covers; any one for a mutated token."""
        return dict(self.tokens).get(token) or _pick(self.tokens, token)[1]

    def template_for(self, ciphertext: bytes) -> str:
        """The template CID a seed ciphertext was sealed with; any one for a mutated one."""
        return dict(self.ciphertexts).get(ciphertext) or _pick(self.ciphertexts, ciphertext)[1]


def build_corpus(out: Path, voters: int = 60, seed: int = 1) -> Corpus:
    """Simulate a small election under ``out`` and gather every kind of seed from it."""
    election = out / "election"
    if not (election / "evidence.car").exists():
        simulate(SimConfig(voters=voters, seed=seed, workers=1, secrets=False), election)
    scratch = out / "scratch"
    scratch.mkdir(exist_ok=True)
    envelopes = [parse_envelope(r.raw, cid=r.claimed_cid) for r in iter_source(election / "evidence.car")]
    by_type: dict[str, list[Envelope]] = {}
    for env in envelopes:
        by_type.setdefault(env.type, []).append(env)
    records = [e.raw for e in envelopes]
    private_key = combine_private(b64u_decode(e.body.privateKey) for e in by_type["key_release"])
    ciphertexts = [
        (b64u_decode(text), block.body.template)
        for block in by_type["vote_block"]
        for text in block.body.votes + block.body.voters
    ]
    entries = [decrypt(ct, private_key, template) for ct, template in ciphertexts]
    votes = []
    for plain in entries:
        value = parse_json(plain)
        if "answers" in value:
            votes.append(VoteEntry.parse(value, "entry"))
    tsa_certificates = [
        b64u_decode(tsa.certificate) for tsa in by_type["election"][0].body.timestampAuthorities
    ]
    trust = load_trust(election / "trust.toml")
    key = SigningKey.derive("vtaudit fuzz report")
    histograms = [jcs(e.body.counts) for e in by_type["result"] + by_type["tally_node"]]
    report_body = {
        "election": by_type["election"][0].cid,
        "auditor": {"name": "vtaudit", "version": "fuzz", "rules": "0" * 64},
        "trust": trust.summary(),
        "evidence": {"records": len(records), "root": b64u_encode(bytes(32)), "quarantined": 0},
        "checks": [
            {"id": c, "status": "pass", "severity": "critical", "failures": 0, "title": c} for c in CHECK_IDS
        ],
        "ballots": [
            {
                "template": r.body.template,
                "verdict": "verified",
                "voters": r.body.voters,
                "counts": r.body.counts,
            }
            for r in by_type["result"]
        ],
        "findings": [
            {
                "check": "REC-SCHEMA",
                "severity": "error",
                "subject": None,
                "message": "an example finding",
                "evidence": {"envelopes": [json.loads(by_type["block_tree"][0].raw)]},
            }
        ],
        "generatedAt": 0,
    }
    log = b"".join(
        json.dumps({"seq": i + 1, "cid": e.cid, "type": e.type}).encode() + b"\n"
        for i, e in enumerate(envelopes)
    )
    strings = sorted(
        {
            text.encode("ascii")
            for env in envelopes
            for text in [env.cid] + [s.key for s in env.signatures] + [s.sig for s in env.signatures]
        }
        | {b64u_encode(t).encode("ascii") for e in envelopes for t in e.timestamps[:1]}
    )
    few = envelopes[:12]
    small = io.BytesIO()
    write_car(small, [cid_binary(few[0].raw)], [(cid_binary(e.raw), e.raw) for e in few])
    return Corpus(
        root=election,
        scratch=scratch,
        records=records,
        envelopes=envelopes,
        car=(election / "evidence.car").read_bytes(),
        ndjson=b"\n".join(records) + b"\n",
        tokens=[(t, e.digest) for e in envelopes for t in e.timestamps],
        tsa_certificates=tsa_certificates,
        tsa_roots=list(trust.tsa_roots),
        private_key=private_key,
        ciphertexts=ciphertexts,
        entries=entries,
        templates=[e.body for e in by_type["ballot_template"]],
        votes=votes,
        histograms=histograms,
        trust=(election / "trust.toml").read_bytes(),
        report=sign_report(report_body, key),
        log=log,
        strings=strings,
        small_car=small.getvalue(),
        small_ndjson=b"\n".join(e.raw for e in few) + b"\n",
    )


# ---------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class Target:
    name: str
    what: str
    run: Callable[[Corpus, bytes], str]  # returns "accepted" or "refused" (a handled refusal)
    refusals: tuple[type[BaseException], ...]
    seeds: Callable[[Corpus], list[bytes]]


def _pick(items: list[Any], data: bytes) -> Any:
    """A deterministic choice among ``items`` for this input."""
    return items[(len(data) * 31 + (data[0] if data else 0)) % len(items)]


def _json(c: Corpus, data: bytes) -> str:
    value = parse_json(data)
    canonical = jcs(value)
    again = parse_json(canonical)
    assert again == value, "JCS round trip changed the value"
    assert jcs(again) == canonical, "JCS is not idempotent"
    return "accepted"


def _b64u(c: Corpus, data: bytes) -> str:
    text = data.decode("latin-1")  # every byte a character: non-ASCII text is tried too
    raw = b64u_decode(text)
    assert b64u_encode(raw) == text, "b64u round trip changed the text"
    return "accepted"


def _cid_text(c: Corpus, data: bytes) -> str:
    text = data.decode("latin-1")
    binary = cid_to_binary(text)
    assert cid_from_binary(binary) == text, "CID text round trip changed the text"
    return "accepted"


def _cid_binary(c: Corpus, data: bytes) -> str:
    text = cid_from_binary(data)
    assert cid_to_binary(text) == data, "CID binary round trip changed the bytes"
    return "accepted"


def _envelope(c: Corpus, data: bytes) -> str:
    env = parse_envelope(data)
    again = parse_envelope(env.raw, cid=env.cid)  # canonical bytes under their own CID
    assert again.raw == env.raw and again.digest == env.digest, "canonical envelope did not re-parse"
    return "accepted"


def _harvest(c: Corpus, data: bytes) -> str:
    # As the store does with each record: open (CID, schema), then compute its rows.
    # Claimed: nothing (a file or NDJSON line), its own CID (canonical bytes required), or
    # another record's CID (REC-CID).
    claimed = _pick([None, cid_of(data), c.envelopes[0].cid], data)
    prepared = prepare(RawRecord(data, claimed, "fuzz"))
    opened = open_record(RawRecord(data, claimed, "fuzz"))
    assert isinstance(prepared, Prepared) == isinstance(opened, Envelope)
    bulk_agrees(RawRecord(data, claimed, "fuzz"))
    return "accepted" if isinstance(prepared, Prepared) else "refused"


def bulk_agrees(raw: RawRecord) -> bool:
    """Assert that the harvest's bulk path makes of ``raw`` exactly what the record-by-record
    path does (acceptance, CID, type, every row); True if the fast path itself took it."""
    batch = prepare_batch([raw])
    slow = prepare(raw)
    if isinstance(slow, Rejection):
        assert batch.cids == [None] and batch.fast == 0, f"bulk accepted what {slow.reason!r} refuses"
        assert batch.rejected == [(0, slow.check, slow.reason)]
        return False
    assert batch.cids == [slow.cid] and batch.types == [slow.type]
    assert set(batch.tables) == {t for t, rows in slow.rows.items() if rows}
    for table, rows in slow.rows.items():
        if rows:
            expected = pa.Table.from_pylist(rows, schema=table_schema(table))
            assert batch.tables[table].equals(expected), f"{table}: bulk rows differ"
    return batch.fast == 1


def batch_agrees(raws: list[RawRecord]) -> int:
    """Assert that a batch is opened exactly as each of its records alone (acceptance,
    CID, type, rejection, and the rows of each CID's first copy); the number of records
    the batch took fast. Alone, a record is checked value by value; in a batch its type's
    records are checked a column at a time."""
    batch = prepare_batch(raws)
    alone = [prepare_batch([r]) for r in raws]
    assert batch.cids == [a.cids[0] for a in alone]
    assert batch.types == [a.types[0] for a in alone]
    assert batch.rejected == [(i, *a.rejected[0][1:]) for i, a in enumerate(alone) if a.rejected]
    expected: dict[str, list[pa.Table]] = {}
    seen = set()
    for a in alone:
        if a.cids[0] is None or a.cids[0] in seen:
            continue
        seen.add(a.cids[0])
        for name, table in a.tables.items():
            expected.setdefault(name, []).append(table)
    assert set(batch.tables) == set(expected)
    for name, tables in expected.items():
        want = sorted(pa.concat_tables(tables).to_pylist(), key=repr)
        assert sorted(batch.tables[name].to_pylist(), key=repr) == want, f"{name}: batch rows differ"
    return batch.fast


def entry_agrees(data: bytes, templates: list[BallotTemplate]) -> bool:
    """Assert that the recount's fast ways with a decrypted entry (the accept-only parsers
    on orjson's value, parse_entry, the compiled ballot check) agree with the strict ones
    (parse_json, Struct.parse, vote_problems); True if an accept-only parser took it."""
    value = canonical_value(data)  # what the recount hands them (orjson would keep duplicates)
    took = False
    for entry, accept in ((VoteEntry, accept_vote_entry), (VoterEntry, accept_voter_entry)):
        strict: Any = None
        with contextlib.suppress(EncodingError):  # SchemaError is one
            strict = entry.parse(parse_json(data, what="entry"), "entry")
        fast = accept(value)
        if fast is not None:
            assert fast == strict, f"accepted as {fast!r}, the strict parser says {strict!r}"
            took = True
        try:
            assert parse_entry(data, entry) == strict
        except EncodingError:
            assert strict is None, "parse_entry refused what the strict parser accepts"
        if isinstance(strict, VoteEntry):
            for template in templates:
                assert valid_vote_check(template)(strict) == (not vote_problems(template, strict))
                assert noted_valid(template, strict) == (not vote_problems(template, strict))
    return _bytes_agree(data, value) or took


def noted_valid(template: BallotTemplate, vote: VoteEntry) -> bool:
    """NotedCheck's verdict on ``vote``, each answer noted as the recount notes it."""
    check = NotedCheck(template)
    return check.valid([(a.question, check.answer_ok(a), a.values) for a in vote.answers])


def _bytes_agree(data: bytes, value: Any) -> bool:
    """Assert that the byte readers (read_voter_entry, VoteReader.read, D49) only return
    what the accept-only parsers return for canonical_value's value (so what the strict
    parser returns); True if one of them took ``data``."""
    took = False
    voter = read_voter_entry(data)
    if voter is not None:
        entry, key, signature, digest = voter
        assert entry == accept_voter_entry(value) is not None, f"read {entry!r} from bytes the parsers refuse"
        assert digest == entry.digest
        assert key == b64u_decode(entry.key, length=32)
        assert signature == b64u_decode(entry.signature, length=64)
        took = True
    named = value.get("template") if isinstance(value, dict) else None
    for template in {TEMPLATE_CID, *([named] if is_cid_text(named) else [])}:
        reader = VoteReader(template)
        for _ in range(2):  # the second read takes the answers it remembered
            vote = reader.read(data)
            if vote is not None:
                assert vote == accept_vote_entry(value) is not None, (
                    f"read {vote!r} from bytes the parsers refuse"
                )
                assert vote.template == template
                took = True
    return took


TEMPLATE_CID = "bagaaiera" + "a" * 52  # a canonical CID for VoteReader, whatever the entry names


def _entry(c: Corpus, data: bytes) -> str:
    entry_agrees(data, c.templates)
    value = parse_json(data, what="entry")
    accepted = False
    try:
        VoterEntry.parse(value, "entry")
        accepted = True
    except SchemaError:
        pass
    try:
        vote = VoteEntry.parse(value, "entry")
    except SchemaError:
        return "accepted" if accepted else "refused"
    for template in c.templates:  # BAL-VALID against every template, then counting
        if not vote_problems(template, vote) and not template.problems():
            counts = zero(template)
            count_vote(counts, template, vote)
            histogram(json.loads(jcs(counts)), "counts")  # a counted histogram is well formed
    return "accepted"


def _template(c: Corpus, data: bytes) -> str:
    template = BallotTemplate.parse(parse_json(data), "body")
    problems = template.problems()
    counts = zero(template)
    if not problems:
        histogram(json.loads(jcs(counts)), "counts")
    for vote in c.votes:
        vote_problems(template, vote)
    return "accepted"


def _histogram(c: Corpus, data: bytes) -> str:
    counts = histogram(parse_json(data), "counts")
    add(counts, counts)
    return "accepted"


def _car(c: Corpus, data: bytes) -> str:
    _header, sections = read_car(io.BytesIO(data))
    for _item in sections:
        pass
    return "accepted"


def _archive(c: Corpus, data: bytes) -> str:
    path = c.scratch / "archive"
    path.write_bytes(data)
    for raw in iter_source(path):
        open_record(raw)
    return "accepted"


def _token(c: Corpus, data: bytes) -> str:
    digest = c.digest_for(data)
    outcome = rfc3161.verify_token(data, digest, c.tsa_certificates, c.tsa_roots)  # never raises
    rfc3161.parse_token(data)
    return "accepted" if outcome.ok else "refused"


def _certificate(c: Corpus, data: bytes) -> str:
    parsed = rfc3161._try_cert(data)  # the boundary verify_token uses: a certificate or None
    token, digest = _pick(c.tokens, data)
    listed = rfc3161.verify_token(token, digest, [data], c.tsa_roots)  # as a listed TSA certificate
    rooted = rfc3161.verify_token(token, digest, c.tsa_certificates, [data])  # as a trusted root
    assert listed.gen_time_ms is not None and rooted.gen_time_ms is not None
    return "accepted" if parsed is not None else "refused"


def _ecies(c: Corpus, data: bytes) -> str:
    template = c.template_for(data)
    try:
        decrypt(data, c.private_key, template)
        opened = "accepted"
    except CryptoError:
        opened = "refused"
    # the same bytes as a private key (released keys are checked first in the engine,
    # but decrypt must refuse a bad one cleanly all the same)
    ciphertext = _pick(c.ciphertexts, data)[0]
    with contextlib.suppress(CryptoError):
        decrypt(ciphertext, data[:32].ljust(32, b"\0"), template)
    return opened


def _trust(c: Corpus, data: bytes) -> str:
    folder = c.scratch / "trust"
    folder.mkdir(exist_ok=True)
    root = folder / "tsa-root.pem"
    if not root.exists():
        root.write_bytes((c.root / "tsa-root.pem").read_bytes())
    path = folder / "trust.toml"
    path.write_bytes(data)
    load_trust(path)
    return "accepted"


def _report(c: Corpus, data: bytes) -> str:
    check = verify_report(data)  # never raises
    return "accepted" if check.ok else "refused"


def _log(c: Corpus, data: bytes) -> str:
    _entries, problem = parse_log_page(data, 0)  # never raises
    return "accepted" if problem is None else "refused"


def _seeds_strings(c: Corpus) -> list[bytes]:
    return c.strings


TARGETS: dict[str, Target] = {
    t.name: t
    for t in [
        Target(
            "json",
            "strict JSON (spec §2) and its JCS round trip",
            _json,
            (EncodingError,),
            lambda c: c.records + c.entries + [c.report],
        ),
        Target(
            "b64u", "base64url without padding, canonical (spec §2)", _b64u, (EncodingError,), _seeds_strings
        ),
        Target(
            "cid-text",
            "text CIDs (spec §2)",
            _cid_text,
            (EncodingError,),
            lambda c: [e.cid.encode() for e in c.envelopes],
        ),
        Target(
            "cid-binary",
            "binary CIDs (spec §2)",
            _cid_binary,
            (EncodingError,),
            lambda c: [cid_binary(r) for r in c.records],
        ),
        Target(
            "envelope",
            "envelopes and every body type (spec §3-§4)",
            _envelope,
            (EncodingError,),
            lambda c: c.records,
        ),
        Target(
            "harvest", "open_record and the store's rows (never raises)", _harvest, (), lambda c: c.records
        ),
        Target(
            "entry",
            "decrypted vote and voter entries (spec §4.8), BAL-VALID, counting",
            _entry,
            (EncodingError,),
            lambda c: c.entries,
        ),
        Target(
            "template",
            "ballot templates (spec §4.5), TPL-VALID, zero histograms",
            _template,
            (EncodingError,),
            lambda c: [jcs(t.to_json()) for t in c.templates],
        ),
        Target(
            "histogram",
            "histograms (spec §6) and their sum",
            _histogram,
            (EncodingError,),
            lambda c: c.histograms,
        ),
        Target(
            "car", "CARv1 header and sections (spec §7.2)", _car, (EncodingError,), lambda c: [c.small_car]
        ),
        Target(
            "archive",
            "CAR and NDJSON files read as sources",
            _archive,
            (InputError,),
            lambda c: [c.small_car, c.small_ndjson],
        ),
        Target(
            "token",
            "RFC 3161 tokens: parse_token and verify_token",
            _token,
            (TimestampError,),
            lambda c: [t for t, _d in c.tokens[:40]],
        ),
        Target(
            "certificate",
            "TSA certificates (X.509 DER), listed and as roots",
            _certificate,
            (),
            lambda c: c.tsa_certificates + c.tsa_roots,
        ),
        Target(
            "ecies",
            "ciphertexts (spec §5.2) and private keys",
            _ecies,
            (),
            lambda c: [ct for ct, _t in c.ciphertexts],
        ),
        Target("trust", "the trust file (spec §9)", _trust, (InputError,), lambda c: [c.trust]),
        Target(
            "report",
            "signed JSON reports read back (spec §11, never raises)",
            _report,
            (),
            lambda c: [c.report],
        ),
        Target(
            "log",
            "a node's /v1/log page (spec §7.1, never raises)",
            _log,
            (),
            lambda c: [b"".join(c.log.splitlines(keepends=True)[:20])],
        ),
    ]
}


def run_target(corpus: Corpus, name: str, data: bytes) -> str:
    """Run one input: ``accepted`` or ``refused``; a crash propagates."""
    target = TARGETS[name]
    try:
        return target.run(corpus, data)
    except target.refusals:
        return "refused"


# ---------------------------------------------------------------------------- mutations

_TOKENS = [
    b"[" * 64, b"[" * 65, b"[" * 2000, b'{"a":' * 70, b"]" * 70, b"1e5", b"-0", b"0.5", b"NaN", b"Infinity",
    b"9" * 20, b"-" + b"9" * 17, b'"\\ud800"', b'"\\u0000"', b"null", b"true", b'""', b"\\", b'"', b",", b":",
    b"\x00", b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"[]", b"{}", b"\xff" * 10, b"\x80" * 9 + b"\x01",
    b"\x30\x80", b"\x30\x84\xff\xff\xff\xff", b"\x02\x00", b"\x06\x00", b"\xa0\x82\xff\xff", b"=", b"==",
    b"bagaaiera", b"\r\n", b"\n", b"[tsa]", b"roots = ", b"[authorities]",
]  # fmt: skip
_INTS = [0, -1, 1, 2, 63, 64, 65, 4095, 4096, 4097, 2**31, 2**53 - 1, -(2**53 - 1), 2**53, 10**30]


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(8 if depth < 3 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.choice(_INTS)
    if kind == 3:
        return rng.choice(
            ["", "a", "mayor", "select", "rank", "score", "text", "x" * 70, "é", "\u0000", "A" * 43]
        )
    if kind == 4:
        return b64u_encode(rng.randbytes(rng.choice([0, 16, 31, 32, 33, 48, 64, 100])))
    if kind == 5:
        return [_random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    if kind == 6:
        return {
            rng.choice(["a", "code", "type", "min", "max", "v"]): _random_json(rng, depth + 1)
            for _ in range(3)
        }
    return rng.choice(["bagaaiera" + "a" * 52, "b" * 61])


def _nodes(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(value, dict):
        for k, v in value.items():
            found.extend(_nodes(v, (*path, k)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found.extend(_nodes(v, (*path, i)))
    return found


def _get(value: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        value = value[step]
    return value


def _json_mutation(rng: random.Random, data: bytes, corpus: Corpus | None) -> bytes | None:
    """Change one value of a JSON document (type, bounds, lists, members); None if not JSON."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return None
    paths = _nodes(doc)
    path = rng.choice(paths)
    node = _get(doc, path)
    choice = rng.randrange(9)
    if choice == 0:
        new: Any = _random_json(rng)
    elif choice == 1 and isinstance(node, list) and node:
        new = node + [rng.choice(node)] * rng.choice([1, 2, 100, 4097 - len(node)])  # past the limits
    elif choice == 2 and isinstance(node, list):
        new = node[: rng.randrange(len(node) + 1)]
    elif choice == 3 and isinstance(node, dict) and node:
        new = dict(node)
        del new[rng.choice(list(new))]
    elif choice == 4 and isinstance(node, dict):
        new = {**node, rng.choice(["extra", "v", "type", "body"]): _random_json(rng)}
    elif choice == 5 and isinstance(node, int) and not isinstance(node, bool):
        new = rng.choice(_INTS)
    elif choice == 6 and isinstance(node, str):
        new = rng.choice(["", node[:-1], node + "A", node.upper(), node * 3, node[::-1]])
    elif choice == 7 and corpus is not None:
        new = json.loads(rng.choice(corpus.records))  # a whole valid record in its place
    else:
        new = [node] if rng.random() < 0.5 else {"a": node}  # one level deeper
    if not path:
        doc = new
    else:
        _get(doc, path[:-1])[path[-1]] = new
    try:
        if rng.random() < 0.7:
            return jcs(doc)
        return json.dumps(doc, indent=rng.choice([None, 1]), sort_keys=rng.random() < 0.5).encode()
    except (EncodingError, ValueError, RecursionError):
        return None


def mutate(rng: random.Random, data: bytes, corpus: Corpus | None = None) -> bytes:
    """One random mutation of ``data``: bit flips, bytes, cuts, repeats, splices, tokens,
    or (for JSON) a structured change of one value."""
    n = len(data)
    op = rng.randrange(10)
    if op == 0 and n:
        i = rng.randrange(n)
        return data[:i] + bytes([data[i] ^ (1 << rng.randrange(8))]) + data[i + 1 :]
    if op == 1 and n:
        i = rng.randrange(n)
        return data[:i] + bytes([rng.choice([0, 0x7F, 0x80, 0xFF, 0x22, 0x5B, 0x7B, 0x5C])]) + data[i + 1 :]
    if op == 2 and n:
        i = rng.randrange(n)
        return data[:i] + data[i + rng.randrange(1, 64) :]
    if op == 3:
        i = rng.randrange(n + 1)
        return data[:i] + rng.randbytes(rng.randrange(1, 16)) + data[i:]
    if op == 4 and n:
        i = rng.randrange(n)
        piece = data[i : i + rng.randrange(1, 32)]
        return data[:i] + piece * rng.choice([2, 3, 50]) + data[i:]
    if op == 5 and n:
        return data[: rng.randrange(n)]
    if op == 6 and corpus is not None:
        other = rng.choice(corpus.records)
        i, j = rng.randrange(n + 1), rng.randrange(len(other))
        return data[:i] + other[j : j + rng.randrange(1, 200)] + data[i:]
    if op == 7:
        # a hostile token, half the time just after a place where a value starts (after
        # ":", "[", ",", "=" or at a line's start), where a parser will read it
        i = rng.randrange(n + 1)
        starts = [j + 1 for j, byte in enumerate(data) if byte in b":[,=\n{"] if n < 100_000 else []
        if starts and rng.random() < 0.5:
            i = rng.choice(starts)
        return data[:i] + rng.choice(_TOKENS) + data[i:]
    if op == 8 and corpus is not None:
        i = rng.randrange(n + 1)  # a whole valid record inserted (or appended, for archives)
        return data[:i] + rng.choice(corpus.records) + b"\n" + data[i:]
    mutated = _json_mutation(rng, data, corpus)
    if mutated is not None:
        return mutated
    return data + rng.randbytes(rng.randrange(1, 8))
