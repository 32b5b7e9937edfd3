"""Vote blocks and their receipts, built in worker processes (the simulator's hot path).

A :class:`BlockSpec` says who pools into a block, when it is received and how the
authority answers; :func:`build_block` makes every member's vote and voter entry,
encrypts them to the election key, has every member sign the block, and has the
authority sign and timestamp the receipt. Everything is derived from the seed, so a
block is the same bytes whichever process builds it.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from auditor.crypto.ecies import derive_scalar, encrypt, encrypt_knowing_private, is_valid_scalar, public_of
from auditor.crypto.ed25519 import SigningKey, sign_digest
from auditor.model.ballot import count_vote, vote_problems
from auditor.model.encoding import b64u_encode, cid_of, jcs
from auditor.model.entries import VoteEntry, voter_entry_digest
from auditor.model.envelope import envelope_json, record_digest
from auditor.model.histogram import Histogram, zero
from auditor.model.records import BallotTemplate
from auditor.sim.tsa import TestTsa

__all__ = [
    "BlockBuilt",
    "BlockSpec",
    "RegistrantContext",
    "WorkerContext",
    "build_blocks",
    "build_registrants",
    "district_of",
    "init_worker",
    "make_record",
    "registrant_body",
    "voter_key",
]

TEXT_POOL = (
    "More bike lanes",
    "Fix the potholes on Elm Street",
    "Très bien organisé",
    "Longer library hours",
    "Keep the parks clean",
    "Öffentlicher Nahverkehr zuerst",
    "No comment",
    "Faster buses please 🚌",
    "Lower taxes",
    "More street lights",
)


DISTRICT_WEIGHTS = (9, 7, 4, 3, 3, 2, 2, 1)
DAY = 86_400_000


@dataclass(frozen=True)
class RegistrantContext:
    seed: int
    registration_authority: str
    districts: tuple[str, ...]
    t0: int


def district_of(index: int, districts: int) -> int:
    """The district of voter ``index``: weighted 9:7:4:3:3:2:2:1, spread evenly."""
    weights = DISTRICT_WEIGHTS[:districts]
    slot = (index * 7919) % sum(weights)
    for d, w in enumerate(weights):
        if slot < w:
            return d
        slot -= w
    return 0  # pragma: no cover


def registrant_body(ctx: RegistrantContext, index: int, key: SigningKey, district: int) -> dict[str, Any]:
    return {
        "registrationAuthority": ctx.registration_authority,
        "key": key.public_b64u,
        "district": ctx.districts[district],
        "publicDetails": b64u_encode(hashlib.sha256(f"public details {ctx.seed}/{index}".encode()).digest()),
        "privateDetails": b64u_encode(
            hashlib.sha256(f"private details {ctx.seed}/{index}".encode()).digest()
        ),
        "registered": ctx.t0 - 30 * DAY + (index * 997) % (34 * DAY),
    }


def build_registrants(task: tuple[RegistrantContext, int, int]) -> list[tuple[str, bytes, int]]:
    """Registrant records for voters [start, end): (CID, bytes, district index)."""
    ctx, start, end = task
    out = []
    for index in range(start, end):
        key = voter_key(ctx.seed, index)
        d = district_of(index, len(ctx.districts))
        cid, raw, _ = make_record("registrant", registrant_body(ctx, index, key, d), [key])
        out.append((cid, raw, d))
    return out


def voter_seed(seed: int, index: int) -> bytes:
    return hashlib.sha256(f"vtaudit-sim/{seed}/voter/{index}".encode()).digest()


def voter_key(seed: int, index: int) -> SigningKey:
    """The registrant key of simulated voter ``index``."""
    return SigningKey(voter_seed(seed, index))


def make_record(
    record_type: str,
    body: dict[str, Any],
    signers: list[SigningKey],
    tsa: TestTsa | None = None,
    times: list[int] | None = None,
    serial: int = 0,
) -> tuple[str, bytes, bytes]:
    """Sign, timestamp and serialize a record; returns (cid, canonical bytes, digest)."""
    digest = record_digest(record_type, body)
    signatures = [sign_digest(k, digest) for k in signers]
    tokens = []
    if tsa is not None:
        for i, t in enumerate(times or []):
            tokens.append(b64u_encode(tsa.issue(digest, t, serial * 8 + i)))
    raw = jcs(envelope_json(record_type, body, signatures, tokens))
    return cid_of(raw), raw, digest


@dataclass
class BlockSpec:
    seq: int  # global, unique: derives the TSA serial and the receipt's randomness
    template: int  # index into WorkerContext.templates
    members: list[int]  # voter indices
    registrants: list[str]  # registrant CIDs of the members (same order)
    result: str  # receipt result
    received: int  # receipt time (ms)
    offending: list[int] = field(default_factory=list)  # members named in the receipt
    tamper: str | None = None  # a block-level tampering (auditor.sim.tampers)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class BlockBuilt:
    seq: int
    template: int
    result: str
    block_cid: str
    block_raw: bytes
    receipts: list[tuple[str, bytes]]
    histogram: bytes  # JCS of the histogram of the block's valid votes
    voters: int
    first_member: int  # voter index of the block's first member (for disputes, reports)
    secret_lines: str  # the members' secrets as NDJSON (serialized here, off the parent)


@dataclass(frozen=True)
class WorkerContext:
    seed: int
    election: str
    election_key: bytes
    templates: tuple[tuple[str, dict[str, Any]], ...]  # (cid, body JSON)
    district_of_template: tuple[str, ...]
    # the scalar k with k·B = election_key, when the simulator knows it: entries are then
    # encrypted with fixed-base multiplications alone (the same bytes, faster)
    election_private: bytes | None = None


_CTX: WorkerContext | None = None
_TSA: TestTsa | None = None
_TEMPLATES: list[BallotTemplate] = []
_ENCRYPT: Callable[..., bytes] | None = None  # (plaintext=, template_cid=, ephemeral=)


def init_worker(ctx: WorkerContext) -> None:
    global _CTX, _TSA, _TEMPLATES, _ENCRYPT
    _CTX = ctx
    _TSA = TestTsa(tsa_seed(ctx.seed))
    _TEMPLATES = [BallotTemplate.parse(body) for _, body in ctx.templates]
    private = ctx.election_private
    if private is not None and is_valid_scalar(private) and public_of(private) == ctx.election_key:
        _ENCRYPT = partial(encrypt_knowing_private, election_private=private)
    else:
        _ENCRYPT = partial(encrypt, election_key=ctx.election_key)


def tsa_seed(seed: int) -> bytes:
    return hashlib.sha256(f"vtaudit-sim/{seed}/tsa".encode()).digest()


def receipt_key(seed: int) -> SigningKey:
    return SigningKey.derive(f"vtaudit-sim/{seed}", "receipt-key")


def random_vote(
    rng: random.Random,
    template: BallotTemplate,
    template_cid: str,
    district: str,
    forced_first: int | None = None,
) -> dict[str, Any]:
    """A plausible vote: skewed preferences per district, optional questions often skipped."""
    answers: list[dict[str, Any]] = []
    chosen: dict[str, Any] = {}
    for qi, q in enumerate(template.questions):
        if q.dependsOn is not None:
            parent = chosen.get(q.dependsOn.question)
            got = (
                parent
                if isinstance(parent, list)
                else ([parent] if isinstance(parent, str) else list(parent or {}))
            )
            if not any(v in q.dependsOn.values for v in got):
                continue
        if not q.required and rng.random() < 0.2:
            continue
        codes = [o.code for o in q.options]
        weights = _weights(f"{district}/{q.code}", len(codes))
        if q.type == "select":
            if forced_first is not None and qi == 0:
                values = [codes[forced_first % len(codes)]]
            else:
                k = max(q.min, min(q.max, 1 if q.max == 1 else rng.randint(q.min, q.max)))
                values = sorted(_weighted_sample(rng, codes, weights, k))
            answers.append({"question": q.code, "values": values})
            chosen[q.code] = values
        elif q.type == "rank":
            k = rng.randint(max(q.min, 1), q.max) if q.max else 0
            values = _weighted_sample(rng, codes, weights, k)
            answers.append({"question": q.code, "values": values})
            chosen[q.code] = values
        elif q.type == "score":
            assert q.score is not None
            steps = (q.score.max - q.score.min) // q.score.step
            scores = {c: q.score.min + q.score.step * rng.randint(0, steps) for c in codes}
            answers.append({"question": q.code, "values": scores})
            chosen[q.code] = scores
        else:
            candidates = [t for t in TEXT_POOL if q.min <= len(t) <= q.max] or ["x" * max(q.min, 1)]
            value = candidates[int(rng.paretovariate(1.2)) % len(candidates)]
            answers.append({"question": q.code, "values": value})
            chosen[q.code] = value
    return {"template": template_cid, "nonce": b64u_encode(rng.randbytes(16)), "answers": answers}


def _weights(label: str, n: int) -> list[float]:
    rng = random.Random(label)
    return [rng.uniform(0.5, 3.0) for _ in range(n)]


def _weighted_sample(rng: random.Random, items: list[str], weights: list[float], k: int) -> list[str]:
    pool = list(zip(items, weights, strict=True))
    out: list[str] = []
    for _ in range(min(k, len(pool))):
        total = sum(w for _, w in pool)
        pick = rng.uniform(0, total)
        for i, (item, w) in enumerate(pool):
            pick -= w
            if pick <= 0 or i == len(pool) - 1:
                out.append(item)
                pool.pop(i)
                break
    return out


def build_blocks(specs: list[BlockSpec]) -> list[BlockBuilt]:
    return [build_block(spec) for spec in specs]


def build_block(spec: BlockSpec) -> BlockBuilt:
    ctx, tsa, encrypt_entry = _CTX, _TSA, _ENCRYPT
    assert ctx is not None and tsa is not None and encrypt_entry is not None, "init_worker was not called"
    template_cid, _ = ctx.templates[spec.template]
    template = _TEMPLATES[spec.template]
    district = ctx.district_of_template[spec.template]
    histogram: Histogram = zero(template)
    votes: list[str] = []
    voters: list[str] = []
    secrets: list[dict[str, Any]] = []
    keys = [voter_key(ctx.seed, i) for i in spec.members]
    if spec.tamper == "block-ineligible":
        keys[-1] = SigningKey.derive(f"vtaudit-sim/{ctx.seed}", "outsider", str(spec.seq))
    outsider = spec.extra.get("outsider")
    if outsider is not None:  # a correctly rejected "invalid" block: one member is not registered
        keys[-1] = SigningKey.derive(f"vtaudit-sim/{ctx.seed}", "outsider", str(outsider))
    nonces: list[str] = []
    for position, (index, key, registrant) in enumerate(
        zip(spec.members, keys, spec.registrants, strict=True)
    ):
        rng = random.Random(f"vtaudit-sim/{ctx.seed}/vote/{index}/{spec.seq}")
        forced = spec.extra.get("first_choice")
        vote = random_vote(rng, template, template_cid, district, forced[position] if forced else None)
        if spec.tamper == "nonce-reuse" and position == 1:
            vote["nonce"] = nonces[0]
        if spec.tamper == "ballot-invalid" and position == 0:
            first = template.questions[0]
            vote["answers"] = [a for a in vote["answers"] if a["question"] != first.code]
            vote["answers"].insert(
                0, {"question": first.code, "values": sorted(o.code for o in first.options[:2])}
            )
        nonces.append(vote["nonce"])
        entry = VoteEntry.parse(vote)
        valid = not vote_problems(template, entry)
        vote_ct = encrypt_entry(
            plaintext=jcs(vote),
            template_cid=template_cid,
            ephemeral=_scalar(ctx.seed, "vote", index, spec.seq),
        )
        if spec.tamper == "vote-undecryptable" and position == 0:
            vote_ct = vote_ct[:32] + bytes(b ^ 0x5A for b in vote_ct[32:])
            valid = False
        if valid and spec.result == "accepted":
            count_vote(histogram, template, entry)
        entry_key = key.public_b64u
        if spec.tamper == "voter-key-mismatch" and position == 0:
            entry_key = SigningKey.derive(f"vtaudit-sim/{ctx.seed}", "stranger").public_b64u
        digest = voter_entry_digest(entry_key, registrant, template_cid)
        signature = sign_digest(key, digest)["sig"]
        if spec.tamper == "voter-bad-signature" and position == 0:
            signature = sign_digest(key, bytes(32))["sig"]
        voter_entry = {
            "template": template_cid,
            "registrant": registrant,
            "key": entry_key,
            "signature": signature,
        }
        voter_ct = encrypt_entry(
            plaintext=jcs(voter_entry),
            template_cid=template_cid,
            ephemeral=_scalar(ctx.seed, "voter", index, spec.seq),
        )
        votes.append(b64u_encode(vote_ct))
        voters.append(b64u_encode(voter_ct))
        secrets.append(
            {
                "index": index,
                "seed": voter_seed(ctx.seed, index).hex(),
                "key": key.public_b64u,
                "registrant": registrant,
                "template": template_cid,
                "district": district,
                "nonce": vote["nonce"],
                "vote": vote,
                "validVote": valid,
            }
        )
    order = sorted(range(len(keys)), key=lambda i: keys[i].public_b64u)
    body = {
        "election": ctx.election,
        "template": template_cid,
        "members": [keys[i].public_b64u for i in order],
        "votes": sorted(votes),
        "voters": sorted(voters),
    }
    if spec.tamper == "block-unsorted":
        body["votes"] = sorted(votes, reverse=True)
    signers = [keys[i] for i in order]
    digest = record_digest("vote_block", body)
    signatures = [sign_digest(k, digest) for k in signers]
    if spec.tamper == "block-missing-signature":
        signatures = signatures[1:]
    bad_signer: int | None = spec.extra.get("bad_signature_member")
    if bad_signer is not None:  # a correctly rejected block: one member's signature is wrong
        signatures[bad_signer] = sign_digest(signers[bad_signer], bytes(32))
    block_raw = jcs(envelope_json("vote_block", body, signatures, []))
    block_cid = cid_of(block_raw)
    offending = [keys[spec.members.index(i)].public_b64u for i in spec.offending] if spec.offending else []
    if outsider is not None:
        offending = [keys[-1].public_b64u]
    elif bad_signer is not None:
        offending = [signers[bad_signer].public_b64u]
    elif spec.tamper == "receipt-accepted-names":  # an accepted block's receipt names a member
        offending = [keys[0].public_b64u]
    receipt_body = {
        "election": ctx.election,
        "block": block_cid,
        "result": spec.result,
        "registrants": sorted(offending),
        "received": spec.received,
    }
    signer = receipt_key(ctx.seed)
    if spec.tamper == "receipt-forged":
        signer = SigningKey.derive(f"vtaudit-sim/{ctx.seed}", "forger")
    receipts = [
        make_record("receipt", receipt_body, [signer], tsa, [spec.received], 1_000_000 + spec.seq)[:2]
    ]
    if spec.tamper == "receipt-twice":
        again = dict(receipt_body, received=spec.received + 1000)
        receipts.append(
            make_record("receipt", again, [signer], tsa, [spec.received + 1000], 2_000_000 + spec.seq)[:2]
        )
    for s in secrets:
        s["block"] = block_cid
        s["receipt"] = receipts[0][0]
        s["receiptResult"] = spec.result
    lines = "".join(json.dumps(s, ensure_ascii=False, sort_keys=True) + "\n" for s in secrets)
    return BlockBuilt(
        seq=spec.seq,
        template=spec.template,
        result=spec.result,
        block_cid=block_cid,
        block_raw=block_raw,
        receipts=receipts,
        histogram=jcs(histogram),
        voters=len(keys) if spec.result == "accepted" else 0,
        first_member=spec.members[0],
        secret_lines=lines,
    )


def _scalar(seed: int, kind: str, index: int, seq: int) -> bytes:
    return derive_scalar(f"vtaudit-sim/{seed}/ephemeral/{kind}/{index}/{seq}".encode())


def histogram_of(raw: bytes) -> Histogram:
    result: Histogram = json.loads(raw)
    return result
