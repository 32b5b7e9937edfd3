"""The answers table: every valid vote's answers as rows, and the histograms built from it.

The recount's workers decrypt and validate the votes; each valid vote becomes rows of
one long table (``answers.parquet`` in the audit folder, the DuckDB view ``answers``):

- one row of kind ``vote`` per valid vote (no question);
- one *answer row* per question the vote answers: ``option`` is null, and a text
  answer's text is in ``text``;
- one row per chosen option of a select answer, per ranked option of a rank answer
  (with its ``rank``, 1 first) and per scored option of a score answer (with its
  ``score``).

Invalid votes have no rows (they are BAL-VALID findings). A block's histogram (spec §6)
is then a group-by over its rows: ``ballots`` counts answer rows, select and rank counts
are counts of option rows (by rank), a score option's ``count`` and ``sum`` are the
count and sum of its rows, and text values are the answer rows grouped by text. The
table streams to Parquet in row groups, so no process holds it whole.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from auditor.model.encoding import jcs
from auditor.model.entries import VoteEntry
from auditor.model.histogram import Histogram, zero
from auditor.model.records import BallotTemplate
from auditor.store.tables import arrow_batches

__all__ = [
    "ANSWERS",
    "ANSWERS_SCHEMA",
    "AnswerRows",
    "AnswersWriter",
    "LeafBlock",
    "Row",
    "answer_cells",
    "block_histograms",
    "one_scan",
    "question_counts",
    "rankings",
    "record_batch",
]

ANSWERS = "answers.parquet"
ANSWERS_SCHEMA = pa.schema(
    [
        ("template", pa.string()),  # the block's template CID
        ("block", pa.string()),  # the block's CID
        ("leaf", pa.int32()),  # the block's leaf index in its template's block tree
        ("vote", pa.int32()),  # the vote's index in the block's votes list
        ("nonce", pa.string()),  # the vote's nonce (b64u)
        ("question", pa.string()),  # question code; null on the vote row
        ("kind", pa.string()),  # vote, select, rank, score or text
        ("option", pa.string()),  # option code; null on the vote row and answer rows
        ("rank", pa.int32()),  # rank 1..max of a ranked option
        ("score", pa.int64()),  # score of a scored option
        ("text", pa.string()),  # a text answer (on its answer row)
    ]
)
ROW_GROUP = 262_144  # rows buffered before a Parquet row group is written
CELL_BATCH = 65_536  # rows of a template's per-block cells read at a time (block_histograms)
# What a worker sends: its valid votes once (the first five columns), and their rows
# with the vote's position in that batch instead of those columns (expanded by take()).
VOTE_SCHEMA = pa.schema(ANSWERS_SCHEMA.field(i) for i in range(5))
CELL_SCHEMA = pa.schema([("at", pa.int32()), *(ANSWERS_SCHEMA.field(i) for i in range(5, 11))])
_CELL_REST = pa.schema(CELL_SCHEMA.field(i) for i in range(1, 7))

Row = tuple[Any, ...]


_VOTE_CELL: Row = (None, "vote", None, None, None, None)  # the vote row's cells after ``at``


def answer_cells(question: str, kind: str, values: Any) -> tuple[Row, ...]:
    """The rows of one valid answer of a ``kind`` question, without their ``at`` column
    (a cell's columns from ``question`` on: CELL_SCHEMA's fields but the first)."""
    if kind == "text":
        return ((question, kind, None, None, None, values),)
    head: Row = (question, kind, None, None, None, None)
    if kind == "select":
        return (head, *((question, kind, option, None, None, None) for option in values))
    if kind == "rank":
        return (head, *((question, kind, option, rank, None, None) for rank, option in enumerate(values, 1)))
    assert isinstance(values, dict)
    return (head, *((question, kind, option, None, score, None) for option, score in values.items()))


class AnswerRows:
    """The answers rows of a batch of blocks, as a worker builds them: each cell's vote
    (``at``) and its other columns apart, so that the rows of an answer seen before are
    its noted tuples again (:meth:`add_noted`), not new ones."""

    def __init__(self) -> None:
        self.votes: list[Row] = []
        self.at: list[int] = []
        self.cells: list[Row] = []  # CELL_SCHEMA's columns but ``at``

    def mark(self) -> tuple[int, int]:
        return len(self.votes), len(self.cells)

    def truncate(self, mark: tuple[int, int]) -> None:
        """Drop what was added since ``mark`` (a block that could not be read to the end)."""
        del self.votes[mark[0] :], self.at[mark[1] :], self.cells[mark[1] :]

    def add(
        self, template: str, block: str, leaf: int, index: int, vote: VoteEntry, kinds: Mapping[str, str]
    ) -> None:
        """Add the rows of one *valid* vote; ``kinds`` maps its template's question codes to types."""
        self.add_noted(
            template,
            block,
            leaf,
            index,
            vote.nonce,
            [answer_cells(a.question, kinds[a.question], a.values) for a in vote.answers],
        )

    def add_noted(
        self, template: str, block: str, leaf: int, index: int, nonce: str, answers: Sequence[Sequence[Row]]
    ) -> None:
        """Add the rows of one *valid* vote whose answers' rows (answer_cells) are known."""
        at = len(self.votes)
        self.votes.append((template, block, leaf, index, nonce))
        cells, ats = self.cells, self.at
        cells.append(_VOTE_CELL)
        count = 1
        for rows in answers:
            cells.extend(rows)
            count += len(rows)
        ats.extend(repeat(at, count))

    def batches(self) -> tuple[pa.RecordBatch, pa.RecordBatch]:
        rest = record_batch(self.cells, _CELL_REST)
        cells = pa.RecordBatch.from_arrays([pa.array(self.at, pa.int32()), *rest.columns], schema=CELL_SCHEMA)
        return record_batch(self.votes, VOTE_SCHEMA), cells


def record_batch(rows: Sequence[Row], schema: pa.Schema) -> pa.RecordBatch:
    """``rows`` (tuples in the order of ``schema``'s fields) as an Arrow record batch
    (converted as one struct array: twice as fast as transposing to columns first)."""
    return pa.RecordBatch.from_struct_array(pa.array(rows, type=pa.struct(schema)))


class AnswersWriter:
    """Streams workers' batches into ``folder/answers.parquet`` (zstd, row groups of
    ROW_GROUP rows). The file appears under its name only once complete."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / ANSWERS
        self._partial = folder / (ANSWERS + ".part")
        self._writer = pq.ParquetWriter(self._partial, ANSWERS_SCHEMA, compression="zstd")
        self._pending: list[pa.RecordBatch] = []
        self._buffered = 0

    def write(self, votes: pa.RecordBatch, cells: pa.RecordBatch) -> None:
        """Add a worker's batch (AnswerRows.batches): each row gets its vote's columns."""
        at = cells.column(0)
        columns = [column.take(at) for column in votes.columns] + cells.columns[1:]
        batch = pa.RecordBatch.from_arrays(columns, schema=ANSWERS_SCHEMA)
        self._pending.append(batch)
        self._buffered += batch.num_rows
        if self._buffered >= ROW_GROUP:
            self._flush()

    def _flush(self) -> None:
        if self._buffered:
            self._writer.write_table(pa.Table.from_batches(self._pending, ANSWERS_SCHEMA))
        self._pending, self._buffered = [], 0

    def close(self, con: duckdb.DuckDBPyConnection) -> None:
        """Finish the file and register it as the view ``answers`` of ``con``."""
        self._flush()
        self._writer.close()
        self._partial.replace(self.path)
        literal = "'" + str(self.path.resolve()).replace("'", "''") + "'"  # DDL takes no parameters
        con.execute(f"CREATE OR REPLACE TEMP VIEW answers AS SELECT * FROM read_parquet({literal})")

    def abort(self) -> None:
        self._writer.close()
        self._partial.unlink(missing_ok=True)


@dataclass(frozen=True)
class LeafBlock:
    """A counted block as a leaf of its template's trees."""

    cid: str
    leaf: int
    members: int
    counted: bool  # its votes were read against an effective template (else its histogram is {})


_CELLS = """
SELECT leaf, question, option, rank, text, count(*) AS n, sum(score) AS total
FROM answers WHERE template = ? AND question IS NOT NULL
GROUP BY leaf, question, option, rank, text ORDER BY leaf
"""


def block_histograms(
    con: duckdb.DuckDBPyConnection,
    template_cid: str,
    template: BallotTemplate | None,
    blocks: list[LeafBlock],
) -> Iterator[Histogram]:
    """The histogram (spec §6) of each of ``blocks`` (in leaf order), from one group-by:
    every question and option present, zeros included; ``{}`` for a block not counted.
    The group-by's rows are streamed (a template of ten million voters' election has
    some five million): nothing else may query ``con`` until the last histogram is taken."""
    empty = jcs(zero(template)) if template is not None else b"{}"
    relation = con.sql(_CELLS, params=[template_cid])
    reader = arrow_batches(relation, CELL_BATCH)
    cells = (row for batch in reader for row in zip(*(c.to_pylist() for c in batch.columns), strict=True))
    cell = next(cells, None)
    for block in blocks:
        if not block.counted:
            yield {}
            continue
        histogram: Histogram = json.loads(empty)
        while cell is not None and cell[0] == block.leaf:
            _, question, option, rank, text, n, total = cell
            entry = histogram[question]
            if option is None:
                entry["ballots"] += n
                if text is not None:
                    entry["values"].append([text, n])
            elif entry["type"] == "select":
                entry["options"][option] += n
            elif entry["type"] == "rank":
                entry["options"][option][rank - 1] += n
            else:
                entry["options"][option]["count"] += n
                entry["options"][option]["sum"] += int(total)
            cell = next(cells, None)
        for entry in histogram.values():
            if entry["type"] == "text":
                entry["values"].sort(key=lambda pair: pair[0].encode("utf-8", "surrogatepass"))
        yield histogram


PARTITIONED = "partitioned_execution"  # DuckDB's optimizer that splits a big GROUP BY by key range


@contextmanager
def one_scan(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """DuckDB's ``partitioned_execution`` optimizer (DuckDB 2) off for a while. Over
    some four million rows it splits a GROUP BY into ranges of its first key (block), a
    scan of ``answers`` each; the ranges do not prune the Parquet file's row groups, so
    each range reads all of it: twelve scans per query at ten million voters (×64 the
    time of a million). No query may be open when it starts or ends."""
    known = con.execute("SELECT count(*) FROM duckdb_optimizers() WHERE name = ?", [PARTITIONED])
    if not known.fetchall()[0][0]:
        yield  # an older DuckDB: no such optimizer
        return
    before = con.execute("SELECT current_setting('disabled_optimizers')").fetchall()[0][0]
    names = [name for name in before.split(",") if name.strip()]
    con.execute("SET disabled_optimizers = ?", [",".join([*names, PARTITIONED])])
    try:
        yield
    finally:
        con.execute("SET disabled_optimizers = ?", [before])


def rankings(
    con: duckdb.DuckDBPyConnection, template_cid: str, question: str
) -> list[tuple[tuple[str, ...], int]]:
    """Every distinct valid ranking given for a rank question (most preferred first; an
    empty ranking included), with the number of votes that gave it, in ranking order."""
    with one_scan(con):
        rows = con.execute(
            """
        SELECT ranking, count(*) FROM (
            SELECT coalesce(list(option ORDER BY rank) FILTER (WHERE option IS NOT NULL), []) AS ranking
            FROM answers WHERE template = ? AND question = ? GROUP BY block, vote
        ) GROUP BY ranking ORDER BY ranking
        """,
            [template_cid, question],
        ).fetchall()
    return [(tuple(ranking), n) for ranking, n in rows]


def question_counts(
    con: duckdb.DuckDBPyConnection, template_cid: str, question: str
) -> list[tuple[str, int, dict[str, int]]]:
    """Per block (in CID order) with answers to a select question: its ballots and its
    counts by chosen option."""
    ballots: dict[str, int] = {}
    options: dict[str, dict[str, int]] = {}
    with one_scan(con):
        rows = con.execute(
            "SELECT block, option, count(*) FROM answers WHERE template = ? AND question = ? "
            "GROUP BY block, option ORDER BY block",
            [template_cid, question],
        ).fetchall()
    for block, option, n in rows:
        if option is None:
            ballots[block] = n
        else:
            options.setdefault(block, {})[option] = n
    return [(block, n, options.get(block, {})) for block, n in ballots.items()]
