"""The tally tree's expected nodes from count vectors: the fast way of ``tally.py`` (D57).

A template's histograms (spec §6) all have one shape: the same questions, options and
ranks, zeros included. Apart from text answers, a histogram is then a vector of
integers, one *slot* per number its canonical JSON holds, and adding histograms is
adding vectors. So this module:

- makes of the template a :class:`Layout`: the slots, in the order their numbers appear
  in the canonical JSON text, and that text as a ``%`` format with a ``%d`` per slot and
  a ``%s`` per text question's ``values`` array;
- reads the same group-by of the answers table as ``answers.block_histograms``, joined
  with the slots in DuckDB, into a matrix of a row per leaf (numpy ``add.at``);
- takes every node's vector as a difference of two prefix sums of those rows (a node
  covers a range of leaves), a chunk of nodes at a time, and formats its text.

Text answers are the one part that is not a vector: their ``[text, count]`` pairs are
merged up the tree as before. A node none of whose leaves was counted is ``{}``, as
the sum of ``{}`` histograms is. The texts are exactly ``json_text`` of the histograms
the member-wise sums of ``tally._expected_nodes_by_sum`` give (``tests/test_counts.py``
compares the two ways on every node of many trees); the caller takes that slower way
when there is no effective template to lay out, or when :func:`expected_nodes` cannot
vouch for its reading (a row without a slot, a row of a block not counted, a block's
score sum beyond int64, or leaves whose numbers summed could reach 2^62: scores go up to
2^53 - 1 each, and a block may hold more votes than members).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection, Generator, Iterator
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from auditor.crypto import merkle
from auditor.model.histogram import Histogram, zero
from auditor.model.records import BallotTemplate
from auditor.store.bulk import cid_binaries
from auditor.store.tables import arrow_batches, json_text
from auditor.verify.answers import CELL_BATCH, LeafBlock, one_scan

__all__ = ["Layout", "expected_nodes", "layout"]

Range = tuple[int, int]
# (start, end) -> (Merkle hash, sha256 of the counts' text, voters, mid): tally.Expected
Expected = dict[Range, tuple[bytes, bytes, int, int | None]]

NODE_CHUNK = 16_384  # nodes whose vectors are made (and turned into Python ints) at once
SUM_LIMIT = 2.0**62  # the leaves' summed magnitudes below which int64 prefix sums cannot overflow
_NUMBER = "\x01"  # marks a slot in the skeleton histogram (no code or number holds it)
_TEXTS = "\x02"  # marks a text question's values array
_MARK = re.compile(r'"\\u000([12])(\d+)"')  # a marker as json_text writes it


@dataclass(frozen=True)
class Layout:
    """A template's histogram as a vector: its slots and its text as a format."""

    format: str  # the canonical JSON text, a %d per slot and a %s per text question
    # question, option, rank -> n_slot (count), sum_slot (a score's sum) and is_text (the
    # answer row of a text question: the one row that may hold a text)
    slots: pa.Table
    size: int  # slots
    texts: tuple[str, ...]  # the text questions, in the order of their %s
    text_at: tuple[int, ...]  # where each text question's %s comes among the format's arguments

    def render(self, numbers: list[int], texts: tuple[Texts, ...]) -> str:
        """The canonical JSON text of the histogram of ``numbers`` (in slot order) and the
        text questions' counts by text."""
        if not self.texts:
            return self.format % tuple(numbers)
        args: list[Any] = list(numbers)
        for at, values in zip(self.text_at, texts, strict=True):
            args.insert(at, values.text)
        return self.format % tuple(args)


def _values_text(values: dict[str, int]) -> str:
    """A text question's ``values``: ``[text, count]`` pairs sorted by the text's UTF-8
    bytes (spec §6), as json_text writes them. UTF-8 keeps the order of code points, which
    is the order in which Python compares strings: sorted() needs no key."""
    if not values:
        return "[]"
    return json_text([[t, values[t]] for t in sorted(values)])


class Texts:
    """A text question's counts by text in a subtree, with their ``values`` array's text
    (made once: a node whose other subtree has no text shares its child's)."""

    __slots__ = ("counts", "text")

    def __init__(self, counts: dict[str, int]) -> None:
        self.counts = counts
        self.text = _values_text(counts)

    def __add__(self, other: Texts) -> Texts:
        if not other.counts:
            return self
        if not self.counts:
            return other
        merged = dict(self.counts)
        for t, count in other.counts.items():
            merged[t] = merged.get(t, 0) + count
        return Texts(merged)


NO_TEXTS = Texts({})


def layout(template: BallotTemplate) -> Layout:
    """The vector layout of ``template``'s histograms."""
    skeleton = zero(template)
    found: list[tuple[str, str | None, int | None, str]] = []  # per marker: question, option, rank, what
    texts: list[str] = []

    def number(question: str, option: str | None, rank: int | None, what: str) -> str:
        found.append((question, option, rank, what))
        return f"{_NUMBER}{len(found) - 1}"

    for question, entry in skeleton.items():
        entry["ballots"] = number(question, None, None, "ballots")
        if entry["type"] == "text":
            texts.append(question)
            entry["values"] = f"{_TEXTS}{len(texts) - 1}"
        elif entry["type"] == "select":
            entry["options"] = {o: number(question, o, None, "count") for o in entry["options"]}
        elif entry["type"] == "rank":
            entry["options"] = {
                o: [number(question, o, r, "count") for r in range(1, len(ranks) + 1)]
                for o, ranks in entry["options"].items()
            }
        else:
            entry["options"] = {
                o: {"count": number(question, o, None, "count"), "sum": number(question, o, None, "sum")}
                for o in entry["options"]
            }
    slot_of: dict[int, int] = {}  # marker -> slot (its place in the text)
    text_order: list[int] = []
    text_at: list[int] = []

    def place(match: re.Match[str]) -> str:
        index = int(match.group(2))
        if match.group(1) == "1":
            slot_of[index] = len(slot_of)
            return "%d"
        text_at.append(len(slot_of) + len(text_order))
        text_order.append(index)
        return "%s"

    form = _MARK.sub(place, json_text(skeleton).replace("%", "%%"))
    assert len(slot_of) == len(found) and len(text_order) == len(texts), "a marker is missing from the text"
    rows: dict[tuple[str, str | None, int | None], list[int | None]] = {}
    for index, (question, option, rank, what) in enumerate(found):
        row = rows.setdefault((question, option, rank), [None, None])
        row[1 if what == "sum" else 0] = slot_of[index]
    keys = list(rows)
    slots = pa.table(
        {
            "question": pa.array([k[0] for k in keys], pa.string()),
            "option": pa.array([k[1] for k in keys], pa.string()),
            "rank": pa.array([k[2] for k in keys], pa.int32()),
            "n_slot": pa.array([rows[k][0] for k in keys], pa.int32()),
            "sum_slot": pa.array([rows[k][1] for k in keys], pa.int32()),
            "is_text": pa.array([k[0] in texts and k[1] is None for k in keys], pa.bool_()),
        }
    )
    return Layout(form, slots, len(found), tuple(texts[i] for i in text_order), tuple(text_at))


# a leaf's numbers: its rows grouped without their text (a text question's answer rows
# are its ballots); ``stray``: texts on a row that is not a text question's answer row
_LEAF_CELLS = """
SELECT c.leaf, s.n_slot, s.sum_slot, c.n, TRY_CAST(c.total AS BIGINT) AS total,
       c.texts > 0 AND NOT coalesce(s.is_text, false) AS stray
FROM (
    SELECT leaf, question, option, rank, count(*) AS n, sum(score) AS total, count(text) AS texts
    FROM answers WHERE template = ? AND question IS NOT NULL
    GROUP BY leaf, question, option, rank
) c LEFT JOIN {slots} s
ON c.question = s.question AND c.option IS NOT DISTINCT FROM s.option AND c.rank IS NOT DISTINCT FROM s.rank
"""
# a leaf's text answers, streamed in leaf order as the walk meets the leaves
_LEAF_TEXTS = """
SELECT leaf, question, text, count(*) AS n FROM answers
WHERE template = ? AND question IS NOT NULL AND text IS NOT NULL
GROUP BY leaf, question, text ORDER BY leaf
"""


class Unsure(Exception):
    """The answers hold a row the layout has no slot for: let the slower way read them."""


def _leaf_vectors(
    con: duckdb.DuckDBPyConnection, template_cid: str, shape: Layout, counted: np.ndarray, name: str
) -> np.ndarray:
    """Each leaf's vector, in row 1 + leaf of the matrix (row 0 stays zero: the matrix
    becomes the prefix sums in place); ``counted`` tells, per leaf, whether its block was
    counted."""
    matrix = np.zeros((len(counted) + 1, shape.size), np.int64)
    with one_scan(con):
        batches = arrow_batches(con.sql(_LEAF_CELLS.format(slots=name), params=[template_cid]), CELL_BATCH)
        try:
            for batch in batches:
                _add_batch(batch, matrix, counted)
        finally:
            batches.close()  # DuckDB's result with it, read to the end or not
    return matrix


def _add_batch(batch: pa.RecordBatch, matrix: np.ndarray, counted: np.ndarray) -> None:
    """Add a batch of the group-by's rows into the leaves' vectors."""
    leaf, n_slot, sum_slot, n, total, stray = batch.columns
    if n_slot.null_count or leaf.null_count or pc.any(stray).as_py():
        raise Unsure
    rows = leaf.to_numpy(zero_copy_only=False).astype(np.int64)
    if rows.size and (rows.min() < 0 or rows.max() >= len(counted) or not counted[rows].all()):
        raise Unsure  # a row of no block, or of a block not counted
    np.add.at(matrix, (rows + 1, n_slot.to_numpy(zero_copy_only=False)), n.to_numpy(zero_copy_only=False))
    if sum_slot.null_count < len(sum_slot):
        # filled, not converted with their nulls: numpy would make floats of them
        has = sum_slot.is_valid().to_numpy(zero_copy_only=False)
        if total.filter(sum_slot.is_valid()).null_count:
            raise Unsure
        slots = sum_slot.fill_null(0).to_numpy(zero_copy_only=False)
        sums = total.fill_null(0).to_numpy(zero_copy_only=False)
        np.add.at(matrix, (rows[has] + 1, slots[has]), sums[has])


def _leaf_texts(
    con: duckdb.DuckDBPyConnection, template_cid: str, shape: Layout
) -> Generator[tuple[int, tuple[Texts, ...]], None, None]:
    """The leaves that hold text answers, in leaf order, each with its text questions'
    counts by text (streamed: nothing else may query ``con`` until it ends or is closed)."""
    if not shape.texts:
        return
    position = {q: i for i, q in enumerate(shape.texts)}
    with one_scan(con):
        batches = arrow_batches(con.sql(_LEAF_TEXTS, params=[template_cid]), CELL_BATCH)
        try:
            current: int | None = None
            mine: tuple[dict[str, int], ...] = ()
            for batch in batches:
                for at, question, text, count in zip(*(c.to_pylist() for c in batch.columns), strict=True):
                    if at != current:
                        if current is not None:
                            yield current, tuple(Texts(c) for c in mine)
                        current, mine = at, tuple({} for _ in position)
                    i = position.get(question)
                    if i is None:  # _add_batch's stray rows would have said so first
                        raise Unsure
                    mine[i][text] = count
            if current is not None:
                yield current, tuple(Texts(c) for c in mine)
        finally:
            batches.close()


def expected_nodes(
    con: duckdb.DuckDBPyConnection,
    template_cid: str,
    shape: Layout,
    blocks: list[LeafBlock],
    keep: Collection[Range] = (),
) -> tuple[Expected, dict[Range, str], Histogram] | None:
    """What ``tally._expected_nodes_by_sum`` gives for the blocks of an effective template,
    or None when this way cannot vouch for it (the caller then takes that way)."""
    if any(block.leaf != i for i, block in enumerate(blocks)):
        return None
    name = f"tally_slots_{id(shape):x}"
    con.register(name, shape.slots)
    counted = np.array([block.counted for block in blocks], bool)
    try:
        matrix = _leaf_vectors(con, template_cid, shape, counted, name)
    except Unsure:
        return None
    finally:
        con.unregister(name)
    # a score's sums are as large as the votes make them (up to 2^53 - 1 each, and a block
    # may hold more votes than members): beyond int64's reach, the sums of Python ints
    if np.abs(matrix.astype(np.float64)).sum(axis=0).max(initial=0.0) >= SUM_LIMIT:
        return None
    prefix = np.cumsum(matrix, axis=0, out=matrix)  # row i: the sum of leaves before i
    del matrix
    texts = _leaf_texts(con, template_cid, shape)
    try:
        return _walk(shape, blocks, counted, prefix, texts, keep)
    except Unsure:
        return None
    finally:
        texts.close()  # DuckDB's result with it


def _walk(
    shape: Layout,
    blocks: list[LeafBlock],
    counted_leaves: np.ndarray,
    prefix: np.ndarray,
    texts: Iterator[tuple[int, tuple[Texts, ...]]],
    keep: Collection[Range],
) -> tuple[Expected, dict[Range, str], Histogram]:
    """Every node of the tree, in post-order: hash, counts text (its digest, and the text
    itself for the nodes of ``keep``) and voters; the root's counts."""
    counted = np.zeros(len(blocks) + 1, np.int64)
    np.cumsum(counted_leaves, out=counted[1:])
    voters = np.zeros(len(blocks) + 1, np.int64)
    np.cumsum([block.members for block in blocks], out=voters[1:])
    out: Expected = {}
    kept: dict[Range, str] = {}
    root = "{}"
    no_texts = tuple(NO_TEXTS for _ in shape.texts)
    next_texts = next(texts, None)  # the next leaf with text answers
    binaries = cid_binaries([block.cid for block in blocks])
    stack: list[tuple[bytes, tuple[Texts, ...]]] = []  # completed subtrees not yet merged
    for chunk in _chunks(merkle.iter_tree_ranges(len(blocks))):
        starts = np.fromiter((node.start for node in chunk), np.int64, len(chunk))
        ends = np.fromiter((node.end for node in chunk), np.int64, len(chunk))
        vectors = (prefix[ends] - prefix[starts]).tolist()
        any_counted = (counted[ends] - counted[starts]).tolist()
        node_voters = (voters[ends] - voters[starts]).tolist()
        for node, numbers, some, members in zip(chunk, vectors, any_counted, node_voters, strict=True):
            if node.mid is None:  # leaves come in order: left to right
                leaf_texts = no_texts
                if next_texts is not None and next_texts[0] == node.start:
                    leaf_texts, next_texts = next_texts[1], next(texts, None)
                entry = (merkle.leaf_hash(binaries[node.start]), leaf_texts)
            else:  # post-order: the two subtrees on top of the stack are this node's children
                right, left = stack.pop(), stack.pop()
                entry = (
                    merkle.node_hash(left[0], right[0]),
                    tuple(a + b for a, b in zip(left[1], right[1], strict=True)),
                )
            text = shape.render(numbers, entry[1]) if some else "{}"
            rng = (node.start, node.end)
            out[rng] = (entry[0], hashlib.sha256(text.encode("utf-8")).digest(), members, node.mid)
            if rng in keep:
                kept[rng] = text
            stack.append(entry)
            root = text
    if next_texts is not None:  # a leaf the walk did not meet: the counted check missed it
        raise Unsure
    total: Histogram = orjson.loads(root) if blocks else {}
    return out, kept, total


def _chunks(nodes: Iterator[merkle.TreeRange]) -> Iterator[list[merkle.TreeRange]]:
    chunk: list[merkle.TreeRange] = []
    for node in nodes:
        chunk.append(node)
        if len(chunk) == NODE_CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
