"""Every record body of spec §4 as a typed, validated, frozen dataclass.

Member names are the JSON names (camelCase), so a body reads as the spec does. The
schema layer checks shapes and the bounds the spec states in its field lists; rules
that a §8 check owns (block lists sorted, timeline order, template coherence...) are
left to that check so that its finding, not a schema error, reports them.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from auditor.errors import SchemaError
from auditor.limits import (
    MAX_BLOCK_MEMBERS,
    MAX_CERTIFICATE_BYTES,
    MAX_OPTIONS,
    MAX_QUESTIONS,
    MAX_TIMESTAMP_AUTHORITIES,
)
from auditor.model.histogram import Histogram, histogram
from auditor.model.schema import (
    Cid,
    Code,
    Digest32,
    Key,
    NonNegative,
    Point,
    Positive,
    Scalar,
    Struct,
    Text,
    Time,
    array_of,
    at_least,
    b64u,
    cid,
    ciphertext,
    code,
    integer,
    key,
    object_of,
    text,
)

__all__ = [
    "BODY_TYPES",
    "TIMELINE_ORDER",
    "AccessibilityReport",
    "Administration",
    "Administrator",
    "BallotTemplate",
    "BlockTree",
    "Body",
    "Certification",
    "DependsOn",
    "Dispute",
    "Election",
    "ElectionRevision",
    "KeyDisclosure",
    "KeyRelease",
    "Keyholder",
    "Option",
    "Question",
    "Receipt",
    "Registrant",
    "RegistrationRoll",
    "Result",
    "Runoff",
    "ScoreRange",
    "TallyNode",
    "Timeline",
    "TimestampAuthority",
    "VoteBlock",
    "parse_body",
]

Body = Struct  # every body class below is a Struct; the alias documents intent


# ---------------------------------------------------------------------------- §4.1


@dataclass(frozen=True, slots=True)
class Administrator(Struct):
    name: Text
    role: Text
    key: Key


@dataclass(frozen=True, slots=True)
class Administration(Struct):
    authority: Cid | None
    name: Text
    domain: Text
    administrators: Annotated[tuple[Administrator, ...], array_of(Administrator.parse, min_items=1)]
    threshold: Positive
    expires: Time
    previous: Cid | None

    def validate(self, path: str) -> None:
        # spec §4.1: threshold (1..n)
        if self.threshold > len(self.administrators):
            raise SchemaError(
                f"{path}.threshold",
                f"{self.threshold}",
                f"at most the {len(self.administrators)} administrators",
            )
        if (self.authority is None) != (self.previous is None):
            raise SchemaError(
                f"{path}.previous",
                "authority and previous not both null or both set",
                "a founding record (both null) or a successor (both set)",
            )

    @property
    def is_founding(self) -> bool:
        return self.authority is None


# ---------------------------------------------------------------------------- §4.2


@dataclass(frozen=True, slots=True)
class TimestampAuthority(Struct):
    name: Text
    # DER X.509, parsed by TSA-TOKEN
    certificate: Annotated[str, b64u(min_length=1, max_length=MAX_CERTIFICATE_BYTES)]


@dataclass(frozen=True, slots=True)
class Election(Struct):
    authority: Cid
    administration: Cid
    title: Text
    date: Time
    revisionDeadline: Time
    registrationAuthority: Cid
    certificationAuthority: Cid
    timestampAuthorities: Annotated[
        tuple[TimestampAuthority, ...],
        array_of(TimestampAuthority.parse, max_items=MAX_TIMESTAMP_AUTHORITIES, noun="timestamp authorities"),
    ]


# ---------------------------------------------------------------------------- §4.3


@dataclass(frozen=True, slots=True)
class Keyholder(Struct):
    election: Cid
    name: Text
    title: Text
    registrantKey: Key
    electionKey: Point


# ---------------------------------------------------------------------------- §4.4

TIMELINE_ORDER = ("KI", "KA", "KR", "RE", "BF", "VS", "AV", "HV", "RK", "TS", "V", "CS", "C")


@dataclass(frozen=True, slots=True)
class Timeline(Struct):
    KI: Time
    KA: Time
    KR: Time
    RE: Time
    BF: Time
    VS: Time
    AV: Time
    HV: Time
    RK: Time
    TS: Time
    V: Time
    CS: Time
    C: Time

    def order_problems(self) -> list[str]:
        """Where the timeline breaks KI ≤ KA ≤ KR ≤ RE ≤ BF ≤ VS < AV < HV < RK < TS ≤ V ≤ CS ≤ C."""
        strict = {("VS", "AV"), ("AV", "HV"), ("HV", "RK"), ("RK", "TS")}
        problems = []
        for a, b in itertools.pairwise(TIMELINE_ORDER):
            ta, tb = getattr(self, a), getattr(self, b)
            if (a, b) in strict and not ta < tb:
                problems.append(f"{a} ({ta}) is not before {b} ({tb})")
            elif (a, b) not in strict and not ta <= tb:
                problems.append(f"{a} ({ta}) is after {b} ({tb})")
        return problems


@dataclass(frozen=True, slots=True)
class Runoff(Struct):
    disputeMargin: bool
    accessibilityPpm: NonNegative
    closeMarginPpm: NonNegative
    intervalDays: NonNegative
    participants: Annotated[int, at_least(2)]


@dataclass(frozen=True, slots=True)
class ElectionRevision(Struct):
    election: Cid
    administration: Cid
    revision: Positive
    tags: tuple[Text, ...]
    instructions: Text
    keyholders: Annotated[tuple[str, ...], array_of(cid, min_items=1)]
    electionKey: Point
    receiptKey: Key
    timeline: Timeline
    runoff: Runoff


# ---------------------------------------------------------------------------- §4.5


@dataclass(frozen=True, slots=True)
class Option(Struct):
    code: Code
    title: Text


@dataclass(frozen=True, slots=True)
class ScoreRange(Struct):
    min: Annotated[int, integer]
    max: Annotated[int, integer]
    step: Positive


@dataclass(frozen=True, slots=True)
class DependsOn(Struct):
    question: Code
    values: Annotated[tuple[str, ...], array_of(code, max_items=MAX_OPTIONS, noun="option codes")]


@dataclass(frozen=True, slots=True)
class Question(Struct):
    code: Code
    title: Text
    type: Literal["select", "rank", "score", "text"]
    options: Annotated[tuple[Option, ...], array_of(Option.parse, max_items=MAX_OPTIONS, noun="options")]
    min: NonNegative
    max: NonNegative
    score: ScoreRange | None
    required: bool
    dependsOn: DependsOn | None

    def problems(self) -> list[str]:
        """Coherence rules of spec §4.5 for one question (owned by TPL-VALID)."""
        found: list[str] = []
        codes = [o.code for o in self.options]
        if len(set(codes)) != len(codes):
            found.append(f"question {self.code}: option codes are not distinct")
        if self.type == "text":
            if self.options:
                found.append(f"question {self.code}: a text question has {len(codes)} options, expected none")
        elif not self.options:
            found.append(f"question {self.code}: a {self.type} question has no options")
        if self.type == "score":
            if self.score is None:
                found.append(f"question {self.code}: a score question has score null")
            elif self.score.min > self.score.max:
                found.append(f"question {self.code}: score min {self.score.min} > max {self.score.max}")
            if (self.min, self.max) != (0, 0):
                found.append(
                    f"question {self.code}: a score question has min/max {self.min}/{self.max}, expected 0/0"
                )
        else:
            if self.score is not None:
                found.append(f"question {self.code}: a {self.type} question has a score range")
            if self.min > self.max:
                found.append(f"question {self.code}: min {self.min} > max {self.max}")
            # §4.5 sets no bound of max by the options (a max above them only cannot be
            # reached); a rank histogram keeps max counters an option (§6), so max is held
            # to the limit on options of one question (D35)
            if self.type in ("select", "rank") and self.max > MAX_OPTIONS:
                found.append(
                    f"question {self.code}: max {self.max:,} is over the limit of {MAX_OPTIONS:,} (D35)"
                )
        return found


@dataclass(frozen=True, slots=True)
class BallotTemplate(Struct):
    election: Cid
    authority: Cid
    administration: Cid
    district: Text
    revision: Positive
    questions: Annotated[
        tuple[Question, ...],
        array_of(Question.parse, max_items=MAX_QUESTIONS, noun="questions"),
    ]

    def problems(self) -> list[str]:
        """Well-formedness of the whole template (TPL-VALID, spec §4.5)."""
        found: list[str] = []
        seen: dict[str, Question] = {}
        for q in self.questions:
            if q.code in seen:
                found.append(f"question code {q.code} appears twice")
            found.extend(q.problems())
            if q.dependsOn is not None:
                target = seen.get(q.dependsOn.question)
                if target is None:
                    found.append(
                        f"question {q.code} depends on {q.dependsOn.question}, "
                        "which is not an earlier question"
                    )
                elif target.type in ("select", "rank", "score"):
                    known = {o.code for o in target.options}
                    for value in q.dependsOn.values:
                        if value not in known:
                            found.append(f"question {q.code} depends on unknown option {value}")
            seen.setdefault(q.code, q)
        return found

    def question(self, code_: str) -> Question | None:
        for q in self.questions:
            if q.code == code_:
                return q
        return None


# ---------------------------------------------------------------------------- §4.6-4.7


@dataclass(frozen=True, slots=True)
class Registrant(Struct):
    registrationAuthority: Cid
    key: Key
    district: Text
    publicDetails: Digest32
    privateDetails: Digest32
    registered: Time


@dataclass(frozen=True, slots=True)
class RegistrationRoll(Struct):
    election: Cid
    registrationAuthority: Cid
    administration: Cid
    count: NonNegative
    root: Digest32
    districts: Annotated[dict[str, int], object_of(text, at_least(0))]


# ---------------------------------------------------------------------------- §4.9-4.11


@dataclass(frozen=True, slots=True)
class VoteBlock(Struct):
    # Order and distinctness of these lists are checked by BLK-SHAPE (spec §8), not here.
    election: Cid
    template: Cid
    members: Annotated[tuple[str, ...], array_of(key, max_items=MAX_BLOCK_MEMBERS, noun="members")]
    votes: Annotated[tuple[str, ...], array_of(ciphertext, max_items=MAX_BLOCK_MEMBERS, noun="votes")]
    voters: Annotated[tuple[str, ...], array_of(ciphertext, max_items=MAX_BLOCK_MEMBERS, noun="voters")]


@dataclass(frozen=True, slots=True)
class Receipt(Struct):
    election: Cid
    block: Cid
    result: Literal["accepted", "duplicate", "invalid", "inopportune", "error"]
    registrants: Annotated[tuple[str, ...], array_of(key, max_items=MAX_BLOCK_MEMBERS, noun="registrants")]
    received: Time


@dataclass(frozen=True, slots=True)
class BlockTree(Struct):
    election: Cid
    template: Cid
    administration: Cid
    count: NonNegative
    root: Digest32


# ---------------------------------------------------------------------------- §4.12


@dataclass(frozen=True, slots=True)
class KeyRelease(Struct):
    election: Cid
    keyholder: Cid
    privateKey: Scalar


@dataclass(frozen=True, slots=True)
class KeyDisclosure(Struct):
    election: Cid
    keyholder: Cid
    privateKey: Scalar
    discoverer: Key


# ---------------------------------------------------------------------------- §4.13-4.14


@dataclass(frozen=True, slots=True)
class TallyNode(Struct):
    election: Cid
    template: Cid
    start: NonNegative
    end: Positive
    hash: Digest32
    voters: NonNegative
    counts: Annotated[Histogram, histogram]
    children: Annotated[tuple[str, ...], array_of(cid, min_items=1)]

    def validate(self, path: str) -> None:
        if self.end <= self.start:
            raise SchemaError(f"{path}.end", str(self.end), f"greater than start {self.start}")
        expected = 1 if self.end == self.start + 1 else 2
        if len(self.children) != expected:
            raise SchemaError(
                f"{path}.children",
                f"{len(self.children)} children",
                f"{expected} for [{self.start}, {self.end})",
            )


@dataclass(frozen=True, slots=True)
class Result(Struct):
    election: Cid
    template: Cid
    administration: Cid
    blockTree: Cid
    tallyRoot: Cid
    voters: NonNegative
    counts: Annotated[Histogram, histogram]


# ---------------------------------------------------------------------------- §4.15


@dataclass(frozen=True, slots=True)
class AccessibilityReport(Struct):
    election: Cid
    template: Cid
    registrant: Cid
    key: Key
    kind: Literal["unreachable", "rejected", "timeout", "other"]
    at: Time
    detail: Text


@dataclass(frozen=True, slots=True)
class Dispute(Struct):
    election: Cid
    template: Cid
    receipt: Cid
    key: Key
    claim: Literal["missing"]


@dataclass(frozen=True, slots=True)
class Certification(Struct):
    election: Cid
    template: Cid
    authority: Cid
    administration: Cid
    result: Cid
    verdict: Literal["certified", "rejected"]
    reason: Text


BODY_TYPES: dict[str, type[Struct]] = {
    "administration": Administration,
    "election": Election,
    "keyholder": Keyholder,
    "election_revision": ElectionRevision,
    "ballot_template": BallotTemplate,
    "registrant": Registrant,
    "registration_roll": RegistrationRoll,
    "vote_block": VoteBlock,
    "receipt": Receipt,
    "block_tree": BlockTree,
    "key_release": KeyRelease,
    "key_disclosure": KeyDisclosure,
    "tally_node": TallyNode,
    "result": Result,
    "accessibility_report": AccessibilityReport,
    "dispute": Dispute,
    "certification": Certification,
}


def parse_body(record_type: str, body: Any, path: str = "body") -> Struct:
    """Validate ``body`` as the body of ``record_type``; raises SchemaError."""
    cls = BODY_TYPES.get(record_type)
    if cls is None:
        raise SchemaError("type", repr(record_type), "a record type of spec §4")
    return cls.parse(body, path)
