"""What the audit keeps in memory (issue 8: peak RSS): worker processes that do not
inherit the auditor's memory, DuckDB's freed memory given back after each step, and the
signatures verified in packed batches on the workers with the findings unchanged."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditor.crypto.ed25519 import SigningKey, verify
from auditor.errors import AuditError
from auditor.harvest import ArchiveSource, harvest
from auditor.model.envelope import SIGNING_PREFIX
from auditor.parallel import LocalRunner, Task
from auditor.trust import Trust, load_trust
from auditor.verify import context
from auditor.verify.context import Audit, _Slice, _verify_packed
from auditor.verify.engine import Verification, verify_store

MB = 1 << 20

_held: bytes | None = None  # set in the test's process only


def _what_a_worker_sees(_batch: int) -> tuple[bool, int]:
    return _held is not None, os.getppid()


def test_workers_do_not_inherit_this_process_memory() -> None:
    """A forked worker would hold (and count in its RSS) every page of the auditor: at a
    million voters ≈ 1.9 GB of DuckDB tables and signature outcomes per worker. Workers
    come from the fork server: nothing this process holds is in them."""
    global _held
    _held = b"x" * (64 * MB)
    try:
        seen = list(LocalRunner(2).map(Task("toy", _what_a_worker_sees), range(8)))
    finally:
        _held = None
    assert not any(held for held, _ in seen)
    assert all(parent != os.getpid() for _, parent in seen)  # the fork server is their parent


def _store(election: Path, folder: Path) -> Path:
    store = folder / "store"
    harvest([ArchiveSource(election / "evidence.car")], store)
    return store


def test_release_memory_gives_back_what_duckdb_freed(clean: Path, tmp_path: Path) -> None:
    """DuckDB keeps the memory of a dropped table (and of a query's sorts and hash tables)
    for later queries; ``release_memory`` (run after every step) gives it back to the
    system, and keeps the tables still in use."""
    audit = Audit(_store(clean, tmp_path), load_trust(clean / "trust.toml"), workers=1)
    rss = psutil.Process().memory_info
    try:
        audit.con.execute(
            "CREATE TEMP TABLE kept AS SELECT i FROM range(1000) r(i); "
            "CREATE TEMP TABLE big AS SELECT i, md5(i::VARCHAR) || md5((i + 1)::VARCHAR) AS s "
            "FROM range(3000000) r(i); DROP TABLE big"
        ).fetchall()
        held = rss().rss
        audit.release_memory()
        assert held - rss().rss > 150 * MB
        assert audit.rows("SELECT count(*) FROM kept") == [(1000,)]
        limit = audit.rows("SELECT current_setting('memory_limit')")[0][0]
        assert limit == audit.rows("SELECT value FROM duckdb_settings() WHERE name = 'max_memory'")[0][0]
    finally:
        audit.close()


def test_release_memory_sets_the_budget_back(
    clean: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VTAUDIT_DUCKDB_MEMORY", "3GB")
    audit = Audit(_store(clean, tmp_path), None, workers=1)
    try:
        before = audit.rows("SELECT current_setting('memory_limit')")
        audit.release_memory()
        assert audit.rows("SELECT current_setting('memory_limit')") == before
    finally:
        audit.close()


def _rows() -> list[tuple[bytes, bytes, bytes]]:
    """Good signatures, bad ones, a wrong key, and keys, signatures and digests of the
    wrong length (a store edited by hand): every case the packing must get right."""
    keys = [SigningKey.derive("memory", str(i)) for i in range(6)]
    rows = []
    for i in range(40):
        key = keys[i % len(keys)]
        digest = bytes([i]) * 32
        sig = key.sign(SIGNING_PREFIX + digest)
        if i % 7 == 3:
            sig = sig[:10] + bytes([sig[10] ^ 1]) + sig[11:]  # does not verify
        if i % 11 == 5:
            key = keys[(i + 1) % len(keys)]  # another key's
        rows.append((key.public, sig, digest))
    rows[9] = (rows[9][0][:31], *rows[9][1:])
    rows[17] = (rows[17][0], rows[17][1] + b"\x00", rows[17][2])
    rows[23] = (rows[23][0], rows[23][1], rows[23][2][:20])
    return rows


@pytest.mark.parametrize("batch", [1, 4, 64])
def test_packed_batches_judge_each_signature_as_verify_does(
    batch: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(context, "SIG_BATCH", batch)
    rows = _rows()
    expected = [verify(k, s, SIGNING_PREFIX + d) for k, s, d in rows]
    assert 0 < sum(expected) < len(rows)
    table = pa.table(
        {
            "cid": [f"c{i}" for i in range(len(rows))],
            "idx": pa.array([0] * len(rows), pa.int32()),
            **{
                name: pa.array([r[i] for r in rows], pa.binary())
                for i, name in enumerate(("key", "sig", "digest"))
            },
        }
    )
    for part in (_Slice(table, None, None), _Slice(table.slice(0, 0), None, rows)):
        assert len(part.batches) == -(-37 // batch)  # the three odd rows are judged here
        for packed in part.batches:
            part.add(_verify_packed(packed))
        assert part.pending == 0
        assert part.outcomes().tolist() == expected


def test_signatures_on_worker_processes_give_the_same_findings(
    sims: Callable[[str | None], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small batches and slices: the signatures go to two worker processes in many packed
    batches, from several slices of the stream; the findings are those of one process."""
    election = sims("bad-signature")
    store = _store(election, tmp_path)
    trust = load_trust(election / "trust.toml")
    alone = verify_store(store, trust, workers=1, recount=False)
    monkeypatch.setattr(context, "SIG_BATCH", 32)
    monkeypatch.setattr(context, "SIG_STREAM", 200)
    shutil.rmtree(tmp_path / "audit", ignore_errors=True)
    pooled = verify_store(store, trust, workers=2, recount=False)
    assert [f.to_json() for f in pooled.findings] == [f.to_json() for f in alone.findings]
    assert any(f.check == "SIG-VALID" for f in pooled.findings)
    detail = next(s.detail for s in pooled.stages if s.name == "signatures")
    assert detail.endswith("2 processes"), detail


def test_tokens_verified_a_slice_at_a_time_give_the_same_findings(
    sims: Callable[[str | None], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Timestamp tokens stream from DuckDB TOKEN_STREAM at a time (here 5), in batches of
    3 for two worker processes: the findings, outcomes and proven times are those of one
    slice, and one pool of workers verifies every slice (started once for the stream)."""
    election = sims("tsa-imprint")
    store = _store(election, tmp_path)
    trust = load_trust(election / "trust.toml")
    whole = verify_store(store, trust, workers=1, recount=False, audit_dir=tmp_path / "whole")
    monkeypatch.setattr(context, "TOKEN_STREAM", 5)
    monkeypatch.setattr(context, "TOKEN_BATCH", 3)
    pools: list[str] = []
    pooled_map = LocalRunner.map

    def counted_map(self: LocalRunner, task: Any, batches: Any, *, small: bool = False) -> Any:
        pools.append(task.name)
        return pooled_map(self, task, batches, small=small)

    monkeypatch.setattr(LocalRunner, "map", counted_map)
    sliced = verify_store(store, trust, workers=2, recount=False, audit_dir=tmp_path / "sliced")
    assert [f.to_json() for f in sliced.findings] == [f.to_json() for f in whole.findings]
    assert [o.to_json() for o in sliced.outcomes] == [o.to_json() for o in whole.outcomes]
    assert any(f.check == "TSA-IMPRINT" for f in sliced.findings)
    tokens = next(o for o in sliced.outcomes if o.id == "TSA-TOKEN").checked
    assert tokens > 5 * 4  # several slices
    assert pools.count("tokens") == 1
    assert next(s.detail for s in sliced.stages if s.name == "timestamps").endswith("2 processes")


def test_tally_cells_streamed_a_few_rows_at_a_time_give_the_same_findings(
    sims: Callable[[str | None], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tally check reads a template's per-block cells as a stream (CELL_BATCH rows at a
    time, here 3): the findings, outcomes and ballots are those of one batch."""
    from auditor.verify import answers

    election = sims("tally-leaf-miscount")
    store = _store(election, tmp_path)
    trust = load_trust(election / "trust.toml")
    whole = verify_store(store, trust, workers=1, audit_dir=tmp_path / "whole")
    monkeypatch.setattr(answers, "CELL_BATCH", 3)
    streamed = verify_store(store, trust, workers=1, audit_dir=tmp_path / "streamed")
    assert [f.to_json() for f in streamed.findings] == [f.to_json() for f in whole.findings]
    assert [o.to_json() for o in streamed.outcomes] == [o.to_json() for o in whole.outcomes]
    assert streamed.ballots == whole.ballots and any(f.check == "TALLY-TREE" for f in streamed.findings)


def test_blocks_judged_a_part_at_a_time_give_the_same_findings(
    sims: Callable[[str | None], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The block checks read the vote blocks one Parquet part at a time (Audit.sources);
    a store whose blocks are spread over several parts is judged as one with a single part."""
    import json

    import pyarrow.parquet as pq

    election = sims("block-unsorted")
    store = _store(election, tmp_path)
    trust = load_trust(election / "trust.toml")
    whole = verify_store(store, trust, workers=1, recount=False)
    log = json.loads((store / "store.json").read_text(encoding="utf-8"))
    folder = store / "tables" / "vote_block"
    table = pa.concat_tables([pq.read_table(folder / name) for name in log["parts"]["vote_block"]])
    for name in log["parts"]["vote_block"]:
        (folder / name).unlink()
    names = []
    for i in range(0, table.num_rows, 7):
        names.append(f"part-9{i:05d}.parquet")
        pq.write_table(table.slice(i, 7), folder / names[-1])
    log["parts"]["vote_block"] = names
    (store / "store.json").write_text(json.dumps(log), encoding="utf-8")
    monkeypatch.setattr(context, "SOURCE_BYTES", 1)  # one part a query
    audit = Audit(store, trust, workers=1)
    try:
        assert len(audit.sources("vote_block")) == len(names) > 2
    finally:
        audit.close()
    split = verify_store(store, trust, workers=1, recount=False)
    assert [f.to_json() for f in split.findings] == [f.to_json() for f in whole.findings]
    monkeypatch.setattr(context, "SOURCE_BYTES", 96 << 20)  # small parts: one run
    audit = Audit(store, trust, workers=1)
    try:
        assert audit.sources("vote_block") == ["vote_block"]
    finally:
        audit.close()
    assert {f.check for f in split.findings} >= {"BLK-SHAPE"}


def _counted_once(sims: Callable[[str | None], Path], tmp_path: Path) -> tuple[Path, Trust, Verification]:
    """A store of an election with invalid votes, its trust, and its verification with
    the counted blocks read in one range (audit folder ``one``)."""
    election = sims("ballot-invalid")
    store = _store(election, tmp_path)
    trust = load_trust(election / "trust.toml")
    return store, trust, verify_store(store, trust, workers=1, audit_dir=tmp_path / "one")


def test_the_recount_reading_blocks_a_range_at_a_time_gives_the_same_result(
    sims: Callable[[str | None], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The recount reads the counted blocks a range of CIDs at a time (recount._Counted);
    with ranges of a few blocks, the findings and the answers are those of one range. Its
    tables are written while the blocks are read (here a row at a time, recount._Kept):
    the reading goes on and the tables hold the same rows."""
    import pyarrow.parquet as pq

    from auditor.verify import recount

    store, trust, one = _counted_once(sims, tmp_path)
    monkeypatch.setattr(recount, "SORT_BLOCKS", 3)
    monkeypatch.setattr(recount, "BATCH", 2)
    monkeypatch.setattr(recount, "KEPT_ROWS", 1)  # an insert for every answer, mid-read
    copies: list[int] = []  # the ranges of each copy partitioned by range (D56)
    partition = recount._Counted._partition

    def counted_partition(self: recount._Counted) -> None:
        copies.append(len(self.ranges))
        partition(self)
        assert self.folder is not None
        assert len(list(self.folder.iterdir())) == len(self.ranges)  # a folder a range

    monkeypatch.setattr(recount._Counted, "_partition", counted_partition)
    many = verify_store(store, trust, workers=1, audit_dir=tmp_path / "many")  # read from vote_block
    monkeypatch.setattr(recount, "PARTITION_RANGES", 2)
    removed: list[str] = []  # each range's file is removed once read, from the copy only
    rmtree = shutil.rmtree

    def recorded_rmtree(path: Any, *args: Any, **kwargs: Any) -> None:
        removed.append(Path(path).name)
        rmtree(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", recorded_rmtree)
    copied = verify_store(store, trust, workers=1, audit_dir=tmp_path / "copied")  # read from the copy
    monkeypatch.setattr(shutil, "rmtree", rmtree)
    assert len(copies) == 1 and copies[0] > 2  # only the last run copied, into several ranges
    assert [n for n in removed if n.startswith("part=")] == [f"part={i}" for i in range(copies[0])]
    for run, name in ((many, "many"), (copied, "copied")):
        assert run.internal_errors == [] and one.internal_errors == []
        assert [f.to_json() for f in run.findings] == [f.to_json() for f in one.findings]
        assert any(f.check == "BAL-VALID" for f in run.findings)
        assert pq.read_table(tmp_path / name / "answers.parquet").equals(
            pq.read_table(tmp_path / "one" / "answers.parquet")
        )
        assert run.ballots == one.ballots and run.ballots
        assert not (tmp_path / name / "recount-blocks").exists()  # the copy is gone


@pytest.mark.parametrize("why", ["no room", "copy fails"])
def test_without_room_for_the_copy_the_ranges_are_read_from_vote_block(
    why: str, sims: Callable[[str | None], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the audit folder's disk cannot hold the copy by range, or the copy fails, the
    recount reads the ranges from vote_block as it does below PARTITION_RANGES, with the
    same findings and answers, and its detail says why."""
    import pyarrow.parquet as pq

    from auditor.verify import recount

    store, trust, one = _counted_once(sims, tmp_path)
    monkeypatch.setattr(recount, "SORT_BLOCKS", 3)
    monkeypatch.setattr(recount, "PARTITION_RANGES", 2)
    audit_dir = tmp_path / "audit"
    if why == "no room":
        monkeypatch.setattr(
            recount.shutil, "disk_usage", lambda _: SimpleNamespace(total=1, used=1, free=1000)
        )
    else:  # a file where the copy's folder goes: DuckDB cannot write it
        audit_dir.mkdir()
        (audit_dir / "recount-blocks").write_bytes(b"not a folder")
    run = verify_store(store, trust, workers=1, audit_dir=audit_dir)
    assert run.internal_errors == []
    assert [f.to_json() for f in run.findings] == [f.to_json() for f in one.findings]
    assert pq.read_table(audit_dir / "answers.parquet").equals(
        pq.read_table(tmp_path / "one" / "answers.parquet")
    )
    detail = next(s.detail for s in run.stages if s.name == "recount")
    expected = "GB free in the audit folder" if why == "no room" else "the copy by range failed"
    assert "ranges read from vote_block" in detail and expected in detail, detail


def test_the_copy_of_the_counted_blocks_goes_when_the_recount_stops(
    sims: Callable[[str | None], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A recount that stops half-way (here on an error writing the answers) leaves no
    copy of the counted blocks in the audit folder, and says it stopped."""
    from auditor.verify import answers, recount

    election = sims(None)
    store = _store(election, tmp_path)
    trust = load_trust(election / "trust.toml")
    monkeypatch.setattr(recount, "SORT_BLOCKS", 3)
    monkeypatch.setattr(recount, "PARTITION_RANGES", 2)
    seen: list[bool] = []

    def failing_write(self: answers.AnswersWriter, *_: object) -> None:
        seen.append((tmp_path / "audit" / "recount-blocks").is_dir())
        raise RuntimeError("disk full")

    monkeypatch.setattr(answers.AnswersWriter, "write", failing_write)
    result = verify_store(store, trust, workers=1, audit_dir=tmp_path / "audit")
    assert seen == [True]  # the copy was there while the blocks were read
    assert not (tmp_path / "audit" / "recount-blocks").exists()
    assert any("the recount step stopped" in e and "disk full" in e for e in result.internal_errors)


def _asked_whole(audit: Audit) -> None:
    """outcome._asked as it was: the claims against the whole tables (the reference)."""
    assert audit.election is not None
    audit.con.execute(
        """
        CREATE OR REPLACE TEMP TABLE dsp AS
        SELECT cid, template, receipt, key FROM dispute WHERE election = $e;
        CREATE OR REPLACE TEMP TABLE acc AS
        SELECT cid, template, registrant, key FROM accessibility_report WHERE election = $e;
        CREATE OR REPLACE TEMP TABLE asked_member AS SELECT cid, key FROM member;
        CREATE OR REPLACE TEMP TABLE asked_sig AS SELECT cid, key, ok FROM sig_ok;
        CREATE OR REPLACE TEMP TABLE asked_blk AS SELECT cid, template FROM blk;
        CREATE OR REPLACE TEMP TABLE asked_eligible AS SELECT cid, key, district FROM eligible;
        CREATE OR REPLACE TEMP TABLE asked_voter AS SELECT key, district FROM eligible;
        CREATE OR REPLACE TEMP TABLE asked_counted AS SELECT cid FROM counted;
        """.replace("$e", "'" + audit.election.cid + "'")
    )


@pytest.mark.parametrize(
    "tamper", [None, "dispute-confirmed", "dispute-unresolved", "accessibility-ineligible", "dangling-ref"]
)
def test_disputes_read_only_the_rows_of_their_claims(
    tamper: str | None, sims: Callable[[str | None], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disputes step joins the claims against small tables of the rows they ask about
    (outcome._asked): the memberships of their keys, their own signatures, the blocks
    their receipts name. Its findings are those of the claims joined against the whole
    tables, and those tables are a small part of the whole."""
    from auditor.verify import outcome

    election = sims(tamper)
    store = _store(election, tmp_path)
    trust = load_trust(election / "trust.toml")
    sizes: dict[str, int] = {}
    asked = outcome._asked

    def measured(audit: Audit) -> None:
        asked(audit)
        for table in ("member", "asked_member", "sig_ok", "asked_sig", "blk", "asked_blk"):
            sizes[table] = audit.rows(f"SELECT count(*) FROM {table}")[0][0]
        sizes["claims"] = audit.rows("SELECT (SELECT count(*) FROM dsp) + (SELECT count(*) FROM acc)")[0][0]

    monkeypatch.setattr(outcome, "_asked", measured)
    small = verify_store(store, trust, workers=1, audit_dir=tmp_path / "small")
    monkeypatch.setattr(outcome, "_asked", _asked_whole)
    whole = verify_store(store, trust, workers=1, audit_dir=tmp_path / "whole")
    assert [f.to_json() for f in small.findings] == [f.to_json() for f in whole.findings]
    assert [o.to_json() for o in small.outcomes] == [o.to_json() for o in whole.outcomes]
    if tamper == "dangling-ref":  # the disputer's block is counted: refuted, its receipt missing or not
        assert not any(f.check == "DSP-RESOLVED" for f in small.findings)
    elif tamper is not None:
        assert any(f.check in ("DSP-RESOLVED", "ACC-REPORTS") for f in small.findings)
    assert sizes["claims"] > 0
    assert sizes["asked_member"] < sizes["member"] / 4
    assert sizes["asked_sig"] <= 2 * sizes["claims"]
    assert sizes["asked_blk"] <= sizes["claims"] < sizes["blk"]


def test_sig_ok_keeps_only_what_the_later_steps_read(
    sims: Callable[[str | None], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the block checks, ``sig_ok`` keeps only the signatures that do not verify and
    those of disputes and accessibility reports (Audit.keep_signatures): the SIG-VALID
    findings and count are those of the whole table."""
    election = sims("bad-signature")
    store = _store(election, tmp_path)
    trust = load_trust(election / "trust.toml")
    rows: list[tuple[int, int, int]] = []  # before, after, rows the later steps read
    keep = Audit.keep_signatures

    def measured(audit: Audit, types: tuple[str, ...]) -> None:
        count = "SELECT count(*) FROM sig_ok"
        before = audit.rows(count)[0][0]
        later = audit.rows(
            "SELECT count(*) FROM sig_ok s JOIN envelopes e USING (cid) "
            "WHERE NOT s.ok OR e.type IN ('dispute', 'accessibility_report')"
        )[0][0]
        keep(audit, types)
        rows.append((before, audit.rows(count)[0][0], later))

    monkeypatch.setattr(Audit, "keep_signatures", lambda audit, types: None)
    whole = verify_store(store, trust, workers=1, recount=False)  # the reference: sig_ok kept whole
    monkeypatch.setattr(Audit, "keep_signatures", measured)
    kept = verify_store(store, trust, workers=1, recount=False)
    ((before, after, later),) = rows
    assert after == later < before / 4
    assert [f.to_json() for f in kept.findings] == [f.to_json() for f in whole.findings]
    assert [o.to_json() for o in kept.outcomes] == [o.to_json() for o in whole.outcomes]
    assert any(f.check == "SIG-VALID" for f in kept.findings)
    assert next(o for o in kept.outcomes if o.id == "SIG-VALID").checked == before


def test_the_references_step_keeps_no_table(clean: Path, tmp_path: Path) -> None:
    """REC-REF counts and lists the references without a table of them all (≈ 280 MB held
    to the end at a million voters)."""
    from auditor.verify import records

    audit = Audit(_store(clean, tmp_path), load_trust(clean / "trust.toml"), workers=1)
    try:
        audit.open()
        audit.con.execute("CREATE TEMP TABLE counted (cid VARCHAR)")
        tables = "SELECT table_name FROM duckdb_tables() ORDER BY 1"
        before = audit.rows(tables)
        records.check_references(audit)
        assert audit.rows(tables) == before
        assert audit.findings.outcomes["REC-REF"].to_json()["checked"] > audit.harvested
    finally:
        audit.close()


# ---------------------------------------------------------------------------- the roll out of core


@settings(max_examples=30, deadline=None)
@given(st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=300, unique=True))
def test_translated_text_cids_sort_as_their_bytes(digests: list[bytes]) -> None:
    """What the roll's streamed leaves rest on: ORDER BY translate(text CID) in DuckDB is
    the ascending order of the binary CIDs (spec §5.3), though text order is not."""
    import duckdb

    from auditor.model.encoding import CID_PREFIX, cid_from_binary
    from auditor.store.bulk import _BASE32, _IN_VALUE_ORDER

    binaries = [CID_PREFIX + d for d in digests]
    con = duckdb.connect()
    con.execute("CREATE TABLE t (cid VARCHAR)")
    con.executemany("INSERT INTO t VALUES (?)", [[cid_from_binary(b)] for b in binaries])
    got = con.execute(
        f"SELECT cid FROM t ORDER BY translate(cid, '{_BASE32}', '{_IN_VALUE_ORDER}')"
    ).fetchall()
    assert [r[0] for r in got] == [cid_from_binary(b) for b in sorted(binaries)]


def test_the_roll_is_checked_from_a_table_duckdb_can_spill(
    clean: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The eligible voters are a DuckDB table, not Arrow held by Python; their root is the
    streamed root of their binary CIDs, in groups smaller than the roll; and leaves that do
    not come sorted by their bytes stop the step rather than give a wrong root."""
    from auditor.crypto import merkle
    from auditor.store import bulk
    from auditor.verify import election

    store = _store(clean, tmp_path)
    trust = load_trust(clean / "trust.toml")
    monkeypatch.setattr(bulk, "LEAF_BATCH", 7)  # batches that do not align with the groups
    monkeypatch.setattr(merkle, "STREAM_GROUP", 16)  # the roll's root from several groups
    from auditor.verify.engine import STEPS

    audit = Audit(store, trust, workers=1)
    try:
        audit.open()
        for step in STEPS[: [s.name for s in STEPS].index("roll") + 1]:
            step.run(audit)
        kinds = dict(
            audit.rows("SELECT table_name, temporary FROM duckdb_tables() WHERE table_name = 'eligible'")
        )
        assert kinds == {"eligible": True}
        assert audit.findings.outcomes["REG-ROLL"].status == "pass", [f.message for f in audit.findings.items]
        assert audit.rows("SELECT count(*) FROM eligible")[0][0] == audit.roll.body.count > 16  # type: ignore[union-attr]
        monkeypatch.setattr(bulk, "_IN_VALUE_ORDER", bulk._BASE32)  # text order: not the bytes'
        with pytest.raises(AuditError, match="did not sort by their bytes"):
            merkle.root_of_stream(election._eligible_leaves(audit))
    finally:
        audit.close()


def test_running_out_of_memory_narrowing_sig_ok_is_an_input_error_with_advice(
    clean: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """keep_signatures runs between steps: DuckDB's budget running out there stops the
    audit with the memory advice (exit 2), as it does when the audit opens."""
    import duckdb

    from auditor.errors import InputError

    def out_of_memory(audit: Audit, types: tuple[str, ...]) -> None:
        raise duckdb.OutOfMemoryException("Out of Memory Error: failed to allocate 64 MiB")

    monkeypatch.setattr(Audit, "keep_signatures", out_of_memory)
    with pytest.raises(InputError, match="VTAUDIT_DUCKDB_MEMORY"):
        verify_store(_store(clean, tmp_path), load_trust(clean / "trust.toml"), workers=1, recount=False)
