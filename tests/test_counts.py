"""The tally tree's nodes from count vectors (auditor/verify/counts.py, D57) against the
member-wise sums of histograms they replace: every node's hash, counts text, voters and
children, the root's counts and the texts the findings show, on random elections over
templates of every question type; and the cases where the fast way must step aside."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import duckdb
import pytest

from auditor.model.encoding import b64u_encode, cid_of
from auditor.model.entries import Answer, VoteEntry
from auditor.model.histogram import histogram, zero
from auditor.model.records import BallotTemplate
from auditor.store.tables import json_text
from auditor.verify import counts, tally
from auditor.verify.answers import ANSWERS, AnswerRows, AnswersWriter, LeafBlock, block_histograms

TEXTS = ["yes", "é", "\uffff", "😀", 'a"b\\c', "%d %s", "z" * 30, "line\nbreak"]


def _template(*questions: dict[str, Any]) -> BallotTemplate:
    cid = cid_of(b"x")
    body = {
        "election": cid,
        "authority": cid,
        "administration": cid,
        "district": "north",
        "revision": 1,
        "questions": list(questions),
    }
    return BallotTemplate.parse(body)


def _q(code: str, kind: str, options: list[str], **changes: Any) -> dict[str, Any]:
    q: dict[str, Any] = {
        "code": code,
        "title": code,
        "type": kind,
        "options": [{"code": o, "title": o} for o in options],
        "min": 0,
        "max": len(options),
        "score": None,
        "required": False,
        "dependsOn": None,
    }
    q.update(changes)
    return q


EVERY_KIND = _template(
    _q("mayor", "select", ["zed", "amy", "bob"], max=2),
    _q("comment", "text", [], min=1, max=40),
    _q("route", "rank", ["river", "market", "airport"], max=5),  # more ranks than options
    _q("budget", "score", ["parks", "roads"], max=0, score={"min": -3, "max": 6, "step": 3}),
    _q("aside", "text", [], min=1, max=40),
    _q("b", "select", ["y", "n"], max=1),
)
NO_TEXT = _template(_q("one", "select", ["a"], max=1), _q("two", "rank", ["p", "q"], max=2))


def _vote(template: BallotTemplate, rng: random.Random) -> VoteEntry:
    answers = []
    for q in template.questions:
        if rng.random() < 0.3:
            continue  # not answered
        codes = [o.code for o in q.options]
        if q.type == "select":
            values: Any = tuple(sorted(rng.sample(codes, rng.randint(0, q.max))))
        elif q.type == "rank":
            values = tuple(rng.sample(codes, rng.randint(0, len(codes))))
        elif q.type == "score":
            assert q.score is not None
            values = {c: rng.randrange(q.score.min, q.score.max + 1, q.score.step) for c in codes}
        else:
            values = rng.choice(TEXTS)
        answers.append(Answer(q.code, values))
    return VoteEntry("t", b64u_encode(rng.randbytes(16)), tuple(answers))


def _election(
    tmp_path: Path, template: BallotTemplate, blocks: int, seed: int, uncounted: float = 0.15
) -> tuple[duckdb.DuckDBPyConnection, list[LeafBlock]]:
    """A connection with an ``answers`` view of random valid votes in ``blocks`` blocks, a
    share ``uncounted`` of them not counted, some counted without a vote."""
    rng = random.Random(seed)
    kinds = {q.code: q.type for q in template.questions}
    con = duckdb.connect()
    writer = AnswersWriter(tmp_path / f"audit-{seed}")
    leaves = []
    for leaf in range(blocks):
        cid = cid_of(f"block {seed} {leaf}".encode())
        counted = rng.random() >= uncounted
        members = rng.randint(0, 6) if counted else rng.randint(1, 6)
        leaves.append(LeafBlock(cid, leaf, members, counted))
        if counted and members:
            rows = AnswerRows()
            for index in range(members):
                rows.add("t", cid, leaf, index, _vote(template, rng), kinds)
            writer.write(*rows.batches())
    writer.close(con)
    return con, leaves


def _by_sum(
    con: duckdb.DuckDBPyConnection, template: BallotTemplate, blocks: list[LeafBlock], keep: Any = ()
) -> Any:
    return tally._expected_nodes_by_sum(blocks, block_histograms(con, "t", template, blocks), keep)


@pytest.mark.parametrize(
    ("template", "blocks", "seed"),
    [(EVERY_KIND, 1, 1), (EVERY_KIND, 2, 2), (EVERY_KIND, 37, 3), (EVERY_KIND, 300, 4), (NO_TEXT, 129, 5)],
)
def test_vectors_give_every_node_the_sums_would(
    template: BallotTemplate, blocks: int, seed: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(counts, "NODE_CHUNK", 7)  # several chunks, cut inside subtrees
    con, leaves = _election(tmp_path, template, blocks, seed)
    everything = {(start, end) for start, end in _by_sum(con, template, leaves)[0]}
    fast = counts.expected_nodes(con, "t", counts.layout(template), leaves, everything)
    assert fast is not None
    want = _by_sum(con, template, leaves, everything)
    assert fast[0] == want[0]  # hashes, counts digests, voters, children
    assert fast[1] == want[1] and len(fast[1]) == 2 * blocks - 1  # every text
    assert fast[2] == want[2]
    root = fast[1][(0, blocks)]
    if any(leaf.counted for leaf in leaves):
        assert histogram(json.loads(root), "root") == fast[2]  # a valid histogram
        assert json_text(fast[2]) == root


def test_a_tree_of_uncounted_blocks_is_empty_histograms(tmp_path: Path) -> None:
    con, leaves = _election(tmp_path, EVERY_KIND, 5, 6, uncounted=1.0)
    assert not any(b.counted for b in leaves)
    fast = counts.expected_nodes(con, "t", counts.layout(EVERY_KIND), leaves, {(0, 5)})
    assert fast is not None and fast[1] == {(0, 5): "{}"} and fast[2] == {}
    assert fast[0] == _by_sum(con, EVERY_KIND, leaves)[0]


def test_the_layout_is_the_zero_histograms_text() -> None:
    shape = counts.layout(EVERY_KIND)
    assert shape.texts == ("aside", "comment")  # in the text's (sorted) order
    zeros = shape.render([0] * shape.size, (counts.NO_TEXTS, counts.NO_TEXTS))
    assert zeros == json_text(zero(EVERY_KIND))
    # route: 3 options x 5 ranks; budget: 2 x (count, sum); the selects; a ballots slot per question
    assert shape.size == 6 + 15 + 4 + 3 + 2
    some = shape.render(list(range(1, shape.size + 1)), (counts.Texts({"b": 2, "a": 1}), counts.NO_TEXTS))
    value = json.loads(some)
    assert json_text(value) == some
    assert value["aside"]["values"] == [["a", 1], ["b", 2]] and value["comment"]["values"] == []
    numbers = [value[q]["ballots"] for q in sorted(value)]
    assert sorted(numbers) == numbers  # the slots are in the text's order


CHANGED = {
    "option not in the template": ("option", "CASE WHEN option = 'amy' THEN 'ann' ELSE option END"),
    "text on a select answer": (
        "text",
        "CASE WHEN kind = 'select' AND option IS NULL THEN 'x' ELSE text END",
    ),
}


@pytest.mark.parametrize("change", ["row of an uncounted block", *CHANGED])
def test_the_fast_way_steps_aside_when_it_cannot_vouch_for_the_answers(change: str, tmp_path: Path) -> None:
    con, leaves = _election(tmp_path, EVERY_KIND, 20, 7)
    if change == "row of an uncounted block":
        first = next(b for b in leaves if b.counted and b.members)
        leaves[first.leaf] = LeafBlock(first.cid, first.leaf, first.members, False)
    else:
        column, value = CHANGED[change]
        con.execute(
            f"CREATE OR REPLACE TEMP VIEW answers AS SELECT * REPLACE ({value} AS {column}) "
            f"FROM read_parquet('{tmp_path / 'audit-7' / ANSWERS}')"
        )
        assert con.sql(f"SELECT count(*) FROM answers WHERE {column} IN ('ann', 'x')").fetchall()[0][0] > 0
    assert counts.expected_nodes(con, "t", counts.layout(EVERY_KIND), leaves) is None


HUGE = _template(_q("budget", "score", ["parks"], max=0, score={"min": 0, "max": 2**53 - 1, "step": 1}))


@pytest.mark.parametrize(
    ("votes", "fast"),
    [
        ([600, 600], False),  # each block's sum fits in int64, their sum does not
        ([1100], False),  # one block's sum is beyond int64 already
        ([0, 300], True),  # far from int64's bounds: the vectors add them
    ],
)
def test_scores_beyond_int64_are_added_as_python_integers(
    votes: list[int], fast: bool, tmp_path: Path
) -> None:
    # blocks of one member holding more valid votes than that (BLK-SHAPE says so, but the
    # recount reads them): the bound is what the answers hold, not the members
    con = duckdb.connect()
    writer = AnswersWriter(tmp_path / "audit")
    leaves = []
    for leaf, n in enumerate(votes):
        cid = cid_of(f"huge {leaf}".encode())
        leaves.append(LeafBlock(cid, leaf, 1, True))
        rows = AnswerRows()
        for index in range(n):
            vote = VoteEntry("t", b64u_encode(bytes(16)), (Answer("budget", {"parks": 2**53 - 1}),))
            rows.add("t", cid, leaf, index, vote, {"budget": "score"})
        writer.write(*rows.batches())
    writer.close(con)
    result = counts.expected_nodes(con, "t", counts.layout(HUGE), leaves)
    assert (result is not None) == fast
    audit: Any = type("_Audit", (), {"con": con})()
    expected = tally._expected(audit, "t", HUGE, leaves)
    assert expected == _by_sum(con, HUGE, leaves)
    assert expected[2]["budget"]["options"]["parks"] == {"count": sum(votes), "sum": sum(votes) * (2**53 - 1)}


def test_check_tally_takes_the_slower_way_when_the_fast_one_steps_aside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    con, leaves = _election(tmp_path, EVERY_KIND, 40, 8)
    want = _by_sum(con, EVERY_KIND, leaves)

    class _Audit:
        pass

    audit: Any = _Audit()
    audit.con = con
    assert tally._expected(audit, "t", EVERY_KIND, leaves) == want
    monkeypatch.setattr(counts, "expected_nodes", lambda *args: None)
    assert tally._expected(audit, "t", EVERY_KIND, leaves) == want
    assert (
        tally._expected(audit, "t", None, [LeafBlock(b.cid, b.leaf, b.members, False) for b in leaves])[2]
        == {}
    )
