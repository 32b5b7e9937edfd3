"""Histograms of spec §6: their JSON shape, a validator, zero histograms and addition.

A histogram is kept as its JSON object (``{question code: entry}``) because it is
summed, compared and serialized far more often than it is inspected; the validator
guarantees the shape. Entries:

- select: ``{"type": "select", "ballots": n, "options": {code: count}}``
- rank:   ``{"type": "rank", "ballots": n, "options": {code: [count at rank 1..max]}}``
- score:  ``{"type": "score", "ballots": n, "options": {code: {"count": c, "sum": s}}}``
- text:   ``{"type": "text", "ballots": n, "values": [[text, count], ...]}``, sorted by
  the text's UTF-8 bytes, texts distinct.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from auditor.errors import SchemaError
from auditor.limits import MAX_OPTIONS, MAX_QUESTIONS
from auditor.model.schema import code, describe, integer, over_limit, text

if TYPE_CHECKING:  # pragma: no cover
    from auditor.model.records import BallotTemplate

__all__ = ["Histogram", "add", "add_into", "histogram", "sum_histograms", "zero"]

Histogram = dict[str, dict[str, Any]]


def _count(value: Any, path: str) -> int:
    number = integer(value, path)
    if number < 0:
        raise SchemaError(path, describe(value), "a count ≥ 0")
    return number


def _exact(value: Any, path: str, names: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SchemaError(path, describe(value), "an object")
    if set(value) != set(names):
        raise SchemaError(path, "members " + ", ".join(sorted(value)), "exactly " + ", ".join(names))
    return value


def _options(value: Any, path: str, item: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SchemaError(path, describe(value), "an object of option codes")
    if len(value) > MAX_OPTIONS:
        raise over_limit(path, len(value), "options", MAX_OPTIONS)
    return {code(k, f"{path} member name"): item(v, f"{path}.{k}") for k, v in value.items()}


def _rank_counts(value: Any, path: str) -> list[int]:
    if not isinstance(value, list):
        raise SchemaError(path, describe(value), "an array of counts by rank")
    if len(value) > MAX_OPTIONS:
        raise over_limit(path, len(value), "ranks", MAX_OPTIONS)
    return [_count(v, f"{path}[{i}]") for i, v in enumerate(value)]


def _score_sum(value: Any, path: str) -> dict[str, int]:
    entry = _exact(value, path, ("count", "sum"))
    return {"count": _count(entry["count"], f"{path}.count"), "sum": integer(entry["sum"], f"{path}.sum")}


def _text_values(value: Any, path: str) -> list[list[Any]]:
    if not isinstance(value, list):
        raise SchemaError(path, describe(value), "an array of [text, count] pairs")
    pairs: list[list[Any]] = []
    previous: bytes | None = None
    for i, pair in enumerate(value):
        where = f"{path}[{i}]"
        if not isinstance(pair, list) or len(pair) != 2:
            raise SchemaError(where, describe(pair), "a [text, count] pair")
        answer = text(pair[0], f"{where}[0]")
        key = answer.encode("utf-8", "surrogatepass")
        if previous is not None and key <= previous:
            raise SchemaError(where, f"{answer!r} after a text ≥ it", "texts sorted by UTF-8 bytes, distinct")
        previous = key
        pairs.append([answer, _count(pair[1], f"{where}[1]")])
    return pairs


def histogram(value: Any, path: str) -> Histogram:
    """Validate the JSON shape of a Histogram (spec §6)."""
    if not isinstance(value, dict):
        raise SchemaError(path, describe(value), "a histogram object")
    if len(value) > MAX_QUESTIONS:
        raise over_limit(path, len(value), "questions", MAX_QUESTIONS)
    result: Histogram = {}
    for question, entry in value.items():
        where = f"{path}.{question}"
        code(question, f"{path} member name")
        kind = entry.get("type") if isinstance(entry, dict) else None
        if kind == "text":
            e = _exact(entry, where, ("type", "ballots", "values"))
            result[question] = {
                "type": "text",
                "ballots": _count(e["ballots"], f"{where}.ballots"),
                "values": _text_values(e["values"], f"{where}.values"),
            }
            continue
        items = {"select": _count, "rank": _rank_counts, "score": _score_sum}
        if not isinstance(kind, str) or kind not in items:
            raise SchemaError(f"{where}.type", describe(kind), "select, rank, score or text")
        e = _exact(entry, where, ("type", "ballots", "options"))
        result[question] = {
            "type": kind,
            "ballots": _count(e["ballots"], f"{where}.ballots"),
            "options": _options(e["options"], f"{where}.options", items[kind]),
        }
    return result


def zero(template: BallotTemplate) -> Histogram:
    """The histogram of no votes: every question and option present with zeros."""
    result: Histogram = {}
    for q in template.questions:
        if q.type == "text":
            result[q.code] = {"type": "text", "ballots": 0, "values": []}
        elif q.type == "select":
            result[q.code] = {"type": "select", "ballots": 0, "options": {o.code: 0 for o in q.options}}
        elif q.type == "rank":
            # q.max counters (§6, D8), even where max exceeds the options (those ranks stay
            # 0); a template in use has max ≤ MAX_OPTIONS (TPL-VALID, D35), and the bound
            # keeps a malformed one (max 2^53 - 1) from taking all memory.
            ranks = min(q.max, MAX_OPTIONS)
            result[q.code] = {
                "type": "rank",
                "ballots": 0,
                "options": {o.code: [0] * ranks for o in q.options},
            }
        else:
            result[q.code] = {
                "type": "score",
                "ballots": 0,
                "options": {o.code: {"count": 0, "sum": 0} for o in q.options},
            }
    return result


def add_into(target: Histogram, other: Histogram) -> Histogram:
    """Add ``other`` into ``target`` member-wise (spec §6) and return ``target``.

    Questions or options present in only one side are taken as zero in the other.
    Entries of different types for one question cannot be added: ValueError.
    """
    for question, entry in other.items():
        mine = target.get(question)
        if mine is None:
            target[question] = copy.deepcopy(entry)
            continue
        if mine["type"] != entry["type"]:
            raise ValueError(f"question {question}: cannot add {mine['type']} to {entry['type']}")
        mine["ballots"] += entry["ballots"]
        kind = entry["type"]
        if kind == "text":
            merged: dict[str, int] = {t: c for t, c in mine["values"]}
            for t, c in entry["values"]:
                merged[t] = merged.get(t, 0) + c
            mine["values"] = [[t, merged[t]] for t in sorted(merged, key=_utf8)]
            continue
        options = mine["options"]
        for option, value in entry["options"].items():
            if kind == "select":
                options[option] = options.get(option, 0) + value
            elif kind == "rank":
                current = options.get(option, [])
                width = max(len(current), len(value))
                current = current + [0] * (width - len(current))
                options[option] = [
                    a + b for a, b in zip(current, value + [0] * (width - len(value)), strict=True)
                ]
            else:
                current = options.setdefault(option, {"count": 0, "sum": 0})
                current["count"] += value["count"]
                current["sum"] += value["sum"]
    return target


def add(a: Histogram, b: Histogram) -> Histogram:
    """``a + b`` as a new histogram."""
    return add_into(copy.deepcopy(a), b)


def sum_histograms(histograms: Iterable[Histogram], start: Histogram | None = None) -> Histogram:
    total: Histogram = copy.deepcopy(start) if start is not None else {}
    for h in histograms:
        add_into(total, h)
    return total


def _utf8(value: str) -> bytes:
    return value.encode("utf-8", "surrogatepass")
