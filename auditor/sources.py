"""Reading published records from archives (spec §7.2): directories, NDJSON, CARv1.

Every source yields :class:`RawRecord`s: the exact bytes, the CID they were published
under when the source says one (a CAR block, a file named ``<cid>.json``), and where
they came from. Nothing is parsed or dropped here; a piece that cannot even be cut out
(a broken CAR section) is yielded as a RawRecord with ``defect`` set, so it becomes a
finding downstream instead of disappearing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from auditor.errors import EncodingError, InputError
from auditor.model.encoding import MAX_ENVELOPE_BYTES, cid_from_binary, is_cid_text
from auditor.store.car import CarBlock, CarError, iter_sections, read_header

__all__ = ["RawRecord", "iter_source", "source_kind"]


@dataclass(frozen=True, slots=True)
class RawRecord:
    raw: bytes
    claimed_cid: str | None  # the CID the source published these bytes under, if any
    location: str  # file, line or byte offset: enough for a person to find it
    defect: str | None = None  # set when the bytes could not be cut out cleanly


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


def iter_source(path: Path) -> Iterator[RawRecord]:
    kind = source_kind(path)
    if kind == "dir":
        yield from _iter_dir(path)
    elif kind == "ndjson":
        yield from _iter_ndjson(path)
    else:
        yield from _iter_car(path)


def _iter_dir(root: Path) -> Iterator[RawRecord]:
    """Every regular file below ``root`` is one envelope; a name ``<cid>.json`` is a claim."""
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        if Path(folder) == root:
            # the simulator's side files are not evidence
            dirs[:] = [d for d in dirs if d not in ("secrets",)]
        for name in sorted(files):
            if not name.endswith(".json") or (folder == str(root) and name == "manifest.json"):
                continue
            path = Path(folder) / name
            size = path.stat().st_size
            location = str(path.relative_to(root))
            stem = name[: -len(".json")]
            claimed = stem if is_cid_text(stem) else None
            if size > MAX_ENVELOPE_BYTES:
                yield RawRecord(b"", claimed, location, f"file of {size} bytes, over the 8 MiB limit")
                continue
            yield RawRecord(path.read_bytes(), claimed, location)


def _iter_ndjson(path: Path) -> Iterator[RawRecord]:
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            stripped = line.strip()
            if not stripped:
                continue
            if len(stripped) > MAX_ENVELOPE_BYTES:
                yield RawRecord(b"", None, f"{path.name}:{number}", "line over the 8 MiB limit")
                continue
            yield RawRecord(stripped, None, f"{path.name}:{number}")


def _iter_car(path: Path) -> Iterator[RawRecord]:
    with open(path, "rb", buffering=1 << 20) as f:
        try:
            read_header(f)
        except CarError as e:
            raise InputError(f"{path}: not a readable CARv1 file: {e}") from e
        for item in iter_sections(f):
            where = f"{path.name}@{item.offset}"
            if isinstance(item, CarBlock):
                try:
                    claimed = cid_from_binary(bytes(item.cid))
                except EncodingError:
                    yield RawRecord(bytes(item.data), None, where, "CID is not a CIDv1 json/sha2-256 CID")
                    continue
                yield RawRecord(bytes(item.data), claimed, where)
            else:
                yield RawRecord(bytes(item.raw), None, where, item.reason)
