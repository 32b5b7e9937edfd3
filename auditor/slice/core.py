"""The little of spec §2, §5.3 and §6 a slice verifier needs, on the standard library alone.

The rest of vtaudit has these in :mod:`auditor.model` and :mod:`auditor.crypto`; this
module re-implements the few it needs so that the verifier (:mod:`auditor.slice.verify`)
imports nothing but the standard library and PyNaCl and can be packaged for a phone or a
browser (docs/slice-proofs.md). Kept minimal: strict base64url, strict JSON, JCS, CIDs,
the RFC 9162 audit path, typed access to untrusted JSON, ballot rules and histograms.
``tests/test_slice.py`` checks these against :mod:`auditor.model` and :mod:`auditor.crypto`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from auditor.errors import AuditError

MAX_RANKS = 1024
"""Rank counters of one histogram entry: ``auditor.limits.MAX_OPTIONS``, repeated here
so that the verifier imports nothing else of vtaudit (tests/test_slice.py holds them equal)."""

__all__ = [
    "ProofError",
    "Question",
    "View",
    "add_histograms",
    "b64u_decode",
    "b64u_encode",
    "cid_of",
    "cid_to_binary",
    "count_vote",
    "jcs",
    "leaf_hash",
    "node_hash",
    "parse_json",
    "parse_questions",
    "root_from_path",
    "sha256",
    "split",
    "vote_problems",
    "zero_histogram",
]

MAX_SAFE_INT = 2**53 - 1
CID_PREFIX = bytes([0x01, 0x80, 0x04, 0x12, 0x20])  # spec §2 (37-byte CIDs: docs/decisions.md D1)
_CID_TEXT = re.compile(r"bagaaiera[a-z2-7]{52}")
_B64U = re.compile(r"[A-Za-z0-9_-]*")
_CODE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class ProofError(AuditError):
    """A slice proof (or a record in it) that is not of the form docs/slice-proofs.md gives."""


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


# ---------------------------------------------------------------------------- spec §2


def b64u_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64u_decode(text: object, what: str, length: int | None = None) -> bytes:
    """Strict base64url: no padding, URL alphabet, canonical trailing bits (spec §2)."""
    if not isinstance(text, str) or len(text) % 4 == 1 or not _B64U.fullmatch(text):
        raise ProofError(f"{what}: got {_show(text)}, expected base64url without padding")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as e:  # pragma: no cover - the pattern screens first
        raise ProofError(f"{what}: got {_show(text)}, expected base64url") from e
    if b64u_encode(raw) != text:
        raise ProofError(f"{what}: got {_show(text)}, expected canonical base64url (unused bits zero)")
    if length is not None and len(raw) != length:
        raise ProofError(f"{what}: got {len(raw)} bytes, expected {length}")
    return raw


class _Rejected(ValueError):
    pass


def _no_float(text: str) -> Any:
    raise _Rejected(f"the number {text} (floating point)")


def _no_constant(text: str) -> Any:
    raise _Rejected(f"the constant {text}")


def _safe_int(text: str) -> int:
    if len(text.lstrip("-")) > 16 or abs(int(text)) > MAX_SAFE_INT:
        raise _Rejected(f"the integer {text[:20]} outside ±(2^53-1)")
    return int(text)


def _members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for name, value in pairs:
        if name in obj or not name.isascii():
            raise _Rejected(f"the member name {name!r} (repeated or not ASCII)")
        obj[name] = value
    return obj


MAX_JSON_BYTES = 32 * 1024 * 1024  # a 4,096-member block's proof is about 5 MB
MAX_JSON_DEPTH = 64  # as auditor.limits: a proof nests about 8 deep
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def too_deep(data: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether JSON bytes nest deeper than ``limit``, found before any parsing: strings are
    cut out (their brackets do not count), then the brackets are walked once."""
    if data.count(b"[") + data.count(b"{") <= limit:
        return False
    depth = 0
    for byte in _STRING.sub(b"", data).translate(None, _NOT_BRACKETS):
        depth += 1 if byte in (0x5B, 0x7B) else -1
        if depth > limit:
            return True
    return False


def parse_json(data: bytes, what: str) -> Any:
    """JSON as spec §2 restricts it: UTF-8, no floats, safe integers, unique ASCII names;
    at most 32 MiB and 64 levels deep, refused before parsing."""
    if len(data) > MAX_JSON_BYTES:
        raise ProofError(f"{what}: {len(data):,} bytes, more than a proof may have ({MAX_JSON_BYTES:,})")
    if too_deep(data):
        raise ProofError(f"{what}: nested more than {MAX_JSON_DEPTH} levels deep")
    try:
        return json.loads(
            data.decode("utf-8"),
            object_pairs_hook=_members,
            parse_float=_no_float,
            parse_constant=_no_constant,
            parse_int=_safe_int,
        )
    except UnicodeDecodeError as e:
        raise ProofError(f"{what}: not UTF-8 text (byte {e.start})") from e
    except _Rejected as e:
        raise ProofError(f"{what}: {e}, which spec §2 does not allow") from e
    except json.JSONDecodeError as e:
        raise ProofError(f"{what}: not JSON ({e.msg} at line {e.lineno} column {e.colno})") from e
    except RecursionError as e:
        raise ProofError(f"{what}: nested too deeply") from e


def jcs(value: Any) -> bytes:
    """RFC 8785 bytes of a value restricted as in spec §2 (compact, sorted, raw UTF-8)."""
    try:
        return json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode("utf-8")
    except (UnicodeEncodeError, ValueError, TypeError) as e:
        raise ProofError(f"a value with no canonical JSON form: {e}") from e


def cid_of(data: bytes) -> str:
    """The text CID of ``data`` (spec §2)."""
    return "b" + base64.b32encode(CID_PREFIX + sha256(data)).decode("ascii").lower().rstrip("=")


def cid_to_binary(text: object, what: str) -> bytes:
    """The 37-byte binary form of a canonical text CID."""
    if not isinstance(text, str) or not _CID_TEXT.fullmatch(text) or text[-1] not in "aq":
        raise ProofError(f"{what}: got {_show(text)}, expected a CID ('bagaaiera…', 61 characters)")
    return base64.b32decode(text[1:].upper() + "====")


def _show(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe(value: object) -> str:
    kinds = {bool: "a boolean", int: "an integer", str: "a string", list: "an array", dict: "an object"}
    return "null" if value is None else kinds.get(type(value), type(value).__name__)


# ---------------------------------------------------------------------------- untrusted JSON


class View:
    """Typed access to one JSON object of a proof: each getter checks the member's type
    and raises ProofError naming the member, what was found and what was expected."""

    __slots__ = ("path", "value")

    def __init__(self, value: object, path: str) -> None:
        if not isinstance(value, dict):
            raise ProofError(f"{path}: got {describe(value)}, expected an object")
        self.value: dict[str, Any] = value
        self.path = path

    def exact(self, *names: str, optional: Sequence[str] = ()) -> View:
        """Require exactly these members (and perhaps the optional ones)."""
        missing = [n for n in names if n not in self.value]
        extra = sorted(set(self.value) - set(names) - set(optional))
        if missing or extra:
            parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
                [f"unknown {', '.join(extra)}"] if extra else []
            )
            raise ProofError(f"{self.path}: {'; '.join(parts)} (members: {', '.join(names)})")
        return self

    def get(self, name: str) -> Any:
        if name not in self.value:
            raise ProofError(f"{self.path}: the member {name} is missing")
        return self.value[name]

    def _fail(self, name: str, expected: str) -> ProofError:
        return ProofError(f"{self.path}.{name}: got {describe(self.value.get(name))}, expected {expected}")

    def text(self, name: str) -> str:
        value = self.get(name)
        if not isinstance(value, str):
            raise self._fail(name, "a string")
        return value

    def integer(self, name: str, minimum: int | None = 0) -> int:
        value = self.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or (minimum is not None and value < minimum):
            raise self._fail(name, "an integer" + (f" ≥ {minimum}" if minimum is not None else ""))
        return value

    def boolean(self, name: str) -> bool:
        value = self.get(name)
        if not isinstance(value, bool):
            raise self._fail(name, "true or false")
        return value

    def array(self, name: str) -> list[Any]:
        value = self.get(name)
        if not isinstance(value, list):
            raise self._fail(name, "an array")
        return value

    def texts(self, name: str) -> list[str]:
        items = self.array(name)
        if not all(isinstance(v, str) for v in items):
            raise self._fail(name, "an array of strings")
        return items

    def obj(self, name: str) -> View:
        return View(self.get(name), f"{self.path}.{name}")

    def opt_obj(self, name: str) -> View | None:
        return None if self.get(name) is None else self.obj(name)

    def cid(self, name: str) -> str:
        value = self.get(name)
        cid_to_binary(value, f"{self.path}.{name}")
        return str(value)

    def opt_cid(self, name: str) -> str | None:
        return None if self.get(name) is None else self.cid(name)

    def binary(self, name: str, length: int | None = None) -> bytes:
        return b64u_decode(self.get(name), f"{self.path}.{name}", length)

    def code(self, name: str) -> str:
        value = self.text(name)
        if not _CODE.fullmatch(value):
            raise self._fail(name, "a code (^[A-Za-z0-9_.-]{1,64}$)")
        return value


# ---------------------------------------------------------------------------- spec §5.3


def leaf_hash(leaf: bytes) -> bytes:
    return sha256(b"\x00" + leaf)


def node_hash(left: bytes, right: bytes) -> bytes:
    return sha256(b"\x01" + left + right)


def split(n: int) -> int:
    """The largest power of two strictly less than ``n`` (n ≥ 2): the left subtree's size."""
    return 1 << ((n - 1).bit_length() - 1)


def root_from_path(leaf: bytes, index: int, size: int, path: Sequence[bytes]) -> bytes | None:
    """The root an RFC 9162 §2.1.3.2 audit path leads to from ``leaf`` (its hash is taken
    here), or None when the path cannot fit a tree of ``size`` leaves."""
    if not 0 <= index < size or len(path) > 64:
        return None
    fn, sn, r = index, size - 1, leaf_hash(leaf)
    for p in path:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None


# ---------------------------------------------------------------------------- spec §4.5, §6


@dataclass(frozen=True)
class Question:
    code: str
    title: str
    type: str
    options: tuple[tuple[str, str], ...]  # (code, title)
    min: int
    max: int
    score: tuple[int, int, int] | None  # min, max, step
    required: bool
    depends: tuple[str, tuple[str, ...]] | None  # question, values

    def option_title(self, code: str) -> str:
        return next((title for c, title in self.options if c == code), code)


def parse_questions(body: View) -> list[Question]:
    """The questions of a ballot template body (spec §4.5), shapes checked."""
    questions = []
    for i, item in enumerate(body.array("questions")):
        q = View(item, f"{body.path}.questions[{i}]").exact(
            "code", "title", "type", "options", "min", "max", "score", "required", "dependsOn"
        )
        kind = q.text("type")
        if kind not in ("select", "rank", "score", "text"):
            raise ProofError(f"{q.path}.type: got {kind!r}, expected select, rank, score or text")
        options = []
        for j, option in enumerate(q.array("options")):
            o = View(option, f"{q.path}.options[{j}]").exact("code", "title")
            options.append((o.code("code"), o.text("title")))
        score = q.opt_obj("score")
        depends = q.opt_obj("dependsOn")
        if depends is not None:
            depends.exact("question", "values")
        questions.append(
            Question(
                code=q.code("code"),
                title=q.text("title"),
                type=kind,
                options=tuple(options),
                min=q.integer("min"),
                max=q.integer("max"),
                score=None
                if score is None
                else (score.integer("min", None), score.integer("max", None), score.integer("step", 1)),
                required=q.boolean("required"),
                depends=None
                if depends is None
                else (depends.code("question"), tuple(depends.texts("values"))),
            )
        )
    return questions


def _includes(answer: object, values: tuple[str, ...]) -> bool:
    """A dependsOn holds when the parent's answer includes one of ``values`` (decisions D6)."""
    if isinstance(answer, str):
        return answer in values
    return any(v in values for v in answer) if isinstance(answer, list | dict) else False


def vote_problems(questions: list[Question], answers: list[Any]) -> list[str]:
    """Why the answers of a vote entry are not a valid vote (spec §6); empty when valid."""
    problems: list[str] = []
    given: dict[str, Any] = {}
    for i, item in enumerate(answers):
        if not isinstance(item, dict) or set(item) != {"question", "values"}:
            return [f"answer {i} is not a {{question, values}} object"]
        code, values = item["question"], item["values"]
        if not isinstance(code, str) or code in given:
            problems.append(f"question {code!r} is answered twice or is not a code")
        given[str(code)] = values
    known = {q.code: q for q in questions}
    problems += [f"question {c} is not on the ballot" for c in given if c not in known]
    for q in questions:
        applicable = True
        if q.depends is not None:
            parent = q.depends[0]
            applicable = parent in given and _includes(given[parent], q.depends[1])
        if q.code not in given:
            if q.required and applicable:
                problems.append(f"the required question {q.code} is not answered")
        elif not applicable:
            problems.append(f"question {q.code} is answered though its condition does not hold")
        else:
            problems += _answer_problems(q, given[q.code])
    return problems


def _answer_problems(q: Question, values: Any) -> list[str]:
    codes = {c for c, _ in q.options}
    if q.type in ("select", "rank"):
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            return [f"question {q.code}: the answer is not a list of options"]
        found = []
        if len(set(values)) != len(values) or (q.type == "select" and values != sorted(values)):
            found.append(f"question {q.code}: options repeated or (select) not sorted")
        if not q.min <= len(values) <= q.max:
            found.append(f"question {q.code}: {len(values)} options chosen, expected {q.min} to {q.max}")
        if any(v not in codes for v in values):
            found.append(f"question {q.code}: an option that is not on the ballot")
        return found
    if q.type == "score":
        if not isinstance(values, dict) or set(values) != codes or q.score is None:
            return [f"question {q.code}: not every option is scored"]
        low, high, step = q.score
        if any(
            not isinstance(s, int) or isinstance(s, bool) or not low <= s <= high or (s - low) % step
            for s in values.values()
        ):
            return [f"question {q.code}: a score outside {low} to {high} in steps of {step}"]
        return []
    if not isinstance(values, str) or not q.min <= len(values) <= q.max:
        return [f"question {q.code}: not a text of {q.min} to {q.max} characters"]
    return []


def zero_histogram(questions: list[Question]) -> dict[str, Any]:
    """The histogram of no votes: every question and option, zeros (spec §6)."""
    out: dict[str, Any] = {}
    for q in questions:
        if q.type == "text":
            out[q.code] = {"type": "text", "ballots": 0, "values": []}
        elif q.type == "select":
            out[q.code] = {"type": "select", "ballots": 0, "options": {c: 0 for c, _ in q.options}}
        elif q.type == "rank":
            ranks = min(q.max, MAX_RANKS)  # max counters (§6), bounded as in auditor.model.histogram
            out[q.code] = {"type": "rank", "ballots": 0, "options": {c: [0] * ranks for c, _ in q.options}}
        else:
            out[q.code] = {
                "type": "score",
                "ballots": 0,
                "options": {c: {"count": 0, "sum": 0} for c, _ in q.options},
            }
    return out


def count_vote(histogram: dict[str, Any], answers: list[Any]) -> None:
    """Add one *valid* vote's answers to a histogram made by :func:`zero_histogram`."""
    for item in answers:
        entry = histogram[item["question"]]
        entry["ballots"] += 1
        values = item["values"]
        if entry["type"] == "select":
            for v in values:
                entry["options"][v] += 1
        elif entry["type"] == "rank":
            for rank, v in enumerate(values):
                entry["options"][v][rank] += 1
        elif entry["type"] == "score":
            for option, score in values.items():
                entry["options"][option]["count"] += 1
                entry["options"][option]["sum"] += score
        else:
            entry["values"] = _text_add(entry["values"], [[values, 1]])


def _count(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProofError(f"{what}: got {describe(value)}, expected an integer count")
    return value


def _text_add(a: list[Any], b: list[Any]) -> list[list[Any]]:
    merged: dict[str, int] = {}
    for pairs in (a, b):
        for pair in pairs:
            if not isinstance(pair, list) or len(pair) != 2 or not isinstance(pair[0], str):
                raise ProofError(f"a text histogram entry {_show(pair)} is not a [text, count] pair")
            merged[pair[0]] = merged.get(pair[0], 0) + _count(pair[1], "a text count")
    return [[t, merged[t]] for t in sorted(merged, key=lambda t: t.encode("utf-8", "surrogatepass"))]


def add_histograms(a: object, b: object, what: str) -> dict[str, Any]:
    """``a + b`` member-wise (spec §6), a missing question or option counting as zero."""
    left, right = View(a, what).value, View(b, what).value
    out: dict[str, Any] = {}
    for code in sorted(set(left) | set(right)):
        x, y = left.get(code), right.get(code)
        if x is None or y is None:
            out[code] = json.loads(jcs(x if y is None else y))
            continue
        ex, ey = View(x, f"{what}.{code}"), View(y, f"{what}.{code}")
        kind = ex.text("type")
        if ey.text("type") != kind:
            raise ProofError(f"{what}.{code}: a {kind} entry cannot be added to a {ey.text('type')} entry")
        entry: dict[str, Any] = {"type": kind, "ballots": ex.integer("ballots") + ey.integer("ballots")}
        if kind == "text":
            entry["values"] = _text_add(ex.array("values"), ey.array("values"))
        elif kind in ("select", "rank", "score"):
            ox, oy = ex.obj("options").value, ey.obj("options").value
            entry["options"] = {
                o: _add_cell(kind, ox.get(o), oy.get(o), f"{what}.{code}.{o}") for o in ox | oy
            }
        else:
            raise ProofError(f"{what}.{code}.type: got {kind!r}, expected select, rank, score or text")
        out[code] = entry
    return out


def _add_cell(kind: str, x: object, y: object, what: str) -> Any:
    if kind == "select":
        return _count(x if x is not None else 0, what) + _count(y if y is not None else 0, what)
    if kind == "rank":
        xs, ys = x if x is not None else [], y if y is not None else []
        if not isinstance(xs, list) or not isinstance(ys, list):
            raise ProofError(f"{what}: expected an array of counts by rank")
        width = max(len(xs), len(ys))
        xs, ys = xs + [0] * (width - len(xs)), ys + [0] * (width - len(ys))
        return [_count(p, what) + _count(q, what) for p, q in zip(xs, ys, strict=True)]
    cells = [View(c, what).exact("count", "sum") for c in (x, y) if c is not None]
    return {
        "count": sum(c.integer("count") for c in cells),
        "sum": sum(c.integer("sum", None) for c in cells),
    }
