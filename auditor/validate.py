"""Record-level validation: every record parsed, every signature and token verified.

This is the first layer of the audit (spec §8: REC-CID, REC-SCHEMA, SIG-VALID,
TSA-TOKEN, TSA-IMPRINT), run record by record with no knowledge of the election's
logic. The verification engine builds the set-based checks on top of it.

Signatures are verified in parallel batches on a thread pool: libsodium releases the
GIL, so both cores work. Token verification needs the election's TSA certificates, so
timestamped records are remembered (CID, digest, tokens) and their tokens checked once
every record has been read.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice

from auditor.crypto.ed25519 import verify
from auditor.crypto.rfc3161 import verify_token
from auditor.model.encoding import b64u_decode
from auditor.model.envelope import Envelope
from auditor.parallel import bounded_map
from auditor.sources import RawRecord, Rejection, open_record

__all__ = ["Problem", "ValidationSummary", "validate_records"]


@dataclass(frozen=True, slots=True)
class Problem:
    check: str
    subject: str | None
    location: str
    message: str


@dataclass
class ValidationSummary:
    records: int = 0
    duplicates: int = 0
    by_type: Counter[str] = field(default_factory=Counter)
    signatures: int = 0
    tokens: int = 0
    problems: list[Problem] = field(default_factory=list)
    seconds: float = 0.0
    tsa_certificates: int = 0
    elections: list[str] = field(default_factory=list)

    def failures(self) -> Counter[str]:
        return Counter(p.check for p in self.problems)


def _batches(items: Iterable[RawRecord], size: int) -> Iterator[list[RawRecord]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def _parse(raw: RawRecord) -> Envelope | Problem:
    opened = open_record(raw)
    if isinstance(opened, Rejection):
        return Problem(opened.check, raw.claimed_cid, raw.location, opened.reason)
    return opened


def _bad_signatures(envelope: Envelope) -> list[str]:
    message = envelope.signed_message
    bad = []
    for s in envelope.signatures:
        if not verify(b64u_decode(s.key), b64u_decode(s.sig), message):
            bad.append(s.key)
    return bad


def _check_batch(batch: list[RawRecord]) -> list[tuple[RawRecord, Envelope | Problem, list[str]]]:
    out: list[tuple[RawRecord, Envelope | Problem, list[str]]] = []
    for raw in batch:
        parsed = _parse(raw)
        out.append((raw, parsed, _bad_signatures(parsed) if isinstance(parsed, Envelope) else []))
    return out


def validate_records(
    records: Iterable[RawRecord], *, tsa_roots: Sequence[bytes] = (), workers: int = 2
) -> ValidationSummary:
    """Parse every record, verify its signatures, then verify every timestamp token."""
    started = time.perf_counter()
    summary = ValidationSummary()
    seen: set[str] = set()
    stamped: list[tuple[str, str, bytes, tuple[bytes, ...]]] = []
    tsa_certs: list[bytes] = []
    # spec §4.9: a rightly rejected block's defects are evidence for its receipt, not
    # failures; a block's signatures count only once a receipt says it was accepted.
    block_problems: dict[str, list[Problem]] = {}
    accepted_blocks: set[str] = set()
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for results in bounded_map(pool, _check_batch, _batches(records, 512), 4 * max(1, workers)):
            for raw, parsed, bad in results:
                if isinstance(parsed, Problem):
                    summary.records += 1
                    summary.problems.append(parsed)
                    continue
                if parsed.cid in seen:
                    summary.duplicates += 1
                    continue
                seen.add(parsed.cid)
                summary.records += 1
                summary.by_type[parsed.type] += 1
                summary.signatures += len(parsed.signatures)
                for key in bad:
                    target = (
                        block_problems.setdefault(parsed.cid, [])
                        if parsed.type == "vote_block"
                        else summary.problems
                    )
                    target.append(
                        Problem(
                            "SIG-VALID",
                            parsed.cid,
                            raw.location,
                            f"checked the signature by {key} on {parsed.type} {parsed.cid}: "
                            "it does not verify over the record digest",
                        )
                    )
                if parsed.timestamps:
                    stamped.append((parsed.cid, parsed.type, parsed.digest, parsed.timestamps))
                if parsed.type == "receipt" and parsed.body.result == "accepted":
                    accepted_blocks.add(parsed.body.block)
                if parsed.type == "election":
                    summary.elections.append(parsed.cid)
                    for authority in parsed.body.timestampAuthorities:
                        tsa_certs.append(b64u_decode(authority.certificate))
    for block, problems in block_problems.items():
        if block in accepted_blocks:
            summary.problems.extend(problems)
    summary.tsa_certificates = len(tsa_certs)
    for cid, record_type, digest, tokens in stamped:
        for i, token in enumerate(tokens):
            summary.tokens += 1
            result = verify_token(token, digest, tsa_certs, tsa_roots)
            for problem in result.token_problems:
                summary.problems.append(
                    Problem(
                        "TSA-TOKEN",
                        cid,
                        f"{record_type} timestamps[{i}]",
                        f"{record_type} {cid}: {problem}",
                    )
                )
            for problem in result.imprint_problems:
                summary.problems.append(
                    Problem(
                        "TSA-IMPRINT",
                        cid,
                        f"{record_type} timestamps[{i}]",
                        f"{record_type} {cid}: {problem}",
                    )
                )
    summary.seconds = time.perf_counter() - started
    return summary
