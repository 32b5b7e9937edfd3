"""Reading published records from archives (spec §7.2): directories, NDJSON, CARv1.

Every source yields :class:`RawRecord`s: the exact bytes, the CID they were published
under when the source says one (a CAR block, a file named ``<cid>.json``), and where
they came from. Nothing is parsed or dropped here; a piece that cannot even be cut out
(a broken CAR section) is yielded as a RawRecord with ``defect`` set, so it becomes a
finding downstream instead of disappearing.
"""

from __future__ import annotations

import io
import mmap
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from auditor.errors import CidMismatchError, EncodingError, InputError
from auditor.limits import MAX_ENVELOPE_BYTES, MAX_NDJSON_LINE_BYTES
from auditor.model.encoding import CID_BINARY_LEN, CID_PREFIX, cid_from_binary, is_cid_text
from auditor.model.envelope import Envelope, parse_envelope
from auditor.store.car import (
    DEFAULT_MAX_SECTION_BYTES,
    CarBlock,
    CarDefect,
    CarError,
    iter_sections,
    read_header,
)

__all__ = [
    "CHUNK_RECORDS",
    "CarRange",
    "Chunk",
    "RawRecord",
    "Rejection",
    "car_chunks",
    "chunked",
    "iter_source",
    "open_chunk_records",
    "open_record",
    "source_kind",
]

CHUNK_RECORDS = 4096  # records per chunk handed to a worker (its rows: one part file per table)
CHUNK_BYTES = 16 << 20  # and at most about this many bytes of a CAR
_RELEASE = 64 << 20  # the CAR walk hands back its mapped pages every this many bytes


@dataclass(slots=True)  # not frozen: made by the hundred thousand, it would cost twice as much
class RawRecord:
    """Never changed once made (a source's bytes, as it served them)."""

    raw: bytes
    claimed_cid: str | None  # the CID the source published these bytes under, if any
    location: str  # file, line or byte offset: enough for a person to find it
    defect: str | None = None  # set when the bytes could not be cut out cleanly
    resume: str | None = None  # the source's cursor just after this record (see iter_source)


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a RawRecord is not a usable record: the check it fails and a plain reason."""

    check: str  # "REC-CID" or "REC-SCHEMA"
    reason: str


def open_record(raw: RawRecord) -> Envelope | Rejection:
    """The one door from published bytes to a record: parse ``raw`` or say why not.

    Bytes that could not be cut out of their source fail REC-CID when what broke was
    their CID, else REC-SCHEMA; bytes that do not hash to their claimed CID fail
    REC-CID; anything else spec §2-§4 rejects fails REC-SCHEMA.
    """
    if raw.defect is not None:
        return Rejection(
            "REC-CID" if "CID" in raw.defect else "REC-SCHEMA", f"unreadable record: {raw.defect}"
        )
    try:
        return parse_envelope(raw.raw, cid=raw.claimed_cid)
    except CidMismatchError as e:
        return Rejection("REC-CID", f"checked the bytes published as {e.claimed}: they hash to {e.actual}")
    except EncodingError as e:
        return Rejection("REC-SCHEMA", f"invalid record: {e}")


def source_kind(path: Path) -> str:
    """``dir``, ``car`` or ``ndjson``, by what the path is and starts with."""
    if path.is_dir():
        return "dir"
    if not path.is_file():
        raise InputError(f"{path}: no such file or directory; give a directory, a .car or an .ndjson file")
    with open(path, "rb") as f:
        head = f.read(64)
    if head.lstrip()[:1] == b"{":
        return "ndjson"
    return "car"


def iter_source(path: Path, after: str | None = None) -> Iterator[RawRecord]:
    """The records of an archive, in a stable order, starting after the cursor ``after``.

    Cursors (``RawRecord.resume``): for a CAR file and an NDJSON file, the byte offset
    after the record; for a directory, the record's relative path (files are read in
    sorted order). A cursor from a previous run resumes exactly after that record.
    """
    kind = source_kind(path)
    if kind == "dir":
        yield from _iter_dir(path, after)
    elif kind == "ndjson":
        yield from _iter_ndjson(path, int(after or 0))
    else:
        yield from _iter_car(path, int(after) if after else None)


def _iter_dir(root: Path, after: str | None = None) -> Iterator[RawRecord]:
    """Every regular file below ``root`` is one envelope, whatever its name (spec §7.2); a
    name ``<cid>.json`` or ``<cid>`` is a claim (D3). A file that is no envelope is
    quarantined with its reason, like any malformed record: nothing is skipped."""
    # in the order of the relative paths as text, which the cursor compares with (a walk
    # gives a folder's files before its subfolders: "z.json" before "a/x")
    found = sorted(
        (path.relative_to(root).as_posix(), path)
        for folder, _, files in os.walk(root)
        for path in (Path(folder) / name for name in files)
    )
    for location, path in found:
        if after is not None and location <= after:
            continue
        if not path.is_file():  # a socket, a FIFO, a dangling link: no bytes to read
            continue
        size = path.stat().st_size
        stem = path.name.removesuffix(".json")
        claimed = stem if is_cid_text(stem) else None
        if size > MAX_ENVELOPE_BYTES:
            yield RawRecord(b"", claimed, location, f"file of {size} bytes, over the 8 MiB limit", location)
            continue
        yield RawRecord(path.read_bytes(), claimed, location, None, location)


def _iter_ndjson(path: Path, start: int = 0) -> Iterator[RawRecord]:
    with open(path, "rb") as f:
        f.seek(start)
        offset = start
        while True:
            line = f.readline(MAX_NDJSON_LINE_BYTES + 2)  # the envelope, maybe "\r", "\n"
            if not line:
                return
            where = f"{path.name}@{offset}"
            offset += len(line)
            if len(line) > MAX_NDJSON_LINE_BYTES + 1 and not line.endswith(b"\n"):
                while line and not line.endswith(b"\n"):  # skip the rest of an oversized line
                    line = f.readline(1 << 20)
                    offset += len(line)
                yield RawRecord(b"", None, where, "line over the 8 MiB limit", str(offset))
                continue
            stripped = line.strip()
            if stripped:
                yield RawRecord(stripped, None, where, None, str(offset))


def _iter_car(path: Path, start: int | None = None) -> Iterator[RawRecord]:
    with open(path, "rb", buffering=1 << 20) as f:
        try:
            read_header(f)
        except CarError as e:
            raise InputError(f"{path}: not a readable CARv1 file: {e}") from e
        if start is not None:
            f.seek(start)
        for item in iter_sections(f):
            yield _car_record(item, path.name)


def _car_record(item: CarBlock | CarDefect, name: str, claimed: str | None = None) -> RawRecord:
    """A CAR section as a RawRecord; ``claimed``, when known, is the text of its CID."""
    where = f"{name}@{item.offset}"
    if isinstance(item, CarDefect):
        return RawRecord(bytes(item.raw), None, where, item.reason, str(item.end) if item.end else None)
    resume = str(item.end)
    if claimed is None:
        try:
            claimed = cid_from_binary(bytes(item.cid))
        except EncodingError:
            return RawRecord(bytes(item.data), None, where, "CID is not a CIDv1 json/sha2-256 CID", resume)
    return RawRecord(bytes(item.data), claimed, where, None, resume)


# ---------------------------------------------------------------------------- chunks


@dataclass(frozen=True, slots=True)
class CarRange:
    """Whole sections of a CAR file, bytes ``[start, end)``, read by the worker itself."""

    path: str
    start: int
    end: int


Chunk = CarRange | list[RawRecord]  # what one worker task opens


def chunked(records: Iterable[RawRecord], size: int | None = None) -> Iterator[list[RawRecord]]:
    """``records`` in lists of ``size`` (by default CHUNK_RECORDS)."""
    iterator = iter(records)
    count = size or CHUNK_RECORDS
    return iter(lambda: list(islice(iterator, count)), [])


def car_chunks(path: Path, after: str | None = None) -> Iterator[Chunk]:
    """The sections of a CAR file after the cursor ``after``, as chunks for workers.

    This process only walks the section lengths (a varint each) to cut the file into
    ranges of whole sections, which the workers read and check themselves. The walk
    stops at the first length it does not plainly understand (a zero, a varint of four
    bytes or more, a section past the limit or the end of the file); from there the
    sections are read here, one by one, by :func:`iter_source`, which reports every
    defect exactly as for a whole-file read.
    """
    with open(path, "rb") as f:
        try:
            header = read_header(f)
        except CarError as e:
            raise InputError(f"{path}: not a readable CARv1 file: {e}") from e
        pos = int(after) if after else header.header_end_offset
        size = os.fstat(f.fileno()).st_size
        if size > pos:
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
                for start, end in _car_ranges(m, pos, size):
                    yield CarRange(str(path), start, end)
                    pos = end
    if pos < size:
        yield from chunked(_iter_car(path, pos))


def _short_varint(buf: bytes | mmap.mmap, pos: int, size: int) -> tuple[int, int] | None:
    """The section length whose varint starts at ``pos`` and where its data starts, if the
    varint is plainly understood: one to three bytes, not zero, no needless byte."""
    first = buf[pos]
    if 0 < first < 0x80:
        return first, pos + 1
    if first and pos + 1 < size and 0 < buf[pos + 1] < 0x80:
        return (first & 0x7F) | (buf[pos + 1] << 7), pos + 2
    if first and pos + 2 < size and buf[pos + 1] >= 0x80 and 0 < buf[pos + 2] < 0x80:
        return (first & 0x7F) | ((buf[pos + 1] & 0x7F) << 7) | (buf[pos + 2] << 14), pos + 3
    return None


def _car_ranges(m: mmap.mmap, pos: int, size: int) -> Iterator[tuple[int, int]]:
    limit = DEFAULT_MAX_SECTION_BYTES
    start, count = pos, 0
    released = pos - pos % mmap.PAGESIZE  # pages before this one are out of the process
    while pos < size:
        # _short_varint, inlined for its two common forms (sections under 16 KiB and
        # under 2 MiB): this loop is the one part of a CAR's harvest not on the workers
        first = m[pos]
        if first >= 0x80 and pos + 2 < size and 0 < (second := m[pos + 1]) < 0x80:
            n, p = (first & 0x7F) | (second << 7), pos + 2
        elif first >= 0x80 and pos + 3 < size and m[pos + 1] >= 0x80 and 0 < (third := m[pos + 2]) < 0x80:
            n, p = (first & 0x7F) | ((m[pos + 1] & 0x7F) << 7) | (third << 14), pos + 3
        else:
            length = _short_varint(m, pos, size)
            if length is None:
                break
            n, p = length
        if n > limit or p + n > size:
            break
        pos = p + n
        count += 1
        if count >= CHUNK_RECORDS or pos - start >= CHUNK_BYTES:
            yield start, pos
            start, count = pos, 0
            if start - released >= _RELEASE:
                # the pages walked stay in the page cache but leave this process's memory
                cut = start - start % mmap.PAGESIZE
                m.madvise(mmap.MADV_DONTNEED, released, cut - released)
                released = cut
    if count:
        yield start, pos


def _plain_sections(data: bytes, chunk: CarRange) -> tuple[list[RawRecord], list[bytes | None]] | None:
    """The records of a range whose every section is plain (a varint of one to three
    bytes, a standard CID, a block after it), read in one loop; None if any is not, for
    :func:`iter_sections` to read and word."""
    from auditor.store.bulk import cid_texts  # numpy; bulk imports this module

    sections, starts, ends = [], [], []
    pos, size, cid_len, prefix = 0, len(data), CID_BINARY_LEN, CID_PREFIX
    while pos < size:
        first = data[pos]  # _short_varint, its common form inlined (see _car_ranges)
        if first >= 0x80 and pos + 2 < size and 0 < (second := data[pos + 1]) < 0x80:
            n, p = (first & 0x7F) | (second << 7), pos + 2
        else:
            length = _short_varint(data, pos, size)
            if length is None:
                return None
            n, p = length
        sections.append(pos)
        pos = p + n
        if n <= cid_len or pos > size or not data.startswith(prefix, p):
            return None
        starts.append(p)
        ends.append(pos)
    base = chunk.start
    name = Path(chunk.path).name
    cids = [data[p : p + cid_len] for p in starts]
    texts = cid_texts([c[len(prefix) :] for c in cids])
    raws = [
        RawRecord(data[p + cid_len : e], text, f"{name}@{base + at}", None, str(base + e))
        for at, p, e, text in zip(sections, starts, ends, texts, strict=True)
    ]
    return raws, list[bytes | None](cids)


def _standard(cid: bytes) -> bool:
    return len(cid) == CID_BINARY_LEN and cid.startswith(CID_PREFIX)


def open_chunk_records(chunk: Chunk) -> tuple[list[RawRecord], list[bytes | None] | None]:
    """The records of a chunk, with the binary CIDs of a CAR range's sections."""
    if not isinstance(chunk, CarRange):
        return chunk, None
    with open(chunk.path, "rb") as f:
        f.seek(chunk.start)
        data = f.read(chunk.end - chunk.start)
    plain = _plain_sections(data, chunk)
    if plain is not None:
        return plain
    items = list(iter_sections(io.BytesIO(data), offset=chunk.start))
    cids = [item.cid if isinstance(item, CarBlock) and _standard(item.cid) else None for item in items]
    from auditor.store.bulk import cid_texts  # numpy; bulk imports this module

    texts = iter(cid_texts([cid[len(CID_PREFIX) :] for cid in cids if cid is not None]))
    name = Path(chunk.path).name
    raws = [
        _car_record(item, name, None if c is None else next(texts))
        for item, c in zip(items, cids, strict=True)
    ]
    binary: list[bytes | None] = [None if cid is None else bytes(cid) for cid in cids]
    return raws, binary
