"""CARv1 archives (spec §7.1 ``/v1/car``, §7.2): a streaming reader and writer.

The format is the one IPFS tools write (IPLD "CARv1 Specification")::

    varint(len(header)) ‖ header ‖ section ‖ section ‖ …
    header  = DAG-CBOR {"roots": [CID, …], "version": 1}   (a CID is tag 42 over 0x00 ‖ CID)
    section = varint(len(cid) + len(data)) ‖ cid ‖ data

Varints are unsigned LEB128 in the multiformats form: minimal, at most 9 bytes.

The reader is for evidence, so it is strict about what it reports and lenient about
what it survives:

* :func:`read_header` raises :class:`CarError` (with the byte offset) for anything
  that is not a CARv1 header: there is nothing to read without one.
* :func:`iter_sections` never raises for bad content. Every section comes out as a
  :class:`CarBlock` or a :class:`CarDefect`, so nothing is dropped silently. A
  section with a sane length but a CID that cannot be parsed is a defect and reading
  goes on at the next section; a truncated section, a bad length varint or a length
  over the limit is a defect that ends the iteration (after it nothing can be framed).

Only the CID's *form* is checked here (CIDv1 in general, and CIDv0 ``12 20`` + 32
bytes, so that CARs from other tools can be read). Whether the data hashes to the CID
is the caller's check: the reader returns the CID bytes exactly as found.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import cbor2

from auditor.errors import EncodingError
from auditor.limits import MAX_CAR_HEADER_BYTES, MAX_CAR_SECTION_BYTES, MAX_VARINT_BYTES
from auditor.model.encoding import CID_BINARY_LEN, CID_PREFIX

__all__ = [
    "DEFAULT_MAX_HEADER_BYTES",
    "DEFAULT_MAX_SECTION_BYTES",
    "DEFECT_RAW_LIMIT",
    "CarBlock",
    "CarDefect",
    "CarError",
    "CarHeader",
    "CarWriter",
    "cid_length",
    "decode_uvarint",
    "encode_uvarint",
    "iter_sections",
    "read_car",
    "read_header",
    "write_car",
]

DEFAULT_MAX_SECTION_BYTES = MAX_CAR_SECTION_BYTES
"""Longest section read by default: an 8 MiB envelope (spec §3) plus room for its CID
(auditor.limits). A longer length is refused before anything of the section is read."""

DEFAULT_MAX_HEADER_BYTES = MAX_CAR_HEADER_BYTES
"""Longest header read by default (about 25,000 roots; auditor.limits)."""

DEFECT_RAW_LIMIT = 256
"""At most this many bytes of a defect's section are kept in :attr:`CarDefect.raw`."""

_CHUNK = 1 << 20  # bytes per read of the underlying stream
_MAX_VARINT = MAX_VARINT_BYTES  # multiformats unsigned-varint: at most 9 bytes (63 bits)
_NONZERO = re.compile(b"[^\x00]")
_TAG_CID = 42  # DAG-CBOR: a CID is tag 42 over 0x00 ‖ binary CID


class CarError(EncodingError):
    """A CAR that cannot be read at all: a bad header, or bad arguments to the writer.

    ``offset`` is the byte offset of the problem from the start of the stream.
    """

    def __init__(self, offset: int, got: str, expected: str) -> None:
        self.offset = offset
        super().__init__(f"CAR at byte {offset}", got, expected)


@dataclass(frozen=True, slots=True)
class CarHeader:
    """A CARv1 header: its root CIDs (binary) and where the first section starts."""

    roots: tuple[bytes, ...]
    header_end_offset: int


class CarBlock(NamedTuple):
    """One well-formed section: a CID (binary, as in the file) and the block's bytes.

    ``offset`` is the byte offset of the section (of its length varint). The data has
    not been checked against the CID.
    """

    offset: int
    cid: bytes
    data: bytes

    @property
    def end(self) -> int:
        """Offset of the byte after this section."""
        n = len(self.cid) + len(self.data)
        return self.offset + _uvarint_len(n) + n


class CarDefect(NamedTuple):
    """A section (or run of bytes) that is not a well-formed section.

    ``offset`` is where it starts; ``raw`` holds its first bytes (at most
    :data:`DEFECT_RAW_LIMIT`), from ``offset`` on. ``end`` is where reading resumed,
    or ``None`` if reading stopped here (the defect is then the last item).
    """

    offset: int
    reason: str
    raw: bytes
    end: int | None = None

    @property
    def fatal(self) -> bool:
        """Whether reading stopped at this defect."""
        return self.end is None


class _Reader(Protocol):
    def read(self, size: int, /) -> bytes: ...


class _Writer(Protocol):
    def write(self, data: bytes, /) -> object: ...


# ---------------------------------------------------------------------------- varints

_SMALL_VARINTS = [bytes((i,)) for i in range(0x80)]


def encode_uvarint(value: int) -> bytes:
    """The minimal unsigned LEB128 encoding of ``0 <= value < 2**63``."""
    if 0 <= value < 0x80:
        return _SMALL_VARINTS[value]
    if 0x80 <= value < 0x4000:  # the usual section length: two bytes
        return bytes(((value & 0x7F) | 0x80, value >> 7))
    if value < 0 or value >= 1 << 63:
        raise ValueError(f"varint: got {value}, expected 0 <= value < 2**63")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _uvarint_len(value: int) -> int:
    return max(1, (value.bit_length() + 6) // 7)


def _uvarint(buf: bytes, pos: int, end: int) -> tuple[int, int] | str:
    """Decode the varint at ``buf[pos:end]``: ``(value, next position)`` or a reason."""
    value = 0
    shift = 0
    for i in range(pos, min(end, pos + _MAX_VARINT)):
        byte = buf[i]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if byte == 0 and i > pos:
                return f"non-minimal varint {buf[pos : i + 1].hex()}"
            return value, i + 1
        shift += 7
    if end - pos >= _MAX_VARINT:
        return f"varint longer than {_MAX_VARINT} bytes ({buf[pos : pos + _MAX_VARINT].hex()}…)"
    return f"truncated varint {buf[pos:end].hex()}"


def decode_uvarint(data: bytes, pos: int = 0) -> tuple[int, int]:
    """Decode the varint at ``data[pos:]``; return ``(value, position after it)``.

    Raises :class:`CarError` unless it is minimal, complete and at most 9 bytes.
    """
    got = _uvarint(data, pos, len(data))
    if isinstance(got, str):
        raise CarError(pos, got, "a minimal unsigned varint of at most 9 bytes")
    return got


# ---------------------------------------------------------------------------- CIDs


def _cid_end(buf: bytes, pos: int, end: int) -> int | str:
    """End of the binary CID starting at ``buf[pos]`` (within ``end``), or a reason.

    IPLD CARv1 spec, "CID byte decoding summary": ``12 20`` starts a CIDv0 (a bare
    sha2-256 multihash); anything else is a CIDv1: varint version (1), varint codec,
    then a multihash: varint code, varint digest length, digest.
    """
    if end - pos >= 2 and buf[pos] == 0x12 and buf[pos + 1] == 0x20:
        if end - pos < 34:
            return f"CIDv0 of {end - pos} bytes, expected 34 (12 20 ‖ 32-byte sha2-256)"
        return pos + 34
    if pos >= end:
        return "no CID (empty section)"
    parts = []
    p = pos
    for name in ("version", "codec", "multihash code", "multihash length"):
        got = _uvarint(buf, p, end)
        if isinstance(got, str):
            return f"CID {name}: {got}"
        value, p = got
        if name == "version" and value != 1:
            return f"CID version {value} (first bytes {buf[pos : pos + 4].hex()}), expected 1 or CIDv0"
        parts.append(value)
    length = parts[3]
    if p + length > end:
        return f"CID multihash digest of {length} bytes, only {end - p} left in the section"
    return p + length


def cid_length(data: bytes, pos: int = 0) -> int:
    """The length of the binary CID (v0 or v1) at the start of ``data[pos:]``.

    Raises :class:`CarError` if there is no well-formed CID there.
    """
    got = _cid_end(data, pos, len(data))
    if isinstance(got, str):
        raise CarError(pos, got, "a binary CIDv1 (or CIDv0)")
    return got - pos


def _check_cid(cid: bytes, what: str) -> bytes:
    cid = bytes(cid)
    if len(cid) == CID_BINARY_LEN and cid.startswith(CID_PREFIX):
        return cid  # the common case: a spec §2 CID
    got = _cid_end(cid, 0, len(cid))
    if isinstance(got, str):
        raise ValueError(f"{what}: {got}")
    if got != len(cid):
        raise ValueError(f"{what}: {len(cid) - got} bytes after the CID")
    return cid


# ---------------------------------------------------------------------------- header


def _tell(stream: object) -> int | None:
    tell = getattr(stream, "tell", None)
    if tell is None:
        return None
    try:
        pos = tell()
    except (OSError, ValueError):
        return None
    return pos if isinstance(pos, int) else None


def _read_exact(stream: _Reader, n: int) -> bytes:
    parts = []
    left = n
    while left > 0:
        chunk = stream.read(left)
        if not chunk:
            break
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def _decode_header_cbor(body: bytes, offset: int) -> object:
    fp = io.BytesIO(body)
    try:
        value = cbor2.CBORDecoder(fp).decode()
    # cbor2 raises CBORDecodeError, but its semantic tag decoders (dates, regexes,
    # MIME, sets…) can raise ValueError, TypeError, re.error and others on hostile
    # input: any failure to decode is the same finding, "not a DAG-CBOR header".
    except Exception as e:
        raise CarError(offset, f"undecodable CBOR ({e})", "a DAG-CBOR header") from e
    if fp.tell() != len(body):
        raise CarError(
            offset + fp.tell(),
            f"{len(body) - fp.tell()} bytes after the header's CBOR item",
            "exactly one CBOR item",
        )
    return value


def read_header(stream: _Reader, *, max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES) -> CarHeader:
    """Read a CARv1 header and leave ``stream`` at the first section.

    Reads exactly the header's bytes. Offsets (in errors and in the result) count from
    the stream's position if it can tell it, else from 0. Raises :class:`CarError`
    if the stream does not start with a CARv1 header: a bad length varint, a length of
    0 or over ``max_header_bytes``, a short read, bad CBOR, not a map, ``version`` not
    1 (a CARv2 has version 2), or ``roots`` not a list of CIDs. An empty ``roots``
    list is accepted (the IPLD spec leaves the number of roots unresolved).
    """
    start = _tell(stream) or 0
    # 1. The header length: a varint read one byte at a time, so nothing is over-read.
    head = bytearray()
    while True:
        byte = stream.read(1)
        if not byte:
            got = "an empty stream" if not head else f"end of data inside varint {head.hex()}"
            raise CarError(start + len(head), got, "a CARv1 header length (varint)")
        head += byte
        if byte[0] < 0x80 or len(head) == _MAX_VARINT:
            break
    decoded = _uvarint(bytes(head), 0, len(head))
    if isinstance(decoded, str):
        raise CarError(start, decoded, "a CARv1 header length (minimal varint)")
    length, body_offset = decoded[0], start + len(head)
    if length == 0:
        raise CarError(start, "a header length of 0", "a DAG-CBOR header")
    if length > max_header_bytes:
        raise CarError(start, f"a header length of {length} bytes", f"at most {max_header_bytes} (a CAR?)")
    # 2. The header itself.
    body = _read_exact(stream, length)
    if len(body) < length:
        raise CarError(
            body_offset + len(body),
            f"end of data after {len(body)} of {length} header bytes",
            "the whole header",
        )
    header = _decode_header_cbor(body, body_offset)
    # 3. Its structure: {"roots": [CID, …], "version": 1}.
    if not isinstance(header, dict):
        raise CarError(body_offset, f"a CBOR {type(header).__name__}", "a map {roots, version}")
    if "version" not in header:
        raise CarError(body_offset, "a map without 'version'", "version 1")
    version = header["version"]
    if type(version) is not int or version != 1:
        note = " (a CARv2)" if version == 2 and type(version) is int else ""
        raise CarError(body_offset, f"version {version!r}{note}", "version 1 (CARv1)")
    roots = header.get("roots")
    if not isinstance(roots, list):
        raise CarError(body_offset, f"roots {_show(roots)}", "a list of CIDs")
    out: list[bytes] = []
    for i, item in enumerate(roots):
        raw = item.value if isinstance(item, cbor2.CBORTag) and item.tag == _TAG_CID else None
        if not isinstance(raw, bytes) or raw[:1] != b"\x00":
            raise CarError(body_offset, f"roots[{i}] = {_show(item)}", "tag 42 over 0x00 ‖ CID")
        end = _cid_end(raw, 1, len(raw))
        if isinstance(end, str) or end != len(raw):
            why = end if isinstance(end, str) else f"{len(raw) - end} bytes after the CID"
            raise CarError(body_offset, f"roots[{i}]: {why}", "a binary CID")
        out.append(raw[1:])
    return CarHeader(tuple(out), body_offset + length)


def _show(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---------------------------------------------------------------------------- sections


def iter_sections(
    stream: _Reader,
    *,
    offset: int | None = None,
    max_section_bytes: int = DEFAULT_MAX_SECTION_BYTES,
) -> Iterator[CarBlock | CarDefect]:
    """Every section from the stream's position to its end, as blocks or defects.

    Call after :func:`read_header` (or use :func:`read_car`). ``offset`` is the byte
    offset of the stream's position, used for the offsets reported; by default the
    stream's ``tell()`` (a stream that cannot tell needs ``offset``). Reads in 1 MiB
    chunks; never raises for bad content (I/O errors propagate).

    Defects, each a :class:`CarDefect`:

    * a CID that cannot be parsed in a section of sane length: reading resumes at the
      next section;
    * a run of zero bytes where a section length belongs (zero-length sections, as in
      zero padding): one defect for the run, reading resumes after it;
    * a non-minimal, over-long or truncated length varint, a length over
      ``max_section_bytes``, or a section cut short by the end of the data: the last
      item, reading stops.
    """
    if offset is None:
        offset = _tell(stream)
        if offset is None:
            raise ValueError("iter_sections: the stream cannot tell() its position; pass offset=")
    if max_section_bytes < 1:
        raise ValueError(f"max_section_bytes: got {max_section_bytes}, expected >= 1")
    return _sections(stream, offset, max_section_bytes)


def read_car(
    stream: _Reader,
    *,
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
    max_section_bytes: int = DEFAULT_MAX_SECTION_BYTES,
) -> tuple[CarHeader, Iterator[CarBlock | CarDefect]]:
    """:func:`read_header`, then :func:`iter_sections` over the rest of the stream."""
    header = read_header(stream, max_header_bytes=max_header_bytes)
    sections = iter_sections(stream, offset=header.header_end_offset, max_section_bytes=max_section_bytes)
    return header, sections


def _sections(stream: _Reader, base: int, limit: int) -> Iterator[CarBlock | CarDefect]:
    # ``buf[pos:]`` is unread; ``base`` is the stream offset of ``buf[0]``. The loop
    # keeps at least a whole varint's worth of bytes ahead unless at end of data.
    read = stream.read
    buf = b""
    pos = 0
    eof = False
    prefix = CID_PREFIX
    cid_len = CID_BINARY_LEN
    raw_limit = DEFECT_RAW_LIMIT
    block = CarBlock
    new = tuple.__new__
    while True:
        size = len(buf)
        if size - pos <= _MAX_VARINT and not eof:
            chunk = read(_CHUNK)
            if chunk:
                buf = buf[pos:] + chunk
                base += pos
                pos = 0
            else:
                eof = True
            continue
        if pos >= size:
            return  # a clean end: the last section ended at the end of the data
        # 1. The section length.
        first = buf[pos]
        if first < 0x80:
            n = first
            p = pos + 1
            if n == 0:
                # 1a. Zero-length sections: one defect for the whole run of zeros.
                run_start = base + pos
                while True:
                    found = _NONZERO.search(buf, pos)
                    if found is not None:
                        pos = found.start()
                        break
                    chunk = b"" if eof else read(_CHUNK)
                    if not chunk:
                        eof = True
                        pos = len(buf)
                        break
                    base += len(buf)
                    buf = chunk
                    pos = 0
                count = base + pos - run_start
                yield CarDefect(
                    run_start,
                    f"{count} zero byte(s) where a section length belongs (zero-length sections or padding)",
                    bytes(min(count, raw_limit)),
                    run_start + count,
                )
                continue
        elif pos + 1 < size and 0 < buf[pos + 1] < 0x80:  # fast path: 2-byte minimal varint
            n = (first & 0x7F) | (buf[pos + 1] << 7)
            p = pos + 2
        else:
            got = _uvarint(buf, pos, size)
            if isinstance(got, str):
                # 1b. Bad framing: nothing after this can be located.
                yield CarDefect(base + pos, f"section length: {got}", buf[pos : pos + raw_limit])
                return
            n, p = got
        if n > limit:
            yield CarDefect(
                base + pos,
                f"section length {n} over the limit of {limit} bytes",
                buf[pos : pos + raw_limit],
            )
            return
        stop = p + n
        # 2. The whole section in the buffer.
        if stop > size and not eof:
            parts = [buf[pos:]]
            have = size - pos
            want = stop - pos
            while have < want:
                chunk = read(max(_CHUNK, want - have))
                if not chunk:
                    eof = True
                    break
                parts.append(chunk)
                have += len(chunk)
            buf = b"".join(parts)
            base += pos
            p -= pos
            stop -= pos
            pos = 0
            size = len(buf)
        if stop > size:
            yield CarDefect(
                base + pos,
                f"truncated section: length {n}, only {size - p} bytes before the end of data",
                buf[pos : pos + raw_limit],
            )
            return
        # 3. The CID, then the data.
        if buf.startswith(prefix, p) and n >= cid_len:
            cid_end = p + cid_len  # fast path: a spec §2 CID (CIDv1, json, sha2-256)
        else:
            got_end = _cid_end(buf, p, stop)
            if isinstance(got_end, str):
                yield CarDefect(base + pos, got_end, buf[pos : min(stop, pos + raw_limit)], base + stop)
                pos = stop
                continue
            cid_end = got_end
        # tuple.__new__ skips the NamedTuple's Python-level __new__ (a third of the cost).
        yield new(block, (base + pos, buf[p:cid_end], buf[cid_end:stop]))
        pos = stop


# ---------------------------------------------------------------------------- writer


class CarWriter:
    """Write a CARv1 to a binary stream, one block at a time.

    The header is written at once. ``roots`` must hold at least one CID (go-car refuses
    a CAR without roots). CIDs are checked for form (CIDv1 or CIDv0), not against the
    data. The writer does not close or flush the stream. ``count`` is the number of
    blocks written so far, ``bytes_written`` the bytes, header included.
    """

    __slots__ = ("_write", "bytes_written", "count")

    def __init__(self, stream: _Writer, roots: Sequence[bytes]) -> None:
        if isinstance(roots, bytes | bytearray | memoryview):
            raise TypeError("roots: a sequence of binary CIDs, not one bytes object")
        checked = [_check_cid(r, f"root {i}") for i, r in enumerate(roots)]
        if not checked:
            raise ValueError("roots: a CARv1 needs at least one root CID (go-car requires one)")
        header = cbor2.dumps(
            # DAG-CBOR map keys sort by length first: "roots" before "version".
            {"roots": [cbor2.CBORTag(_TAG_CID, b"\x00" + r) for r in checked], "version": 1}
        )
        self._write = stream.write
        self.count = 0
        self.bytes_written = 0
        self._emit(encode_uvarint(len(header)) + header)

    def _emit(self, data: bytes) -> None:
        self._write(data)
        self.bytes_written += len(data)

    def add(self, cid: bytes, data: bytes) -> None:
        """Append one section: ``cid`` (binary CIDv1 or CIDv0) and the block's bytes."""
        if not (type(cid) is bytes and len(cid) == CID_BINARY_LEN and cid.startswith(CID_PREFIX)):
            cid = _check_cid(cid, "cid")
        n = len(cid) + len(data)
        section = b"".join((encode_uvarint(n), cid, data))
        self._write(section)
        self.count += 1
        self.bytes_written += len(section)


def write_car(
    target: str | os.PathLike[str] | _Writer,
    roots: Sequence[bytes],
    blocks: Iterable[tuple[bytes, bytes]],
) -> CarWriter:
    """Write a whole CARv1 of ``(cid, data)`` blocks to a path or a binary stream.

    Returns the writer, whose ``count`` and ``bytes_written`` say what was written.
    """
    if isinstance(target, str | os.PathLike):
        with open(target, "wb", buffering=_CHUNK) as f:
            return write_car(f, roots, blocks)
    writer = CarWriter(target, roots)
    add = writer.add
    for cid, data in blocks:
        add(cid, data)
    return writer
