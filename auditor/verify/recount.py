"""The recount: DEC-ENTRIES, DEC-VOTER, DEC-NONCE and BAL-VALID; then the tally (tally.py).

With every keyholder's released key, the combined private key opens every vote and
voter ciphertext of every counted block. Blocks are decrypted in worker processes (the
AEAD and scalar multiplication are in libsodium, the JSON and ballot rules in Python).
A worker returns what was wrong with each block and the rows of its valid votes (the
answers table, answers.py), which stream into ``answers.parquet`` in the audit folder;
the histograms, the tally tree and the results are then checked from that table.

With a result cache, the blocks it answers are not decrypted again (``_Plan``): the
workers get only the others, and every block's rows are taken in CID order, cached or
not, so the answers table and the findings are those of a run without the cache.
"""

from __future__ import annotations

import shutil
import typing
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import pyarrow as pa

from auditor.crypto.ecies import combine_private
from auditor.crypto.opener import Opener
from auditor.errors import AuditError
from auditor.model.ballot import NotedCheck, valid_vote_check, vote_problems
from auditor.model.encoding import (
    NOT_CANONICAL,
    b64u_decode,
    b64u_encode,
    canonical_value,
    jcs,
    parse_json,
)
from auditor.model.entries import (
    Answer,
    VoteEntry,
    VoteReader,
    VoterEntry,
    accept_vote_entry,
    accept_voter_entry,
    read_voter_entry,
)
from auditor.model.envelope import signed_message
from auditor.model.records import BallotTemplate
from auditor.parallel import Task
from auditor.store.bulk import cid_binaries
from auditor.store.evidence import EvidenceStore, sql_literal
from auditor.verify.answers import AnswerRows, AnswersWriter, Row, answer_cells, record_batch
from auditor.verify.cache import ResultCache
from auditor.verify.context import Audit, create_table, first_line, insert_rows, reuse_note
from auditor.verify.reuse import cache_rows, from_cache
from auditor.verify.tally import check_tally

__all__ = ["RECOUNT_CHECKS", "recount"]

RECOUNT_CHECKS = ("DEC-ENTRIES", "DEC-VOTER", "DEC-NONCE", "BAL-VALID", "TALLY-TREE")
BATCH = 64
SORT_BLOCKS = 16_384  # counted blocks read and sorted by one query (_Counted)
PARTITION_RANGES = 8  # from this many ranges, the counted blocks are copied by range first (_Counted)
PARTITION_ROW_GROUP = 1_024  # rows of a row group of that copy
READ_THREADS = 1  # DuckDB threads while the recount reads the counted blocks (_Counted)
VOTER_SCHEMA = pa.schema([("block", pa.string()), ("key", pa.binary()), ("registrant", pa.string())])
NONCE_SCHEMA = pa.schema(
    [("template", pa.string()), ("block", pa.string()), ("vote", pa.int32()), ("nonce", pa.string())]
)
BLOCK_SCHEMA = pa.schema(
    [
        ("block", pa.string()),
        ("template", pa.string()),
        ("leaf", pa.int32()),
        ("members", pa.int32()),
        ("counted", pa.bool_()),
    ]
)

# a block to read: CID, template, leaf, members, votes, voters
Item = tuple[str, str, int, list[bytes], list[bytes], list[bytes]]


@dataclass
class BlockResult:
    """What one counted block held once decrypted (returned by a worker)."""

    cid: str
    template: str
    leaf: int
    members: int
    counted: bool = False  # read against an effective template: its valid votes are in the answers
    problems: list[tuple[str, str]] = field(default_factory=list)  # (check id, message)
    # internal errors (bugs in vtaudit), never the evidence's fault
    errors: list[str] = field(default_factory=list)


@dataclass
class _Batch:
    """A worker's answer for a batch of blocks."""

    blocks: list[BlockResult]
    votes: pa.RecordBatch  # the valid votes (answers.VOTE_SCHEMA)
    cells: pa.RecordBatch  # their answers rows (answers.CELL_SCHEMA)
    voters: pa.RecordBatch  # signed voter entries (VOTER_SCHEMA)
    nonces: pa.RecordBatch  # votes that decrypt but are not valid (NONCE_SCHEMA)


@dataclass
class _Rows:
    answers: AnswerRows = field(default_factory=AnswerRows)
    voters: list[Row] = field(default_factory=list)
    nonces: list[Row] = field(default_factory=list)

    def mark(self) -> tuple[tuple[int, int], int, int]:
        return self.answers.mark(), len(self.voters), len(self.nonces)

    def truncate(self, mark: tuple[tuple[int, int], int, int]) -> None:
        self.answers.truncate(mark[0])
        del self.voters[mark[1] :], self.nonces[mark[2] :]


_STATE: dict[str, Any] = {}
E = TypeVar("E", VoteEntry, VoterEntry)


@dataclass(frozen=True)
class _Template:
    """An effective template as a worker reads votes against it (built once, in _init)."""

    body: BallotTemplate
    aad: bytes  # the template CID's UTF-8 bytes, the AEAD's associated data (spec §5.2)
    kinds: Mapping[str, str]  # question code -> type, for the answers rows
    valid: Callable[[VoteEntry], bool]  # ballot.valid_vote_check: True only for a valid vote
    noted: NotedCheck  # the same verdict from the answers' notes
    # reads the canonical vote entries that name this template (D49), noting each distinct
    # answer once: (question, NotedCheck.answer_ok, values, its answers rows) (D57)
    reader: VoteReader


def _init(private_key: bytes, templates: dict[str, bytes]) -> None:
    _STATE["opener"] = Opener(private_key)
    _STATE["templates"] = {}
    for cid, raw in templates.items():
        body = BallotTemplate.parse(parse_json(raw), "template")
        kinds = {q.code: q.type for q in body.questions}
        noted = NotedCheck(body)
        _STATE["templates"][cid] = _Template(
            body,
            cid.encode("utf-8"),
            kinds,
            valid_vote_check(body),
            noted,
            VoteReader(cid, partial(_note, noted, kinds)),
        )


def _note(
    noted: NotedCheck, kinds: Mapping[str, str], answer: Answer
) -> tuple[str, bool, Any, tuple[Row, ...]]:
    """What the recount needs of one answer, made once per distinct answer (D57)."""
    ok = noted.answer_ok(answer)
    cells = answer_cells(answer.question, kinds[answer.question], answer.values) if ok else ()
    return answer.question, ok, answer.values, cells


def _read_batch(batch: Sequence[Item]) -> _Batch:
    rows = _Rows()
    blocks = []
    for item in batch:
        mark = rows.mark()
        try:
            blocks.append(_read_block(rows, *item))
        except Exception as e:  # a bug in vtaudit: keep reading the other blocks, report it
            rows.truncate(mark)
            failed = BlockResult(item[0], item[1], item[2], len(item[3]))
            failed.errors.append(f"block {item[0]} could not be counted ({type(e).__name__}: {e})")
            blocks.append(failed)
    return _Batch(
        blocks,
        *rows.answers.batches(),
        record_batch(rows.voters, VOTER_SCHEMA),
        record_batch(rows.nonces, NONCE_SCHEMA),
    )


def _read_block(
    rows: _Rows,
    cid: str,
    template_cid: str,
    leaf: int,
    members: list[bytes],
    votes: list[bytes],
    voters: list[bytes],
) -> BlockResult:
    state: _Template | None = _STATE["templates"].get(template_cid)
    out = BlockResult(cid, template_cid, leaf, len(members))
    if state is None:
        # not an effective template: the votes cannot be counted (BLK-ELIGIBLE says why),
        # but DEC-ENTRIES is whether they decrypt, and that can still be known (§5.2: the
        # associated data is the template CID's text, whatever the template)
        opener_: Opener = _STATE["opener"]
        aad_ = template_cid.encode("utf-8")
        for where, ciphertexts in (("votes", votes), ("voters", voters)):
            for i, ciphertext in enumerate(ciphertexts):
                _decrypt(out, opener_, ciphertext, aad_, cid, where, i)
        return out
    out.counted = True
    opener: Opener = _STATE["opener"]
    template, aad, kinds, valid, reader = state.body, state.aad, state.kinds, state.valid, state.reader
    noted = state.noted
    for i, ciphertext in enumerate(votes):
        plaintext = _decrypt(out, opener, ciphertext, aad, cid, "votes", i)
        if plaintext is None:
            continue
        vote = None
        read = reader.read_noted(plaintext)  # canonical and naming the block's template: the bytes tell
        if read is not None:
            vote, notes = read
            if noted.valid(notes):
                rows.answers.add_noted(template_cid, cid, leaf, i, vote.nonce, [note[3] for note in notes])
                continue
        if vote is None:
            # it decrypts but is no vote: BAL-VALID (§6)
            vote = _parse(out, plaintext, cid, "votes", i, VoteEntry, "BAL-VALID")
            if vote is None:
                continue
        if vote.template == template_cid and valid(vote):
            rows.answers.add(template_cid, cid, leaf, i, vote, kinds)
            continue
        problems = vote_problems(template, vote)  # the words (and the verdict, if valid() was unsure)
        if vote.template != template_cid:
            problems.insert(0, f"it names template {vote.template}, the block is for {template_cid}")
        if problems:
            rows.nonces.append((template_cid, cid, i, vote.nonce))
            why = "; ".join(problems)
            out.problems.append(
                ("BAL-VALID", f"block {cid}, votes[{i}] (nonce {vote.nonce}) is not a valid vote: {why}")
            )
            continue
        rows.answers.add(template_cid, cid, leaf, i, vote, kinds)
    seen_keys = []  # the voter entries' keys, decoded (b64u text and bytes correspond one to one)
    for i, ciphertext in enumerate(voters):
        plaintext = _decrypt(out, opener, ciphertext, aad, cid, "voters", i)
        if plaintext is None:
            continue
        fast = read_voter_entry(plaintext)
        if fast is not None:
            voter, key, signature, digest = fast
        else:
            parsed = _parse(out, plaintext, cid, "voters", i, VoterEntry, "DEC-VOTER")
            if parsed is None:
                continue
            voter = parsed
            # the parser checked key and signature: b64u of 32 and 64 bytes
            key = b64u_decode(voter.key, length=32)
            signature = b64u_decode(voter.signature, length=64)
            digest = voter.digest
        seen_keys.append(key)
        if not opener.verify(key, signature, signed_message(digest)):
            out.problems.append(
                (
                    "DEC-VOTER",
                    f"block {cid}, voters[{i}]: the voter entry's signature by {voter.key} does not verify",
                )
            )
        else:
            rows.voters.append((cid, key, voter.registrant))
        if voter.template != template_cid:
            out.problems.append(
                (
                    "DEC-VOTER",
                    f"block {cid}, voters[{i}] names template {voter.template}; "
                    f"the block is for {template_cid}",
                )
            )
    if len(seen_keys) == len(voters) and sorted(seen_keys) != sorted(members):
        seen = {b64u_encode(k) for k in seen_keys}
        member_keys = {b64u_encode(m) for m in members}
        strangers = sorted(seen - member_keys)
        absent = sorted(member_keys - seen)
        out.problems.append(
            (
                "DEC-VOTER",
                f"block {cid}: the voter entries' keys are not its members (entries of non-members: "
                f"{', '.join(strangers) or 'none'}; members without an entry: {', '.join(absent) or 'none'})",
            )
        )
    return out


def parse_entry(plaintext: bytes, entry: type[E]) -> E:
    """A decrypted entry: when the bytes are orjson's canonical output (as an honest
    client's JCS bytes are), the accept-only parser's (entries.accept_vote_entry,
    accept_voter_entry) or else the schema's parse of orjson's value; otherwise, or when
    the schema refuses, the strict parser, which also words every refusal. Every member
    of an entry has a typed validator (no float, unsafe integer or non-ASCII member name
    passes one), so what the first ways accept the last accepts as the same value (D40,
    D41)."""
    value = canonical_value(plaintext)
    if value is not NOT_CANONICAL:
        accepted = accept_vote_entry(value) if entry is VoteEntry else accept_voter_entry(value)
        if accepted is not None:
            return typing.cast(E, accepted)
        try:
            return entry.parse(value, "entry")
        except AuditError:
            pass  # the strict parser words it
    return entry.parse(parse_json(plaintext, what="entry"), "entry")


def _decrypt(
    out: BlockResult, opener: Opener, ciphertext: bytes, aad: bytes, cid: str, where: str, i: int
) -> bytes | None:
    """The plaintext of block ``cid``'s ``where[i]``; one that does not open is DEC-ENTRIES."""
    try:
        return opener.open(ciphertext, aad)
    except AuditError as e:
        out.problems.append(("DEC-ENTRIES", f"block {cid}, {where}[{i}] does not decrypt: {e}"))
        return None


def _parse(
    out: BlockResult, plaintext: bytes, cid: str, where: str, i: int, entry: type[E], check: str
) -> E | None:
    """The ``entry`` decrypted from block ``cid``'s ``where[i]``; a plaintext that is not a
    well-formed entry of that kind is ``check`` (BAL-VALID or DEC-VOTER, D28)."""
    try:
        return parse_entry(plaintext, entry)
    except AuditError as e:
        out.problems.append(
            (
                check,
                f"block {cid}, {where}[{i}] decrypts to something that is not a valid {entry.__name__}: {e}",
            )
        )
        return None


def _leaves(audit: Audit) -> dict[str, int]:
    """Each counted block's leaf index: its place among its template's counted blocks in
    ascending binary CID order (spec §5.3), the order of the block and tally trees."""
    by_template: dict[str, list[str]] = defaultdict(list)
    for cid, template in audit.rows(
        "SELECT cid, template FROM vote_block WHERE cid IN (SELECT cid FROM counted)"
    ):
        by_template[template].append(cid)
    leaves = {}
    for cids in by_template.values():
        order = sorted(zip(cid_binaries(cids), cids, strict=True))  # harvested CIDs: canonical
        for i, (_, cid) in enumerate(order):
            leaves[cid] = i
    return leaves


class _Counted:
    """The counted blocks with their ciphertexts, in CID order, BATCH at a time, read a
    range of SORT_BLOCKS blocks at a time: DuckDB sorts what it reads in memory (a
    million voters' ciphertexts sorted at once took ≈ 960 MB, and the sort does not spill).

    A range read by a query that filters ``vote_block`` makes DuckDB decode the pages of
    every row group holding a block of the range, and since CIDs are random every row
    group holds some: each range costs a read of the whole table (ten million voters: 38
    ranges of a 6.8 GB table, ≈ 5 s each). From PARTITION_RANGES ranges on, the counted
    blocks are first copied, in one read, into Parquet files partitioned by range in the
    audit folder (``recount-blocks``), and each range reads its own file, removed once
    read; the folder goes when the recount ends, however it ends (D56). Fewer ranges are
    read from ``vote_block`` directly: at a million voters (4 ranges) that is faster."""

    def __init__(self, audit: Audit, leaves: dict[str, int]) -> None:
        self.audit, self.leaves = audit, leaves
        self.cids = sorted(leaves)  # the order of ORDER BY cid (CIDs are ASCII)
        self.ranges = [
            (self.cids[start], self.cids[min(start + SORT_BLOCKS, len(self.cids)) - 1])
            for start in range(0, len(self.cids), SORT_BLOCKS)
        ]
        self.folder: Path | None = None  # the copy by range, when made
        self.note = ""  # why there is no copy, when there should be

    def __enter__(self) -> _Counted:
        if len(self.ranges) >= PARTITION_RANGES:
            self._partition()
        return self

    def __exit__(self, *_: object) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)

    def _partition(self) -> None:
        """Copy the counted blocks by range into ``recount-blocks``; when the disk has no
        room for them or the copy fails, read the ranges from ``vote_block`` instead (the
        stage's detail says so)."""
        con = self.audit.con
        folder = self.audit.out / "recount-blocks"
        shutil.rmtree(folder, ignore_errors=True)
        folder.parent.mkdir(parents=True, exist_ok=True)
        need = sum(
            part.stat().st_size for part in EvidenceStore(self.audit.root, read_only=True).parts("vote_block")
        )
        free = shutil.disk_usage(folder.parent).free
        if free < need + need // 4:
            self.note = (
                f"ranges read from vote_block: {free / 1e9:.1f} GB free in the audit folder, "
                f"the copy by range needs about {need / 1e9:.1f} GB"
            )
            return
        ranges = pa.array([i // SORT_BLOCKS for i in range(len(self.cids))], pa.int32())
        parts = pa.table({"cid": self.cids, "part": ranges})
        create_table(con, "recount_range", parts.schema, temporary=True)
        insert_rows(con, "recount_range", parts)
        del parts
        try:
            # small row groups: DuckDB holds a row group of each range's file until it is full
            con.execute(
                "COPY (SELECT r.part, b.cid, b.template, b.members, b.votes, b.voters "
                "FROM vote_block b JOIN recount_range r USING (cid)) "
                f"TO {sql_literal(str(folder))} "
                f"(FORMAT parquet, PARTITION_BY (part), ROW_GROUP_SIZE {PARTITION_ROW_GROUP}, "
                "COMPRESSION snappy)"
            )
        except (duckdb.Error, OSError) as e:  # a full disk, most likely: the slower way
            shutil.rmtree(folder, ignore_errors=True)
            self.note = (
                f"ranges read from vote_block: the copy by range failed ({type(e).__name__}: {first_line(e)})"
            )
            return
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        finally:
            with suppress(duckdb.Error):
                con.execute("DROP TABLE IF EXISTS recount_range")
        self.folder = folder

    def batches(self) -> Iterator[list[Item]]:
        leaves = self.leaves
        for part, (low, high) in enumerate(self.ranges):
            files = None if self.folder is None else self.folder / f"part={part}"
            if files is None:
                result = self.audit.con.execute(
                    "SELECT b.cid, b.template, b.members, b.votes, b.voters FROM vote_block b "
                    "WHERE b.cid IN (SELECT cid FROM counted) AND b.cid BETWEEN ? AND ? ORDER BY b.cid",
                    [low, high],
                )
            else:
                if not files.is_dir():  # every range has blocks: DuckDB wrote it elsewhere
                    raise RuntimeError(f"the copy of the counted blocks has no folder {files.name}")
                result = self.audit.con.execute(
                    "SELECT cid, template, members, votes, voters FROM "
                    f"read_parquet({sql_literal(str(files / '*.parquet'))}) ORDER BY cid"
                )
            while rows := result.fetchmany(BATCH):
                yield [(c, t, leaves[c], list(m), list(v), list(w)) for c, t, m, v, w in rows]
            if files is not None:  # read: its disk is free again
                shutil.rmtree(files, ignore_errors=True)


@contextmanager
def _threads(audit: Audit, threads: int) -> Iterator[None]:
    """DuckDB's threads set to ``threads`` for a while: each thread that scans a Parquet
    table of ciphertexts holds a row group of them decoded (D44). No query may be open
    when it starts or ends: a query on the connection ends the one being fetched."""
    before = audit.rows("SELECT current_setting('threads')")[0][0]
    audit.con.execute(f"SET threads = {int(threads)}")
    try:
        yield
    finally:
        audit.con.execute(f"SET threads = {int(before)}")


class _Plan:
    """Which counted blocks the result cache answers and which the workers decrypt.

    ``todo()`` yields the runs of consecutive blocks (in CID order, within one batch) that
    the cache does not answer; ``merge()`` takes the workers' answers to them, in the same
    order, and yields every run, cached or decrypted, in CID order. What the workers
    decrypt is kept in the cache. Without a cache, the batches pass through unchanged."""

    def __init__(self, audit: Audit, counted: _Counted, context: bytes | None) -> None:
        self.audit = audit
        self.counted = counted
        self.leaves = counted.leaves
        self.cache = audit.cache if context is not None else None
        self.context = context or b""
        # in CID order: (True, cached rows) or (False, the runs' cache keys), as todo() goes
        self._runs: deque[tuple[bool, Any]] = deque()
        self.reused = self.decrypted = 0

    def expected(self) -> int:
        """How many blocks the workers will probably decrypt (to decide on processes)."""
        if self.cache is None:
            return len(self.leaves)
        return sum(1 for cid in self.leaves if not self.cache.may_have_block(cid))

    def todo(self) -> Iterator[list[Item]]:
        for batch in self.counted.batches():
            if self.cache is None:
                yield batch
                continue
            keys = [self.cache.block_key(self.context, c, t, m, v, w) for c, t, _, m, v, w in batch]
            found, rows = self.cache.blocks(keys)
            start = taken = 0
            while start < len(batch):
                end = start
                while end < len(batch) and found[end] == found[start]:
                    end += 1
                if found[start]:
                    self._runs.append((True, rows.slice(taken, end - start)))
                    taken += end - start
                else:
                    self._runs.append((False, keys[start:end]))
                    yield batch[start:end]
                start = end

    def merge(self, computed: Iterable[_Batch]) -> Iterator[_Batch]:
        if self.cache is None:
            yield from computed
            return
        for part in computed:
            while self._runs[0][0]:
                yield self._reuse(self._runs.popleft()[1])
            self._keep(self._runs.popleft()[1], part)
            yield part
        while self._runs:
            yield self._reuse(self._runs.popleft()[1])

    def _reuse(self, rows: pa.Table) -> _Batch:
        blocks, votes, cells, voters, nonces = from_cache(rows, self.leaves)
        self.reused += len(blocks)
        results = [
            BlockResult(c, t, leaf, n, counted, problems) for c, t, leaf, n, counted, problems in blocks
        ]
        return _Batch(results, votes, cells, voters, nonces)

    def _keep(self, keys: list[bytes], part: _Batch) -> None:
        self.decrypted += len(part.blocks)
        assert self.cache is not None
        try:
            rows = cache_rows(keys, part.blocks, part.votes, part.cells, part.voters, part.nonces)
        except Exception as e:  # a bug in the conversion: these blocks are just not kept
            self.cache.notes.append(f"recount results not kept ({type(e).__name__}: {e})")
            return
        self.cache.keep_blocks(rows)

    def finish(self) -> str:
        """Count what was reused; the stage's detail."""
        if self.cache is None:
            return ""
        self.cache.flush()
        self.cache.count_blocks(self.reused, self.decrypted)
        return reuse_note(self.reused, self.decrypted, "decrypted")


def recount(audit: Audit) -> None:
    """Decrypt every counted block into the answers table, then check the tally trees and results."""
    f = audit.findings
    listed = set(audit.revision.body.keyholders) if audit.revision else set()
    if not listed or not listed <= set(audit.released):
        reason = "the votes cannot be decrypted: not every keyholder released a valid key (KEY-RELEASE)"
        for check in (*RECOUNT_CHECKS, "RES-MATCH"):
            f.skip(check, reason)
        return
    private_key = combine_private(audit.released.values())
    templates = {cid: jcs(t.body.to_json()) for cid, t in audit.templates.items()}
    leaves = _leaves(audit)
    for cid in sorted(audit.counted - set(leaves)):
        f.fail(
            "DEC-ENTRIES", cid, f"counted block {cid} is not in the evidence: its votes cannot be decrypted"
        )
    context = ResultCache.recount_context(private_key, templates) if audit.cache else None
    # the copy by range and each table's cursor are removed or closed however the recount
    # ends (the answers file is removed if the reading fails)
    with ExitStack() as cursors:
        counted = cursors.enter_context(_Counted(audit, leaves))  # before the reads' fewer threads
        plan = _Plan(audit, counted, context)
        # what the later queries read, kept by DuckDB (which spills it under a budget), not
        # as Arrow in this process: a row per counted block and per voter entry
        block_rows = cursors.enter_context(_Kept(audit, "recount_block", BLOCK_SCHEMA))
        voters = cursors.enter_context(_Kept(audit, "voter_entry", VOTER_SCHEMA))
        nonces = cursors.enter_context(_Kept(audit, "invalid_nonce", NONCE_SCHEMA))
        counts = [0, 0]  # blocks, votes
        writer = AnswersWriter(audit.out)

        def take(part: _Batch) -> None:
            writer.write(part.votes, part.cells)
            voters.add(part.voters)
            nonces.add(part.nonces)
            rows: list[Row] = []  # (block, template, leaf, members, counted)
            for block in part.blocks:
                for check, message in block.problems:
                    f.fail(check, block.cid, message)
                audit.internal_errors.extend(block.errors)
                rows.append((block.cid, block.template, block.leaf, block.members, block.counted))
                counts[1] += block.members
            counts[0] += len(rows)
            if rows:
                block_rows.add(record_batch(rows, BLOCK_SCHEMA))

        task = Task("recount", _read_batch, _init, (private_key, templates))
        small = plan.expected() <= 4 * BATCH
        try:
            with _threads(audit, READ_THREADS):  # the reads of the counted blocks
                for part in plan.merge(audit.runner.map(task, plan.todo(), small=small)):
                    take(part)
        except BaseException:
            writer.abort()
            raise
        writer.close(audit.con)
        for kept in (block_rows, voters, nonces):
            kept.flush()
    blocks, votes = counts
    audit.recounted = blocks
    audit.details["recount"] = f"{blocks:,} blocks{plan.finish()}, {audit.runner.describe(small=small)}" + (
        f"; {counted.note}" if counted.note else ""
    )
    note = f"{blocks:,} blocks, {votes:,} votes and as many voter entries"
    for check in ("DEC-ENTRIES", "DEC-VOTER", "DEC-NONCE", "BAL-VALID"):
        f.checked(check, votes, note)
    _check_nonces(audit)
    _check_registrants(audit)
    check_tally(audit)


class _Kept:
    """A DuckDB table the recount fills as the workers' answers arrive, ``KEPT_ROWS`` rows
    an insert (an insert per batch of 64 blocks would cost more than the rows). It is
    written through a cursor of its own, since the audit's connection is streaming the
    counted blocks meanwhile (a statement on it would end that stream); so it is a table
    of the in-memory database, which every cursor sees, not a temporary one."""

    def __init__(self, audit: Audit, name: str, schema: pa.Schema) -> None:
        self.name, self.schema = name, schema
        self.con = audit.con.cursor()
        self.pending: list[pa.RecordBatch] = []
        self.size = 0
        create_table(self.con, name, schema, temporary=False)  # a cursor sees no temporary table

    def add(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows:
            self.pending.append(batch)
            self.size += batch.num_rows
            if self.size >= KEPT_ROWS:
                self.flush()

    def flush(self) -> None:
        if self.pending:
            insert_rows(self.con, self.name, pa.Table.from_batches(self.pending, self.schema))
        self.pending, self.size = [], 0

    def __enter__(self) -> _Kept:
        return self

    def __exit__(self, *_: object) -> None:
        self.con.close()


KEPT_ROWS = 65_536


def _check_nonces(audit: Audit) -> None:
    """DEC-NONCE: one finding for each vote whose nonce an earlier vote of its template
    already has (earlier: by block CID, then position in the block), so n votes sharing a
    nonce are n - 1 findings, whether they are in one block or in several. Every decrypted
    vote counts: valid ones (the answers' vote rows) and invalid ones."""
    for block, vote, template, nonce, first, first_vote in audit.rows(
        """
        WITH nonce AS (
            SELECT template, block, vote, nonce FROM answers WHERE kind = 'vote'
            UNION ALL SELECT template, block, vote, nonce FROM invalid_nonce
        ), marked AS (
            SELECT *, row_number() OVER w AS n, first_value(block) OVER w AS first,
                   first_value(vote) OVER w AS first_vote
            FROM nonce
            WINDOW w AS (PARTITION BY template, nonce ORDER BY block, vote)
        )
        SELECT block, vote, template, nonce, first, first_vote FROM marked WHERE n > 1
        ORDER BY block, vote
        """
    ):
        where = f"again in block {block}" if first != block else f"again in the same block (votes[{vote}])"
        audit.findings.fail(
            "DEC-NONCE",
            block,
            f"vote nonce {nonce} of template {template} appears in block {first} (votes[{first_vote}]) and "
            f"{where}: a copied vote",
            records=[first],
            nonce=nonce,
        )


def _check_registrants(audit: Audit) -> None:
    """DEC-VOTER: each signed voter entry names its key's own roll entry (a set operation)."""
    for block, key, registrant in audit.rows(
        """
        SELECT v.block, v.key, v.registrant FROM voter_entry v
        WHERE NOT EXISTS (SELECT 1 FROM eligible e WHERE e.cid = v.registrant AND e.key = v.key)
        ORDER BY 1, 3
        """
    ):
        audit.findings.fail(
            "DEC-VOTER",
            block,
            f"block {block}: a voter entry of key {b64u_encode(bytes(key))} names registrant {registrant}, "
            "which is not that key's entry on the roll",
            records=[registrant],
        )
