"""The audit context: the evidence store in DuckDB plus the facts every check shares.

Opening an audit does the work that every later check relies on, once:

1. parse the few small records (authorities, the election, revisions, templates, rolls,
   trees, key releases, results, certifications) into typed bodies; the large record
   types (registrants, blocks, receipts, tally nodes) stay in Parquet and are checked
   with set operations in DuckDB;
2. pick the election under audit (the trust file's election authority decides when the
   evidence holds several);
3. verify every signature in the store in packed batches on the worker processes (keys,
   signatures and digests joined into three strings a batch) and register the outcome
   as the DuckDB table ``sig_ok``;
4. verify every timestamp token in worker processes (asn1crypto is pure Python) against
   the election's TSA certificates; a record's **proven time** is the latest genTime of
   its valid tokens (spec §3) and is registered as the table ``proven``.

With a result cache (auditor.verify.cache), steps 3 and 4 verify only what the cache
does not answer, and keep what they verified for the next run.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections import Counter, defaultdict, deque
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from auditor.crypto.ed25519 import verify
from auditor.crypto.opener import SignatureChecker
from auditor.crypto.rfc3161 import verify_token
from auditor.errors import AuditError, InputError
from auditor.limits import DUCKDB_MEMORY
from auditor.model.encoding import b64u_decode, b64u_encode
from auditor.model.envelope import SIGNING_PREFIX, Envelope, parse_envelope
from auditor.parallel import LocalRunner, Runner, Task
from auditor.store.evidence import EvidenceStore, connect, sql_literal
from auditor.store.tables import TABLES, arrow_batches
from auditor.trust import Trust
from auditor.verify.cache import Lookup, ResultCache, Signed, TokenResult
from auditor.verify.findings import Findings

__all__ = [
    "SMALL_TYPES",
    "Audit",
    "Stage",
    "arrow",
    "distinct_content",
    "first_line",
    "fmt_time",
    "of_other_elections",
    "reuse_note",
]

# Record types parsed in full: few per election, whatever the number of voters.
SMALL_TYPES = (
    "administration",
    "election",
    "keyholder",
    "election_revision",
    "ballot_template",
    "registration_roll",
    "block_tree",
    "key_release",
    "key_disclosure",
    "result",
    "certification",
)
SIG_BATCH = 4096
SIG_STREAM = 1 << 18  # signatures read from DuckDB at a time
TOKEN_BATCH = 256
TOKEN_STREAM = 1 << 16  # timestamp tokens read from DuckDB at a time
SOURCE_BYTES = 96 << 20  # Parquet bytes of a table read by one query of a step that reads in runs
RELEASE_SLACK = 16 << 20  # bytes DuckDB may keep above what it uses when memory is released


@dataclass
class Stage:
    name: str
    seconds: float
    detail: str = ""
    cpu: float = 0.0  # CPU seconds of this process (all its threads, DuckDB's too), not its workers'


def arrow(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] = ()) -> pa.Table:
    """The rows of a query as an Arrow table (the method's name changed in DuckDB 2.0)."""
    relation = con.sql(sql, params=list(params) or None)
    method = getattr(relation, "to_arrow_table", None) or relation.arrow
    table: pa.Table = method()
    return table


_SQL_TYPES = {pa.string(): "VARCHAR", pa.binary(): "BLOB", pa.int32(): "INTEGER", pa.bool_(): "BOOLEAN"}


def create_table(con: duckdb.DuckDBPyConnection, name: str, schema: pa.Schema, *, temporary: bool) -> None:
    """An empty DuckDB table ``name`` with the columns of ``schema``, in place of any
    table of that name, for :func:`insert_rows` to fill."""
    columns = ", ".join(f"{f.name} {_SQL_TYPES[f.type]}" for f in schema)
    con.execute(f"CREATE OR REPLACE {'TEMP ' if temporary else ''}TABLE {name} ({columns})")


def insert_rows(con: duckdb.DuckDBPyConnection, name: str, rows: pa.Table) -> None:
    """Add ``rows`` to the DuckDB table ``name`` (same columns, in order): what is kept
    there, DuckDB can spill; Arrow registered with it stays in this process's memory."""
    con.register("_rows", rows)
    try:
        con.execute(f"INSERT INTO {name} SELECT * FROM _rows")
    finally:
        con.unregister("_rows")


Packed = tuple[bytes, bytes, bytes]
"""A batch of signatures for a worker: their keys, signatures and record digests, each
joined into one string (32, 64 and 32 bytes an item), so that a batch costs three
copies to send, not a tuple per signature."""


def _verify_packed(batch: Packed) -> bytes:
    """One byte per signature of the batch, 1 if it verifies (spec §3), else 0: ``verify``'s
    answer, from libsodium called with buffers allocated once a thread (D52)."""
    keys, sigs, digests = batch
    out = bytearray(len(keys) // 32)
    check = _CHECKER.verify
    for i in range(len(out)):
        d = 32 * i
        if check(keys[d : d + 32], sigs[2 * d : 2 * d + 64], SIGNING_PREFIX + digests[d : d + 32]):
            out[i] = 1
    return bytes(out)


_CHECKER = SignatureChecker()  # its buffers are made in each thread that uses it


class _Slice:
    """One slice of the signature stream on its way through the workers: the rows, the
    cache's answer for them, and the packed batches of those to verify."""

    def __init__(
        self, table: pa.Table, found: Lookup[Signed, bool] | None, todo: list[Signed] | None
    ) -> None:
        self.table = table.select(["cid", "idx", "key"])
        self.found = found
        if todo is None:  # no cache: every row, packed straight from the Arrow columns
            keys, sigs, digests = (table.column(c).combine_chunks() for c in ("key", "sig", "digest"))
        else:
            keys, sigs, digests = (pa.array([t[i] for t in todo], pa.binary()) for i in range(3))
        lengths = [pc.binary_length(a).to_numpy(zero_copy_only=False) for a in (keys, sigs, digests)]
        self.size = len(keys)
        # well-formed rows go to the workers; a key, signature or digest of another length
        # (a store edited by hand) is verified here, by the same function
        self.well = (lengths[0] == 32) & (lengths[1] == 64) & (lengths[2] == 32)
        self.odd: dict[int, bool] = {}
        if not self.well.all():
            for i in np.flatnonzero(~self.well).tolist():
                key, sig, digest = keys[i].as_py(), sigs[i].as_py(), digests[i].as_py()
                self.odd[i] = verify(key, sig, SIGNING_PREFIX + digest)
            mask = pa.array(self.well)
            keys, sigs, digests = keys.filter(mask), sigs.filter(mask), digests.filter(mask)
        joined = [_joined(a, n) for a, n in ((keys, 32), (sigs, 64), (digests, 32))]
        self.batches: list[Packed] = [
            (joined[0][32 * i : 32 * j], joined[1][64 * i : 64 * j], joined[2][32 * i : 32 * j])
            for i in range(0, len(keys), SIG_BATCH)
            for j in (min(i + SIG_BATCH, len(keys)),)
        ]
        self.pending = len(self.batches)
        self.results: list[bytes] = []

    def add(self, result: bytes) -> None:
        self.results.append(result)
        self.pending -= 1

    def outcomes(self) -> np.ndarray[Any, np.dtype[np.bool_]]:
        """Whether each row to verify verifies, in order."""
        ok = np.zeros(self.size, np.bool_)
        ok[self.well] = np.frombuffer(b"".join(self.results), np.uint8).astype(np.bool_)
        for i, good in self.odd.items():
            ok[i] = good
        return ok


def _joined(values: pa.Array, width: int) -> bytes:
    """The values of a binary array whose items all have ``width`` bytes, end to end."""
    if not len(values):
        return b""
    fixed = values.cast(pa.binary(width))
    return bytes(fixed.buffers()[1].slice(fixed.offset * width, len(fixed) * width))


_TSA: tuple[list[bytes], tuple[bytes, ...]] = ([], ())
Stamped = tuple[bytes, bytes]  # a timestamp token and the digest of its record


def _init_tokens(certs: list[bytes], roots: tuple[bytes, ...]) -> None:
    global _TSA
    _TSA = (certs, roots)


def _token_batch(
    batch: Sequence[tuple[bytes, bytes]],
) -> list[tuple[int | None, tuple[str, ...], tuple[str, ...]]]:
    certs, roots = _TSA
    out = []
    for token, digest in batch:
        result = verify_token(token, digest, certs, roots)
        out.append((result.gen_time_ms, result.token_problems, result.imprint_problems))
    return out


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class Audit:
    """One audit of one election in an evidence store."""

    def __init__(
        self,
        root: Path,
        trust: Trust | None,
        *,
        workers: int = 2,
        election: str | None = None,
        out: Path | None = None,
        cache: ResultCache | None = None,
        runner: Runner | None = None,
    ) -> None:
        self.root = root
        self._scratch: tempfile.TemporaryDirectory[str] | None = None
        if out is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="vtaudit-audit-")
            out = Path(self._scratch.name)
        self.out = out  # the audit folder: the recount writes answers.parquet there
        self.trust = trust
        self.workers = max(1, workers)
        self.cache = cache  # results of earlier runs, by content (None: compute everything)
        self.details: dict[str, str] = {}  # step name -> what its stage did, for Stage.detail
        self.runner = runner or LocalRunner(self.workers)  # where the per-batch work runs (parallel.py)
        self.con = connect(root)
        # a fixed memory budget; what does not fit spills to the audit folder (limits.py)
        self._budget = os.environ.get("VTAUDIT_DUCKDB_MEMORY", DUCKDB_MEMORY)
        if self._budget:
            self.con.execute("SET memory_limit = ?", [self._budget])
        out.mkdir(parents=True, exist_ok=True)
        self.con.execute("SET temp_directory = ?", [str(out / "spill")])
        self.findings = Findings()
        self.stages: list[Stage] = []
        self.records: dict[str, Envelope] = {}
        self.by_type: dict[str, list[Envelope]] = defaultdict(list)
        self.valid_signers: dict[str, set[str]] = defaultdict(set)  # small records: b64u keys
        self.proven: dict[str, int] = {}
        self.token_count: dict[str, int] = defaultdict(int)
        self.election: Envelope | None = None
        self.election_note = ""
        self._requested_election = election
        self.harvested = 0
        self.signature_count = 0  # signatures in the store (sig_ok may keep only some: keep_signatures)
        # filled by the checks, in order, for the checks after them
        self.admin_ok: dict[str, bool] = {}  # administration CID -> chained to its founding record
        self.revision: Envelope | None = None  # the effective revision
        self.templates: dict[str, Envelope] = {}  # effective templates by CID
        self.roll: Envelope | None = None
        self.counted: set[str] = set()  # CIDs of counted blocks
        self.trees: dict[str, Envelope] = {}  # the valid block tree per template CID
        self.results: dict[str, Envelope] = {}  # the verified result per template CID
        self.released: dict[str, bytes] = {}  # keyholder CID -> its valid released private key
        self.recounted = 0  # blocks decrypted by the recount (tables answers, recount_block)
        self.recounts: dict[str, tuple[int, Any]] = {}  # template CID -> (voters, histogram)
        self.results_recounted = False
        self.advisory: dict[str, Any] = {}  # advisory.advise: turnout, block sizes, outliers
        self.internal_errors: list[str] = []  # bugs met inside a step that still finished
        self.ballots: list[dict[str, Any]] = []  # per template: counts, spread, margin, runoff
        self.disputed: dict[str, set[str]] = {}  # template CID -> keys of confirmed/unresolved disputes
        self.unreached: dict[str, set[str]] = {}  # template CID -> registrants of unresolved reports

    # ------------------------------------------------------------------ plumbing

    @contextmanager
    def stage(self, name: str, detail: str = "") -> Iterator[Stage]:
        entry = Stage(name, 0.0, detail)
        started, cpu = time.perf_counter(), time.process_time()
        try:
            yield entry
        finally:
            entry.seconds = time.perf_counter() - started
            entry.cpu = time.process_time() - cpu
            self.stages.append(entry)

    def close(self) -> None:
        """Close the DuckDB connection and remove what it spilled and the temporary audit
        folder, if any."""
        self.con.close()
        shutil.rmtree(self.out / "spill", ignore_errors=True)
        shutil.rmtree(self.out / "recount-blocks", ignore_errors=True)  # a recount killed mid-way
        if self._scratch is not None:
            self._scratch.cleanup()

    def release_memory(self) -> None:
        """Give back to the system the memory DuckDB keeps once a query is over.

        DuckDB keeps the buffers its queries freed (sorts, hash tables, dropped tables) for
        later queries, and so does the C allocator: after the block checks of a million
        voters, ≈ 1 GB that nothing uses. A memory limit just above what DuckDB still uses
        (its tables) makes it free them; the budget is then set back. Run after each step."""
        used = self.rows("SELECT coalesce(sum(memory_usage_bytes), 0)::BIGINT FROM duckdb_memory()")[0][0]
        try:
            self.con.execute("SET memory_limit = ?", [f"{used + RELEASE_SLACK}B"])
        except duckdb.Error:  # pragma: no cover - nothing could be freed: keep it
            pass
        finally:
            if self._budget:
                self.con.execute("SET memory_limit = ?", [self._budget])
            else:
                self.con.execute("RESET memory_limit")

    def keep_signatures(self, types: Sequence[str]) -> None:
        """Keep of ``sig_ok`` only the rows the steps after the block checks read: the
        signatures that do not verify (SIG-VALID) and those of records of ``types``; how
        many there were stays in ``signature_count``. At a million voters ``sig_ok`` holds
        two million outcomes (≈ 225 MB in DuckDB), which the disputes step, the recount's
        answers and the references no longer hold beside them (D44, D48)."""
        placeholders = ", ".join("?" for _ in types)
        # one statement: the table is replaced whole or not at all
        self.con.execute(
            "CREATE OR REPLACE TEMP TABLE sig_ok AS SELECT * FROM sig_ok WHERE NOT ok "
            f"OR cid IN (SELECT cid FROM envelopes WHERE type IN ({placeholders}))",
            list(types),
        )

    def sources(self, table: str) -> list[str]:
        """The store's ``table`` as SQL sources, each a run of its Parquet parts of at most
        SOURCE_BYTES on disk (the whole view when that is one source): a query that holds
        each row's large columns while it runs can take the parts a run at a time (at a
        million voters, the vote blocks' ciphertexts read all at once cost ≈ 1.4 GB, a
        part of 80 MB at a time ≈ 0.6 GB)."""
        runs: list[list[Path]] = []
        size = 0
        for part in EvidenceStore(self.root, read_only=True).parts(table):
            part_size = part.stat().st_size
            if not runs or size + part_size > SOURCE_BYTES:
                runs.append([])
                size = 0
            runs[-1].append(part)
            size += part_size
        if len(runs) <= 1:
            return [table]
        return [
            "read_parquet(["
            + ", ".join(sql_literal(str(p.resolve())) for p in run)
            + "], union_by_name=true)"
            for run in runs
        ]

    def rows(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[tuple[Any, ...]]:
        return self.con.execute(sql, params).fetchall()

    def register(self, name: str, table: pa.Table) -> None:
        self.con.register(name, table)

    def of_type(self, record_type: str, *, election: bool = True) -> list[Envelope]:
        """Parsed records of a small type; those of the audited election unless ``election`` is False."""
        records = self.by_type.get(record_type, [])
        if not election or self.election is None:
            return list(records)
        return [r for r in records if getattr(r.body, "election", None) == self.election.cid]

    def timeline(self, event: str) -> int | None:
        if self.revision is None:
            return None
        value: int = getattr(self.revision.body.timeline, event)
        return value

    def envelope_text(self, cid: str) -> str | None:
        """The record's canonical JSON, for a finding's evidence."""
        if cid in self.records:
            return self.records[cid].raw.decode("utf-8")
        found = self.rows("SELECT raw FROM envelopes WHERE cid = ? LIMIT 1", [cid])
        return bytes(found[0][0]).decode("utf-8") if found else None

    def equivocation(
        self, check: str, records: Sequence[Envelope], slot: str, *, also: Sequence[str] = ()
    ) -> None:
        """Fail ``check`` for two or more different valid records in one ``slot``; the
        finding carries every one of them in full (what a third party needs, §8), and says
        that the audit goes on with the first proven (D18)."""
        cids = [r.cid for r in records]
        self.findings.fail(
            check,
            cids[1],
            f"{slot} has {len(cids)} different valid records ({', '.join(cids)}): an equivocation; "
            f"the audit goes on with the first proven, {cids[0]}",
            records=[*also, *cids],
            envelopes={c: self.envelope_text(c) for c in cids},
        )

    def same_record(self, cid: str, record: Envelope) -> bool:
        """Whether ``cid`` is ``record`` or a copy of it (same digest, other signatures)."""
        named = self.records.get(cid)
        return cid == record.cid or (named is not None and named.digest == record.digest)

    def signed_by(self, cid: str, key: str) -> bool:
        """Whether the small record ``cid`` carries a valid signature by ``key`` (b64u)."""
        return key in self.valid_signers.get(cid, ())

    # ------------------------------------------------------------------ opening

    def open(self) -> None:
        with self.stage("load") as st:
            self._load_small()
            st.detail = f"{self.harvested:,} records, {sum(len(v) for v in self.by_type.values()):,} parsed"
        self.release_memory()
        with self.stage("signatures") as st:
            st.detail = self._verify_signatures()
        self.release_memory()
        self._choose_election()  # among validly signed election records
        with self.stage("timestamps") as st:
            st.detail = self._verify_tokens()
        self.release_memory()

    def _load_small(self) -> None:
        self.harvested = self.rows("SELECT count(*) FROM envelopes")[0][0]
        placeholders = ", ".join("?" for _ in SMALL_TYPES)
        result = self.con.execute(
            f"SELECT cid, raw FROM envelopes WHERE type IN ({placeholders}) ORDER BY cid", list(SMALL_TYPES)
        )
        while batch := result.fetchmany(10_000):
            for cid, raw in batch:
                try:
                    envelope = parse_envelope(bytes(raw), cid=cid)
                except AuditError as e:  # the store was edited by hand: say so, go on
                    self.findings.fail(
                        "REC-SCHEMA", cid, f"the stored record {cid} no longer parses: {e}", records=[cid]
                    )
                    continue
                self.records[cid] = envelope
                self.by_type[envelope.type].append(envelope)

    def _choose_election(self) -> None:
        elections = self.by_type.get("election", [])
        if self._requested_election is not None:
            chosen = [e for e in elections if e.cid == self._requested_election]
            if not chosen:
                known = ", ".join(e.cid for e in elections) or "none"
                raise InputError(
                    f"--election {self._requested_election} is not an election record of this evidence "
                    f"(elections found: {known})"
                )
            self.election = chosen[0]
            return
        # an unsigned copy is nobody's election; if none is signed, audit what there is
        candidates = [e for e in elections if self.valid_signers.get(e.cid)] or list(elections)
        if len(candidates) > 1 and self.trust is not None and self.trust.election:
            anchored = [e for e in candidates if e.body.authority == self.trust.election]
            candidates = anchored or candidates
        if len(candidates) > 1:  # the one the election's own revisions name
            named = Counter(r.body.election for r in self.by_type.get("election_revision", []))
            most = max(named[e.cid] for e in candidates)
            if most and sum(1 for e in candidates if named[e.cid] == most) == 1:
                candidates = [e for e in candidates if named[e.cid] == most]
        if len(candidates) > 1:
            listing = ", ".join(f"{e.cid} ({e.body.title})" for e in candidates)
            raise InputError(
                f"the evidence holds {len(candidates)} elections: {listing}; choose one with --election CID"
            )
        if candidates:
            self.election = candidates[0]
        else:
            self.election_note = "the evidence holds no valid election record"

    def _verify_signatures(self) -> str:
        """Every signature in the store, streamed from DuckDB a slice at a time (a million
        voters have two million signatures: their rows as Python objects would take
        gigabytes) and verified in packed batches by the runner's worker processes; the
        outcomes go into the DuckDB table ``sig_ok``, a slice at a time."""
        total = self.rows("SELECT count(*) FROM signatures")[0][0]
        small = total <= 4 * SIG_BATCH
        # a cursor of its own: the other queries of this step must not end the stream
        stream = self.con.cursor()
        relation = stream.sql(
            "SELECT s.cid, s.idx, s.key, s.sig, e.digest FROM signatures s JOIN envelopes e USING (cid)"
        )
        reader = arrow_batches(relation, SIG_STREAM)
        task = Task("signatures", _verify_packed)
        slices: deque[_Slice] = deque()  # read, and not yet every batch verified

        def batches() -> Iterator[Packed]:  # one pass of the runner over every slice
            for batch in reader:
                table = pa.Table.from_batches([batch])
                table = table.set_column(4, "digest", self._digests(table))
                if self.cache is None:
                    part = _Slice(table, None, None)
                else:
                    triples = list(
                        zip(*(table.column(c).to_pylist() for c in ("key", "sig", "digest")), strict=True)
                    )
                    found = self.cache.signatures(triples)
                    part = _Slice(table, found, found.todo)
                slices.append(part)
                if not part.pending and len(slices) == 1:  # all cached, nothing before it: done
                    finish(slices.popleft())
                    continue
                yield from part.batches

        schema = pa.schema(
            [("cid", pa.string()), ("idx", pa.int32()), ("key", pa.binary()), ("ok", pa.bool_())]
        )
        # a DuckDB table, which it can spill under a budget: ten million voters' twenty
        # million outcomes would take over 2 GB as Arrow
        create_table(self.con, "sig_ok", schema, temporary=True)
        new_keys: list[bytes] = []  # the cache keys of the signatures checked, and their outcomes
        new_results: list[bool] = []
        counts = [0, 0]  # checked, reused

        def finish(part: _Slice) -> None:
            fresh = part.outcomes()
            counts[0] += part.size
            if part.found is None:
                ok = pa.array(fresh, pa.bool_())
            else:
                fresh_list = fresh.tolist()
                new_keys.extend(part.found.keys)
                new_results.extend(fresh_list)
                counts[1] += part.found.reused
                ok = pa.array(part.found.merge(fresh_list), pa.bool_())
            insert_rows(self.con, "sig_ok", part.table.append_column("ok", ok).cast(schema))

        try:
            for result in self.runner.map(task, batches(), small=small):
                while not slices[0].pending:  # slices with nothing (left) to verify
                    finish(slices.popleft())
                slices[0].add(result)
            while slices:
                finish(slices.popleft())
        finally:
            stream.close()
        checked, reused = counts
        if self.cache:  # one part for the run, however many slices the stream had
            self.cache.keep_signatures(Lookup([], [], new_keys), new_results)
        total, good = self.rows("SELECT count(*), count(*) FILTER (WHERE ok) FROM sig_ok")[0]
        self.signature_count = total
        placeholders = ", ".join("?" for _ in SMALL_TYPES)
        for cid, key in self.rows(
            "SELECT s.cid, s.key FROM sig_ok s JOIN envelopes e USING (cid) "
            f"WHERE s.ok AND e.type IN ({placeholders})",
            list(SMALL_TYPES),
        ):
            self.valid_signers[cid].add(b64u_encode(bytes(key)))
        bad = total - good
        note = reuse_note(reused, checked) if self.cache else ""
        where = self.runner.describe(small=small)
        return f"{total:,} signatures{note}, {bad:,} do not verify, {where}"

    def _digests(self, table: pa.Table) -> pa.ChunkedArray | pa.Array:
        """The digest column; stores written before it existed get it from the raw bytes
        (of this table's records only: the signatures arrive a slice at a time)."""
        column = table.column("digest")
        if column.null_count == 0:
            return column
        digests: list[bytes | None] = column.to_pylist()
        cids = table.column("cid").to_pylist()
        missing = sorted({c for c, d in zip(cids, digests, strict=True) if d is None})
        computed = {
            cid: parse_envelope(bytes(raw), cid=cid).digest
            for cid, raw in self.rows("SELECT cid, raw FROM envelopes WHERE list_contains(?, cid)", [missing])
        }
        return pa.array(
            [d if d is not None else computed[c] for c, d in zip(cids, digests, strict=True)], pa.binary()
        )

    def tsa_certificates(self) -> list[bytes]:
        if self.election is None:
            return []
        certs = []
        for authority in self.election.body.timestampAuthorities:
            try:
                certs.append(b64u_decode(authority.certificate))
            except AuditError:  # pragma: no cover - the schema checked the encoding
                continue
        return certs

    def _verify_tokens(self) -> str:
        """Every timestamp token, streamed from DuckDB TOKEN_STREAM at a time (ten million
        voters' tokens take some 700 MB as Python bytes) and verified by the runner's
        workers; each token's outcome becomes findings and a row of ``token_ok``, each
        record's latest valid genTime its row of ``proven``."""
        certs, roots = self.tsa_certificates(), (self.trust.tsa_roots if self.trust else ())
        if self.election is None:
            self.findings.skip("TSA-TOKEN", "no election record lists the timestamp authorities")
            self.findings.skip("TSA-IMPRINT", "no election record lists the timestamp authorities")
            empty = pa.table({"cid": pa.array([], pa.string()), "t": pa.array([], pa.int64())})
            self.register("proven", empty)
            self.register(
                "token_ok",
                empty.append_column("ok", pa.array([], pa.bool_())).rename_columns(["cid", "gen_time", "ok"]),
            )
            return "skipped: no election"
        total = self.rows("SELECT count(*) FROM timestamps")[0][0]  # an upper bound: only to size batches
        small = total <= 4 * TOKEN_BATCH
        context = ResultCache.token_context(certs, roots)
        task = Task("tokens", _token_batch, _init_tokens, (certs, roots))
        proven: dict[str, int] = {}
        outcomes: list[pa.Table] = []  # token_ok, a slice at a time
        tokens = reused = 0  # tokens, of which reused from the cache
        # a cursor of its own: the findings' bookkeeping must not end the stream
        stream = self.con.cursor()
        # another election's records (a node serving several) are that election's: their
        # tokens may come from TSAs this election does not list (D4)
        relation = stream.sql(
            "SELECT t.cid, t.idx, t.token, e.digest, e.type FROM timestamps t JOIN envelopes e USING (cid) "
            f"WHERE t.cid NOT IN ({of_other_elections(sql_literal(self.election.cid))})"
        )
        reader = arrow_batches(relation, TOKEN_STREAM)
        # read, and not yet every token verified: (cids, idxs, types, the cache's answer)
        slices: deque[tuple[list[str], list[int], list[str], Lookup[Stamped, TokenResult]]] = deque()

        def batches() -> Iterator[Sequence[Stamped]]:  # one pass of the runner over every slice
            for batch in reader:
                table = pa.Table.from_batches([batch])
                cids = table.column("cid").to_pylist()
                idxs = table.column("idx").to_pylist()
                types = table.column("type").to_pylist()
                pairs = list(
                    zip(table.column("token").to_pylist(), self._digests(table).to_pylist(), strict=True)
                )
                del table
                found: Lookup[Stamped, TokenResult] = (
                    self.cache.tokens(context, pairs) if self.cache else Lookup.nothing(pairs)
                )
                del pairs
                slices.append((cids, idxs, types, found))
                if not found.todo and len(slices) == 1:  # all cached, nothing before it: done
                    finish([])
                    continue
                yield from _chunks(found.todo, TOKEN_BATCH)

        def finish(fresh: list[TokenResult]) -> None:
            nonlocal tokens, reused
            cids, idxs, types, found = slices.popleft()
            results = found.merge(fresh)
            if self.cache:
                self.cache.keep_tokens(found, fresh)
            tokens += len(results)
            reused += found.reused
            outcomes.append(self._token_outcomes(cids, idxs, types, results, proven))

        fresh: list[TokenResult] = []  # the results of the first slice's tokens, so far
        try:
            # one pool for the whole stream: the next slice is read while the workers
            # verify this one, and the workers start once (a pool a slice cost ten
            # million voters' ten slices a start each, and the workers waited meanwhile)
            for part in self.runner.map(task, batches(), small=small):
                fresh.extend(part)
                while slices and len(fresh) >= len(slices[0][3].todo):
                    done = len(slices[0][3].todo)
                    finish(fresh[:done])
                    del fresh[:done]
            while slices:  # slices with nothing (left) to verify
                finish([])
            if fresh:  # a bug: results no token asked for
                raise RuntimeError(f"{len(fresh)} token results past the last token")
        finally:
            stream.close()
        self._register_proven(proven)
        self._prove_copies(proven)
        self.proven = proven
        self.findings.checked("TSA-TOKEN", tokens, f"{tokens:,} tokens")
        self.findings.checked("TSA-IMPRINT", tokens, f"{tokens:,} tokens")
        schema = pa.schema(
            [("cid", pa.string()), ("idx", pa.int32()), ("gen_time", pa.int64()), ("ok", pa.bool_())]
        )
        self.register("token_ok", pa.concat_tables([schema.empty_table(), *outcomes]).combine_chunks())
        note = reuse_note(reused, tokens - reused) if self.cache else ""
        where = self.runner.describe(small=small)
        return f"{tokens:,} tokens{note}, {len(certs)} listed TSA certificates, {where}"

    def _register_proven(self, proven: dict[str, int]) -> None:
        self.register(
            "proven",
            pa.table(
                {"cid": pa.array(list(proven), pa.string()), "t": pa.array(list(proven.values()), pa.int64())}
            ),
        )

    def _prove_copies(self, proven: dict[str, int]) -> None:
        """Copies are one record (D26), and tokens cover the digest, not the envelope: the
        content's proven time is that of its best-proven copy, the earliest of the copies'
        proven times (each the latest valid genTime of its own tokens, spec §3), given to
        every copy. Anyone can publish a copy, never take one away: a copy with its
        timestamps stripped, or with a fresh token bought from a public TSA, changes
        nothing (D16). ``proven`` (and the table of that name) hold each copy's own time;
        the copies whose time this changes are updated in both."""
        # the digests with a proven copy (a few per timestamped record), then the copies
        # whose time that changes: none at all in an election without copies
        changed = self.rows(
            """
            WITH by_digest AS (
                SELECT e.digest, min(p.t) AS t FROM proven p JOIN envelopes e USING (cid) GROUP BY e.digest
            )
            SELECT DISTINCT e.cid, d.t
            FROM envelopes e JOIN by_digest d USING (digest) LEFT JOIN proven p USING (cid)
            WHERE p.t IS DISTINCT FROM d.t
            """
        )
        if changed:
            proven.update(changed)
            self._register_proven(proven)

    def _token_outcomes(
        self,
        cids: list[str],
        idxs: list[int],
        types: list[str],
        results: list[TokenResult],
        proven: dict[str, int],
    ) -> pa.Table:
        """The findings of a slice of tokens, their rows of ``token_ok``; ``proven`` takes
        each record's latest valid genTime."""
        good: list[bool] = []
        for cid, idx, record_type, (gen_time, token_problems, imprint_problems) in zip(
            cids, idxs, types, results, strict=True
        ):
            self.token_count[cid] += 1
            where = f"{record_type} {cid}, timestamps[{idx}]"
            for problem in token_problems:
                self.findings.fail("TSA-TOKEN", cid, f"{where}: {problem}", token=idx)
            for problem in imprint_problems:
                self.findings.fail("TSA-IMPRINT", cid, f"{where}: {problem}", token=idx)
            valid = gen_time is not None and not token_problems and not imprint_problems
            good.append(valid)
            if valid and gen_time is not None:
                proven[cid] = max(proven.get(cid, gen_time), gen_time)
        return pa.table(
            {
                "cid": pa.array(cids, pa.string()),
                "idx": pa.array(idxs, pa.int32()),
                "gen_time": pa.array([r[0] for r in results], pa.int64()),
                "ok": pa.array(good, pa.bool_()),
            }
        )

    # ------------------------------------------------------------------ shared judgements

    def in_window(self, cid: str, start: str | None, end: str | None, *, end_inclusive: bool = False) -> str:
        """'' when the record's proven time is in the timeline window, else why not."""
        t = self.proven.get(cid)
        if t is None:
            return "it has no valid timestamp" if self.token_count.get(cid) else "it is not timestamped"
        lo = self.timeline(start) if start else None
        hi = self.timeline(end) if end else None
        if lo is not None and t < lo:
            return f"its proven time {fmt_time(t)} is before {start} ({fmt_time(lo)})"
        if hi is not None and (t > hi if end_inclusive else t >= hi):
            relation = "after" if end_inclusive else "at or after"
            return f"its proven time {fmt_time(t)} is {relation} {end} ({fmt_time(hi)})"
        return ""


def first_line(error: BaseException) -> str:
    """The first line of what an error says (DuckDB's messages go on for lines)."""
    return str(error).split("\n", 1)[0]


def reuse_note(reused: int, computed: int, verb: str = "checked") -> str:
    """What a stage took from the result cache, for its detail: " (N reused from the
    cache, M checked)"."""
    return f" ({reused:,} reused from the cache, {computed:,} {verb})"


def of_other_elections(election: str) -> str:
    """A query of the CIDs of records whose body names an election other than
    ``election`` (an SQL expression: a literal, or a parameter such as ``$e``): another
    election's evidence, harvested beside this one's from a node that serves several, is
    not in use in this audit (D4). None when ``election`` is NULL (no audited election)."""
    tables = [name for name, columns in TABLES.items() if any(c.name == "election" for c in columns)]
    return " UNION ALL ".join(
        f'SELECT cid FROM "{t}" WHERE {election} IS NOT NULL AND election IS DISTINCT FROM {election}'
        for t in tables
    )


def distinct_content(audit: Audit, records: Iterable[Envelope]) -> list[Envelope]:
    """One record per digest, the first proven (then lowest CID) of each, in that order.

    Copies of one body with the signatures in another order, or one signature more, have
    another CID but the same content (spec §3: signatures cover the digest): they are one
    record, never an equivocation."""
    ordered = sorted(records, key=lambda r: (audit.proven.get(r.cid, 0), r.cid))
    seen: dict[bytes, Envelope] = {}
    for record in ordered:
        seen.setdefault(record.digest, record)
    return list(seen.values())


def fmt_time(ms: int) -> str:
    """A Unix-millisecond time as ISO 8601 UTC, for messages people read."""
    seconds, millis = divmod(ms, 1000)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{text}.{millis:03d}Z" if millis else f"{text}Z"
