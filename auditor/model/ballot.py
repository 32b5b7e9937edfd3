"""Validity of a decrypted vote against its template, and its histogram (spec §6)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from itertools import pairwise
from typing import Any

from auditor.model.entries import Answer, VoteEntry
from auditor.model.histogram import Histogram
from auditor.model.records import BallotTemplate, Question

__all__ = ["NotedCheck", "answer_includes", "count_vote", "valid_vote_check", "vote_problems"]


def answer_includes(question: Question, answer: Answer, values: tuple[str, ...]) -> bool:
    """Whether ``answer`` "includes one of ``values``" for a dependsOn (spec §4.5).

    select/rank: a chosen option is listed; score: a scored option is listed; text:
    the text equals a listed value (docs/decisions.md, D6).
    """
    return _includes(answer.values, values)


def _includes(got: Any, values: tuple[str, ...]) -> bool:
    """answer_includes for an answer's values (a text, or option codes)."""
    if isinstance(got, str):
        return got in values
    return any(v in values for v in got)


def vote_problems(template: BallotTemplate, vote: VoteEntry) -> list[str]:
    """Why ``vote`` is not a valid vote for ``template``; empty when it is (BAL-VALID)."""
    problems: list[str] = []
    answers: dict[str, Answer] = {}
    for answer in vote.answers:
        if answer.question in answers:
            problems.append(f"question {answer.question} is answered twice")
        answers[answer.question] = answer
    known = {q.code for q in template.questions}
    problems.extend(f"question {code} is not on the template" for code in answers if code not in known)
    by_code = {q.code: q for q in template.questions}
    for q in template.questions:
        applicable = True
        if q.dependsOn is not None:
            parent = answers.get(q.dependsOn.question)
            parent_q = by_code.get(q.dependsOn.question)
            applicable = (
                parent is not None
                and parent_q is not None
                and answer_includes(parent_q, parent, q.dependsOn.values)
            )
        given = answers.get(q.code)
        if given is None:
            if q.required and applicable:
                problems.append(f"required question {q.code} is not answered")
            continue
        if not applicable:
            problems.append(f"question {q.code} is answered but its dependsOn does not hold")
            continue
        problems.extend(_answer_problems(q, given))
    return problems


def _answer_problems(q: Question, answer: Answer) -> list[str]:
    values = answer.values
    codes = {o.code for o in q.options}
    if q.type in ("select", "rank"):
        if not isinstance(values, tuple):
            return [f"question {q.code}: a {q.type} answer must be a list of option codes"]
        found = []
        if len(set(values)) != len(values):
            found.append(f"question {q.code}: options repeated")
        if q.type == "select" and list(values) != sorted(values):
            found.append(f"question {q.code}: select values not sorted")
        if not q.min <= len(values) <= q.max:
            found.append(f"question {q.code}: {len(values)} options chosen, expected {q.min}..{q.max}")
        unknown = [v for v in values if v not in codes]
        if unknown:
            found.append(f"question {q.code}: unknown options {', '.join(unknown)}")
        return found
    if q.type == "score":
        if not isinstance(values, dict):
            return [f"question {q.code}: a score answer must map every option to a score"]
        if set(values) != codes:
            return [f"question {q.code}: scored options {sorted(values)} differ from {sorted(codes)}"]
        assert q.score is not None  # TPL-VALID guarantees it for templates in use
        rng = q.score
        bad = [
            o for o, s in values.items() if not (rng.min <= s <= rng.max and (s - rng.min) % rng.step == 0)
        ]
        where = f"question {q.code}: scores out of {rng.min}..{rng.max} step {rng.step}"
        return [f"{where} for {', '.join(sorted(bad))}"] if bad else []
    if not isinstance(values, str):
        return [f"question {q.code}: a text answer must be a string"]
    if not q.min <= len(values) <= q.max:
        return [f"question {q.code}: text of {len(values)} characters, expected {q.min}..{q.max}"]
    return []


def valid_vote_check(template: BallotTemplate) -> Callable[[VoteEntry], bool]:
    """A function that tells, faster, whether ``vote_problems(template, vote)`` is empty.

    The recount checks millions of votes against a few templates: this reads the
    template once (each question's options as a set, its range, its dependsOn) and makes
    one function of it. It answers True only for a vote vote_problems finds nothing
    wrong with; when it answers False, vote_problems says what is wrong (it remains the
    only source of BAL-VALID's words; tests/test_ballot.py holds the two to agree)."""
    by_code = {q.code: q for q in template.questions}
    rules = []
    for q in template.questions:
        parent = None
        if q.dependsOn is not None:
            parent = (q.dependsOn.question, by_code.get(q.dependsOn.question) is not None, q.dependsOn.values)
        rules.append((q.code, _value_check(q), q.required, parent))
    known = frozenset(by_code)

    def check(vote: VoteEntry) -> bool:
        answers: dict[str, Answer] = {}
        for answer in vote.answers:
            if answer.question in answers:
                return False
            answers[answer.question] = answer
        if not known.issuperset(answers):
            return False
        for code, value_ok, required, parent in rules:
            given = answers.get(code)
            applicable = True
            if parent is not None:
                on = answers.get(parent[0])
                applicable = on is not None and parent[1] and _includes(on.values, parent[2])
            if given is None:
                if required and applicable:
                    return False
            elif not applicable or not value_ok(given.values):
                return False
        return True

    return check


class NotedCheck:
    """``valid_vote_check`` in two parts, for votes whose answers repeat: what one answer
    alone tells (:meth:`answer_ok`: a question of the template, values it accepts), noted
    once per distinct answer (``VoteReader``'s note, D57), and the rules across a vote's
    answers (:meth:`valid`: no question twice, required and dependsOn). ``valid`` answers
    True exactly when valid_vote_check would (tests/test_ballot.py holds them to it)."""

    __slots__ = ("_rules", "_values_ok")

    def __init__(self, template: BallotTemplate) -> None:
        by_code = {q.code: q for q in template.questions}
        checks: dict[str, list[Callable[[object], bool]]] = {}
        for q in template.questions:  # a code twice (TPL-VALID refuses it): both must accept
            checks.setdefault(q.code, []).append(_value_check(q))
        self._values_ok = {
            code: found[0] if len(found) == 1 else partial(_all_accept, tuple(found))
            for code, found in checks.items()
        }
        rules = []
        for q in template.questions:
            if not q.required and q.dependsOn is None:
                continue  # no rule but its values', which answer_ok checks
            parent = None
            if q.dependsOn is not None:
                parent = (q.dependsOn.question, q.dependsOn.question in by_code, q.dependsOn.values)
            rules.append((q.code, q.required, parent))
        self._rules = tuple(rules)

    def answer_ok(self, answer: Answer) -> bool:
        """Whether the answer's question is the template's and its values are valid for it."""
        check = self._values_ok.get(answer.question)
        return check is not None and check(answer.values)

    def valid(self, notes: Sequence[Sequence[Any]]) -> bool:
        """Whether a vote is valid, from its answers' notes, each ``(question, answer_ok,
        values, …)`` in the vote's order."""
        answered: dict[str, Any] = {}
        for note in notes:
            question = note[0]
            if not note[1] or question in answered:
                return False
            answered[question] = note[2]
        for code, required, parent in self._rules:
            applicable = True
            if parent is not None:
                got = answered.get(parent[0]) if parent[1] else None
                applicable = got is not None and _includes(got, parent[2])
            if code in answered:
                if not applicable:
                    return False
            elif required and applicable:
                return False
        return True


def _all_accept(checks: tuple[Callable[[object], bool], ...], values: object) -> bool:
    return all(check(values) for check in checks)


def _value_check(q: Question) -> Callable[[object], bool]:
    """Whether an answer's values have nothing _answer_problems would report, for ``q``."""
    codes = frozenset(o.code for o in q.options)
    low, high = q.min, q.max
    if q.type == "select":

        def select(values: object) -> bool:
            # unique and sorted is strictly increasing
            return (
                isinstance(values, tuple)
                and low <= len(values) <= high
                and all(a < b for a, b in pairwise(values))
                and codes.issuperset(values)
            )

        return select
    if q.type == "rank":

        def rank(values: object) -> bool:
            return (
                isinstance(values, tuple)
                and low <= len(values) <= high
                and len(set(values)) == len(values)
                and codes.issuperset(values)
            )

        return rank
    if q.type == "score":
        if q.score is None:
            return lambda values: False  # vote_problems asserts: let it
        smin, smax, step = q.score.min, q.score.max, q.score.step

        def score(values: object) -> bool:
            return (
                isinstance(values, dict)
                and values.keys() == codes
                and all(smin <= s <= smax and (s - smin) % step == 0 for s in values.values())
            )

        return score

    def text(values: object) -> bool:
        return isinstance(values, str) and low <= len(values) <= high

    return text


def count_vote(histogram: Histogram, template: BallotTemplate, vote: VoteEntry) -> None:
    """Add a *valid* vote into ``histogram`` (which holds every question, e.g. from zero())."""
    by_code = {q.code: q for q in template.questions}
    for answer in vote.answers:
        q = by_code[answer.question]
        entry = histogram[q.code]
        entry["ballots"] += 1
        values = answer.values
        if q.type == "select":
            for v in values:
                entry["options"][v] += 1
        elif q.type == "rank":
            for rank, v in enumerate(values):
                entry["options"][v][rank] += 1
        elif q.type == "score":
            assert isinstance(values, dict)
            for option, score in values.items():
                cell = entry["options"][option]
                cell["count"] += 1
                cell["sum"] += score
        else:
            assert isinstance(values, str)
            pairs = entry["values"]
            for pair in pairs:
                if pair[0] == values:
                    pair[1] += 1
                    break
            else:
                pairs.append([values, 1])
                pairs.sort(key=lambda p: p[0].encode("utf-8", "surrogatepass"))  # as add_into
