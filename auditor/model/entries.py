"""The entries carried inside ciphertexts (spec §4.8): vote entries and voter entries."""

from __future__ import annotations

import re
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from auditor.errors import SchemaError
from auditor.limits import MAX_OPTIONS, MAX_QUESTIONS, MAX_TEXT_CHARS
from auditor.model.encoding import (
    CID_CANONICAL,
    MAX_SAFE_INT,
    b64u_bytes,
    b64u_pattern,
    canonical_value,
    is_cid_text,
    jcs,
    sha256,
)
from auditor.model.schema import (
    _CODE,
    Cid,
    Code,
    Key,
    Signature64,
    Struct,
    array_of,
    b64u,
    code,
    describe,
    integer,
    over_limit,
    text,
)

__all__ = [
    "Answer",
    "VoteEntry",
    "VoteReader",
    "VoterEntry",
    "accept_vote_entry",
    "accept_voter_entry",
    "read_voter_entry",
    "voter_entry_digest",
]

AnswerValue = tuple[str, ...] | dict[str, int] | str


def answer_values(value: Any, path: str) -> AnswerValue:
    """select/rank: [code]; score: {code: int}; text: str (spec §6). Fit is checked by BAL-VALID."""
    if isinstance(value, str):
        return text(value, path)
    if isinstance(value, list | dict) and len(value) > MAX_OPTIONS:
        raise over_limit(path, len(value), "options", MAX_OPTIONS)
    if isinstance(value, list):
        return tuple(code(v, f"{path}[{i}]") for i, v in enumerate(value))
    if isinstance(value, dict):
        return {code(k, f"{path} member name"): integer(v, f"{path}.{k}") for k, v in value.items()}
    raise SchemaError(path, describe(value), "an array of option codes, an object of scores or a text")


@dataclass(frozen=True, slots=True)
class Answer(Struct):
    question: Code
    values: Annotated[AnswerValue, answer_values]


@dataclass(frozen=True, slots=True)
class VoteEntry(Struct):
    template: Cid
    nonce: Annotated[str, b64u(16)]
    answers: Annotated[tuple[Answer, ...], array_of(Answer.parse, max_items=MAX_QUESTIONS, noun="answers")]


@dataclass(frozen=True, slots=True)
class VoterEntry(Struct):
    template: Cid
    registrant: Cid
    key: Key
    signature: Signature64

    @property
    def digest(self) -> bytes:
        return voter_entry_digest(self.key, self.registrant, self.template)


# the JCS bytes of a voter entry's digest input when key, registrant and template need no
# escaping, written out (members sorted: body, type, v)
_VOTER_DIGEST_JCS = b'{"body":{"key":"%s","registrant":"%s","template":"%s"},"type":"voter_entry","v":1}'


def voter_entry_digest(key: str, registrant: str, template: str) -> bytes:
    """sha256(JCS({"v":1,"type":"voter_entry","body":{key, registrant, template}})) (spec §4.8)."""
    if _PLAIN.fullmatch(key) and _PLAIN.fullmatch(registrant) and _PLAIN.fullmatch(template):
        return sha256(_VOTER_DIGEST_JCS % (key.encode(), registrant.encode(), template.encode()))
    body = {"key": key, "registrant": registrant, "template": template}
    return sha256(jcs({"v": 1, "type": "voter_entry", "body": body}))


# ---------------------------------------------------------------------------- accept-only parsers
#
# The recount parses two entries per vote. accept_vote_entry and accept_voter_entry take
# canonical_value's value of an entry (orjson's, for bytes that are its own sorted
# output: so no duplicate member names) and return what ``VoteEntry.parse`` / ``VoterEntry.parse``
# would return for it, or None when they are not sure it is valid; the caller then runs
# the strict parser, which words every refusal (the same contract as the harvest's bulk
# path, D40; tests/test_recount_fast.py holds them to it). Each check below is the
# validator's own test, written for the types orjson produces.

_PLAIN = re.compile(r"[A-Za-z0-9_-]*")  # b64u and CID text: JSON strings with nothing to escape
_KEY = b64u_pattern(32)
_SIGNATURE = b64u_pattern(64)
_NONCE = b64u_pattern(16)
_VOTE_MEMBERS = frozenset(("template", "nonce", "answers"))
_VOTER_MEMBERS = frozenset(("template", "registrant", "key", "signature"))
_ANSWER_MEMBERS = frozenset(("question", "values"))
# Codes seen to match _CODE: a set lookup instead of a pattern for the few codes an
# election's votes repeat (bounded: past the bound, codes are matched every time).
_CODES: set[str] = set()
_MAX_CODES = 4096


def _is_code(value: Any) -> bool:
    if type(value) is not str:
        return False
    if value in _CODES:
        return True
    if _CODE.fullmatch(value) is not None:
        if len(_CODES) < _MAX_CODES:
            _CODES.add(value)
        return True
    return False


def _accept_values(value: Any) -> AnswerValue | None:
    kind = type(value)
    if kind is str:
        return value if len(value) <= MAX_TEXT_CHARS else None
    if kind is list:
        if len(value) > MAX_OPTIONS or not all(map(_is_code, value)):
            return None
        return tuple(value)
    if kind is dict:
        if len(value) > MAX_OPTIONS or not all(map(_is_code, value)):
            return None
        for score in value.values():
            if type(score) is not int or not -MAX_SAFE_INT <= score <= MAX_SAFE_INT:
                return None
        return typing.cast(dict[str, int], value)
    return None


def accept_vote_entry(value: Any) -> VoteEntry | None:
    """``VoteEntry.parse(value)`` when it surely succeeds, else None (see above)."""
    if type(value) is not dict or value.keys() != _VOTE_MEMBERS:
        return None
    template, nonce, items = value["template"], value["nonce"], value["answers"]
    if not is_cid_text(template) or type(nonce) is not str or _NONCE.fullmatch(nonce) is None:
        return None
    if type(items) is not list or len(items) > MAX_QUESTIONS:
        return None
    answers = []
    for item in items:
        if type(item) is not dict or item.keys() != _ANSWER_MEMBERS or not _is_code(item["question"]):
            return None
        values = _accept_values(item["values"])
        if values is None:
            return None
        answers.append(Answer(item["question"], values))
    return VoteEntry(template, nonce, tuple(answers))


def accept_voter_entry(value: Any) -> VoterEntry | None:
    """``VoterEntry.parse(value)`` when it surely succeeds, else None (see above)."""
    if type(value) is not dict or value.keys() != _VOTER_MEMBERS:
        return None
    template, registrant, key, signature = (
        value["template"],
        value["registrant"],
        value["key"],
        value["signature"],
    )
    if not (is_cid_text(template) and is_cid_text(registrant)):
        return None
    if type(key) is not str or type(signature) is not str:
        return None
    if _KEY.fullmatch(key) is None or _SIGNATURE.fullmatch(signature) is None:
        return None
    return VoterEntry(template, registrant, key, signature)


# ---------------------------------------------------------------------------- byte readers
#
# Faster still, for the recount's hot loop: an honest client's entry is JCS bytes with a
# fixed frame, so most of it can be checked as bytes, without orjson's parse and sorted
# output. Each reader returns what accept_vote_entry / accept_voter_entry would return for
# canonical_value(plaintext), or None when it is not sure (the caller then takes the
# parse_entry path); tests/test_recount_fast.py holds them to it (D49).

_VOTER_BYTES = re.compile(
    (
        f'\\{{"key":"({_KEY.pattern})","registrant":"({CID_CANONICAL})",'
        f'"signature":"({_SIGNATURE.pattern})","template":"({CID_CANONICAL})"\\}}'
    ).encode("ascii")
)
_NONCE_BYTES = re.compile(_NONCE.pattern.encode("ascii"))
_NONCE_CHARS = 22  # b64u of 16 bytes
_VOTE_HEAD = b'{"answers":['
_VOTE_NONCE = b'],"nonce":"'
_ANSWER_SEPARATOR = b"},{"
_MAX_PIECES = 65_536  # answer objects a VoteReader remembers ...
_MAX_PIECE_BYTES = 512  # ... of at most this size (a text answer may have a million characters)


def read_voter_entry(plaintext: bytes) -> tuple[VoterEntry, bytes, bytes, bytes] | None:
    """The voter entry of canonical ``plaintext``, with its key and signature decoded and
    its digest, when the bytes are exactly
    ``{"key":K,"registrant":R,"signature":S,"template":T}`` with canonical b64u K (32
    bytes) and S (64 bytes) and canonical CIDs R and T: then they are orjson's sorted
    output for that value (no character of them needs escaping), and accept_voter_entry
    accepts it. None otherwise. The digest is ``entry.digest``, hashed from the bytes
    read (none of them needs escaping in its JCS text either)."""
    match = _VOTER_BYTES.fullmatch(plaintext)
    if match is None:
        return None
    key, registrant, signature, template = match.groups()
    entry = VoterEntry(
        template.decode("ascii"), registrant.decode("ascii"), key.decode("ascii"), signature.decode("ascii")
    )
    digest = sha256(_VOTER_DIGEST_JCS % (key, registrant, template))
    return entry, b64u_bytes(key), b64u_bytes(signature), digest


class VoteReader:
    """Reads the vote entries that name one template from their bytes.

    A canonical vote entry is ``{"answers":[A1,…,An],"nonce":N,"template":T}``. With T
    this reader's template and N a canonical nonce, the entry is canonical exactly when
    each answer object is, and its value is then made of theirs: the reader splits the
    array at ``},{``, checks each piece it has not seen before as accept_vote_entry checks
    an answer (a piece that is not a whole, canonical, accepted answer object makes the
    reader unsure: a text answer holding ``},{``, for instance) and remembers it, so an
    election's repeated answers are checked once (at most _MAX_PIECES of them, each of at
    most _MAX_PIECE_BYTES: long texts are checked every time). ``note``, when given, is
    called on each accepted answer as it is remembered, and :meth:`read_noted` returns
    its results beside the entry (the recount notes what it needs of an answer once,
    D57). Not thread-safe."""

    __slots__ = ("_note", "_pieces", "_tail", "template")

    def __init__(self, template: str, note: Callable[[Answer], Any] | None = None) -> None:
        self.template = template
        self._tail = b'","template":"' + template.encode("ascii") + b'"}'
        self._pieces: dict[bytes, tuple[Answer, Any] | None] = {}
        self._note = note

    def read(self, plaintext: bytes) -> VoteEntry | None:
        """The vote entry of ``plaintext`` when it is canonical, names this reader's
        template and accept_vote_entry would accept it; else None (not sure)."""
        got = self.read_noted(plaintext)
        return None if got is None else got[0]

    def read_noted(self, plaintext: bytes) -> tuple[VoteEntry, list[Any]] | None:
        """What :meth:`read` returns, with each answer's note (None without ``note``)."""
        tail = self._tail
        if not (plaintext.startswith(_VOTE_HEAD) and plaintext.endswith(tail)):
            return None
        nonce_end = len(plaintext) - len(tail)
        nonce_start = nonce_end - _NONCE_CHARS
        answers_end = nonce_start - len(_VOTE_NONCE)
        if (
            answers_end < len(_VOTE_HEAD)
            or not plaintext.startswith(_VOTE_NONCE, answers_end)
            or _NONCE_BYTES.fullmatch(plaintext, nonce_start, nonce_end) is None
        ):
            return None
        nonce = plaintext[nonce_start:nonce_end].decode("ascii")
        if answers_end == len(_VOTE_HEAD):
            return VoteEntry(self.template, nonce, ()), []
        inner = plaintext[len(_VOTE_HEAD) : answers_end]
        if inner[:1] != b"{" or inner[-1:] != b"}":
            return None
        pieces = inner[1:-1].split(_ANSWER_SEPARATOR)
        if len(pieces) > MAX_QUESTIONS:
            return None
        known = self._pieces
        answers = []
        notes = []
        for piece in pieces:
            seen = known.get(piece, _UNSEEN)
            if seen is _UNSEEN:
                answer = _accept_answer(b"{" + piece + b"}")
                seen = None if answer is None else (answer, self._note(answer) if self._note else None)
                if len(known) < _MAX_PIECES and len(piece) <= _MAX_PIECE_BYTES:
                    known[piece] = seen
            if seen is None:
                return None
            answers.append(seen[0])
            notes.append(seen[1])
        return VoteEntry(self.template, nonce, tuple(answers)), notes


_UNSEEN: Any = object()


def _accept_answer(data: bytes) -> Answer | None:
    """The answer of ``data`` when the bytes are one canonical answer object that
    accept_vote_entry accepts as an item of ``answers``; else None."""
    item = canonical_value(data)
    if type(item) is not dict or item.keys() != _ANSWER_MEMBERS or not _is_code(item["question"]):
        return None
    values = _accept_values(item["values"])
    if values is None:
        return None
    return Answer(item["question"], values)
