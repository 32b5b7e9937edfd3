"""The evidence store: every harvested record, verified against its CID, in Parquet.

Layout of an evidence directory (docs/evidence-store.md)::

    store.json                 the commit log: committed parts, per-source cursors, counts
    tables/<table>/part-NNNNNN.parquet
    evidence.duckdb            DuckDB views over the tables (open it from this directory)

Tables: ``envelopes`` (cid, type, raw bytes: content-addressed by CID), one typed table
per record type (auditor.store.tables), ``signatures``, ``timestamps``, ``provenance``
(which source served which CID, where and when) and ``quarantine`` (what failed, with
the source, the reason and the raw bytes: nothing is dropped).

Crash safety: rows are written as new part files (temporary name, then rename), by the
worker that opened the chunk or from this process's buffer; a part becomes visible only
when ``store.json`` listing it is replaced atomically, together with the cursors of the
sources it came from, and only once the part is on disk (fsync). Part files that no
committed log lists are leftovers of a crash and are deleted when the store is next
opened to write; their records are fetched again from the cursors, which did not advance.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import chain, islice
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from auditor.errors import InputError
from auditor.model.encoding import b64u_decode
from auditor.parallel import bounded_map, no_gc, reuse_freed_memory
from auditor.sources import Chunk, RawRecord, Rejection, open_chunk_records, open_record
from auditor.store.bulk import PreparedBatch, prepare_batch
from auditor.store.known import CidSet
from auditor.store.tables import TABLES, TS, row_of, schema_of

__all__ = ["BASE_TABLES", "SLOTS", "EvidenceStore", "HarvestStats", "connect", "contested_slots", "prepare"]

LOG = "store.json"
FORMAT = "vtaudit-evidence/1"

BASE_TABLES: dict[str, pa.Schema] = {
    "envelopes": pa.schema(
        [
            ("cid", pa.string()),
            ("type", pa.string()),
            ("size", pa.int64()),
            ("digest", pa.binary()),  # the record digest (spec §3) its signatures and tokens cover
            ("raw", pa.binary()),
        ]
    ),
    "signatures": pa.schema(
        [("cid", pa.string()), ("idx", pa.int32()), ("key", pa.binary()), ("sig", pa.binary())]
    ),
    "timestamps": pa.schema([("cid", pa.string()), ("idx", pa.int32()), ("token", pa.binary())]),
    "provenance": pa.schema(
        [("cid", pa.string()), ("source", pa.string()), ("location", pa.string()), ("seen_at", TS)]
    ),
    "quarantine": pa.schema(
        [
            ("source", pa.string()),
            ("location", pa.string()),
            ("claimed_cid", pa.string()),
            ("check_id", pa.string()),
            ("reason", pa.string()),
            ("raw", pa.binary()),
            ("seen_at", TS),
        ]
    ),
}
ALL_TABLES: dict[str, pa.Schema] = {**BASE_TABLES, **{t: schema_of(t) for t in TABLES}}
_UNIQUE_TEXT = frozenset(
    ("cid", "location", "reason", "claimed_cid")
)  # text columns of (nearly) unique values
# binary columns that compress: records' bytes (JSON text) and timestamp tokens (DER, each
# with the TSA's certificates)
_COMPRESSIBLE = frozenset(("raw", "token"))
QUARANTINE_RAW_LIMIT = 64 * 1024  # keep this much of a bad record's bytes (the size is in the reason)


@dataclass
class HarvestStats:
    read: int = 0
    new: int = 0
    duplicates: int = 0
    quarantined: int = 0
    bytes: int = 0
    by_type: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    seconds: float = 0.0


class EvidenceStore:
    """Open (or create) an evidence directory and add records to it.

    ``read_only``: only to read it (the views, the verify, a node serving it). Such an
    opening leaves alone the part files no committed log lists yet: a harvest running
    beside it has written them and will commit them."""

    def __init__(
        self, root: Path, *, create: bool = True, read_only: bool = False, batch_records: int | None = None
    ) -> None:
        self.root = root
        self.read_only = read_only
        # rows buffered before a commit; VTAUDIT_STORE_BATCH lowers it for crash tests
        self.batch_records = batch_records or int(os.environ.get("VTAUDIT_STORE_BATCH", "50000"))
        log_path = root / LOG
        if not log_path.exists():
            if not create or read_only:
                raise InputError(f"{root}: not an evidence store (no {LOG}); run `vtaudit harvest` first")
            root.mkdir(parents=True, exist_ok=True)
            self.log: dict[str, Any] = {"format": FORMAT, "parts": {}, "cursors": {}, "next_part": 1}
            for name, schema in ALL_TABLES.items():
                self._write_part(name, schema.empty_table())
            self._commit()
        else:
            try:
                self.log = json.loads(log_path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise InputError(f"{log_path}: unreadable store log ({e})") from e
            if self.log.get("format") != FORMAT:
                raise InputError(f"{root}: store format {self.log.get('format')!r}, expected {FORMAT}")
            if not read_only:  # leftovers of a harvest that stopped before its commit
                self._remove_uncommitted()
        self._known: CidSet | None = None  # the CIDs held, read when records are first added
        self._pending: dict[str, list[pa.Table]] = defaultdict(list)
        self._written: dict[str, list[str]] = defaultdict(list)  # part files workers wrote, to commit
        self._syncing: list[Future[None]] = []  # their fsyncs, on a thread of their own
        self._sync_pool: ThreadPoolExecutor | None = None
        self._pending_count = 0
        self._pending_bytes = 0

    @property
    def known(self) -> CidSet:
        if self._known is None:
            self._known = CidSet()
            for p in self.parts("envelopes"):  # a part at a time: 40 bytes a CID, not 150
                self._known.update(pq.read_table(p, columns=["cid"]).column(0).to_pylist())
        return self._known

    # ------------------------------------------------------------------ reading

    def parts(self, table: str) -> list[Path]:
        return [self.root / "tables" / table / name for name in self.log["parts"].get(table, [])]

    def table(self, name: str) -> pa.Table:
        return pa.concat_tables([pq.read_table(p) for p in self.parts(name)]).cast(ALL_TABLES[name])

    def _column(self, table: str, column: str) -> list[Any]:
        values: list[Any] = []
        for p in self.parts(table):
            values.extend(pq.read_table(p, columns=[column]).column(0).to_pylist())
        return values

    def cursor(self, source: str) -> str | None:
        value = self.log["cursors"].get(source)
        return str(value) if value is not None else None

    # ------------------------------------------------------------------ writing

    def add(self, raw: RawRecord, source: str, stats: HarvestStats) -> None:
        """Check one record against its CID, parse it and buffer its rows (or quarantine it)."""
        self.add_batch(prepare_batch([raw]), source, stats)

    def add_batch(self, batch: PreparedBatch, source: str, stats: HarvestStats) -> None:
        """Buffer what :func:`~auditor.store.bulk.prepare_batch` made of a batch (in this
        process or a worker): new records' rows, every sighting's provenance, and the
        rejected records in quarantine."""
        known_before = self._account(batch, source, stats)
        tables = batch.tables
        if known_before:
            stale = pa.array(known_before, pa.string())
            tables = {n: t.filter(pc.invert(pc.is_in(t["cid"], value_set=stale))) for n, t in tables.items()}
        for name, table in tables.items():
            if table.num_rows:
                self._pending[name].append(table)
        provenance = _provenance(batch, source, _now())
        if provenance is not None:
            self._pending["provenance"].append(provenance)

    def add_written(self, batch: PreparedBatch, source: str, stats: HarvestStats) -> None:
        """Take in a batch whose rows a worker wrote as part files (:func:`write_chunk`):
        they are committed with the next flush. Rows of records the store already held
        (another source, an earlier chunk) are filtered out of the parts first."""
        known_before = self._account(batch, source, stats)
        stale = pa.array(known_before, pa.string()) if known_before else None
        for table, name in batch.parts.items():
            if stale is not None and table != "provenance" and not self._drop_rows(table, name, stale):
                continue
            self._written[table].append(name)
            # to disk while the workers go on; the commit that lists it waits for this
            self._syncing.append(self._syncer().submit(_fsync, self.root / "tables" / table / name))

    def _syncer(self) -> ThreadPoolExecutor:
        if self._sync_pool is None:
            self._sync_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vtaudit-fsync")
        return self._sync_pool

    def _account(self, batch: PreparedBatch, source: str, stats: HarvestStats) -> list[str]:
        """Count a batch's records, remember its new CIDs and buffer its rejected records;
        the CIDs it holds rows for that the store already had."""
        stats.read += len(batch.cids)
        stats.bytes += sum(batch.sizes)
        known_before: list[str] = []
        known = self.known
        held = [cid for cid in batch.cids if cid is not None]
        held_before = known.add_absent(held)  # each, whether the store had it; now it has
        if len(held) == len(batch.cids) and not any(held_before) and len(set(held)) == len(held):
            # the common chunk: every record accepted, new, and there once
            stats.new += len(held)
            for record_type, count in Counter(batch.types).items():
                stats.by_type[record_type or ""] += count
            self._pending_count += len(held)
            self._pending_bytes += sum(batch.sizes)
            return known_before
        fresh: set[str] = set()
        before = iter(held_before)
        for i, cid in enumerate(batch.cids):
            if cid is None:
                continue
            if not next(before) and cid not in fresh:
                fresh.add(cid)
                stats.new += 1
                stats.by_type[batch.types[i] or ""] += 1
                self._pending_count += 1
                self._pending_bytes += batch.sizes[i]
            else:
                stats.duplicates += 1
                if cid not in fresh:
                    known_before.append(cid)  # its rows (the batch's first copy) are not new
        now = _now()
        rows = []
        for i, check, reason in batch.rejected:
            raw = batch.raws[i]
            stats.quarantined += 1
            self._pending_count += 1
            rows.append(
                {
                    "source": source,
                    "location": batch.locations[i],
                    "claimed_cid": batch.claimed[i],
                    "check_id": check,
                    "reason": reason
                    if batch.sizes[i] <= QUARANTINE_RAW_LIMIT
                    else f"{reason} ({batch.sizes[i]} bytes, kept the first {QUARANTINE_RAW_LIMIT})",
                    "raw": raw[:QUARANTINE_RAW_LIMIT],
                    "seen_at": now,
                }
            )
        if rows:
            self._pending["quarantine"].append(pa.Table.from_pylist(rows, schema=ALL_TABLES["quarantine"]))
        return known_before

    def _drop_rows(self, table: str, name: str, stale: pa.Array) -> bool:
        """Rewrite a written part without the rows of ``stale`` CIDs; False if none is left
        (the file is then removed)."""
        path = self.root / "tables" / table / name
        data = pq.read_table(path)
        kept = data.filter(pc.invert(pc.is_in(data["cid"], value_set=stale)))
        if kept.num_rows == data.num_rows:
            return True
        path.unlink()
        if not kept.num_rows:
            return False
        write_part(path, kept.cast(ALL_TABLES[table]), sync=False)  # synced with the others
        return True

    @property
    def should_flush(self) -> bool:
        return self._pending_count >= self.batch_records or self._pending_bytes >= 128 * 1024 * 1024

    def flush(self, cursors: dict[str, str] | None = None) -> None:
        """Write buffered rows as new parts and commit them with ``cursors``, atomically."""
        for name, tables in self._pending.items():
            if tables:
                schema = ALL_TABLES[name]
                parts = [t.select(schema.names).cast(schema) for t in tables]
                self._write_part(name, pa.concat_tables(parts))
        for future in self._syncing:
            future.result()  # every written part on disk before the log lists it
        self._syncing.clear()
        for name, written in self._written.items():
            self.log["parts"].setdefault(name, []).extend(written)
        self._pending.clear()
        self._written.clear()
        self._pending_count = 0
        self._pending_bytes = 0
        if cursors:
            self.log["cursors"].update(cursors)
        self._commit()

    def _write_part(self, table: str, data: pa.Table) -> None:
        name = part_name(self.log["next_part"])
        self.log["next_part"] += 1
        write_part(self.root / "tables" / table / name, data)
        self.log["parts"].setdefault(table, []).append(name)

    def _commit(self) -> None:
        if self.read_only:
            raise RuntimeError(f"{self.root}: opened read-only")
        tmp = self.root / (LOG + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.log, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.root / LOG)
        dir_fd = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _remove_uncommitted(self) -> None:
        tables = self.root / "tables"
        if not tables.exists():
            return
        for folder in tables.iterdir():
            listed = set(self.log["parts"].get(folder.name, []))
            for part in folder.iterdir():
                if part.name not in listed:
                    part.unlink()

    def write_views(self) -> None:
        """(Re)write evidence.duckdb: one view per table, over relative Parquet paths."""
        tmp = self.root / "evidence.duckdb.tmp"
        tmp.unlink(missing_ok=True)
        con = duckdb.connect(str(tmp))
        try:
            # relative paths bind against file_search_path here, and against the working
            # directory when a person opens the database: open it from the store's folder.
            con.execute("SET file_search_path = ?", [str(self.root.resolve())])
            for name in ALL_TABLES:
                glob = f"'tables/{name}/*.parquet'"
                view = f"CREATE VIEW {_ident(name)} AS SELECT * FROM read_parquet({glob}, union_by_name=true)"
                con.execute(view)
        finally:
            con.close()
        os.replace(tmp, self.root / "evidence.duckdb")

    def add_all(
        self,
        source: str,
        chunks: Iterable[Chunk],
        stats: HarvestStats,
        *,
        workers: int = 1,
        progress: Callable[[HarvestStats], None] | None = None,
    ) -> None:
        """Add a source's records, chunk by chunk, committing its cursor with every flush.

        Each chunk is opened and its rows written as part files by :func:`write_chunk`,
        in ``workers`` processes when more than one; this process checks them against the
        CIDs it knows and commits them in the source's order.
        """
        last: str | None = None
        try:
            for batch in _opened(self._tasks(source, chunks), workers):
                self.add_written(batch, source, stats)
                if batch.resume is not None:
                    last = batch.resume
                if progress is not None:
                    progress(stats)
                if self.should_flush:
                    self.flush({source: last} if last is not None else None)
            self.flush({source: last} if last is not None else None)
        finally:
            if self._sync_pool is not None:
                self._sync_pool.shutdown()
                self._sync_pool = None

    def _tasks(self, source: str, chunks: Iterable[Chunk]) -> Iterator[ChunkTask]:
        """The chunks as tasks, each with the number of its part files (uncommitted until
        a flush lists them; a crash before leaves files that opening the store deletes)."""
        for chunk in chunks:
            number = self.log["next_part"]
            self.log["next_part"] += 1
            yield ChunkTask(chunk, str(self.root), number, source)


@dataclass
class Prepared:
    """A record checked against its CID and parsed, as the rows it adds to the store."""

    cid: str
    type: str
    size: int
    rows: dict[str, list[dict[str, Any]]]


def prepare(raw: RawRecord) -> Prepared | Rejection:
    """Open ``raw`` (CID, schema) and compute its rows; a pure function, run in workers."""
    envelope = open_record(raw)
    if isinstance(envelope, Rejection):
        return envelope
    cid = envelope.cid
    return Prepared(
        cid,
        envelope.type,
        len(envelope.raw),
        {
            "envelopes": [
                {
                    "cid": cid,
                    "type": envelope.type,
                    "size": len(envelope.raw),
                    "digest": envelope.digest,
                    "raw": envelope.raw,
                }
            ],
            "signatures": [
                {"cid": cid, "idx": i, "key": b64u_decode(s.key), "sig": b64u_decode(s.sig)}
                for i, s in enumerate(envelope.signatures)
            ],
            "timestamps": [{"cid": cid, "idx": i, "token": t} for i, t in enumerate(envelope.timestamps)],
            envelope.type: [row_of(envelope)],
        },
    )


def open_chunk(chunk: Chunk) -> PreparedBatch:
    """The rows a chunk of a source adds to the store; a pure function, run in workers."""
    raws, binary_cids = open_chunk_records(chunk)
    return prepare_batch(raws, binary_cids)


@dataclass(frozen=True)
class ChunkTask:
    """A chunk for a worker: what to open, where to write its rows, under what number."""

    chunk: Chunk
    root: str
    number: int
    source: str


def write_chunk(task: ChunkTask) -> PreparedBatch:
    """Open a chunk (:func:`open_chunk`) and write its rows, with its records'
    provenance, as part files numbered ``task.number``, in the worker: the rows never
    travel back to the harvesting process, which only commits the files' names."""
    with no_gc():
        batch = open_chunk(task.chunk)
    tables = dict(batch.tables)
    provenance = _provenance(batch, task.source, _now())
    if provenance is not None:
        tables["provenance"] = provenance
    name = part_name(task.number)
    folder = Path(task.root) / "tables"
    for table, data in tables.items():
        write_part(
            folder / table / name, data.select(ALL_TABLES[table].names).cast(ALL_TABLES[table]), sync=False
        )
        batch.parts[table] = name
    batch.tables = {}
    return batch


def _opened(tasks: Iterable[ChunkTask], workers: int) -> Iterator[PreparedBatch]:
    """Each chunk opened and written (:func:`write_chunk`), in order, in ``workers`` processes."""
    iterator = iter(tasks)
    head = list(islice(iterator, 4))
    if workers <= 1 or len(head) < 4:  # a small source: starting processes would cost more
        for task in chain(head, iterator):
            yield write_chunk(task)
        return
    with ProcessPoolExecutor(max_workers=workers, initializer=reuse_freed_memory) as pool:
        yield from bounded_map(pool, write_chunk, chain(head, iterator), 2 * workers)


def part_name(number: int) -> str:
    return f"part-{number:06d}.parquet"


def write_part(path: Path, data: pa.Table, *, sync: bool = True) -> None:
    """Write a part file atomically: a temporary name, fsync, then renamed into place.
    With ``sync`` False the file is renamed unsynced: whoever commits it must fsync it
    first (:meth:`EvidenceStore.add_written` does, on a thread of its own)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    # Dictionaries only where values repeat (record types, elections, districts...);
    # statistics (row-group skipping) for all but the binary columns (bytes with no order
    # a query uses). Both cost time on a column of unique blobs, for nothing. Snappy, not
    # zstd: the records are mostly base64 and ciphertext, which zstd shrinks by a fifth
    # more at twice the time (decisions.md, D42). Decoded bytes (keys, signatures,
    # digests, ciphertexts) are random: not compressed at all (D45). Tokens are.
    strings = [f.name for f in data.schema if f.type == pa.string() and f.name not in _UNIQUE_TEXT]
    blobs = {f.name for f in data.schema if f.type in (pa.binary(), pa.list_(pa.binary()))}
    ordered = [f.name for f in data.schema if f.name not in blobs]
    compression = {f.name: "none" if f.name in blobs - _COMPRESSIBLE else "snappy" for f in data.schema}
    pq.write_table(data, tmp, compression=compression, use_dictionary=strings, write_statistics=ordered)
    if sync:
        _fsync(tmp)
    os.replace(tmp, path)


def _fsync(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _now() -> int:
    return int(time.time() * 1000)


def _provenance(batch: PreparedBatch, source: str, now: int) -> pa.Table | None:
    """Where each accepted record of a batch was seen (every sighting, copies too)."""
    seen = [i for i, cid in enumerate(batch.cids) if cid is not None]
    if not seen:
        return None
    return pa.table(
        {
            "cid": pa.array([batch.cids[i] for i in seen], pa.string()),
            "source": pa.array([source] * len(seen), pa.string()),
            "location": pa.array([batch.locations[i] for i in seen], pa.string()),
            "seen_at": pa.array([now] * len(seen), TS),
        }
    )


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def sql_literal(text: str) -> str:
    """A SQL string literal (DDL cannot take prepared parameters)."""
    return "'" + text.replace("'", "''") + "'"


_literal = sql_literal


def connect(root: Path) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with a view per table of the store at ``root``."""
    store = EvidenceStore(root, read_only=True)
    con = duckdb.connect()
    for name in ALL_TABLES:
        files = ", ".join(_literal(str(p.resolve())) for p in store.parts(name))
        con.execute(
            f"CREATE VIEW {_ident(name)} AS SELECT * FROM read_parquet([{files}], union_by_name=true)"
        )
    return con


# Records that must be unique per slot (spec §4): two of them are an equivocation, or at
# least something a person must look at. The harvest keeps them all and lists them.
SLOTS = {
    "election_revision": ("election", "revision"),
    "ballot_template": ("election", "authority", "district", "revision"),
    "registration_roll": ("election", "registrationAuthority"),
    "block_tree": ("election", "template"),
    "result": ("election", "template"),
    "administration": ("previous",),
}


def contested_slots(con: duckdb.DuckDBPyConnection) -> list[str]:
    """One line per slot that holds more than one record, naming the records."""
    found = []
    for table, columns in SLOTS.items():
        keys = ", ".join(_ident(c) for c in columns)
        rows = con.execute(
            f"SELECT {keys}, list(cid ORDER BY cid) FROM {_ident(table)} "
            f"WHERE {' AND '.join(f'{_ident(c)} IS NOT NULL' for c in columns)} "
            f"GROUP BY {keys} HAVING count(*) > 1 ORDER BY {keys}"
        ).fetchall()
        for row in rows:
            slot = ", ".join(f"{c} {v}" for c, v in zip(columns, row[:-1], strict=True))
            found.append(f"{table} ({slot}): {', '.join(row[-1])}")
    return found
