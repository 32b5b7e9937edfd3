"""The bulk path of the harvest: records opened a batch at a time, straight into columns.

:func:`prepare_batch` takes a batch of :class:`~auditor.sources.RawRecord`s and returns
the rows they add to the store as Arrow tables, with what became of each record. It
gives exactly what :func:`auditor.sources.open_record` and the record-by-record rows of
:mod:`auditor.store.tables` give, only faster; a record it cannot vouch for goes down
that slow path, which also words every rejection. So the fast path only ever *accepts*.

Why a record it accepts is one the slow path accepts, check by check (spec §2-§4):

* **bytes and CID**: the CID's digest is compared with sha256 of the bytes (in binary for
  a CAR, whose CIDs are binary; as text otherwise, with the texts of a whole batch made
  at once).
* **strict, canonical JSON**: orjson parses the bytes (it rejects invalid UTF-8, lone
  surrogates, NaN and nesting past 1,024); its sorted compact output must then be the
  input bytes exactly. For a value of strings, integers, booleans, null, arrays and
  objects with ASCII member names, that output is the RFC 8785 form (tests compare the
  two for every character), so the equality proves the bytes canonical, and with them
  no whitespace, no duplicate member (orjson keeps the last: the output would be
  shorter), no escaped character JCS writes raw. Floats and integers past 2^53 survive
  the round trip as floats, which no schema position accepts. Non-ASCII member names
  are looked for whenever the bytes are not all ASCII; the nesting and container
  limits are checked with the slow path's own pre-scan.
* **envelope and body**: the members, ``v``, the type, every signature and token, and
  every body member, with the checks of the member's validator as stated by its
  :class:`~auditor.model.schema.Plan`; a member without a plan is given to its
  validator, and a type with rules across members builds its struct and runs them.
  base64url is checked by pattern (alphabet, length, the unused bits of the last
  character) and decoded a whole column at a time when the batch's tables are built.
* **digest**: sha256 of ``{"body":B,"type":T,"v":1}``, whose canonical bytes are the
  envelope's own bytes for ``B``, cut out rather than re-encoded.

``tests/test_bulk.py`` checks the equivalence on clean, tampered and fuzzed records.
"""

from __future__ import annotations

import binascii
import hashlib
import re
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain, pairwise, repeat
from operator import eq, itemgetter
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pybase64

from auditor.errors import EncodingError
from auditor.limits import (
    MAX_JSON_CONTAINERS,
    MAX_OPTIONS,
    MAX_QUESTIONS,
    MAX_SIGNATURES,
    MAX_TEXT_CHARS,
    MAX_TIMESTAMPS,
    MAX_TOKEN_BYTES,
)
from auditor.model.encoding import (
    B64U_ALPHABET,
    B64U_CLASS,
    B64U_LAST,
    CID_BINARY_LEN,
    CID_PREFIX,
    CID_TEXT_LEN,
    MAX_ENVELOPE_BYTES,
    MAX_SAFE_INT,
    NOT_CANONICAL,
    b64u_pattern,
    canonical_value,
    is_cid_text,
    json_shape_problem,
    orjson_writes,
)
from auditor.model.envelope import ENVELOPE_MEMBERS
from auditor.model.histogram import histogram
from auditor.model.records import BODY_TYPES
from auditor.model.schema import _CODE, PLANS, Plan, Struct
from auditor.sources import RawRecord, Rejection
from auditor.store.tables import TABLES, Column, arrow_batches, json_text, schema_of

__all__ = [
    "PreparedBatch",
    "b64u_accepts",
    "cid_binaries",
    "cid_texts",
    "decode_b64u",
    "prepare_batch",
    "table_schema",
]

_NO = object()  # a check's answer for "not accepted here: ask the slow path"
_ENVELOPE_KEYS = frozenset(ENVELOPE_MEMBERS)
_SIGNATURE_KEYS = frozenset(("key", "sig"))
_B32 = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz234567", np.uint8)
_B32_SHIFTS = np.arange(35, -1, -5, dtype=np.uint64)
_CID_TEXT_PREFIX = "bagaaiera"  # the text of CID_PREFIX's 40 bits
# ---------------------------------------------------------------------------- base64url

_ALPHABET, _LAST = B64U_CLASS, B64U_LAST
_B64U_TEXT = re.compile(
    f"(?:[{_ALPHABET}]{{4}})*(?:[{_ALPHABET}][{_LAST[2]}]|[{_ALPHABET}]{{2}}[{_LAST[3]}])?"
)
_ZERO_PAD = ("", "", "AA", "A")  # 'A' is 0: the unused bits of the last character land in extra bytes


def b64u_accepts(text: Any) -> bool:
    """Whether :func:`~auditor.model.encoding.b64u_decode` accepts ``text``: strict
    base64url, no padding, canonical trailing bits (one pattern)."""
    return type(text) is str and _B64U_TEXT.fullmatch(text) is not None


def decode_b64u(texts: Sequence[str]) -> list[bytes]:
    """Decode texts that :func:`b64u_accepts`, all in one call of the C decoder."""
    out = _decode_column(texts)
    assert out is not None, "decode_b64u takes only texts that b64u_accepts"
    return out


def _decode_column(texts: Sequence[str]) -> list[bytes] | None:
    """The bytes of base64url texts, none of a length of 1 mod 4, decoded in one call;
    None if any character is not of the base64url alphabet. (The unused bits of each
    last character are the caller's to check.)"""
    if not texts:
        return []
    # 'A' (zero bits), not '=', pads each text: padding mid-stream would end the decoding
    n = len(texts[0])
    uniform = n > 0 and set(map(len, texts)) == {n}
    if uniform:  # keys, digests, signatures: the same padding for all, then slices at a fixed stride
        pad = _ZERO_PAD[n & 3]
        joined = pad.join(texts) + pad
    else:
        joined = "".join([t + _ZERO_PAD[len(t) & 3] for t in texts])
    data = _decode_joined(joined)
    if data is None:
        return None
    if uniform:
        size, step = n * 3 // 4, (n + 3) // 4 * 3
        return [data[i : i + size] for i in range(0, len(data), step)]
    out = []
    pos = 0
    for t in texts:
        n = len(t)
        out.append(data[pos : pos + n * 3 // 4])
        pos += (n + 3) // 4 * 3
    return out


def _decode_joined(joined: str) -> bytes | None:
    """The bytes of base64url text whose length is a multiple of 4, with no padding; None
    if any character is not of the alphabet. pybase64 checks and decodes in one SIMD pass;
    given '-' and '_' as its two last characters it still takes '+' and '/' (and '=' as
    padding), which base64url does not have: they are looked for first."""
    try:
        data = joined.encode("ascii")
    except UnicodeEncodeError:
        return None
    if b"+" in data or b"/" in data or b"=" in data:
        return None
    try:
        return pybase64.b64decode(data, altchars=b"-_", validate=True)
    except binascii.Error:
        return None


def _decode_array(texts: list[str], chars: int | None = None) -> pa.Array | None:
    """:func:`_decode_column`, as one Arrow binary array: the decoded bytes are cut into
    values by offsets (numpy), not into a Python object per value. ``chars``: the length
    of every text, when the caller knows them all equal."""
    count = len(texts)
    if chars is not None:
        pad = _ZERO_PAD[chars & 3]
        data = _decode_joined(pad.join(texts) + pad) if count else b""
        if data is None:
            return None
        size, step = chars * 3 // 4, (chars + 3) // 4 * 3
        values = np.frombuffer(data, np.uint8)
        if size != step:  # each value is followed by the zero bytes its padding decoded to
            values = np.ascontiguousarray(values.reshape(count, step)[:, :size])
        sizes = np.full(count, size, np.int64)
    else:
        lengths = np.fromiter(map(len, texts), np.int64, count)
        data = _decode_joined("".join([t + _ZERO_PAD[len(t) & 3] for t in texts]))
        if data is None:
            return None
        sizes = lengths * 3 // 4
        padded = (lengths + 3) // 4 * 3
        values = np.frombuffer(data, np.uint8)
        extra = padded - sizes
        if extra.any():
            ends = np.cumsum(padded)
            keep = np.ones(len(values), bool)
            keep[ends[extra >= 1] - 1] = False
            keep[ends[extra == 2] - 2] = False
            values = values[keep]
    if len(values) > _MAX_BINARY_BYTES:  # past a binary array's 32-bit offsets
        return pa.array(_decode_column(texts), pa.binary())
    offsets = np.zeros(count + 1, np.int32)
    np.cumsum(sizes, out=offsets[1:])
    return pa.Array.from_buffers(pa.binary(), count, [None, pa.py_buffer(offsets), pa.py_buffer(values)])


_MAX_BINARY_BYTES = 2**31 - 1


def cid_texts(digests: Sequence[bytes]) -> list[str]:
    """The text CIDs (``bagaaiera…``) of sha256 digests, all at once (base32 in numpy)."""
    n = len(digests)
    if n == 0:
        return []
    grid = np.zeros((n, 35), np.uint8)  # 32 bytes, padded to whole 5-byte groups
    grid[:, :32] = np.frombuffer(b"".join(digests), np.uint8).reshape(n, 32)
    g = grid.reshape(n, 7, 5).astype(np.uint64)
    forty = (g[..., 0] << 32) | (g[..., 1] << 24) | (g[..., 2] << 16) | (g[..., 3] << 8) | g[..., 4]
    chars = _B32[((forty[..., None] >> _B32_SHIFTS) & 31).reshape(n, 56)[:, :52]]
    text = chars.tobytes().decode("ascii")
    return [_CID_TEXT_PREFIX + text[i : i + 52] for i in range(0, 52 * n, 52)]


_B32_VALUE = np.full(256, 255, np.uint8)
_B32_VALUE[_B32] = np.arange(32, dtype=np.uint8)


def cid_binaries(texts: Sequence[str]) -> list[bytes]:
    """The binary CIDs of canonical text CIDs (:func:`~auditor.model.encoding.is_cid_text`),
    all at once: the inverse of :func:`cid_texts` (base32 in numpy, 65,536 at a time so
    that a million CIDs take tens of MB, not hundreds). Raises ValueError if any text is
    not a canonical CID."""
    if not is_canonical_cid_run(texts):
        raise ValueError("cid_binaries takes canonical text CIDs only")
    out: list[bytes] = []
    for start in range(0, len(texts), _CID_SLICE):
        out += _cid_binaries(texts[start : start + _CID_SLICE])
    return out


_CID_SLICE = 1 << 16

# base32's digits in the order of their values, as characters in the same order: a
# canonical text CID translated so sorts as its binary form (spec §2: the 5-byte prefix
# is 8 characters exactly, so each later character is 5 bits of the digest, in order)
_BASE32 = "abcdefghijklmnopqrstuvwxyz234567"
_IN_VALUE_ORDER = "0123456789ABCDEFGHIJKLMNOPQRSTUV"
LEAF_BATCH = 1 << 16


def sorted_cid_leaves(con: Any, source: str, what: str) -> Iterator[list[bytes]]:
    """The binary CIDs of the column ``cid`` of the SQL ``source`` (a table name or a
    parenthesised query of canonical CIDs) in ascending byte order (spec §5.3's leaves),
    LEAF_BATCH at a time, sorted by DuckDB (which spills) on ``con``; each batch is checked
    to continue the order strictly, so a CID that is not canonical, or twice there, stops
    the stream (ValueError naming ``what``) instead of giving a wrong root. Nothing else
    may query ``con`` while the stream is read."""
    relation = con.sql(f"SELECT cid FROM {source} ORDER BY translate(cid, '{_BASE32}', '{_IN_VALUE_ORDER}')")
    reader = arrow_batches(relation, LEAF_BATCH)
    last = b""
    for batch in reader:
        leaves = cid_binaries(batch.column(0).to_pylist())
        if leaves and not (last < leaves[0] and all(a < b for a, b in pairwise(leaves))):
            raise ValueError(f"{what}: the CIDs did not sort by their bytes")
        if leaves:
            last = leaves[-1]
        yield leaves


def _cid_binaries(texts: Sequence[str]) -> list[bytes]:
    data = cid_binary_grid(texts).tobytes()
    n = len(texts)
    return [data[i : i + CID_BINARY_LEN] for i in range(0, n * CID_BINARY_LEN, CID_BINARY_LEN)]


def is_canonical_cid_run(texts: Sequence[str]) -> bool:
    """Whether every text of ``texts`` is a canonical text CID (one regular expression
    over them all)."""
    return not set(map(len, texts)) - {CID_TEXT_LEN} and _CID_RUN.fullmatch("".join(texts)) is not None


def cid_binary_grid(texts: Sequence[str]) -> np.ndarray:
    """The binary CIDs of canonical text CIDs as the rows of an (n, 37) byte array
    (texts not checked: see :func:`is_canonical_cid_run`)."""
    return checked_cid_grid(texts)[0]


def checked_cid_grid(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The binary CIDs of ASCII texts of CID_TEXT_LEN characters each, as the rows of an
    (n, 37) byte array, and for each whether its text is a canonical CID (what
    :func:`~auditor.model.encoding.is_cid_text` says, without a regular expression: ``b``,
    base32 digits, the 5 prefix bytes, the 4 unused bits zero); the rows of the others
    are meaningless."""
    n = len(texts)
    full = np.frombuffer("".join(texts).encode("ascii"), np.uint8).reshape(n, CID_TEXT_LEN)
    chars = full[:, 1:]
    values = np.zeros((n, 64), np.uint8)  # 60 characters of 5 bits, padded to 8 groups of 8
    values[:, :60] = np.take(_B32_VALUE, chars)
    grid = _grid_of(values, n)
    canonical = (
        (full[:, 0] == ord("b"))
        & (values[:, :60] != 255).all(axis=1)
        & (values[:, 59] & 15 == 0)
        & (grid[:, : len(CID_PREFIX)] == np.frombuffer(CID_PREFIX, np.uint8)).all(axis=1)
    )
    return grid, canonical


def _grid_of(values: np.ndarray, n: int) -> np.ndarray:
    groups = values.reshape(n, 8, 8).astype(np.uint64)
    forty = np.zeros((n, 8), np.uint64)
    for k in range(8):
        forty = (forty << np.uint64(5)) | groups[..., k]
    out = np.zeros((n, 8, 5), np.uint8)
    for k in range(5):
        out[..., k] = (forty >> np.uint64(32 - 8 * k)) & np.uint64(0xFF)
    return out.reshape(n, 40)[:, :CID_BINARY_LEN]


# ---------------------------------------------------------------------------- checks

# A JSON value -> what its column holds if accepted (the value itself; base64url of no
# fixed length already decoded, as bytes), else _NO.
Check = Callable[[Any], Any]


def _check_of(plan: Plan) -> Check:
    kind = plan.kind
    if kind == "text":
        limit = plan.max_chars
        return lambda v: v if type(v) is str and (limit is None or len(v) <= limit) else _NO
    if kind == "cid":
        return lambda v: v if is_cid_text(v) else _NO
    if kind == "code":
        return lambda v: v if type(v) is str and _CODE.fullmatch(v) else _NO
    if kind == "int":
        low = max(plan.minimum, -MAX_SAFE_INT)
        return lambda v: v if type(v) is int and low <= v <= MAX_SAFE_INT else _NO
    if kind == "one_of":
        allowed = frozenset(plan.allowed)
        return lambda v: v if type(v) is str and v in allowed else _NO
    if kind == "b64u":
        return _b64u_check(plan)
    if kind == "array":
        return _array_check(plan)
    raise ValueError(f"no check for plan kind {kind!r}")  # pragma: no cover - schema.py makes every kind


def _b64u_check(plan: Plan) -> Check:
    """Fixed lengths (keys, digests, signatures) by pattern, the text kept for the batch
    to decode; other lengths (ciphertexts) decoded here: for long texts the C decoder
    checks the alphabet faster than a pattern does."""
    if plan.length is not None:
        exact = b64u_pattern(plan.length)
        return lambda v: v if type(v) is str and exact.fullmatch(v) else _NO
    min_chars = (plan.min_length * 4 + 2) // 3  # the fewest characters holding min_length bytes
    max_chars = plan.max_chars

    def check(v: Any) -> Any:
        if type(v) is not str or len(v) < min_chars or (max_chars is not None and len(v) > max_chars):
            return _NO
        raw = _strict_decode(v)
        return _NO if raw is None else raw

    return check


_STRICT = bytes.maketrans(b"-_+/=", b"+/!!!")  # '+', '/' and '=' become invalid characters


def _strict_decode(text: str) -> bytes | None:
    """The bytes of ``text`` if :func:`b64u_accepts` it, else None."""
    rest = len(text) & 3
    if rest == 1:
        return None
    try:
        raw = binascii.a2b_base64(
            (text + _ZERO_PAD[rest]).encode("ascii").translate(_STRICT), strict_mode=True
        )
    except (binascii.Error, UnicodeEncodeError):
        return None
    if rest:
        size = len(text) * 3 // 4
        if raw[size:].strip(b"\0"):
            return None  # the unused trailing bits are not zero: not canonical
        return raw[:size]
    return raw


def _array_check(plan: Plan) -> Check:
    assert plan.item is not None
    item = _check_of(plan.item)
    low, high = plan.min_items, plan.max_items
    decoded = plan.item.kind == "b64u" and plan.item.length is None  # the items' checks decode them

    def check(v: Any) -> Any:
        if type(v) is not list or len(v) < low or (high is not None and len(v) > high):
            return _NO
        out = [item(x) for x in v]
        if _NO in out:
            return _NO
        return out if decoded else v

    return check


def _count_ok(v: Any) -> bool:
    return type(v) is int and 0 <= v <= MAX_SAFE_INT


def _histogram_check(value: Any) -> Any:
    """What :func:`auditor.model.histogram.histogram` accepts, checked without building its
    copy (the copy equals the value, so the column is the value's JSON)."""
    if type(value) is not dict or len(value) > MAX_QUESTIONS:
        return _NO
    for question, entry in value.items():
        if not _CODE.fullmatch(question) or type(entry) is not dict or not _count_ok(entry.get("ballots")):
            return _NO
        kind = entry.get("type")
        if kind == "text":
            if entry.keys() != _TEXT_ENTRY or not _text_values_ok(entry["values"]):
                return _NO
            continue
        check = _OPTION_CHECKS.get(kind) if type(kind) is str else None
        options = entry.get("options")
        if check is None or entry.keys() != _OPTIONS_ENTRY or type(options) is not dict:
            return _NO
        if len(options) > MAX_OPTIONS:
            return _NO
        for name, item in options.items():
            if not _CODE.fullmatch(name) or not check(item):
                return _NO
    return value


def _text_values_ok(values: Any) -> bool:
    if type(values) is not list:
        return False
    previous = None
    for pair in values:
        if type(pair) is not list or len(pair) != 2:
            return False
        answer, count = pair
        if type(answer) is not str or len(answer) > MAX_TEXT_CHARS or not _count_ok(count):
            return False
        key = answer.encode("utf-8")
        if previous is not None and key <= previous:
            return False
        previous = key
    return True


def _rank_ok(v: Any) -> bool:
    return type(v) is list and len(v) <= MAX_OPTIONS and all(_count_ok(c) for c in v)


def _score_ok(v: Any) -> bool:
    if type(v) is not dict or v.keys() != _SCORE_ENTRY or not _count_ok(v["count"]):
        return False
    total = v["sum"]
    return type(total) is int and -MAX_SAFE_INT <= total <= MAX_SAFE_INT


_TEXT_ENTRY = frozenset(("type", "ballots", "values"))
_OPTIONS_ENTRY = frozenset(("type", "ballots", "options"))
_SCORE_ENTRY = frozenset(("count", "sum"))
_OPTION_CHECKS: dict[str, Callable[[Any], bool]] = {"select": _count_ok, "rank": _rank_ok, "score": _score_ok}
# Validators with a check of their own here, beside those a Plan describes. Like a plan's,
# such a check admits no non-ASCII member name (the histogram's are codes or fixed).
_CHECKS: dict[Callable[[Any, str], Any], Check] = {histogram: _histogram_check}

_key32 = _check_of(Plan("b64u", length=32))
_sig64 = _check_of(Plan("b64u", length=64))


# ---------------------------------------------------------------------------- column checks

# A column (one member's values in a batch's records of one type) -> what the table holds
# if every value is accepted, else _NO: the same answer as the member's Check for each
# value, from a few calls over the whole column (the set of the values' types, min and
# max, one pattern over the joined texts) rather than a call per value.
ColumnCheck = Callable[[list[Any]], Any]


@dataclass(frozen=True, slots=True)
class _Lists:
    """An array member's column: each record's list (``values``, as in the JSON), and the
    items checked, end to end (``flat``: the items, or an Arrow array of their bytes
    where the check decoded them)."""

    values: list[Any]
    lengths: list[int]
    flat: list[Any] | pa.Array


def _all(col: list[Any], kind: type) -> bool:
    return not col or set(map(type, col)) == {kind}


def _same_length(col: list[str], chars: int) -> bool:
    return not col or set(map(len, col)) == {chars}


_EMPTY_BINARY = pa.array([], pa.binary())
_CID_RUN = re.compile(r"(?:bagaaiera[a-z2-7]{51}[aq])*")  # is_cid_text's texts, end to end
_CODE_RUN = re.compile(r"(?:[A-Za-z0-9_.-]{1,64}\n)*")  # _CODE's, each ended by a newline
_LAST_OK = ("", "", _LAST[2], _LAST[3])  # the last characters allowed, by length mod 4 (1: none)


def _column_check_of(plan: Plan) -> ColumnCheck:
    kind = plan.kind
    if kind == "text":
        limit = plan.max_chars

        def text(col: list[Any]) -> Any:
            if not _all(col, str) or (limit is not None and col and max(map(len, col)) > limit):
                return _NO
            return col

        return text
    if kind == "cid":
        return lambda col: (
            col
            if _all(col, str) and _same_length(col, CID_TEXT_LEN) and _CID_RUN.fullmatch("".join(col))
            else _NO
        )
    if kind == "code":

        def code(col: list[Any]) -> Any:
            if not col:
                return col
            if not _all(col, str):
                return _NO
            joined = "\n".join(col) + "\n"  # a newline inside a value would add one: counted
            return col if joined.count("\n") == len(col) and _CODE_RUN.fullmatch(joined) else _NO

        return code
    if kind == "int":
        low = max(plan.minimum, -MAX_SAFE_INT)
        return lambda col: (
            col if not col or (_all(col, int) and min(col) >= low and max(col) <= MAX_SAFE_INT) else _NO
        )
    if kind == "one_of":
        allowed = frozenset(plan.allowed)
        return lambda col: col if _all(col, str) and allowed.issuperset(col) else _NO
    if kind == "b64u":
        return _b64u_column_check(plan)
    if kind == "array":
        return _array_column_check(plan)
    raise ValueError(f"no column check for plan kind {kind!r}")  # pragma: no cover


def _b64u_column_check(plan: Plan) -> ColumnCheck:
    """Fixed lengths (keys, digests, signatures): the texts joined, their last characters
    taken at a fixed stride, then decoded. Other lengths: each last character, then
    decoded. Either way the column's bytes."""
    if plan.length is None:
        min_chars = (plan.min_length * 4 + 2) // 3
        max_chars = plan.max_chars
        return lambda col: _b64u_column(col, min_chars, max_chars)
    chars = (plan.length * 4 + 2) // 3
    pad = _ZERO_PAD[chars % 4]
    step = chars + len(pad)
    last = frozenset(_LAST_OK[chars % 4] if chars % 4 else B64U_ALPHABET)

    def fixed(col: list[Any]) -> Any:
        if not col:
            return _EMPTY_BINARY
        if not _all(col, str) or not _same_length(col, chars):
            return _NO
        if not last.issuperset((pad.join(col) + pad)[chars - 1 :: step]):
            return _NO
        out = _decode_array(col, chars)
        return _NO if out is None else out

    return fixed


def _b64u_column(col: list[Any], min_chars: int, max_chars: int | None) -> Any:
    """The bytes of base64url texts of ``min_chars`` to ``max_chars`` characters, if
    :func:`b64u_accepts` every one, else _NO."""
    if not col:
        return _EMPTY_BINARY
    if not _all(col, str):
        return _NO
    lengths = list(map(len, col))
    if min(lengths) < min_chars or (max_chars is not None and max(lengths) > max_chars):
        return _NO
    for text, n in zip(col, lengths, strict=True):
        if n & 3 and text[-1] not in _LAST_OK[n & 3]:
            return _NO
    out = _decode_array(col)
    return _NO if out is None else out


def _array_column_check(plan: Plan) -> ColumnCheck:
    assert plan.item is not None
    item = _column_check_of(plan.item)
    low, high = plan.min_items, plan.max_items

    def array(col: list[Any]) -> Any:
        if not _all(col, list):
            return _NO
        lengths = list(map(len, col))
        if col and (min(lengths) < low or (high is not None and max(lengths) > high)):
            return _NO
        flat = item(list(chain.from_iterable(col)))
        return _NO if flat is _NO else _Lists(col, lengths, flat)

    return array


def _each(check: Check) -> ColumnCheck:
    """A member's own check, value by value (a validator with a check of its own)."""

    def column(col: list[Any]) -> Any:
        out = [check(v) for v in col]
        return _NO if _NO in out else out

    return column


# ---------------------------------------------------------------------------- body programs


@dataclass(frozen=True)
class _Program:
    """How one record type's body is checked and turned into its table's row."""

    cls: type[Struct]
    keys: frozenset[str]
    checks: tuple[tuple[str, Check], ...]
    planned: frozenset[str]  # members checked by their plan (the others by their validator)
    free_names: tuple[str, ...]  # the unplanned members: their validators may take non-ASCII names
    needs_struct: bool  # rules across members, or a column computed from several
    # The row after its CID: the members' values (``direct``, one itemgetter), then the
    # columns that need more (``fixups``: position in the row, column).
    direct: Callable[[dict[str, Any]], tuple[Any, ...]]
    fixups: tuple[tuple[int, Column], ...]
    # a check per member for whole columns (_columnar), if every member has a plan or a
    # check of its own
    column_checks: tuple[tuple[str, ColumnCheck], ...] | None


def _wrapped(validator: Callable[[Any, str], Any], path: str) -> Check:
    def check(v: Any) -> Any:
        try:
            return validator(v, path)
        except EncodingError:
            return _NO

    return check


def _program(record_type: str) -> _Program:
    cls = BODY_TYPES[record_type]
    validators = cls.json_members()
    checks, planned, column_checks = [], set(), []
    for name, validator in validators.items():
        plan = PLANS.get(validator)
        if validator in _CHECKS:
            checks.append((name, _CHECKS[validator]))
            column_checks.append((name, _each(_CHECKS[validator])))
            planned.add(name)
        elif plan is not None and (plan.kind != "array" or plan.item is not None):
            checks.append((name, _check_of(plan)))
            column_checks.append((name, _column_check_of(plan)))
            planned.add(name)
        else:
            checks.append((name, _wrapped(validator, f"body.{name}")))
    columns = TABLES[record_type]
    # ``got`` holds a planned member's JSON value, an unplanned one's validator result:
    # as is, as a list or base64url to decode (the batch does that), that is the column
    names, fixups = [], []
    for i, column in enumerate(columns, start=1):
        if column.member is not None and column.convert in ("", "b", "bs", "list"):
            names.append(column.member)
        else:
            names.append(next(iter(validators)))  # a placeholder, replaced by the fixup
            fixups.append((i, column))
    get = itemgetter(*names)
    direct = get if len(names) > 1 else (lambda got: (get(got),))
    needs_struct = cls.validate is not Struct.validate or any(c.member is None for c in columns)
    return _Program(
        cls,
        frozenset(validators),
        tuple(checks),
        frozenset(planned),
        tuple(n for n in validators if n not in planned),
        needs_struct,
        direct,
        tuple(fixups),
        tuple(column_checks) if len(planned) == len(validators) else None,
    )


_PROGRAMS = {t: _program(t) for t in BODY_TYPES}


# ---------------------------------------------------------------------------- whole columns


_SIGNATURE_KEY = _column_check_of(Plan("b64u", length=32))
_SIGNATURE_SIG = _column_check_of(Plan("b64u", length=64))
_TOKEN_MAX_CHARS = (MAX_TOKEN_BYTES * 4 + 3) // 3  # the longest text of at most MAX_TOKEN_BYTES bytes


def _columnar(
    program: _Program, record_type: str, values: list[dict[str, Any]], datas: list[bytes], cids: list[str]
) -> dict[str, pa.Table] | None:
    """The tables of records of one type (each CID once), if every record is accepted;
    None if any is not (the caller then splits the records). ``values``: the parsed
    envelopes, whose members and ``v`` and ``type`` were checked."""
    bodies = [v["body"] for v in values]
    if not _all(bodies, dict) or not all(map(eq, map(dict.keys, bodies), repeat(program.keys))):
        return None
    assert program.column_checks is not None
    got: dict[str, Any] = {}
    for name, check in program.column_checks:
        out = check(list(map(itemgetter(name), bodies)))
        if out is _NO:
            return None
        got[name] = out
    signatures = _list_column(values, "signatures", MAX_SIGNATURES)
    tokens = _list_column(values, "timestamps", MAX_TIMESTAMPS)
    if signatures is None or tokens is None:
        return None
    flat_signatures = signatures.flat
    if not _all(flat_signatures, dict) or not all(
        map(eq, map(dict.keys, flat_signatures), repeat(_SIGNATURE_KEYS))
    ):
        return None
    keys = _SIGNATURE_KEY(list(map(itemgetter("key"), flat_signatures)))
    sigs = _SIGNATURE_SIG(list(map(itemgetter("sig"), flat_signatures)))
    token_bytes = _b64u_column(tokens.flat, 2, _TOKEN_MAX_CHARS)  # 2 characters: the first byte
    if keys is _NO or sigs is _NO or token_bytes is _NO:
        return None
    structs = None
    if program.needs_struct:  # rules across members, or a column computed from several
        structs = [program.cls(**_struct_members(body)) for body in bodies]
        try:
            for struct in structs:
                struct.validate("body")
        except EncodingError:
            return None

    cid_array = pa.array(cids, pa.string())
    tables = {
        "envelopes": pa.table(
            [
                cid_array,
                pa.array([record_type] * len(cids), pa.string()),
                pa.array(list(map(len, datas)), pa.int64()),
                pa.array(_digests(datas, record_type), pa.binary()),
                pa.array(datas, pa.binary()),
            ],
            schema=table_schema("envelopes"),
        )
    }
    if flat_signatures:
        tables["signatures"] = _per_item("signatures", cid_array, signatures.lengths, keys, sigs)
    if len(token_bytes):
        tables["timestamps"] = _per_item("timestamps", cid_array, tokens.lengths, token_bytes)
    schema = table_schema(record_type)
    arrays: list[pa.Array] = [cid_array]
    for column, f in zip(TABLES[record_type], list(schema)[1:], strict=True):
        if column.member is None:  # computed from several members
            assert structs is not None
            arrays.append(pa.array([column.extract(struct) for struct in structs], f.type))
            continue
        value = got[column.member]
        if column.convert == "j":
            raw = value.values if isinstance(value, _Lists) else list(map(itemgetter(column.member), bodies))
            arrays.append(pa.array([json_text(v) for v in raw], f.type))
        elif isinstance(value, _Lists):
            arrays.append(_list_array(value, f.type))
        elif isinstance(value, pa.Array):  # base64url, decoded by its check
            arrays.append(value)
        elif f.type == pa.binary():
            arrays.append(pa.array(_decoded(value), f.type))
        else:
            arrays.append(pa.array(value, f.type))
    tables[record_type] = pa.table(arrays, schema=schema)
    return tables


def _struct_members(body: dict[str, Any]) -> dict[str, Any]:
    """A body's members as its struct holds them once validated (every member planned:
    its JSON value, arrays as tuples)."""
    return {n: tuple(v) if type(v) is list else v for n, v in body.items()}


def _list_column(values: list[dict[str, Any]], member: str, most: int) -> _Lists | None:
    """The envelopes' ``member`` lists (signatures, tokens) if each is a list of at most
    ``most`` items."""
    lists = list(map(itemgetter(member), values))
    if not _all(lists, list):
        return None
    lengths = list(map(len, lists))
    if lengths and max(lengths) > most:
        return None
    return _Lists(lists, lengths, list(chain.from_iterable(lists)))


def _per_item(table: str, cids: pa.Array, lengths: list[int], *columns: pa.Array) -> pa.Table:
    """A table of one row per list item (signature, token): the record's CID, the item's
    index in its list, then ``columns``."""
    counts = np.array(lengths, np.int64)
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    idx = np.arange(len(columns[0]), dtype=np.int64) - starts
    return pa.table(
        [
            cids.take(np.repeat(np.arange(len(lengths)), counts)),
            pa.array(idx.astype(np.int32), pa.int32()),
            *columns,
        ],
        schema=table_schema(table),
    )


def _list_array(value: _Lists, dtype: pa.DataType) -> pa.Array:
    offsets = np.zeros(len(value.lengths) + 1, np.int32)
    np.cumsum(value.lengths, out=offsets[1:])
    item_type = dtype.value_type
    if isinstance(value.flat, pa.Array):  # base64url, decoded by its check
        items = value.flat
    else:
        items = pa.array(_decoded(value.flat) if item_type == pa.binary() else value.flat, item_type)
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), items)


# ---------------------------------------------------------------------------- batches


def table_schema(name: str) -> pa.Schema:
    from auditor.store.evidence import ALL_TABLES  # the store's schemas; evidence imports this module

    return ALL_TABLES.get(name) or schema_of(name)


@dataclass
class PreparedBatch:
    """What a batch of records adds to the store; made in a worker, applied by the store.

    Per record, in order: its CID (None if rejected), type and location. The tables hold
    the rows of the accepted records, each CID once (a copy later in the batch adds only
    provenance). ``rejected``: (index, check, reason) per rejected record; their bytes
    are in ``raws``."""

    cids: list[str | None] = field(default_factory=list)
    types: list[str | None] = field(default_factory=list)
    locations: list[str] = field(default_factory=list)
    claimed: list[str | None] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    rejected: list[tuple[int, str, str]] = field(default_factory=list)
    raws: dict[int, bytes] = field(default_factory=dict)
    tables: dict[str, pa.Table] = field(default_factory=dict)
    resume: str | None = None
    fast: int = 0  # records accepted by the fast path (for benchmarks and tests)
    # table -> name of the part file its rows were written to, when the worker wrote them
    # (EvidenceStore.add_all); ``tables`` is then empty
    parts: dict[str, str] = field(default_factory=dict)


def _tables(
    rows: dict[str, list[tuple[Any, ...]]], pieces: Sequence[dict[str, pa.Table]] = ()
) -> dict[str, pa.Table]:
    """Rows (tuples in column order) as tables, with the tables made a column at a time
    (``pieces``); base64url texts in binary columns are decoded here, a column at a time
    (the slow path's rows hold bytes already)."""
    out: dict[str, list[pa.Table]] = defaultdict(list)
    for piece in pieces:
        for name, table in piece.items():
            out[name].append(table)
    for name, table_rows in rows.items():
        if not table_rows:
            continue
        schema = table_schema(name)
        arrays = []
        for values, f in zip(zip(*table_rows, strict=True), schema, strict=True):
            if f.type == pa.binary():
                arrays.append(pa.array(_decoded(values), f.type))
            elif f.type == pa.list_(pa.binary()):
                arrays.append(_decoded_lists(values))
            else:
                arrays.append(pa.array(values, f.type))
        out[name].append(pa.table(arrays, schema=schema))
    return {name: tables[0] if len(tables) == 1 else pa.concat_tables(tables) for name, tables in out.items()}


def _decoded(values: Sequence[Any]) -> list[Any]:
    texts = [v for v in values if type(v) is str]
    if not texts:
        return list(values)
    decoded = iter(decode_b64u(texts))
    return [next(decoded) if type(v) is str else v for v in values]


def _decoded_lists(values: Sequence[Any]) -> pa.Array:
    lists = list(values)
    flat = _Lists(lists, list(map(len, lists)), list(chain.from_iterable(lists)))
    return _list_array(flat, pa.list_(pa.binary()))


def prepare_batch(
    raws: Sequence[RawRecord], binary_cids: Sequence[bytes | None] | None = None
) -> PreparedBatch:
    """Open every record of ``raws`` (see the module docstring); a pure function, run in
    workers. ``binary_cids``, when given, are the binary CIDs the records were published
    under (a CAR's), compared with the bytes' digests as they are."""
    from auditor.store.evidence import prepare  # the slow path; evidence imports this module

    batch = PreparedBatch(
        locations=[r.location for r in raws],
        claimed=[r.claimed_cid for r in raws],
        sizes=[len(r.raw) for r in raws],
    )
    digests = [hashlib.sha256(r.raw).digest() for r in raws]
    # A CAR's records come with the text of their binary CIDs: where the bytes match, it
    # is theirs. The other records' texts are made here, all in one call.
    binary = list(binary_cids) if binary_cids is not None else [None] * len(raws)
    texts = [r.claimed_cid or "" if b is not None else "" for r, b in zip(raws, binary, strict=True)]
    own = [i for i, t in enumerate(texts) if not t]
    for i, text in zip(own, cid_texts([digests[i] for i in own]), strict=True):
        texts[i] = text
        binary[i] = None  # its bytes are matched against its claimed text, if any
    # The records whose bytes are their CID's, each CID's first copy; later copies follow it.
    firsts: dict[str, int] = {}
    copies: dict[int, int] = {}
    for i, raw in enumerate(raws):
        if raw.defect is not None:
            continue
        if binary[i] is not None:
            matches = binary[i] == CID_PREFIX + digests[i]
        else:
            matches = raw.claimed_cid is None or raw.claimed_cid == texts[i]
        if matches:
            first = firsts.setdefault(texts[i], i)
            if first != i:
                copies[i] = first
    rows: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    pieces: list[dict[str, pa.Table]] = []
    accepted = _fast_all([raws[i].raw for i in firsts.values()], list(firsts), rows, pieces)
    by_index = dict(zip(firsts.values(), accepted, strict=True))
    seen = {texts[i] for i, t in by_index.items() if t is not None}  # their rows are made
    cids, types = batch.cids, batch.types
    fast = 0
    for i, raw in enumerate(raws):
        record_type = by_index.get(copies.get(i, i))
        if record_type is not None:
            fast += 1
            cids.append(texts[i])
            types.append(record_type)
            continue
        prepared = prepare(raw)
        if isinstance(prepared, Rejection):
            cids.append(None)
            types.append(None)
            batch.rejected.append((i, prepared.check, prepared.reason))
            batch.raws[i] = raw.raw
            continue
        cids.append(prepared.cid)
        types.append(prepared.type)
        if prepared.cid not in seen:
            seen.add(prepared.cid)
            for table, table_rows in prepared.rows.items():
                names = table_schema(table).names
                rows[table].extend(tuple(row[n] for n in names) for row in table_rows)
    batch.fast = fast
    batch.resume = next((r.resume for r in reversed(raws) if r.resume is not None), None)
    batch.tables = _tables(rows, pieces)
    return batch


def _fast_all(
    datas: list[bytes],
    cids: list[str],
    rows: dict[str, list[tuple[Any, ...]]],
    pieces: list[dict[str, pa.Table]],
) -> list[str | None]:
    """Per record (distinct CIDs, bytes matching them), its type if the fast path accepts
    it, with its rows added (whole columns in ``pieces``, else a row at a time in
    ``rows``); None if not."""
    values = _values(datas)
    out: list[str | None] = [None] * len(datas)
    groups: dict[str, list[int]] = defaultdict(list)
    for k, value in enumerate(values):
        if type(value) is dict and value.keys() == _ENVELOPE_KEYS:
            v, record_type = value["v"], value["type"]
            if type(v) is int and v == 1 and type(record_type) is str and record_type in _PROGRAMS:
                groups[record_type].append(k)
    for record_type, members in groups.items():
        program = _PROGRAMS[record_type]
        pending = [members]
        while pending:
            part = pending.pop()
            if program.column_checks is not None and len(part) > 1:
                tables = _columnar(
                    program,
                    record_type,
                    [values[k] for k in part],
                    [datas[k] for k in part],
                    [cids[k] for k in part],
                )
                if tables is not None:
                    pieces.append(tables)
                    for k in part:
                        out[k] = record_type
                    continue
                if len(part) > _SPLIT_BELOW:  # someone is refused: look for them by halves
                    half = len(part) // 2
                    pending += [part[:half], part[half:]]
                    continue
            for k in part:
                if _fast_value(values[k], datas[k], cids[k], rows):
                    out[k] = record_type
    return out


_SPLIT_BELOW = 16  # a group of records refused as a whole is halved down to this size


def _values(datas: list[bytes]) -> list[Any]:
    """Each record's value if its bytes are canonical and within the limits the slow path
    checks before it parses, else NOT_CANONICAL. One sorted output for the whole batch:
    when every value is an object, that output equals the records' bytes joined by
    commas only if each record's bytes are its own value's output (an object's text
    ends at the brace matching its first, so the two cannot be cut differently)."""
    # The nesting limit needs no pre-scan here: orjson stops at 1,024 levels, and no
    # schema accepts more than a few. The container limit can only be passed by bytes of
    # at least two per container.
    over = [
        len(d) > MAX_ENVELOPE_BYTES
        or (len(d) > 2 * MAX_JSON_CONTAINERS and json_shape_problem(d) is not None)
        for d in datas
    ]
    if not any(over):
        try:
            values = list(map(orjson.loads, datas))
        except orjson.JSONDecodeError:
            pass  # which one: record by record below
        else:
            if _all(values, dict) and orjson_writes(values, b"".join((b"[", b",".join(datas), b"]"))):
                return values
            return [v if orjson_writes(v, d) else NOT_CANONICAL for v, d in zip(values, datas, strict=True)]
    return [NOT_CANONICAL if o else canonical_value(d) for d, o in zip(datas, over, strict=True)]


def _digests(datas: Sequence[bytes], record_type: str) -> list[bytes]:
    """The record digests (spec §3: sha256 of ``{"body":B,"type":T,"v":1}``) of canonical
    envelopes of one type: their own bytes up to the signatures (the body comes first),
    cut out rather than re-encoded, then the type and version."""
    suffix = b',"type":"' + record_type.encode() + b'","v":1}'
    return [hashlib.sha256(d[: d.rindex(b',"signatures":')] + suffix).digest() for d in datas]


def _fast_value(obj: dict[str, Any], data: bytes, cid: str, rows: dict[str, list[tuple[Any, ...]]]) -> bool:
    """Whether the fast path accepts one record (its envelope's members, ``v`` and type
    already checked by :func:`_fast_all`), after adding its rows."""
    record_type = obj["type"]
    program = _PROGRAMS[record_type]
    body = obj["body"]
    if type(body) is not dict or body.keys() != program.keys:
        return False
    got: dict[str, Any] = {}
    for name, check in program.checks:
        result = check(body[name])
        if result is _NO:
            return False
        got[name] = result
    if not data.isascii() and any(_non_ascii_name(body[name]) for name in program.free_names):
        return False
    signatures, tokens = obj["signatures"], obj["timestamps"]
    if not _signatures_ok(signatures) or not _tokens_ok(tokens):
        return False
    struct = None
    if program.needs_struct:
        # as the validators return them: a planned member's JSON value (arrays as tuples)
        kwargs = {n: (got[n] if n not in program.planned else body[n]) for n in program.keys}
        struct = program.cls(**{n: tuple(v) if type(v) is list else v for n, v in kwargs.items()})
        try:
            struct.validate("body")
        except EncodingError:
            return False
    rows["envelopes"].append((cid, record_type, len(data), _digests([data], record_type)[0], data))
    if signatures:
        table = rows["signatures"]
        for idx, s in enumerate(signatures):
            table.append((cid, idx, s["key"], s["sig"]))
    if tokens:
        table = rows["timestamps"]
        for idx, token in enumerate(tokens):
            table.append((cid, idx, token))
    row = [cid, *program.direct(got)]
    for index, column in program.fixups:
        member = column.member
        if member is None:
            row[index] = column.extract(struct)
        else:  # a planned member's JSON value is what its validator would return
            value = body[member] if member in program.planned else got[member]
            row[index] = json_text(value) if column.convert == "j" else value
    rows[record_type].append(tuple(row))
    return True


def _signatures_ok(value: Any) -> bool:
    if type(value) is not list or len(value) > MAX_SIGNATURES:
        return False
    for item in value:
        if type(item) is not dict or item.keys() != _SIGNATURE_KEYS:
            return False
        if _key32(item["key"]) is _NO or _sig64(item["sig"]) is _NO:
            return False
    return True


def _tokens_ok(value: Any) -> bool:
    if type(value) is not list or len(value) > MAX_TIMESTAMPS:
        return False
    return all(b64u_accepts(t) and 0 < len(t) * 3 // 4 <= MAX_TOKEN_BYTES for t in value)


def _non_ascii_name(value: Any) -> bool:
    """Whether any object member name in ``value`` is not ASCII (spec §2 forbids them)."""
    if type(value) is dict:
        return any(not k.isascii() or _non_ascii_name(v) for k, v in value.items())
    if type(value) is list:
        return any(_non_ascii_name(v) for v in value)
    return False
