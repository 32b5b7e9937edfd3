"""The evidence store: typed tables, provenance, quarantine, resumption, crash safety."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from auditor import sources
from auditor.errors import InputError
from auditor.harvest import ArchiveSource, harvest
from auditor.sim.election import SimConfig, simulate
from auditor.store.evidence import EvidenceStore, connect, contested_slots


@pytest.fixture(scope="module")
def election(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("store") / "e"
    simulate(SimConfig(voters=150, seed=21, districts=2, workers=1, formats=("dir", "car", "ndjson")), out)
    return out


def _envelope_cids(root: Path) -> list[str]:
    return sorted(connect(root).execute("select cid from envelopes").fetchall())  # type: ignore[arg-type]


def test_harvest_fills_typed_tables_and_views(election: Path, tmp_path: Path) -> None:
    _, stats = harvest([ArchiveSource(election / "evidence.car")], tmp_path / "ev")
    manifest = json.loads((election / "manifest.json").read_text())
    assert stats.new == manifest["records"] and stats.quarantined == 0
    con = connect(tmp_path / "ev")
    by_type = dict(con.execute("select type, count(*) from envelopes group by type").fetchall())
    assert by_type == manifest["byType"]
    for record_type, count in manifest["byType"].items():
        assert con.execute(f'select count(*) from "{record_type}"').fetchone() == (count,)
    key_len, registered_type = con.execute(
        "select octet_length(key), typeof(registered) from registrant limit 1"
    ).fetchone()  # type: ignore[misc]
    assert key_len == 32 and registered_type.startswith("TIMESTAMP")
    signatures = con.execute("select count(*) from signatures").fetchone()
    assert signatures is not None and signatures[0] > manifest["records"]
    # the persistent database works from inside the store's folder
    here = os.getcwd()
    try:
        os.chdir(tmp_path / "ev")
        db = duckdb.connect("evidence.duckdb", read_only=True)
        assert db.execute("select count(*) from vote_block").fetchone() == (manifest["byType"]["vote_block"],)
    finally:
        os.chdir(here)


def test_random_bytes_are_stored_uncompressed_and_text_compressed(election: Path, tmp_path: Path) -> None:
    """Keys, signatures, digests and ciphertexts are random: snappy would only cost time;
    records' JSON, timestamp tokens and text columns are compressed (decisions.md, D45)."""
    import pyarrow.parquet as pq

    store, _ = harvest([ArchiveSource(election / "evidence.car")], tmp_path / "ev")
    codecs: dict[tuple[str, str], set[str]] = {}
    for table in ("envelopes", "signatures", "timestamps", "vote_block", "registrant"):
        for part in store.parts(table):
            metadata = pq.ParquetFile(part).metadata
            for group in range(metadata.num_row_groups):
                for i in range(metadata.num_columns):
                    column = metadata.row_group(group).column(i)
                    codecs.setdefault((table, column.path_in_schema), set()).add(column.compression)
    assert codecs[("envelopes", "raw")] == {"SNAPPY"} and codecs[("envelopes", "cid")] == {"SNAPPY"}
    assert codecs[("timestamps", "token")] == {"SNAPPY"}
    blobs = [("envelopes", "digest"), ("signatures", "key"), ("signatures", "sig"), ("registrant", "key")]
    for column in [*blobs, ("vote_block", "votes.list.element")]:
        assert codecs[column] == {"UNCOMPRESSED"}, column


def test_parsing_in_worker_processes_gives_the_same_store(
    election: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sources, "CHUNK_RECORDS", 8)  # small chunks: this election uses the pool
    harvest([ArchiveSource(election / "evidence.car")], tmp_path / "one", workers=1)
    harvest([ArchiveSource(election / "evidence.car")], tmp_path / "two", workers=2)
    _assert_same_rows(tmp_path / "one", tmp_path / "two", "select cid, source, location from provenance")


_ROWS = [  # every harvested table's rows, in one order
    "select cid, type, size, digest, raw from envelopes order by cid",
    "select * from signatures order by cid, idx",
    "select * from timestamps order by cid, idx",
    "select * from vote_block order by cid",
    "select * from tally_node order by cid",
    "select * exclude (registered), epoch_ms(registered) from registrant order by cid",
]


def _assert_same_rows(one: Path, two: Path, *more: str) -> None:
    for query in [*_ROWS, *(f"{q} order by all" for q in more)]:
        rows = connect(one).sql(query).fetchall()
        assert rows and rows == connect(two).sql(query).fetchall(), query


def test_all_archive_forms_give_one_set_with_provenance(election: Path, tmp_path: Path) -> None:
    sources = [ArchiveSource(election / name) for name in ("evidence.car", "records", "evidence.ndjson")]
    _, stats = harvest(sources, tmp_path / "ev")
    manifest = json.loads((election / "manifest.json").read_text())
    assert stats.new == manifest["records"] and stats.duplicates == 2 * manifest["records"]
    con = connect(tmp_path / "ev")
    per_cid = con.execute("select count(distinct source) from provenance group by cid").fetchall()
    assert {n for (n,) in per_cid} == {3}
    # each record's rows once, though three sources served it
    assert con.execute("select count(*), count(distinct cid) from envelopes").fetchone() == (
        stats.new,
        stats.new,
    )
    assert con.execute("select count(*) = count(distinct (cid, idx)) from signatures").fetchone() == (True,)


def test_records_known_before_are_written_once_when_chunks_mix_old_and_new(
    election: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers write a chunk's rows before this process knows which records are new: the
    rows of records another source gave first are taken out of the written parts."""
    monkeypatch.setattr(sources, "CHUNK_RECORDS", 8)
    lines = (election / "evidence.ndjson").read_bytes().splitlines(keepends=True)
    (tmp_path / "every-third.ndjson").write_bytes(b"".join(lines[::3]))
    harvest([ArchiveSource(tmp_path / "every-third.ndjson")], tmp_path / "mixed")
    harvest([ArchiveSource(election / "evidence.car")], tmp_path / "mixed", workers=2)
    harvest([ArchiveSource(election / "evidence.car")], tmp_path / "plain", workers=2)
    _assert_same_rows(tmp_path / "mixed", tmp_path / "plain")
    assert connect(tmp_path / "mixed").execute("select count(*) from provenance").fetchone() == (
        len(lines) + len(lines[::3]),
    )


def test_second_run_resumes_and_adds_nothing(election: Path, tmp_path: Path) -> None:
    harvest([ArchiveSource(election / "evidence.car")], tmp_path / "ev")
    before = _envelope_cids(tmp_path / "ev")
    _, stats = harvest([ArchiveSource(election / "evidence.car")], tmp_path / "ev")
    assert stats.read == 0
    assert _envelope_cids(tmp_path / "ev") == before
    assert connect(tmp_path / "ev").execute("select count(*) from provenance").fetchone() == (len(before),)


def test_bad_records_are_quarantined_with_reason_and_bytes(tmp_path: Path) -> None:
    lines = [
        b'{"v":1.5}',
        b"not json at all",
        b'{"v":1,"type":"nope","body":{},"signatures":[],"timestamps":[]}',
    ]
    (tmp_path / "bad.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    _, stats = harvest([ArchiveSource(tmp_path / "bad.ndjson")], tmp_path / "ev")
    assert stats.quarantined == 3 and stats.new == 0
    query = "select check_id, reason, raw from quarantine order by location"
    rows = connect(tmp_path / "ev").execute(query).fetchall()
    assert [r[0] for r in rows] == ["REC-SCHEMA"] * 3
    assert {bytes(r[2]) for r in rows} == set(lines)
    assert any("floating point" in r[1] for r in rows) and any("record type" in r[1] for r in rows)


def test_a_directory_archive_reads_every_file_whatever_its_name(election: Path, tmp_path: Path) -> None:
    """Spec §7.2: "a directory of files, each an envelope (any name)": a record named
    otherwise, or in a folder called secrets, is read; a file that is no envelope is kept
    in quarantine with its reason, never skipped; a bare CID name is a claim."""
    records = sorted((election / "records").rglob("*.json"))
    folder = tmp_path / "archive"
    (folder / "secrets").mkdir(parents=True)
    for i, path in enumerate(records):
        target = {0: folder / "result.env", 1: folder / "secrets" / "kept", 2: folder / path.stem}.get(
            i, folder / path.name
        )
        target.write_bytes(path.read_bytes())
    (folder / "manifest.json").write_text('{"note": "not an envelope"}')
    (folder / "notes.txt").write_text("hello")
    _, stats = harvest([ArchiveSource(folder)], tmp_path / "ev")
    assert stats.new == len(records) and stats.quarantined == 2
    con = connect(tmp_path / "ev")
    assert sorted(r[0] for r in con.execute("select location from quarantine").fetchall()) == [
        "manifest.json",
        "notes.txt",
    ]
    # a file named by its bare CID is checked against it: its bytes elsewhere would be REC-CID
    (folder / records[3].stem).write_bytes(records[4].read_bytes())
    _, stats = harvest([ArchiveSource(folder)], tmp_path / "ev2")
    assert stats.quarantined == 3


def test_a_directory_resumes_after_its_cursor_whatever_the_folders(tmp_path: Path) -> None:
    """The cursor is a relative path compared as text; the files are read in that order
    (a walk would give "z.json" before "a/x", and "a/x" before "a-b/y")."""
    for name in ("z.json", "a/x", "a-b/y", "a/b/c"):
        (tmp_path / "d" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "d" / name).write_text(name)
    every = [r.location for r in sources.iter_source(tmp_path / "d")]
    assert every == sorted(every) == ["a-b/y", "a/b/c", "a/x", "z.json"]
    for i, cursor in enumerate(every):
        assert [r.location for r in sources.iter_source(tmp_path / "d", after=cursor)] == every[i + 1 :]


def test_bytes_not_matching_their_cid_are_quarantined(tmp_path: Path) -> None:
    out = tmp_path / "e"
    simulate(
        SimConfig(voters=80, seed=2, districts=1, workers=1, tamper="cid-mismatch", formats=("car",)), out
    )
    _, stats = harvest([ArchiveSource(out / "evidence.car")], tmp_path / "ev")
    assert stats.quarantined == 1
    check, reason, claimed = (
        connect(tmp_path / "ev").execute("select check_id, reason, claimed_cid from quarantine").fetchone()
    )  # type: ignore[misc]
    assert check == "REC-CID" and claimed in reason and "hash to" in reason


def test_uncommitted_parts_are_removed_on_open(election: Path, tmp_path: Path) -> None:
    harvest([ArchiveSource(election / "evidence.car")], tmp_path / "ev")
    stray = tmp_path / "ev" / "tables" / "registrant" / "part-999999.parquet"
    stray.write_bytes(b"half a file")
    # a reader (a verify, a node, the views) leaves it: a running harvest may commit it
    EvidenceStore(tmp_path / "ev", read_only=True)
    connect(tmp_path / "ev").close()
    assert stray.exists()
    EvidenceStore(tmp_path / "ev")
    assert not stray.exists()


def test_a_broken_log_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "store.json").write_text("{not json")
    with pytest.raises(InputError, match="unreadable store log"):
        EvidenceStore(tmp_path)
    with pytest.raises(InputError, match="not an evidence store"):
        EvidenceStore(tmp_path / "nothing", create=False)


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    """Kill `vtaudit harvest` with SIGKILL repeatedly; resume each time; compare to one clean run."""
    out = tmp_path / "e"
    simulate(SimConfig(voters=1500, seed=8, workers=1, formats=("car",), secrets=False), out)
    reference = tmp_path / "reference"
    harvest([ArchiveSource(out / "evidence.car")], reference)
    env = dict(os.environ, VTAUDIT_STORE_BATCH="150")
    command = [
        sys.executable,
        "-m",
        "auditor.cli",
        "harvest",
        str(out / "evidence.car"),
        "--out",
        str(tmp_path / "ev"),
        "--quiet",
    ]
    rng = random.Random(1)
    kills = 0
    for _ in range(12):
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, 1.5))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    assert kills >= 3
    assert _envelope_cids(tmp_path / "ev") == _envelope_cids(reference)
    con = connect(tmp_path / "ev")
    assert con.execute("select count(*) - count(distinct cid) from envelopes").fetchone() == (0,)
    assert con.execute("select count(*) - count(distinct cid) from vote_block").fetchone() == (0,)


def test_contested_slots_are_kept_and_listed(tmp_path: Path) -> None:
    out = tmp_path / "e"
    simulate(
        SimConfig(
            voters=150, seed=4, workers=1, tamper="result-equivocation", formats=("car",), secrets=False
        ),
        out,
    )
    harvest([ArchiveSource(out / "evidence.car")], tmp_path / "ev")
    slots = contested_slots(connect(tmp_path / "ev"))
    assert len(slots) == 1 and slots[0].startswith("result (election ")
    assert slots[0].count("bagaaiera") == 4  # the election, the template and the two results


def test_every_part_is_on_disk_before_the_log_lists_it(
    election: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers rename their parts unsynced; the harvesting process fsyncs them on a thread
    of its own, and each commit waits until every part it lists is synced."""
    from auditor.store import evidence

    synced: set[str] = set()
    real_fsync, real_commit = evidence._fsync, evidence.EvidenceStore._commit

    def fsync(path: Path) -> None:
        time.sleep(0.002)  # a slow disk: a commit that did not wait would list unsynced parts
        real_fsync(path)
        synced.add(str(path).removesuffix(".tmp"))

    def commit(self: evidence.EvidenceStore) -> None:
        for table, names in self.log["parts"].items():
            for name in names:
                assert str(self.root / "tables" / table / name) in synced, (table, name)
        real_commit(self)

    monkeypatch.setattr(evidence, "_fsync", fsync)
    monkeypatch.setattr(evidence.EvidenceStore, "_commit", commit)
    monkeypatch.setattr(sources, "CHUNK_RECORDS", 8)
    monkeypatch.setenv("VTAUDIT_STORE_BATCH", "40")  # many commits
    harvest([ArchiveSource(election / "evidence.car")], tmp_path / "ev", workers=1)
    assert len(synced) > 20
