"""The recount's results as cache rows, and back (auditor.verify.cache, ``block`` parts).

A recount worker answers a run of blocks with one batch of Arrow rows: the valid votes
(answers.VOTE_SCHEMA), their answers rows (answers.CELL_SCHEMA, each pointing at its
vote's position in the batch), the voter entries and the invalid nonces, all in block
order. The cache keeps one row per block (cache.BLOCK_SCHEMA) with that block's share of
each as a list, its cells pointing at the vote's position *in the block*. The block's
leaf is not kept: it changes when blocks are added to its template, and is put back from
the current tree when the row is reused.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc

from auditor.verify.answers import CELL_SCHEMA, VOTE_SCHEMA
from auditor.verify.cache import BLOCK_SCHEMA, CELL, ENTRY, PROBLEM, VOTER

__all__ = ["BlockLike", "Reused", "cache_rows", "from_cache"]


class BlockLike(Protocol):
    """What the recount says of one block (recount.BlockResult)."""

    cid: str
    template: str
    members: int
    counted: bool
    problems: list[tuple[str, str]]
    errors: list[str]


Reused = tuple[
    list[
        tuple[str, str, int, int, bool, list[tuple[str, str]]]
    ],  # cid, template, leaf, members, counted, problems
    pa.RecordBatch,  # votes (answers.VOTE_SCHEMA)
    pa.RecordBatch,  # cells (answers.CELL_SCHEMA)
    pa.RecordBatch,  # voter entries: block, key, registrant
    pa.RecordBatch,  # invalid nonces: template, block, vote, nonce
]


def _offsets(codes: pa.Array, groups: int) -> pa.Array:
    """List offsets of rows grouped in order, from each row's group number (0..groups-1)."""
    if codes.null_count or (len(codes) > 1 and not pc.all(pc.greater_equal(codes[1:], codes[:-1])).as_py()):
        raise ValueError("the worker's rows are not grouped by block in block order")
    counts = [0] * groups
    for code in codes.to_pylist():
        counts[code] += 1
    offsets = [0]
    for n in counts:
        offsets.append(offsets[-1] + n)
    return pa.array(offsets, pa.int32())


def _lists(offsets: pa.Array, columns: Sequence[pa.Array], struct: pa.DataType) -> pa.Array:
    values = pa.StructArray.from_arrays(list(columns), fields=list(struct))
    return pa.ListArray.from_arrays(offsets, values)


def cache_rows(
    keys: Sequence[bytes],
    blocks: Sequence[BlockLike],
    votes: pa.RecordBatch,
    cells: pa.RecordBatch,
    voters: pa.RecordBatch,
    nonces: pa.RecordBatch,
) -> pa.Table:
    """One cache row per block of a worker's batch (``keys[i]`` is ``blocks[i]``'s key);
    a block the recount could not read to the end (an internal error) gets none."""
    cids = pa.array([b.cid for b in blocks], pa.string())

    def block_of(column: pa.Array) -> pa.Array:
        return pc.index_in(column, value_set=cids)

    vote_block = block_of(votes.column("block"))
    vote_offsets = _offsets(vote_block, len(blocks))
    # cells point at their vote's position in the batch: make it the position in the block
    at = cells.column("at")
    cell_block = pc.take(vote_block, at)
    start = pc.take(vote_offsets, cell_block)
    cell_columns = [pc.subtract(at, start).cast(pa.int32()), *cells.columns[1:]]
    table = pa.table(
        {
            "fp": pa.array(keys, pa.binary(32)),
            "cid": cids,
            "template": pa.array([b.template for b in blocks], pa.string()),
            "members": pa.array([b.members for b in blocks], pa.int32()),
            "counted": pa.array([b.counted for b in blocks], pa.bool_()),
            "problems": pa.array(
                [[{"check": c, "message": m} for c, m in b.problems] for b in blocks], pa.list_(PROBLEM)
            ),
            "votes": _lists(vote_offsets, [votes.column("vote"), votes.column("nonce")], ENTRY),
            "cells": _lists(_offsets(cell_block, len(blocks)), cell_columns, CELL),
            "voters": _lists(
                _offsets(block_of(voters.column("block")), len(blocks)),
                [voters.column("key"), voters.column("registrant")],
                VOTER,
            ),
            "nonces": _lists(
                _offsets(block_of(nonces.column("block")), len(blocks)),
                [nonces.column("vote"), nonces.column("nonce")],
                ENTRY,
            ),
        },
        schema=BLOCK_SCHEMA,
    )
    return table.filter(pa.array([not b.errors for b in blocks], pa.bool_()))


def from_cache(rows: pa.Table, leaves: dict[str, int]) -> Reused:
    """A worker's batch again, from cache rows (in the order wanted) and the blocks'
    current leaves."""
    rows = rows.combine_chunks()
    cids = rows.column("cid").combine_chunks()
    templates = rows.column("template").combine_chunks()
    leaf = pa.array([leaves[c] for c in cids.to_pylist()], pa.int32())

    def flat(name: str) -> tuple[pa.StructArray, pa.Array]:
        lists = rows.column(name).combine_chunks()
        return lists.flatten(), pc.list_parent_indices(lists)

    entries, parents = flat("votes")
    votes = pa.RecordBatch.from_arrays(
        [
            templates.take(parents),
            cids.take(parents),
            leaf.take(parents),
            entries.field("vote"),
            entries.field("nonce"),
        ],
        schema=VOTE_SCHEMA,
    )
    lengths = pc.list_value_length(rows.column("votes").combine_chunks()).to_pylist()
    starts, total = [], 0
    for n in lengths:
        starts.append(total)
        total += n
    cell_values, cell_parents = flat("cells")
    at = pc.add(cell_values.field("at"), pa.array(starts, pa.int32()).take(cell_parents)).cast(pa.int32())
    cells = pa.RecordBatch.from_arrays(
        [at, *(cell_values.field(f.name) for f in CELL_SCHEMA if f.name != "at")], schema=CELL_SCHEMA
    )
    voter_values, voter_parents = flat("voters")
    voters = pa.RecordBatch.from_arrays(
        [cids.take(voter_parents), voter_values.field("key"), voter_values.field("registrant")],
        names=["block", "key", "registrant"],
    )
    nonce_values, nonce_parents = flat("nonces")
    nonces = pa.RecordBatch.from_arrays(
        [
            templates.take(nonce_parents),
            cids.take(nonce_parents),
            nonce_values.field("vote"),
            nonce_values.field("nonce"),
        ],
        names=["template", "block", "vote", "nonce"],
    )
    blocks = [
        (cid, template, leaves[cid], members, counted, [(p["check"], p["message"]) for p in problems])
        for cid, template, members, counted, problems in zip(
            cids.to_pylist(),
            templates.to_pylist(),
            rows.column("members").to_pylist(),
            rows.column("counted").to_pylist(),
            rows.column("problems").to_pylist(),
            strict=True,
        )
    ]
    return blocks, votes, cells, voters, nonces
