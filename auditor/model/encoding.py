"""Byte-level encodings of spec §2: b64u, strict JSON, canonical JSON (JCS) and CIDs.

Pure functions, no I/O. Every decoder rejects what the spec calls invalid with an
:class:`~auditor.errors.EncodingError` that says what was found and what was expected.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import json
import operator
import re
from typing import Any

import orjson

from auditor.errors import EncodingError
from auditor.limits import MAX_ENVELOPE_BYTES, MAX_JSON_CONTAINERS, MAX_JSON_DEPTH, WHERE

__all__ = [
    "B64U_ALPHABET",
    "B64U_CLASS",
    "B64U_LAST",
    "CID_BINARY_LEN",
    "CID_PREFIX",
    "CID_TEXT_LEN",
    "MAX_ENVELOPE_BYTES",
    "MAX_SAFE_INT",
    "NOT_CANONICAL",
    "b64u_decode",
    "b64u_encode",
    "b64u_pattern",
    "canonical_value",
    "cid_binary",
    "cid_from_binary",
    "cid_of",
    "cid_to_binary",
    "is_cid_text",
    "jcs",
    "json_shape_problem",
    "orjson_writes",
    "parse_json",
    "sha256",
]

MAX_SAFE_INT = 2**53 - 1
# MAX_ENVELOPE_BYTES (spec §3) lives in auditor.limits with every other limit; it is
# re-exported here, where the envelope code has always found it.

# spec §2: CIDv1 (0x01), multicodec json (0x0200 as varint 80 04), sha2-256 (0x12), 32 bytes.
CID_PREFIX = bytes([0x01, 0x80, 0x04, 0x12, 0x20])
# The spec text says "36 bytes" and "59 characters"; its own layout (5 + 32 bytes) and its
# vectors give 37 and 61. We follow the layout and the vectors (docs/decisions.md, D1).
CID_BINARY_LEN = 37
CID_TEXT_LEN = 61
_CID_TEXT = re.compile(r"^bagaaiera[a-z2-7]{52}$")
# A canonical text CID in one pattern (what is_cid_text accepts), for patterns over bytes
CID_CANONICAL = "bagaaiera[a-z2-7]{51}[aq]"
_B64U = re.compile(r"^[A-Za-z0-9_-]*$")
B64U_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
B64U_CLASS = "A-Za-z0-9_-"  # the alphabet as a pattern's character class
# The last character of a text whose length is 2 or 3 mod 4 carries 4 or 2 unused low
# bits, which must be zero (RFC 4648 §3.5, canonical): these characters.
B64U_LAST = {2: "AQgw", 3: "AEIMQUYcgkosw048"}
_B64U_VALUE = {c: i for i, c in enumerate(B64U_ALPHABET)}
_TO_STANDARD = bytes.maketrans(b"-_", b"+/")  # bytes.translate: a C table lookup
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


# ---------------------------------------------------------------------------- b64u


def b64u_encode(data: bytes) -> str:
    """base64url without padding (spec §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64u_pattern(length: int) -> re.Pattern[str]:
    """The pattern (for ``fullmatch``) of the canonical base64url text of exactly
    ``length`` bytes: what :func:`b64u_decode` accepts with ``length``."""
    chars = (length * 4 + 2) // 3  # ceil(4 * length / 3)
    tail = chars % 4
    last = f"[{B64U_LAST[tail]}]" if tail else f"[{B64U_CLASS}]"
    return re.compile(f"[{B64U_CLASS}]{{{chars - 1}}}{last}")


def b64u_decode(text: str, *, length: int | None = None, what: str = "b64u") -> bytes:
    """Decode strict base64url: no padding, URL alphabet, canonical trailing bits.

    With ``length``, the decoded bytes must have exactly that many bytes.
    """
    if not isinstance(text, str):
        raise EncodingError(what, type(text).__name__, "a base64url string")
    if len(text) % 4 == 1 or not _B64U.fullmatch(text):
        raise EncodingError(what, _show(text), "base64url without padding (RFC 4648 §5)")
    # Canonical form: the unused low bits of the last character are zero (2 data bytes
    # in 3 characters leave 2 bits, 1 byte in 2 characters leaves 4), checked without
    # re-encoding.
    tail = len(text) % 4
    if tail and _B64U_VALUE[text[-1]] & (0x0F if tail == 2 else 0x03):
        raise EncodingError(what, _show(text), "canonical base64url (unused trailing bits zero)")
    try:
        raw = binascii.a2b_base64(text.encode("ascii").translate(_TO_STANDARD) + b"=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as e:  # pragma: no cover - regex screens first
        raise EncodingError(what, _show(text), "base64url without padding") from e
    if length is not None and len(raw) != length:
        raise EncodingError(what, f"{len(raw)} bytes", f"{length} bytes")
    return raw


def b64u_bytes(text: bytes) -> bytes:
    """Decode base64url ASCII bytes that a :func:`b64u_pattern` already matched (so valid
    and canonical: nothing is checked again)."""
    return binascii.a2b_base64(text.translate(_TO_STANDARD) + b"=" * (-len(text) % 4))


# ---------------------------------------------------------------------------- JSON


class _Rejected(ValueError):
    """Raised inside json hooks; turned into an EncodingError by parse_json."""


def _reject_float(text: str) -> Any:
    raise _Rejected(f"the number {text} (floating point)")


def _reject_constant(text: str) -> Any:
    raise _Rejected(f"the constant {text}")


def _checked_int(text: str) -> int:
    # Test the length first: int() raises a plain ValueError beyond 4300 digits.
    if len(text.lstrip("-")) > len(str(MAX_SAFE_INT)):
        raise _Rejected(f"the integer {_show(text)} outside [-(2^53-1), 2^53-1]")
    value = int(text)
    if not -MAX_SAFE_INT <= value <= MAX_SAFE_INT:
        raise _Rejected(f"the integer {text} outside [-(2^53-1), 2^53-1]")
    return value


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for name, value in pairs:
        if name in obj:
            raise _Rejected(f"the duplicate member name {name!r}")
        if not name.isascii():
            raise _Rejected(f"the non-ASCII member name {name!r}")
        obj[name] = value
    return obj


# Bytes that matter to nesting once strings are gone: openers become 2, closers 0 (so a
# running sum minus the count of brackets seen is the depth), everything else is deleted.
_BRACKETS = bytes.maketrans(b"[{]}", b"\x02\x02\x00\x00")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'"[]{}')
_STRING_BODY = re.compile(rb'"[^"]*"')
_DEPTH_CHUNK = 1 << 16


def json_shape_problem(
    data: bytes, *, max_depth: int = MAX_JSON_DEPTH, max_containers: int = MAX_JSON_CONTAINERS
) -> str | None:
    """Why ``data`` must not be handed to ``json.loads``: nesting deeper than ``max_depth``
    or more than ``max_containers`` arrays and objects; None when it may be.

    Runs on the bytes, before any recursion, in time linear in ``data`` (an 8 MiB
    adversarial document takes well under a second; a record with at most ``max_depth``
    brackets, which is nearly every record, costs two ``bytes.count``). Brackets inside
    strings do not count. For malformed JSON (an unterminated string, unbalanced
    brackets) the answer bounds what ``json.loads`` would do before it finds the error.
    """
    openers = data.count(b"[") + data.count(b"{")
    if openers <= max_depth:
        return None  # the common case: no room for deep nesting or many containers
    # 1. Strings out. Escaped backslashes and quotes go first; then every byte but quotes
    #    and brackets, and every pair of adjacent quotes (which changes no byte's parity,
    #    inside or outside a string): all in C, so only strings holding a bracket are left
    #    for the regex, one match each.
    text = data
    if b"\\" in text:
        text = text.replace(b"\\\\", b"").replace(b'\\"', b"")
    if b'"' in text:
        text = text.translate(None, _NOT_STRUCTURE).replace(b'""', b"")
        if b'"' in text:
            text = _STRING_BODY.sub(b"", text)
            stray = text.find(b'"')  # an unterminated string runs to the end
            if stray >= 0:
                text = text[:stray]
    brackets = text.translate(_BRACKETS, _NOT_BRACKETS)
    openers = brackets.count(2)
    if openers <= max_depth:
        return None
    if openers > max_containers:
        return f"{openers:,} arrays and objects, at most {max_containers:,} ({WHERE})"
    # 2. The deepest point, chunk by chunk; a chunk that cannot reach the limit from the
    #    depth it starts at is skipped with one count.
    depth = 0
    for start in range(0, len(brackets), _DEPTH_CHUNK):
        chunk = brackets[start : start + _DEPTH_CHUNK]
        opened = chunk.count(2)
        if depth + opened > max_depth:
            peak = depth + max(map(operator.sub, itertools.accumulate(chunk), itertools.count(1)))
            if peak > max_depth:
                return f"arrays and objects nested more than {max_depth} deep, at most {max_depth} ({WHERE})"
        depth += 2 * opened - len(chunk)
    return None


def parse_json(data: bytes, *, what: str = "JSON", max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse JSON under the restrictions of spec §2 and the limits of docs/limits.md.

    Rejects invalid UTF-8, floats, NaN/Infinity, integers beyond 2^53-1, duplicate or
    non-ASCII member names, nesting deeper than ``max_depth`` and more than
    MAX_JSON_CONTAINERS arrays and objects (both found before parsing starts).
    """
    shape = json_shape_problem(data, max_depth=max_depth)
    if shape is not None:
        raise EncodingError(what, shape, "JSON within vtaudit's limits")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise EncodingError(what, f"invalid UTF-8 at byte {e.start}", "UTF-8 text") from e
    try:
        value = json.loads(
            text,
            object_pairs_hook=_unique_object,
            parse_float=_reject_float,
            parse_constant=_reject_constant,
            parse_int=_checked_int,
        )
    except _Rejected as e:
        raise EncodingError(what, str(e), "JSON as restricted by spec §2") from e
    except json.JSONDecodeError as e:
        raise EncodingError(what, f"{e.msg} at line {e.lineno} column {e.colno}", "JSON") from e
    except RecursionError as e:  # pragma: no cover - the pre-scan refuses deep nesting first
        raise EncodingError(what, "nesting too deep to parse", "a shallow JSON document") from e
    # A \uD800-\uDFFF escape may leave a lone surrogate, which has no UTF-8 form (RFC 8785
    # §3.2.2.2 rejects it). Only documents with such an escape pay for the re-encoding.
    if _SURROGATE_ESCAPE.search(text):
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as e:
            raise EncodingError(what, "a lone surrogate escape in a string", "well-formed Unicode") from e
    return value


NOT_CANONICAL = object()  # canonical_value's answer for bytes that are not orjson's own output


def canonical_value(data: bytes) -> Any:
    """The value of ``data`` if the bytes are exactly orjson's sorted compact output for it
    (for values of strings, integers, booleans, null, arrays and objects with ASCII member
    names, that is the JCS form), else NOT_CANONICAL. A fast screen, not a strict parse:
    floats and integers past 2^53 come through as values, duplicate members and anything
    orjson refuses do not; the caller's schema must refuse the former (D40)."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return NOT_CANONICAL
    return value if orjson_writes(value, data) else NOT_CANONICAL


def orjson_writes(value: Any, data: bytes) -> bool:
    """Whether orjson's sorted compact output for ``value`` is ``data``."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS) == data
    except orjson.JSONEncodeError:
        return False


def jcs(value: Any) -> bytes:
    """Canonical bytes (RFC 8785) of a value restricted as in spec §2.

    Under those restrictions (no floats, ASCII member names) RFC 8785 is compact JSON
    with sorted members and raw UTF-8. Lone surrogates cannot be encoded and raise.
    """
    try:
        return json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode("utf-8")
    except (UnicodeEncodeError, ValueError, TypeError) as e:
        raise EncodingError("JSON value", str(e), "a value with a canonical encoding") from e


# ---------------------------------------------------------------------------- CID


def cid_binary(data: bytes) -> bytes:
    """The 37-byte binary CID of ``data`` (spec §2)."""
    return CID_PREFIX + hashlib.sha256(data).digest()


def cid_from_binary(binary: bytes) -> str:
    """Text form of a binary CID: ``b`` + lowercase base32 without padding."""
    if len(binary) != CID_BINARY_LEN or not binary.startswith(CID_PREFIX):
        raise EncodingError("CID", f"{len(binary)} bytes {binary[:5].hex()}…", "01 80 04 12 20 ‖ sha256")
    return "b" + base64.b32encode(binary).decode("ascii").lower().rstrip("=")


def cid_of(data: bytes) -> str:
    """The text CID of ``data``."""
    return cid_from_binary(cid_binary(data))


def is_cid_text(text: object) -> bool:
    """A canonical text CID: the pattern fixes ``b`` and the 5 prefix bytes (``agaaiera``
    is exactly their 40 bits); 296 bits in 60 characters leave 4 unused bits in the
    last one, which must be zero: it is ``a`` (0) or ``q`` (16)."""
    return isinstance(text, str) and _CID_TEXT.fullmatch(text) is not None and text[-1] in "aq"


def cid_to_binary(text: str, *, what: str = "CID") -> bytes:
    """Parse a text CID; it must be a CIDv1 json/sha2-256 CID in canonical form."""
    if not is_cid_text(text):
        if isinstance(text, str) and _CID_TEXT.fullmatch(text):
            raise EncodingError(what, _show(text), "a canonical CID (unused trailing bits zero)")
        raise EncodingError(what, _show(text), "a 61-character CID starting 'bagaaiera'")
    try:
        return base64.b32decode(text[1:].upper() + "=" * 4)  # 60 chars + 4 = 64
    except (binascii.Error, ValueError) as e:  # pragma: no cover - the pattern screens first
        raise EncodingError(what, _show(text), "base32 text") from e


def _show(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
