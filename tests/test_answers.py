"""The recount's answers table (answers.parquet): its columns, what it holds and what not.

A newsroom's group-by over the table must give the published result of a clean
election; invalid votes are absent from it; the table is the same whether one process
or several decrypted the blocks.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from auditor.cli import main
from auditor.harvest import ArchiveSource, harvest
from auditor.store.evidence import connect
from auditor.trust import load_trust
from auditor.verify import recount
from auditor.verify.engine import Verification, verify_store

# the columns documented in docs/verification.md, in order
COLUMNS = [
    ("template", pa.string()),
    ("block", pa.string()),
    ("leaf", pa.int32()),
    ("vote", pa.int32()),
    ("nonce", pa.string()),
    ("question", pa.string()),
    ("kind", pa.string()),
    ("option", pa.string()),
    ("rank", pa.int32()),
    ("score", pa.int64()),
    ("text", pa.string()),
]


def _verify(election: Path, audit: Path, workers: int = 1) -> Verification:
    store = election / "store"
    if not (store / "store.json").exists():
        harvest([ArchiveSource(election / "evidence.car")], store)
    return verify_store(store, load_trust(election / "trust.toml"), workers=workers, audit_dir=audit)


def _answers(folder: Path) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the view ``answers`` over ``folder/answers.parquet``."""
    con = duckdb.connect()
    con.execute(f"CREATE VIEW answers AS SELECT * FROM read_parquet('{folder / 'answers.parquet'}')")
    return con


def _recounted_from_answers(folder: Path, published: dict[str, Any]) -> dict[str, Any]:
    """The histograms of spec §6 rebuilt with plain group-bys over answers.parquet (as a
    newsroom would), in the shape of ``published`` with every count first set to zero."""
    con = _answers(folder)
    out: dict[str, Any] = {}
    for template, counts in published.items():
        histogram = json.loads(json.dumps(counts))
        for entry in histogram.values():
            entry["ballots"] = 0
            if entry["type"] == "text":
                entry["values"] = []
            for option, value in entry.get("options", {}).items():
                if entry["type"] == "select":
                    entry["options"][option] = 0
                elif entry["type"] == "rank":
                    entry["options"][option] = [0] * len(value)
                else:
                    entry["options"][option] = {"count": 0, "sum": 0}
        out[template] = histogram

    def rows(sql: str) -> list[tuple[Any, ...]]:
        return con.execute(sql).fetchall()

    for template, question, n in rows(
        "SELECT template, question, count(*) FROM answers "
        "WHERE question IS NOT NULL AND option IS NULL GROUP BY ALL"
    ):
        out[template][question]["ballots"] = n
    for template, question, option, n in rows(
        "SELECT template, question, option, count(*) FROM answers "
        "WHERE kind = 'select' AND option IS NOT NULL GROUP BY ALL"
    ):
        out[template][question]["options"][option] = n
    for template, question, option, rank, n in rows(
        "SELECT template, question, option, rank, count(*) FROM answers WHERE kind = 'rank' AND option "
        "IS NOT NULL GROUP BY ALL"
    ):
        out[template][question]["options"][option][rank - 1] = n
    for template, question, option, n, total in rows(
        "SELECT template, question, option, count(*), sum(score) FROM answers "
        "WHERE kind = 'score' AND option IS NOT NULL GROUP BY ALL"
    ):
        out[template][question]["options"][option] = {"count": n, "sum": int(total)}
    for template, question, text, n in rows(
        "SELECT template, question, text, count(*) FROM answers WHERE kind = 'text' "
        "GROUP BY ALL ORDER BY template, question, text"
    ):
        out[template][question]["values"].append([text, n])
    return out


def test_the_answers_table_has_its_columns_and_gives_the_published_result(
    tmp_path: Path, clean: Path
) -> None:
    result = _verify(clean, tmp_path)
    assert result.verdict == "verified"
    schema = pq.read_schema(tmp_path / "answers.parquet")
    assert [(f.name, f.type) for f in schema] == COLUMNS
    assert not (tmp_path / "answers.parquet.part").exists()
    store = connect(clean / "store")
    published = {t: json.loads(c) for t, c in store.execute("SELECT template, counts FROM result").fetchall()}
    voters = dict(store.execute("SELECT template, voters FROM result").fetchall())
    assert _recounted_from_answers(tmp_path, published) == published
    # every vote of a clean election is valid: one vote row per voter
    con = _answers(tmp_path)
    votes = con.execute("SELECT template, count(*) FROM answers WHERE kind = 'vote' GROUP BY template")
    assert dict(votes.fetchall()) == voters
    # the documented example query (docs/verification.md) runs and agrees
    example = con.execute(
        """
        SELECT question, option, count(*) AS votes FROM answers
        WHERE kind = 'select' AND option IS NOT NULL GROUP BY ALL ORDER BY question, votes DESC
        """
    ).fetchall()
    assert sum(n for _, _, n in example) == sum(
        sum(entry["options"].values())
        for counts in published.values()
        for entry in counts.values()
        if entry["type"] == "select"
    )


def test_invalid_votes_are_not_in_the_answers_table(
    tmp_path: Path, sims: Callable[[str | None], Path]
) -> None:
    election = sims("ballot-invalid")
    result = _verify(election, tmp_path)
    invalid = [
        re.search(r"block (\S+), votes\[(\d+)\] \(nonce (\S+)\)", f.message)
        for f in result.findings
        if f.check == "BAL-VALID"
    ]
    assert invalid and all(invalid)
    con = _answers(tmp_path)
    for match in invalid:
        assert match is not None
        block, index, nonce = match.group(1), int(match.group(2)), match.group(3)
        found = con.execute(
            "SELECT count(*) FROM answers WHERE nonce = ? OR (block = ? AND vote = ?)", [nonce, block, index]
        ).fetchone()
        assert found == (0,), (block, index)
    valid = con.execute("SELECT count(*) FROM answers WHERE kind = 'vote'").fetchone()
    members = sum(b["voters"] for b in result.ballots)
    assert valid == (members - len(invalid),)


def test_one_or_several_workers_write_the_same_table(
    tmp_path: Path, clean: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    one = _verify(clean, tmp_path / "one", workers=1)
    monkeypatch.setattr(recount, "BATCH", 1)  # so that the few blocks go to worker processes
    two = _verify(clean, tmp_path / "two", workers=2)
    assert [f.to_json() for f in one.findings] == [f.to_json() for f in two.findings]
    assert one.ballots == two.ballots and one.advisory == two.advisory
    tables = [pq.read_table(tmp_path / name / "answers.parquet") for name in ("one", "two")]
    assert tables[0].num_rows > 0 and tables[0].equals(tables[1])


def test_the_verify_command_writes_answers_beside_the_findings(tmp_path: Path, clean: Path) -> None:
    out = tmp_path / "audit"
    args = [
        "verify",
        str(clean / "evidence.car"),
        "--trust",
        str(clean / "trust.toml"),
        "--findings",
        str(out),
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} >= {"findings.parquet", "checks.parquet", "answers.parquet"}
    # without a recount there are no answers: an earlier run's file does not stay behind
    result = CliRunner().invoke(main, [*args, "--no-recount"])
    assert not (out / "answers.parquet").exists()


def test_entries_parse_the_same_by_orjson_and_by_the_strict_parser() -> None:
    """recount.parse_entry takes orjson's parse only for canonical bytes the schema
    accepts; on everything else it is the strict parser, word for word."""
    from auditor.errors import AuditError
    from auditor.model.encoding import b64u_encode, cid_of, jcs, parse_json
    from auditor.model.entries import VoteEntry
    from auditor.verify.recount import parse_entry

    template = cid_of(b"template")
    nonce = b64u_encode(bytes(range(16)))
    entry = {
        "template": template,
        "nonce": nonce,
        "answers": [
            {"question": "mayor", "values": ["brown"]},
            {"question": "budget", "values": {"parks": 3, "roads": 1}},
            {"question": "comment", "values": "Très bien 🚌"},
        ],
    }
    canonical = jcs(entry)
    variants = [
        canonical,
        json.dumps(entry, indent=1).encode(),  # not canonical: the strict parser
        canonical.replace(b'"parks":3', b'"parks":3.0'),
        canonical.replace(b'"parks":3', b'"parks":9007199254740993'),
        canonical.replace(b'"parks":3', b'"parks":18446744073709551617'),
        canonical.replace(b'"parks":3', '"pärks":3'.encode()),
        canonical.replace(b'"parks":3,', b'"parks":3,"parks":4,'),
        canonical.replace(b'"brown"', b'"br\\u006fwn"'),
        canonical.replace(b'"brown"', b"[" * 2000 + b"]" * 2000),
        canonical[:-1],
        b"\xff" + canonical,
    ]

    def outcome(parse: Callable[[bytes], object], data: bytes) -> object:
        try:
            return parse(data)
        except AuditError as e:
            return f"refused: {e}"

    for data in variants:
        ours = outcome(lambda d: parse_entry(d, VoteEntry), data)
        strict = outcome(lambda d: VoteEntry.parse(parse_json(d, what="entry"), "entry"), data)
        assert ours == strict, data[:80]
    assert isinstance(outcome(lambda d: parse_entry(d, VoteEntry), canonical), VoteEntry)
