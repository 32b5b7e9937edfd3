"""Ballot validity, counting and histogram arithmetic (spec §6), over a hand-built template."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from auditor.errors import EncodingError, SchemaError
from auditor.model.ballot import answer_includes, count_vote, vote_problems
from auditor.model.encoding import parse_json
from auditor.model.entries import VoteEntry
from auditor.model.histogram import Histogram, add, add_into, histogram, sum_histograms, zero
from auditor.model.records import BallotTemplate
from tests.conftest import load_vectors

CID = load_vectors()["cid"][0]["cid"]
NONCE = "AAAAAAAAAAAAAAAAAAAAAA"  # 16 zero bytes


def _options(*codes: str) -> list[dict[str, str]]:
    return [{"code": c, "title": c.title()} for c in codes]


def _q(code: str, type_: str, options: list[dict[str, str]], lo: int, hi: int, **more: Any) -> Any:
    return {
        "code": code,
        "title": code.title(),
        "type": type_,
        "options": options,
        "min": lo,
        "max": hi,
        "score": more.get("score"),
        "required": more.get("required", False),
        "dependsOn": more.get("dependsOn"),
    }


TEMPLATE = BallotTemplate.parse(
    {
        "election": CID,
        "authority": CID,
        "administration": CID,
        "district": "north",
        "revision": 1,
        "questions": [
            # select exactly one, required
            _q("mayor", "select", _options("alice", "bob", "carol"), 1, 1, required=True),
            # select 0..2
            _q("council", "select", _options("a", "b", "c", "d"), 0, 2),
            # rank 1..2, required but only when the mayor answer includes alice or bob
            _q(
                "route",
                "rank",
                _options("x", "y", "z"),
                1,
                2,
                required=True,
                dependsOn={"question": "mayor", "values": ["alice", "bob"]},
            ),
            # score every option in -2, 0, 2, 4
            _q(
                "budget",
                "score",
                _options("parks", "roads"),
                0,
                0,
                score={"min": -2, "max": 4, "step": 2},
            ),
            # text of 1..10 characters
            _q("comment", "text", [], 1, 10),
        ],
    }
)


def test_template_is_well_formed() -> None:
    assert TEMPLATE.problems() == []


def vote(*answers: tuple[str, Any]) -> VoteEntry:
    entry = {
        "template": CID,
        "nonce": NONCE,
        "answers": [{"question": q, "values": v} for q, v in answers],
    }
    return VoteEntry.parse(entry, "vote")


FULL = (
    ("mayor", ["alice"]),
    ("council", ["a", "c"]),
    ("route", ["z", "x"]),
    ("budget", {"parks": -2, "roads": 4}),
    ("comment", "hi"),
)

VALID = [
    ("only the required question", vote(("mayor", ["carol"]))),
    ("every question", vote(*FULL)),
    ("answers in another order", vote(*reversed(FULL))),
    ("empty select within 0..2", vote(("mayor", ["bob"]), ("council", []), ("route", ["y"]))),
    ("rank in any order", vote(("mayor", ["bob"]), ("route", ["z", "y"]))),
    ("score at the bounds", vote(("mayor", ["carol"]), ("budget", {"parks": 4, "roads": -2}))),
    ("score zero", vote(("mayor", ["carol"]), ("budget", {"parks": 0, "roads": 2}))),
    ("text of 1 character", vote(("mayor", ["carol"]), ("comment", "x"))),
    ("text of 10 characters", vote(("mayor", ["carol"]), ("comment", "0123456789"))),
    ("characters, not bytes", vote(("mayor", ["carol"]), ("comment", "é" * 10))),
    ("astral characters", vote(("mayor", ["carol"]), ("comment", "\U0001f68c" * 10))),
]


@pytest.mark.parametrize("entry", [c[1] for c in VALID], ids=[c[0] for c in VALID])
def test_valid_votes(entry: VoteEntry) -> None:
    assert vote_problems(TEMPLATE, entry) == []


INVALID = [
    (
        "too many selected",
        vote(("mayor", ["bob"]), ("council", ["a", "b", "c"]), ("route", ["x"])),
        "council: 3 options chosen, expected 0..2",
    ),
    (
        "too few selected",
        vote(("mayor", [])),
        "mayor: 0 options chosen, expected 1..1",
    ),
    (
        "too many ranked",
        vote(("mayor", ["bob"]), ("route", ["x", "y", "z"])),
        "route: 3 options chosen, expected 1..2",
    ),
    (
        "select not sorted",
        vote(("mayor", ["carol"]), ("council", ["c", "a"])),
        "council: select values not sorted",
    ),
    (
        "select option repeated",
        vote(("mayor", ["carol"]), ("council", ["a", "a"])),
        "council: options repeated",
    ),
    (
        "rank option repeated",
        vote(("mayor", ["bob"]), ("route", ["x", "x"])),
        "route: options repeated",
    ),
    (
        "unknown select option",
        vote(("mayor", ["dave"])),
        "mayor: unknown options dave",
    ),
    ("unknown rank option", vote(("mayor", ["bob"]), ("route", ["w"])), "route: unknown options w"),
    (
        "unknown question",
        vote(("mayor", ["carol"]), ("dogcatcher", ["rex"])),
        "question dogcatcher is not on the template",
    ),
    (
        "answered twice",
        vote(("mayor", ["carol"]), ("mayor", ["carol"])),
        "question mayor is answered twice",
    ),
    (
        "required question missing",
        vote(("council", ["a"])),
        "required question mayor is not answered",
    ),
    (
        "required when dependsOn holds",
        vote(("mayor", ["alice"])),
        "required question route is not answered",
    ),
    (
        "answered while dependsOn fails",
        vote(("mayor", ["carol"]), ("route", ["x"])),
        "question route is answered but its dependsOn does not hold",
    ),
    (
        "score above max",
        vote(("mayor", ["carol"]), ("budget", {"parks": 6, "roads": 0})),
        "budget: scores out of -2..4 step 2 for parks",
    ),
    (
        "score below min",
        vote(("mayor", ["carol"]), ("budget", {"parks": 0, "roads": -4})),
        "budget: scores out of -2..4 step 2 for roads",
    ),
    (
        "score off step",
        vote(("mayor", ["carol"]), ("budget", {"parks": 1, "roads": 3})),
        "budget: scores out of -2..4 step 2 for parks, roads",
    ),
    (
        "score missing an option",
        vote(("mayor", ["carol"]), ("budget", {"parks": 0})),
        "budget: scored options ['parks'] differ from ['parks', 'roads']",
    ),
    (
        "score extra option",
        vote(("mayor", ["carol"]), ("budget", {"parks": 0, "roads": 0, "zoo": 0})),
        "budget: scored options ['parks', 'roads', 'zoo'] differ",
    ),
    (
        "text too long",
        vote(("mayor", ["carol"]), ("comment", "x" * 11)),
        "comment: text of 11 characters, expected 1..10",
    ),
    (
        "text too short",
        vote(("mayor", ["carol"]), ("comment", "")),
        "comment: text of 0 characters, expected 1..10",
    ),
    (
        "text for select",
        vote(("mayor", "carol")),
        "mayor: a select answer must be a list of option codes",
    ),
    (
        "scores for rank",
        vote(("mayor", ["bob"]), ("route", {"x": 1})),
        "route: a rank answer must be a list of option codes",
    ),
    (
        "list for score",
        vote(("mayor", ["carol"]), ("budget", ["parks"])),
        "budget: a score answer must map every option to a score",
    ),
    (
        "list for text",
        vote(("mayor", ["carol"]), ("comment", ["hi"])),
        "comment: a text answer must be a string",
    ),
]


@pytest.mark.parametrize(("entry", "problem"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_votes(entry: VoteEntry, problem: str) -> None:
    problems = vote_problems(TEMPLATE, entry)
    assert len(problems) == 1, problems
    assert problem in problems[0]


def test_several_problems_are_all_reported() -> None:
    entry = vote(("council", ["d", "a", "a"]), ("comment", ""), ("extra", "x"))
    problems = vote_problems(TEMPLATE, entry)
    # extra unknown; mayor missing; council repeated, unsorted, 3 > 2; comment too short
    assert len(problems) == 6, problems
    assert any("required question mayor" in p for p in problems)
    assert any("extra is not on the template" in p for p in problems)


@pytest.mark.parametrize(
    ("parent", "values", "expected"),
    [
        (("mayor", ["alice"]), ("alice", "bob"), True),
        (("mayor", ["carol"]), ("alice", "bob"), False),
        (("council", ["a", "d"]), ("d",), True),
        (("council", []), ("a",), False),
        (("budget", {"parks": 0, "roads": 2}), ("roads",), True),
        (("comment", "yes"), ("yes",), True),
        (("comment", "yes please"), ("yes",), False),
    ],
)
def test_answer_includes(parent: tuple[str, Any], values: tuple[str, ...], expected: bool) -> None:
    answer = vote(parent).answers[0]
    question = TEMPLATE.question(parent[0])
    assert question is not None
    assert answer_includes(question, answer, values) is expected


@pytest.mark.parametrize(
    ("values", "path"),
    [
        (1, "vote.answers[0].values"),
        ([1], "vote.answers[0].values[0]"),
        ({"a": True}, "vote.answers[0].values.a"),
    ],
)
def test_answer_values_schema(values: Any, path: str) -> None:
    with pytest.raises(SchemaError) as info:
        vote(("mayor", values))
    assert info.value.path == path


# ---------------------------------------------------------------------------- counting

ZERO = {
    "mayor": {"type": "select", "ballots": 0, "options": {"alice": 0, "bob": 0, "carol": 0}},
    "council": {"type": "select", "ballots": 0, "options": {"a": 0, "b": 0, "c": 0, "d": 0}},
    "route": {"type": "rank", "ballots": 0, "options": {"x": [0, 0], "y": [0, 0], "z": [0, 0]}},
    "budget": {
        "type": "score",
        "ballots": 0,
        "options": {"parks": {"count": 0, "sum": 0}, "roads": {"count": 0, "sum": 0}},
    },
    "comment": {"type": "text", "ballots": 0, "values": []},
}

VOTES = [
    vote(*FULL),  # alice; a, c; z > x; parks -2, roads 4; "hi"
    vote(
        ("mayor", ["bob"]),
        ("council", ["c"]),
        ("route", ["x"]),
        ("budget", {"parks": 2, "roads": 4}),
        ("comment", "ok"),
    ),
    vote(("mayor", ["carol"]), ("comment", "hi")),
    vote(("mayor", ["alice"]), ("council", []), ("route", ["x", "y"])),
    vote(("comment", "Hi"), ("mayor", ["carol"])),
    vote(("mayor", ["carol"]), ("comment", "école")),
]

# Counted by hand from VOTES above.
COUNTED = {
    "mayor": {"type": "select", "ballots": 6, "options": {"alice": 2, "bob": 1, "carol": 3}},
    # an empty selection is an answer: 3 ballots
    "council": {"type": "select", "ballots": 3, "options": {"a": 1, "b": 0, "c": 2, "d": 0}},
    # counts at rank 1, rank 2: z>x, x, x>y
    "route": {"type": "rank", "ballots": 3, "options": {"x": [2, 1], "y": [0, 1], "z": [1, 0]}},
    "budget": {
        "type": "score",
        "ballots": 2,
        "options": {"parks": {"count": 2, "sum": 0}, "roads": {"count": 2, "sum": 8}},
    },
    # sorted by UTF-8 bytes: "H" < "h" < "o" < "é" (0xc3)
    "comment": {
        "type": "text",
        "ballots": 5,
        "values": [["Hi", 1], ["hi", 2], ["ok", 1], ["école", 1]],
    },
}


def test_zero() -> None:
    assert zero(TEMPLATE) == ZERO


def test_count_votes_by_hand() -> None:
    assert all(vote_problems(TEMPLATE, v) == [] for v in VOTES)
    counted = zero(TEMPLATE)
    for entry in VOTES:
        count_vote(counted, TEMPLATE, entry)
    assert counted == COUNTED


def test_count_one_vote_each_then_add() -> None:
    singles = []
    for entry in VOTES:
        single = zero(TEMPLATE)
        count_vote(single, TEMPLATE, entry)
        singles.append(single)
    assert sum_histograms(singles, start=zero(TEMPLATE)) == COUNTED
    assert sum_histograms(reversed(singles)) == COUNTED


def test_count_text_with_a_lone_surrogate() -> None:
    # parse_json rejects a lone surrogate escape (RFC 8785); a value built in memory can
    # still carry one, and counting must not crash on it, ordering it as add_into and
    # the histogram validator do.
    data = (
        f'{{"template":"{CID}","nonce":"{NONCE}","answers":'
        '[{"question":"mayor","values":["carol"]},{"question":"comment","values":"\\ud800"}]}'
    )
    with pytest.raises(EncodingError, match="lone surrogate"):
        parse_json(data.encode("ascii"))
    odd = VoteEntry.parse(json.loads(data), "vote")
    assert odd.answers[1].values == "\ud800"
    plain = vote(("mayor", ["carol"]), ("comment", "ok"))
    counted = zero(TEMPLATE)
    for entry in (odd, plain):
        count_vote(counted, TEMPLATE, entry)
    assert counted["comment"]["values"] == [["ok", 1], ["\ud800", 1]]  # ED A0 80 after "o"
    singles = []
    for entry in (plain, odd):
        single = zero(TEMPLATE)
        count_vote(single, TEMPLATE, entry)
        singles.append(single)
    assert sum_histograms(singles) == counted
    assert histogram(copy.deepcopy(counted), "counts") == counted


@pytest.mark.parametrize("value", [ZERO, COUNTED], ids=["zero", "counted"])
def test_histogram_validator_accepts(value: Histogram) -> None:
    assert histogram(copy.deepcopy(value), "counts") == value


def _set_at(h: Histogram, path: str, value: Any) -> None:
    """Set the member at a "/"-separated path, e.g. "route/options/x"."""
    *parents, last = path.split("/")
    target: Any = h
    for key in parents:
        target = target[key]
    target[last] = value


HISTOGRAM_DEFECTS = [
    ("negative ballots", "mayor/ballots", -1, "counts.mayor.ballots"),
    ("bool count", "mayor/options/alice", True, "counts.mayor.options.alice"),
    ("negative rank count", "route/options/x", [1, -1], "counts.route.options.x[1]"),
    ("rank count not a list", "route/options/x", 3, "counts.route.options.x"),
    ("negative score count", "budget/options/parks/count", -1, "counts.budget.options.parks.count"),
    ("score cell without sum", "budget/options/parks", {"count": 1}, "counts.budget.options.parks"),
    ("text repeated", "comment/values", [["hi", 1], ["hi", 1]], "counts.comment.values[1]"),
    ("text unsorted", "comment/values", [["b", 1], ["a", 1]], "counts.comment.values[1]"),
    ("text triple", "comment/values", [["a", 1, 2]], "counts.comment.values[0]"),
    ("negative text count", "comment/values", [["a", -1]], "counts.comment.values[0][1]"),
    ("text with options", "comment/options", {}, "counts.comment"),
    ("unknown type", "mayor/type", "approval", "counts.mayor.type"),
    ("type an array", "mayor/type", ["select"], "counts.mayor.type"),
    ("question code invalid", "bad code", ZERO["mayor"], "counts member name"),
]


@pytest.mark.parametrize(
    ("where", "value", "path"), [c[1:] for c in HISTOGRAM_DEFECTS], ids=[c[0] for c in HISTOGRAM_DEFECTS]
)
def test_histogram_validator_rejects(where: str, value: Any, path: str) -> None:
    counts = copy.deepcopy(COUNTED)
    _set_at(counts, where, copy.deepcopy(value))
    with pytest.raises(SchemaError) as info:
        histogram(counts, "counts")
    assert info.value.path == path


def test_score_sum_may_be_negative() -> None:
    value = copy.deepcopy(ZERO)
    value["budget"]["options"]["parks"] = {"count": 1, "sum": -2}
    assert histogram(value, "counts") == value


def test_add_by_hand() -> None:
    a = {
        "q": {"type": "rank", "ballots": 1, "options": {"x": [1]}},
        "t": {"type": "text", "ballots": 2, "values": [["b", 1], ["é", 1]]},
    }
    b = {
        "q": {"type": "rank", "ballots": 2, "options": {"x": [0, 2], "y": [1, 1]}},
        "t": {"type": "text", "ballots": 1, "values": [["a", 1], ["b", 2]]},
        "s": {"type": "select", "ballots": 1, "options": {"n": 1}},
    }
    assert add(a, b) == {
        "q": {"type": "rank", "ballots": 3, "options": {"x": [1, 2], "y": [1, 1]}},
        "t": {"type": "text", "ballots": 3, "values": [["a", 1], ["b", 3], ["é", 1]]},
        "s": {"type": "select", "ballots": 1, "options": {"n": 1}},
    }


def test_add_rejects_different_types() -> None:
    with pytest.raises(ValueError, match="cannot add"):
        add_into(copy.deepcopy(ZERO), {"mayor": ZERO["comment"]})


# ---------------------------------------------------------------------------- properties

COUNTS = st.integers(0, 10**6)
TEXTS = st.text(st.characters(exclude_categories=("Cs",)), max_size=6)


@st.composite
def histograms(draw: st.DrawFn) -> Histogram:
    """Any histogram of TEMPLATE's shape (the counts need not come from real votes)."""
    result: Histogram = {}
    for q in TEMPLATE.questions:
        codes = [o.code for o in q.options]
        ballots = draw(COUNTS)
        if q.type == "select":
            result[q.code] = {
                "type": "select",
                "ballots": ballots,
                "options": {c: draw(COUNTS) for c in codes},
            }
        elif q.type == "rank":
            ranks = st.lists(COUNTS, min_size=q.max, max_size=q.max)
            result[q.code] = {
                "type": "rank",
                "ballots": ballots,
                "options": {c: draw(ranks) for c in codes},
            }
        elif q.type == "score":
            cell = st.fixed_dictionaries({"count": COUNTS, "sum": st.integers(-(10**6), 10**6)})
            result[q.code] = {
                "type": "score",
                "ballots": ballots,
                "options": {c: draw(cell) for c in codes},
            }
        else:
            texts = draw(st.dictionaries(TEXTS, st.integers(1, 1000), max_size=4))
            values = [[t, texts[t]] for t in sorted(texts, key=lambda t: t.encode("utf-8"))]
            result[q.code] = {"type": "text", "ballots": ballots, "values": values}
    return result


@given(histograms(), histograms())
def test_add_is_commutative(a: Histogram, b: Histogram) -> None:
    a_before, b_before = copy.deepcopy(a), copy.deepcopy(b)
    assert add(a, b) == add(b, a)
    assert (a, b) == (a_before, b_before)  # add does not change its inputs


@given(histograms(), histograms(), histograms())
def test_add_is_associative(a: Histogram, b: Histogram, c: Histogram) -> None:
    total = add(add(a, b), c)
    assert total == add(a, add(b, c))
    assert total == sum_histograms([a, b, c])
    assert histogram(copy.deepcopy(total), "counts") == total  # sums stay well formed


@given(histograms())
def test_zero_is_the_identity(a: Histogram) -> None:
    assert histogram(copy.deepcopy(a), "counts") == a
    assert add(zero(TEMPLATE), a) == a
    assert add(a, zero(TEMPLATE)) == a
    assert sum_histograms([], start=a) == a
