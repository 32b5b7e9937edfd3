"""Incremental verification: the result cache (auditor.verify.cache, decision D38).

A second run reuses what the first checked; a harvest that adds records makes only them
checked; the findings, the answers table and the report body are always those of a run
without the cache. A cache that is not this user's (copied, edited, cut), of another
version, or made under another trust file or key is never believed: every result it
would give is computed again, and the run says what it ignored.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from auditor.cli import main
from auditor.harvest import ArchiveSource, harvest
from auditor.model.encoding import b64u_decode, b64u_encode, cid_of, jcs, parse_json
from auditor.report.body import report_body
from auditor.sim.tsa import TestTsa
from auditor.store.evidence import connect
from auditor.trust import load_trust
from auditor.verify import cache as cache_module
from auditor.verify import context, recount
from auditor.verify.answers import CELL_SCHEMA
from auditor.verify.cache import ResultCache, logic_hash, user_secret
from auditor.verify.engine import Verification, verify_store

NOW = 1_790_000_000_000
NOTHING = {"signatures": 0, "tokens": 0, "blocks": 0}
FORGED = "not authenticated by this user's cache key (copied from elsewhere, edited or cut)"


@pytest.fixture(autouse=True)
def user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's user: its own $XDG_CACHE_HOME, hence its own cache key."""
    home = tmp_path / "xdg"
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    return home


@pytest.fixture(scope="module")
def store(clean: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The clean election harvested once; tests that add records work on a copy."""
    out = tmp_path_factory.mktemp("incremental") / "store"
    harvest([ArchiveSource(clean / "evidence.car")], out)
    return out


@pytest.fixture(scope="module")
def cold(store: Path, clean: Path) -> Verification:
    """The clean store verified without a cache: what every cached run must equal."""
    return verify_store(store, load_trust(clean / "trust.toml"), workers=1)


def _verify(
    store: Path, trust: Path, cache: Path | None, *, workers: int = 1, audit_dir: Path | None = None
) -> Verification:
    return verify_store(store, load_trust(trust), workers=workers, cache=cache, audit_dir=audit_dir)


def _body(result: Verification, store: Path) -> bytes:
    return jcs(report_body(result, store, now=NOW))


def _same(got: Verification, expected: Verification, store: Path) -> None:
    """The same conclusions: verdict, every check, every finding, ballots, the signed body."""
    assert got.verdict == expected.verdict
    assert [o.to_json() for o in got.outcomes] == [o.to_json() for o in expected.outcomes]
    assert [f.to_json() for f in got.findings] == [f.to_json() for f in expected.findings]
    assert got.ballots == expected.ballots
    assert got.advisory == expected.advisory
    assert _body(got, store) == _body(expected, store)


def _detail(result: Verification, stage: str) -> str:
    return next(s.detail for s in result.stages if s.name == stage)


def _records(records: Path) -> list[tuple[str, str, dict[str, object]]]:
    """(type, CID, envelope) of every record file of a simulated election."""
    return [
        (path.parent.name, path.stem, json.loads(path.read_text()))
        for path in sorted(records.glob("*/*.json"))
    ]


def _store_counts(store: Path, cids: set[str]) -> tuple[int, int]:
    """How many signatures and tokens the records ``cids`` carry in the store."""
    con = connect(store)
    try:
        counts = []
        for table in ("signatures", "timestamps"):
            rows = con.execute(f"SELECT cid FROM {table}").fetchall()
            counts.append(sum(1 for (cid,) in rows if cid in cids))
    finally:
        con.close()
    return counts[0], counts[1]


def _bad_signature_copy(clean: Path, folder: Path) -> str:
    """Write into ``folder`` a copy of a tally node whose first signature is broken (a new
    CID, as a record first published after the last harvest); return its CID."""
    path = sorted((clean / "records" / "tally_node").glob("*.json"))[0]
    envelope = parse_json(path.read_bytes())
    signature = bytearray(b64u_decode(envelope["signatures"][0]["sig"]))
    signature[7] ^= 0x01
    envelope["signatures"][0]["sig"] = b64u_encode(bytes(signature))
    raw = jcs(envelope)
    cid = cid_of(raw)
    (folder / "tally_node").mkdir(parents=True)
    (folder / "tally_node" / f"{cid}.json").write_bytes(raw)
    return cid


def _parts(cache: Path, kind: str) -> list[Path]:
    return sorted(cache.glob(f"{kind}-*.parquet"))


# ---------------------------------------------------------------------------- reuse


def test_a_second_run_reuses_every_result(
    store: Path, clean: Path, cold: Verification, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trust, cache = clean / "trust.toml", tmp_path / "cache"
    # streams of several slices: on the second run every slice is cached, and each is
    # finished as it is read (nothing for the workers, nothing held until the end)
    monkeypatch.setattr(context, "TOKEN_STREAM", 5)
    monkeypatch.setattr(context, "SIG_STREAM", 100)
    first = _verify(store, trust, cache, audit_dir=tmp_path / "first")
    chunked: list[int] = []
    chunks = context._chunks

    def counted_chunks(items: Any, size: int) -> Any:
        chunked.append(len(items))
        return chunks(items, size)

    monkeypatch.setattr(context, "_chunks", counted_chunks)
    second = _verify(store, trust, cache, audit_dir=tmp_path / "second")
    assert chunked == []  # no slice of tokens had anything to verify
    assert first.cache is not None and second.cache is not None
    assert first.cache["reused"] == NOTHING
    assert all(first.cache["checked"][kind] > 0 for kind in NOTHING)
    assert second.cache["checked"] == NOTHING
    assert second.cache["reused"] == first.cache["checked"]
    signatures = first.cache["checked"]["signatures"]
    assert f"({signatures:,} reused from the cache, 0 checked)" in _detail(second, "signatures")
    assert f"({first.cache['checked']['blocks']:,} reused from the cache, 0 decrypted)" in _detail(
        second, "recount"
    )
    _same(first, cold, store)
    _same(second, cold, store)
    answers = [pq.read_table(tmp_path / run / "answers.parquet") for run in ("first", "second")]
    assert answers[0].equals(answers[1])
    assert sorted(p.name.split("-")[0] for p in cache.iterdir()) == ["block", "sig", "token"]


def test_b_added_records_are_the_only_ones_checked(
    clean: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # small batches: the process and thread pools run, and cached blocks interleave with
    # decrypted ones inside the workers' stream
    monkeypatch.setattr(recount, "BATCH", 2)
    # ranges of a few blocks, read from a copy partitioned by range (D56)
    monkeypatch.setattr(recount, "SORT_BLOCKS", 5)
    monkeypatch.setattr(recount, "PARTITION_RANGES", 2)
    copies: list[int] = []
    partition = recount._Counted._partition

    def counted_partition(self: recount._Counted) -> None:
        partition(self)
        copies.append(len(self.ranges) if self.folder is not None else 0)

    monkeypatch.setattr(recount._Counted, "_partition", counted_partition)
    monkeypatch.setattr(context, "SIG_BATCH", 64)
    monkeypatch.setattr(context, "TOKEN_BATCH", 1)
    # slices of a few tokens: some all cached (nothing for the workers), some mixed
    monkeypatch.setattr(context, "TOKEN_STREAM", 7)
    records = _records(clean / "records")
    accepted = sorted(
        e["body"]["block"] for t, _, e in records if t == "receipt" and e["body"]["result"] == "accepted"
    )
    held = {b for i, b in enumerate(accepted) if i % 3}  # two accepted blocks in three, and their
    # receipts, come later: enough for the pool, and batches of cached and new blocks
    later = {cid for t, cid, e in records if cid in held or (t == "receipt" and e["body"]["block"] in held)}
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    for record_type, cid, _ in records:
        target = (second_dir if cid in later else first_dir) / record_type
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(clean / "records" / record_type / f"{cid}.json", target)
    store, trust, cache = tmp_path / "store", clean / "trust.toml", tmp_path / "cache"

    harvest([ArchiveSource(first_dir)], store)
    before = _verify(store, trust, cache, workers=2)
    assert before.verdict == "not-verified"  # blocks the trees count are missing
    harvest([ArchiveSource(second_dir)], store)
    after = _verify(store, trust, cache, workers=2, audit_dir=tmp_path / "after")
    full = _verify(store, trust, None, workers=2, audit_dir=tmp_path / "full")

    assert after.cache is not None
    signatures, tokens = _store_counts(store, later)
    assert after.cache["checked"] == {"signatures": signatures, "tokens": tokens, "blocks": len(held)}
    assert after.cache["reused"]["signatures"] > 0 and after.cache["reused"]["blocks"] > 0
    assert after.verdict == "verified"
    assert _detail(after, "recount").endswith(", 2 processes")  # the pool ran, with cached blocks between
    assert _detail(after, "timestamps").endswith(", 2 processes")
    assert len(copies) == 3 and all(n >= 2 for n in copies)  # each run read its blocks from a copy by range
    _same(after, full, store)
    answers = pq.read_table(tmp_path / "after" / "answers.parquet")
    assert answers.equals(pq.read_table(tmp_path / "full" / "answers.parquet"))
    assert set(answers.column("block").to_pylist()) & held  # the leaves moved: still equal


def test_c_a_tampered_record_added_later_is_caught(store: Path, clean: Path, tmp_path: Path) -> None:
    copy, trust, cache = tmp_path / "store", clean / "trust.toml", tmp_path / "cache"
    shutil.copytree(store, copy)
    warm = _verify(copy, trust, cache)
    assert warm.verdict == "verified"
    bad = _bad_signature_copy(clean, tmp_path / "later")
    harvest([ArchiveSource(tmp_path / "later")], copy)
    after = _verify(copy, trust, cache)
    assert after.cache is not None
    signatures, tokens = _store_counts(copy, {bad})
    assert after.cache["checked"] == {"signatures": signatures, "tokens": tokens, "blocks": 0}
    assert after.verdict == "not-verified"
    assert [f.subject for f in after.findings if f.check == "SIG-VALID"] == [bad]
    _same(after, _verify(copy, trust, None), copy)


# ---------------------------------------------------------------------------- trust


@pytest.fixture
def tampered(store: Path, clean: Path, tmp_path: Path) -> Path:
    """The clean store plus a tally node copy with a broken signature (SIG-VALID fails)."""
    copy = tmp_path / "tampered"
    shutil.copytree(store, copy)
    _bad_signature_copy(clean, tmp_path / "bad")
    harvest([ArchiveSource(tmp_path / "bad")], copy)
    return copy


def _all_ok(cache: Path, store: Path) -> None:
    """Poison ``cache``: a part, authenticated under the current user's key, that says
    every signature in ``store`` verifies."""
    con = connect(store)
    try:
        triples = [
            (bytes(k), bytes(s), bytes(d))
            for k, s, d in con.execute(
                "SELECT s.key, s.sig, e.digest FROM signatures s JOIN envelopes e USING (cid)"
            ).fetchall()
        ]
    finally:
        con.close()
    poisoner = ResultCache(cache, user_secret(), logic_hash())
    poisoner.keep_signatures(poisoner.signatures(triples), [True] * len(triples))


def test_d_an_edited_cache_part_is_not_believed(tampered: Path, clean: Path, tmp_path: Path) -> None:
    trust, cache = clean / "trust.toml", tmp_path / "cache"
    honest = _verify(tampered, trust, cache)
    assert {o.id for o in honest.outcomes if o.status == "fail"} >= {"SIG-VALID"}
    for part in _parts(cache, "sig"):  # the attacker says every signature verifies
        table = pq.read_table(part)
        pq.write_table(table.set_column(1, "ok", pa.array([True] * table.num_rows)), part)
    again = _verify(tampered, trust, cache)
    assert again.cache is not None
    assert again.cache["ignoredParts"] == {FORGED: 1}
    assert again.cache["reused"]["signatures"] == 0
    _same(again, honest, tampered)


def test_d_another_users_cache_is_not_believed(
    tampered: Path, clean: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trust, cache = clean / "trust.toml", tmp_path / "cache"
    honest = _verify(tampered, trust, None)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "attacker"))
    _all_ok(cache, tampered)
    fooled = _verify(tampered, trust, cache)  # under the attacker's own key the poison works:
    assert "SIG-VALID" not in {o.id for o in fooled.outcomes if o.status == "fail"}  # the key is the guard
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "auditor"))
    received = _verify(tampered, trust, cache)
    assert received.cache is not None
    # the poison, and the token and block parts of the attacker's own run
    assert received.cache["ignoredParts"] == {FORGED: 3}
    assert received.cache["reused"] == NOTHING
    _same(received, honest, tampered)


def test_e_corrupt_parts_are_ignored_with_a_note(
    store: Path, clean: Path, cold: Verification, tmp_path: Path, user: Path
) -> None:
    trust, cache = clean / "trust.toml", tmp_path / "cache"
    _verify(store, trust, cache)
    sig, token = _parts(cache, "sig")[0], _parts(cache, "token")[0]
    sig.write_bytes(sig.read_bytes()[: sig.stat().st_size // 2])  # cut
    (cache / f"block-{'0' * 64}.parquet").write_bytes(os.urandom(500))  # garbage under a part's name
    (cache / "sig-not-a-tag.parquet").write_bytes(b"PAR1")
    secret = user_secret()
    forged = ResultCache(tmp_path / "elsewhere", secret, logic_hash())
    data = b"authenticated, yet not Parquet"
    (cache / f"token-{forged._tag('token', data)}.parquet").write_bytes(data)
    token.unlink()
    (cache / f"sig-{'1' * 64}.parquet").symlink_to("/dev/zero")  # endless, if it were read
    os.mkfifo(cache / f"token-{'2' * 64}.parquet")  # blocks whoever opens it, if opened so
    result = _verify(store, trust, cache)
    assert result.cache is not None
    assert result.cache["ignoredParts"] == {
        FORGED: 2,  # the cut part, the garbage
        "not named as a part of this cache": 1,
        "unreadable (ArrowInvalid)": 1,
        "unreadable, or not a regular file": 2,
    }
    assert result.cache["reused"]["signatures"] == result.cache["reused"]["tokens"] == 0
    assert result.cache["checked"]["blocks"] == 0  # the block part is intact
    _same(result, cold, store)
    output = (
        CliRunner()
        .invoke(
            main,
            [
                "verify",
                str(store),
                "--trust",
                str(trust),
                "--cache",
                str(cache),
                "--findings",
                str(tmp_path / "f"),
            ],
        )
        .output
    )
    assert "  1 part(s) ignored: unreadable (ArrowInvalid)" in output


def test_e_an_unsafe_or_broken_key_turns_the_cache_off(
    store: Path, clean: Path, cold: Verification, tmp_path: Path, user: Path
) -> None:
    trust, cache = clean / "trust.toml", tmp_path / "cache"
    _verify(store, trust, cache)
    key = user / "vtaudit" / "cache.key"
    assert key.stat().st_mode & 0o777 == 0o600
    key.chmod(0o644)  # anyone could read it, hence forge parts
    result = _verify(store, trust, cache)
    assert result.cache is not None and result.cache["used"] is False
    assert "mode 0644" in result.cache["notes"][0]
    _same(result, cold, store)
    key.chmod(0o600)
    key.write_bytes(b"short")
    result = _verify(store, trust, cache)
    assert result.cache is not None and result.cache["used"] is False
    assert "holds 5 bytes, expected 32" in result.cache["notes"][0]


def test_e_parts_of_another_version_are_not_used(
    store: Path, clean: Path, cold: Verification, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trust, cache = clean / "trust.toml", tmp_path / "cache"
    _verify(store, trust, cache)
    before = logic_hash()
    monkeypatch.setattr(cache_module, "__version__", "99.0.0")  # an upgrade
    assert logic_hash() != before
    result = _verify(store, trust, cache)
    assert result.cache is not None
    assert result.cache["ignoredParts"] == {"written by another version of vtaudit": 3}
    assert result.cache["reused"] == NOTHING
    _same(result, cold, store)


# ---------------------------------------------------------------------------- other inputs


def test_f_another_trust_file_rechecks_the_tokens(store: Path, clean: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    (tmp_path / "other-root.pem").write_bytes(TestTsa(hashlib.sha256(b"another root").digest()).root_pem)
    other = tmp_path / "other.toml"
    other.write_text((clean / "trust.toml").read_text().replace('"tsa-root.pem"', '"other-root.pem"'))
    first = _verify(store, clean / "trust.toml", cache)
    rooted_elsewhere = _verify(store, other, cache)
    assert rooted_elsewhere.cache is not None and first.cache is not None
    assert rooted_elsewhere.cache["reused"]["tokens"] == 0
    assert rooted_elsewhere.cache["checked"]["tokens"] == first.cache["checked"]["tokens"]
    assert rooted_elsewhere.cache["reused"]["signatures"] == first.cache["checked"]["signatures"]
    assert "TSA-TOKEN" in {o.id for o in rooted_elsewhere.outcomes if o.status == "fail"}
    _same(rooted_elsewhere, _verify(store, other, None), store)
    back = _verify(store, clean / "trust.toml", cache)
    assert back.cache is not None and back.cache["checked"] == NOTHING
    _same(back, first, store)


def test_f_another_private_key_redecrypts_every_block(
    store: Path, clean: Path, cold: Verification, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    trust = clean / "trust.toml"
    first = _verify(store, trust, cache)
    assert first.cache is not None
    blocks = first.cache["checked"]["blocks"]
    combine: Callable[..., bytes] = recount.combine_private
    monkeypatch.setattr(recount, "combine_private", lambda keys: combine([*keys, (1).to_bytes(32, "little")]))
    wrong = _verify(store, trust, cache)
    assert wrong.cache is not None
    assert wrong.cache["reused"]["blocks"] == 0 and wrong.cache["checked"]["blocks"] == blocks
    assert "DEC-ENTRIES" in {o.id for o in wrong.outcomes if o.status == "fail"}
    monkeypatch.setattr(recount, "combine_private", combine)
    right = _verify(store, trust, cache)
    assert right.cache is not None and right.cache["checked"] == NOTHING
    _same(right, cold, store)


def test_a_block_met_by_a_bug_is_never_kept(
    store: Path, clean: Path, cold: Verification, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trust, cache = clean / "trust.toml", tmp_path / "cache"

    def broken(*_: object) -> bool:
        raise RuntimeError("a bug in the ballot rules")

    monkeypatch.setattr(recount, "valid_vote_check", lambda _template: broken)
    monkeypatch.setattr(recount.NotedCheck, "valid", broken)  # the rules from the answers' notes (D57)
    buggy = _verify(store, trust, cache)
    assert buggy.verdict == "not-verified" and buggy.internal_errors
    assert _parts(cache, "block") == []
    monkeypatch.undo()
    fixed = _verify(store, trust, cache)
    assert fixed.cache is not None and buggy.cache is not None
    assert fixed.cache["reused"]["blocks"] == 0
    assert fixed.cache["checked"]["blocks"] == buggy.cache["checked"]["blocks"] > 0
    _same(fixed, cold, store)


def test_a_token_met_by_an_exception_is_never_kept(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path / "cache", user_secret(), logic_hash())
    context = cache.token_context([b"certificate"], [b"root"])
    items = [(b"token one", bytes(32)), (b"token two", bytes(32))]
    results = [
        (1_700_000_000_000, (), ()),
        (
            None,
            ("checked token: got an unexpected MemoryError (), expected a token the verifier can read",),
            ("x",),
        ),
    ]
    cache.keep_tokens(cache.tokens(context, items), results)
    again = ResultCache(tmp_path / "cache", user_secret(), logic_hash()).tokens(context, items)
    assert again.known == [results[0], None]
    assert again.todo == [items[1]]


def test_the_cache_rows_mirror_the_answers_table() -> None:
    assert list(cache_module.CELL) == list(CELL_SCHEMA)
    assert [f.name for f in cache_module.ENTRY] == ["vote", "nonce"]


def test_many_parts_are_merged_into_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache_module, "COMPACT_AT", 3)
    folder = tmp_path / "cache"
    batches = [[(bytes([n]) * 32, bytes([i]) * 64, bytes(32)) for i in range(5)] for n in range(4)]
    counts = []
    for batch in batches:  # four runs, each adding a part; the third merges the three
        run = ResultCache(folder, user_secret(), logic_hash())
        run.keep_signatures(run.signatures(batch), [i % 2 == 0 for i in range(5)])
        run.finish()
        counts.append(len(_parts(folder, "sig")))
    assert counts == [1, 2, 1, 2]
    merged = ResultCache(folder, user_secret(), logic_hash())
    for batch in batches:
        assert merged.signatures(batch).known == [True, False, True, False, True]


# ---------------------------------------------------------------------------- the command line


def test_cli_says_what_it_reused_and_the_report_does_not(clean: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    keys, out = tmp_path / "keys", tmp_path / "audit"
    assert runner.invoke(main, ["keygen", "--out", str(keys)]).exit_code == 0
    audit = ["audit", str(clean / "evidence.car"), "--trust", str(clean / "trust.toml")]
    audit += ["--keys", str(keys), "--out", str(out), "--no-pdf"]
    reports, outputs = [], []
    for extra in ([], [], ["--no-cache"]):
        run = runner.invoke(main, [*audit, *extra], env={"SOURCE_DATE_EPOCH": "1790000000"})
        assert run.exit_code == 0, run.output
        outputs.append(run.output)
        reports.append((out / "report.json").read_bytes())
    assert reports[0] == reports[1] == reports[2]  # signed bytes: nothing measured goes in
    cache = out / "findings" / "cache"
    assert f"result cache {cache}:\n  signatures: " in outputs[1]
    assert outputs[0].count("(0 reused from the cache, ") == 3
    assert outputs[1].count(" reused from the cache, 0 checked)") == 2
    assert " reused from the cache, 0 decrypted)" in outputs[1]
    assert "result cache: not used (--no-cache)" in outputs[2]
    assert b"reused" not in reports[1]


def test_cli_cache_options_exclude_each_other(store: Path, tmp_path: Path) -> None:
    run = CliRunner().invoke(main, ["verify", str(store), "--cache", str(tmp_path / "c"), "--no-cache"])
    assert run.exit_code == 2
    assert "--cache and --no-cache exclude each other" in run.output
