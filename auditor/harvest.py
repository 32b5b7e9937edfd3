"""Harvesting: every record of every source into the evidence store (docs/evidence-store.md).

A source is anything that yields :class:`~auditor.sources.RawRecord`s after a cursor:
today the archives of spec §7.2 (directory, NDJSON, CARv1). The store does not know
where records come from; a network source (HTTP nodes, later libp2p) only has to yield
RawRecords with resume cursors.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from auditor.sources import Chunk, RawRecord, car_chunks, chunked, iter_source, source_kind
from auditor.store.evidence import LOG, EvidenceStore, HarvestStats

__all__ = ["ArchiveSource", "Source", "harvest", "is_store", "store_of"]


class Source(Protocol):
    """Where records come from."""

    @property
    def name(self) -> str:
        """Identifies the source in provenance rows and in the store's cursors."""
        ...

    def records(self, after: str | None) -> Iterator[RawRecord]:
        """Every record after the cursor ``after``, each with its own resume cursor.

        A source may also have ``chunks(after)``, yielding the same records as chunks
        (auditor.sources.Chunk) that workers can open themselves, as a CAR file does."""
        ...


@dataclass(frozen=True)
class ArchiveSource:
    path: Path

    @property
    def name(self) -> str:
        return f"{source_kind(self.path)}:{self.path.resolve()}"

    def records(self, after: str | None) -> Iterator[RawRecord]:
        return iter_source(self.path, after)

    def chunks(self, after: str | None) -> Iterator[Chunk]:
        """The records in chunks for the workers; a CAR file's are read by the workers."""
        if source_kind(self.path) == "car":
            return car_chunks(self.path, after)
        return chunked(self.records(after))


def harvest(
    sources: list[Source],
    out: Path,
    progress: Callable[[HarvestStats], None] | None = None,
    *,
    workers: int = 1,
) -> tuple[EvidenceStore, HarvestStats]:
    """Harvest ``sources`` into the store at ``out`` (created if new), resuming each source;
    ``workers`` processes parse the records."""
    started = time.perf_counter()
    store = EvidenceStore(out)
    stats = HarvestStats()
    for source in sources:
        after = store.cursor(source.name)
        # a source that can cut its records into chunks for the workers itself says so
        own_chunks = getattr(source, "chunks", None)
        chunks = own_chunks(after) if own_chunks is not None else chunked(source.records(after))
        store.add_all(source.name, chunks, stats, workers=workers, progress=progress)
    store.write_views()
    stats.seconds = time.perf_counter() - started
    return store, stats


def is_store(evidence: Path) -> bool:
    """Whether ``evidence`` is an evidence store made by ``vtaudit harvest``."""
    return (evidence / LOG).exists()


def store_of(evidence: Path, scratch: Path, *, workers: int = 2) -> Path:
    """The evidence store to read: EVIDENCE itself when it is one, else a harvest of the
    archive (a .car or .ndjson file, a directory of envelopes) into ``scratch``."""
    if is_store(evidence):
        return evidence
    store = scratch / "evidence"
    harvest([ArchiveSource(evidence)], store, workers=workers)
    return store
