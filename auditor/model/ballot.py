"""Validity of a decrypted vote against its template, and its histogram (spec §6)."""

from __future__ import annotations

from auditor.model.entries import Answer, VoteEntry
from auditor.model.histogram import Histogram
from auditor.model.records import BallotTemplate, Question

__all__ = ["answer_includes", "count_vote", "vote_problems"]


def answer_includes(question: Question, answer: Answer, values: tuple[str, ...]) -> bool:
    """Whether ``answer`` "includes one of ``values``" for a dependsOn (spec §4.5).

    select/rank: a chosen option is listed; score: a scored option is listed; text:
    the text equals a listed value (docs/decisions.md, D6).
    """
    got = answer.values
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
