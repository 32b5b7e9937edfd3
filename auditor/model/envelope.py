"""Envelopes (spec §3): strict parsing, CID, digest and the signed message.

``parse_envelope`` is the one door through which published bytes become a record. It
checks, in order:

1. size ≤ 8 MiB, before anything is parsed (and the JSON's nesting, before it recurses:
   ``parse_json`` and docs/limits.md);
2. with ``cid``: the bytes hash to it (REC-CID), and they are the canonical JCS bytes;
3. strict JSON (spec §2: no floats, no duplicate names, safe integers, UTF-8);
4. exactly the members v, type, body, signatures, timestamps; v = 1; a known type;
5. the body against its type (spec §4), the signatures' keys and lengths, the
   timestamps' b64u; the numbers of signatures and timestamps and each token's size
   within the limits of auditor.limits.

Every failure raises an :class:`~auditor.errors.EncodingError` (a ``SchemaError`` or a
``CidMismatchError``) naming the record, the member, what was found and what was expected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from auditor.errors import CidMismatchError, EncodingError, SchemaError
from auditor.limits import MAX_SIGNATURES, MAX_TIMESTAMPS, MAX_TOKEN_BYTES
from auditor.model.encoding import (
    MAX_ENVELOPE_BYTES,
    b64u_decode,
    cid_binary,
    cid_of,
    cid_to_binary,
    jcs,
    parse_json,
    sha256,
)
from auditor.model.records import BODY_TYPES
from auditor.model.schema import Key, Signature64, Struct, describe, over_limit

__all__ = [
    "ENVELOPE_MEMBERS",
    "SIGNING_PREFIX",
    "Envelope",
    "Signature",
    "envelope_json",
    "parse_envelope",
    "record_digest",
    "signed_message",
]

SIGNING_PREFIX = b"votetorrent/1:"
ENVELOPE_MEMBERS = ("v", "type", "body", "signatures", "timestamps")


@dataclass(frozen=True, slots=True)
class Signature(Struct):
    key: Key
    sig: Signature64


@dataclass(frozen=True, slots=True)
class Envelope:
    """A parsed, validated record. ``raw`` is its canonical bytes, which hash to ``cid``."""

    cid: str
    raw: bytes
    type: str
    body: Any  # the Struct subclass BODY_TYPES[type]
    signatures: tuple[Signature, ...]
    timestamps: tuple[bytes, ...]
    digest: bytes

    @property
    def signed_message(self) -> bytes:
        return SIGNING_PREFIX + self.digest

    @property
    def signer_keys(self) -> frozenset[str]:
        return frozenset(s.key for s in self.signatures)


def record_digest(record_type: str, body: Any) -> bytes:
    """sha256(JCS({"v": 1, "type": T, "body": B})) (spec §3)."""
    return sha256(jcs({"v": 1, "type": record_type, "body": body}))


def signed_message(digest: bytes) -> bytes:
    """The 46 bytes an Ed25519 signature covers: "votetorrent/1:" ‖ digest (spec §3)."""
    return SIGNING_PREFIX + digest


def envelope_json(
    record_type: str, body: Any, signatures: list[dict[str, str]], timestamps: list[str]
) -> dict[str, Any]:
    return {"v": 1, "type": record_type, "body": body, "signatures": signatures, "timestamps": timestamps}


def parse_envelope(data: bytes, *, cid: str | None = None) -> Envelope:
    """Parse and validate one envelope (see the module docstring for the order of checks).

    ``cid`` is the CID the bytes were published under (a CAR block, ``/ipfs/<cid>``).
    Without it (a file in a directory, an NDJSON line) the record's CID is that of its
    canonical bytes, and formatting differences in the input are tolerated.
    """
    name = cid or "envelope"
    if len(data) > MAX_ENVELOPE_BYTES:
        raise SchemaError("envelope", f"{len(data)} bytes", f"at most {MAX_ENVELOPE_BYTES} bytes", name)
    if cid is not None and cid_binary(data) != _binary_or_none(cid):
        raise CidMismatchError(cid, cid_of(data))
    try:
        obj = parse_json(data, what=f"{name} JSON")
    except EncodingError as e:
        raise SchemaError("envelope", e.got, e.expected, name) from e
    if not isinstance(obj, dict):
        raise SchemaError("envelope", describe(obj), "a JSON object", name)
    if set(obj) != set(ENVELOPE_MEMBERS):
        raise SchemaError(
            "envelope", "members " + ", ".join(sorted(obj)), "exactly " + ", ".join(ENVELOPE_MEMBERS), name
        )
    if obj["v"] != 1 or isinstance(obj["v"], bool):
        raise SchemaError("v", describe(obj["v"]), "1", name)
    record_type = obj["type"]
    body_cls = BODY_TYPES.get(record_type) if isinstance(record_type, str) else None
    if body_cls is None:
        raise SchemaError("type", describe(record_type), "a record type of spec §4", name)
    try:
        canonical = jcs(obj)
    except EncodingError as e:
        raise SchemaError("envelope", e.got, e.expected, name) from e
    if cid is not None and canonical != data:
        raise SchemaError("envelope", "bytes that are not canonical JSON", "the RFC 8785 (JCS) bytes", name)
    record_cid = cid or cid_of(canonical)
    try:
        body = body_cls.parse(obj["body"], "body")
        signatures = _signatures(obj["signatures"])
        timestamps = _timestamps(obj["timestamps"])
    except SchemaError as e:
        raise e.in_record(f"{record_type} {record_cid}") from None
    return Envelope(
        cid=record_cid,
        raw=canonical,
        type=record_type,
        body=body,
        signatures=signatures,
        timestamps=timestamps,
        digest=record_digest(record_type, obj["body"]),
    )


def _binary_or_none(cid: str) -> bytes | None:
    try:
        return cid_to_binary(cid)
    except EncodingError:
        return None


def _signatures(value: Any) -> tuple[Signature, ...]:
    if not isinstance(value, list):
        raise SchemaError("signatures", describe(value), "an array")
    if len(value) > MAX_SIGNATURES:
        raise over_limit("signatures", len(value), "signatures", MAX_SIGNATURES)
    return tuple(Signature.parse(v, f"signatures[{i}]") for i, v in enumerate(value))


def _timestamps(value: Any) -> tuple[bytes, ...]:
    if not isinstance(value, list):
        raise SchemaError("timestamps", describe(value), "an array")
    if len(value) > MAX_TIMESTAMPS:
        raise over_limit("timestamps", len(value), "timestamps", MAX_TIMESTAMPS)
    tokens = []
    for i, token in enumerate(value):
        if isinstance(token, str) and len(token) * 3 // 4 > MAX_TOKEN_BYTES:
            raise over_limit(f"timestamps[{i}]", len(token) * 3 // 4, "bytes", MAX_TOKEN_BYTES)
        try:
            der = b64u_decode(token)
        except EncodingError as e:
            raise SchemaError(f"timestamps[{i}]", e.got, e.expected) from e
        if not der:
            raise SchemaError(f"timestamps[{i}]", "an empty token", "DER of a TimeStampToken")
        tokens.append(der)
    return tuple(tokens)
