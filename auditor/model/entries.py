"""The entries carried inside ciphertexts (spec §4.8): vote entries and voter entries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from auditor.errors import SchemaError
from auditor.limits import MAX_OPTIONS, MAX_QUESTIONS
from auditor.model.encoding import jcs, sha256
from auditor.model.schema import (
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

__all__ = ["Answer", "VoteEntry", "VoterEntry", "voter_entry_digest"]

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


def voter_entry_digest(key: str, registrant: str, template: str) -> bytes:
    """sha256(JCS({"v":1,"type":"voter_entry","body":{key, registrant, template}})) (spec §4.8)."""
    body = {"key": key, "registrant": registrant, "template": template}
    return sha256(jcs({"v": 1, "type": "voter_entry", "body": body}))
