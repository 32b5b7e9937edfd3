"""Declarative validation of JSON bodies into frozen dataclasses (spec §3-§4).

A body type is declared once, as a dataclass whose annotations say the JSON form::

    @dataclass(frozen=True, slots=True)
    class Keyholder(Struct):
        election: Cid
        name: Text
        registrantKey: Key

``Struct.parse(obj, path)`` checks that ``obj`` has exactly those members, validates
each one and builds the dataclass. Annotations are read once per class. Atoms
(``Cid``, ``Key``...) are ``Annotated`` aliases whose metadata is the validator; plain
``str``/``int``/``bool``, ``X | None``, ``tuple[X, ...]``, ``dict[str, X]``,
``Literal[...]`` and nested ``Struct`` classes are understood too. Arrays become tuples.

Validators take ``(value, path)`` and return the value to store, or raise
:class:`~auditor.errors.SchemaError` naming the path, what was found and what was
expected.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, fields, is_dataclass
from typing import Annotated, Any, ClassVar, Literal, TypeVar, Union, get_args, get_origin

from nacl.bindings import crypto_core_ed25519_is_valid_point

from auditor.errors import EncodingError, SchemaError
from auditor.limits import MAX_TEXT_CHARS, WHERE
from auditor.model.encoding import MAX_SAFE_INT, b64u_decode, cid_to_binary, is_cid_text

__all__ = [
    "ELL",
    "PLANS",
    "B64u",
    "Cid",
    "Ciphertext",
    "Code",
    "Digest32",
    "Key",
    "NonNegative",
    "Plan",
    "Point",
    "Positive",
    "Scalar",
    "Signature64",
    "Struct",
    "Text",
    "Time",
    "Validator",
    "array_of",
    "at_least",
    "ciphertext",
    "code",
    "describe",
    "integer",
    "key",
    "nullable",
    "object_of",
    "one_of",
    "over_limit",
    "text",
]

Validator = Callable[[Any, str], Any]
V = TypeVar("V", bound=Validator)


@dataclass(frozen=True)
class Plan:
    """What a validator accepts, said so that the bulk harvest (auditor.store.bulk) can
    check a value without calling it. A value the plan accepts is one the validator
    accepts and returns unchanged (arrays: as a tuple); the bulk path sends anything
    else to the validator's own record-by-record path, which words the error.

    ``kind``: ``text``, ``cid``, ``code``, ``int`` (``minimum``), ``b64u`` (``length``,
    ``min_length``, ``max_chars``), ``one_of`` (``allowed``) or ``array`` (``item``, the
    item's plan or None, ``min_items``, ``max_items``)."""

    kind: str
    minimum: int = -MAX_SAFE_INT
    length: int | None = None
    min_length: int = 0
    max_chars: int | None = None
    allowed: tuple[str, ...] = ()
    item: Plan | None = None
    min_items: int = 0
    max_items: int | None = None


PLANS: dict[Validator, Plan] = {}  # validator -> its plan, for the validators that have one


def _planned(validator: V, plan: Plan) -> V:
    PLANS[validator] = plan
    return validator


# ℓ, the order of the Edwards25519 prime-order subgroup (spec §5.1).
ELL = 2**252 + 27742317777372353535851937790883648493
MAX_TEXT = MAX_TEXT_CHARS  # longest string member accepted (auditor.limits)
_CODE = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # used with fullmatch: "$" would accept a trailing newline


def describe(value: object) -> str:
    """A short, safe description of a JSON value for an error message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"the integer {value}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:39] + "…"
        return f"the string {shown!r}"
    if isinstance(value, list | tuple):
        return f"an array of {len(value)}"
    if isinstance(value, dict):
        return f"an object with {len(value)} members"
    return type(value).__name__


def over_limit(path: str, count: int, noun: str, limit: int) -> SchemaError:
    """The error for a list, object or string over one of vtaudit's limits (auditor.limits)."""
    return SchemaError(path, f"{count:,} {noun}", f"at most {limit:,} ({WHERE})")


# ---------------------------------------------------------------------------- atoms


def text(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise SchemaError(path, describe(value), "a string")
    if len(value) > MAX_TEXT:
        raise over_limit(path, len(value), "characters", MAX_TEXT)
    return value


def integer(value: Any, path: str) -> int:
    # bool is a subclass of int in Python; JSON true is not an integer.
    if not isinstance(value, int) or isinstance(value, bool):
        raise SchemaError(path, describe(value), "an integer")
    if not -MAX_SAFE_INT <= value <= MAX_SAFE_INT:
        raise SchemaError(path, describe(value), "an integer in [-(2^53-1), 2^53-1]")
    return value


def boolean(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise SchemaError(path, describe(value), "true or false")
    return value


def at_least(minimum: int) -> Validator:
    def check(value: Any, path: str) -> int:
        number = integer(value, path)
        if number < minimum:
            raise SchemaError(path, describe(value), f"an integer ≥ {minimum}")
        return number

    return _planned(check, Plan("int", minimum=minimum))


def code(value: Any, path: str) -> str:
    if not isinstance(value, str) or not _CODE.fullmatch(value):
        raise SchemaError(path, describe(value), "a code matching ^[A-Za-z0-9_.-]{1,64}$")
    return value


def cid(value: Any, path: str) -> str:
    if not is_cid_text(value):  # the fast path; the slow one only words the error
        try:
            cid_to_binary(value)
        except EncodingError as e:
            raise SchemaError(path, describe(value), e.expected) from e
    return typing.cast(str, value)


def b64u(length: int | None = None, *, min_length: int = 0, max_length: int | None = None) -> Validator:
    """A b64u string; the decoded bytes are checked, the text is kept.

    ``max_length`` (bytes) is checked on the text's length, before it is decoded.
    """
    expected = f"b64u of {length} bytes" if length is not None else "b64u"
    max_chars = None if max_length is None else (max_length * 4 + 2) // 3

    def check(value: Any, path: str) -> str:
        if max_chars is not None and isinstance(value, str) and len(value) > max_chars:
            assert max_length is not None
            raise over_limit(path, len(value) * 3 // 4, "bytes", max_length)
        try:
            raw = b64u_decode(value, length=length)
        except EncodingError as e:
            raise SchemaError(path, e.got, e.expected if "bytes" in e.expected else expected) from e
        if len(raw) < min_length:
            raise SchemaError(path, f"{len(raw)} bytes", f"at least {min_length} bytes")
        return typing.cast(str, value)

    return _planned(check, Plan("b64u", length=length, min_length=min_length, max_chars=max_chars))


def point(value: Any, path: str) -> str:
    """b64u of a valid compressed Edwards25519 point, not of small order (spec §5.1)."""
    raw: str = b64u(32)(value, path)
    if not crypto_core_ed25519_is_valid_point(b64u_decode(raw)):
        raise SchemaError(path, "bytes that are not a valid point", "a prime-order Edwards25519 point")
    return raw


def scalar(value: Any, path: str) -> str:
    """b64u of a 32-byte little-endian scalar, reduced mod ℓ, nonzero (spec §4.12)."""
    raw: str = b64u(32)(value, path)
    number = int.from_bytes(b64u_decode(raw), "little")
    if not 0 < number < ELL:
        raise SchemaError(path, "a scalar that is zero or not reduced mod ℓ", "0 < k < ℓ")
    return raw


key = b64u(32)
_planned(text, Plan("text", max_chars=MAX_TEXT))
_planned(integer, Plan("int"))
_planned(code, Plan("code"))
_planned(cid, Plan("cid"))

Text = Annotated[str, text]
Code = Annotated[str, code]
Cid = Annotated[str, cid]
Time = Annotated[int, at_least(0)]
NonNegative = Annotated[int, at_least(0)]
Positive = Annotated[int, at_least(1)]
Key = Annotated[str, key]
Point = Annotated[str, point]
Scalar = Annotated[str, scalar]
Digest32 = Annotated[str, b64u(32)]
Signature64 = Annotated[str, b64u(64)]
B64u = Annotated[str, b64u()]
# R (32 bytes) ‖ AEAD: at least the 16-byte Poly1305 tag (spec §5.2).
ciphertext = b64u(min_length=48)
Ciphertext = Annotated[str, ciphertext]


# ---------------------------------------------------------------------------- compounds


def array_of(
    item: Validator, *, min_items: int = 0, max_items: int | None = None, noun: str = "items"
) -> Validator:
    """An array of ``item``s; ``max_items`` (a limit of auditor.limits) is checked before
    any item is."""

    def check(value: Any, path: str) -> tuple[Any, ...]:
        if not isinstance(value, list):
            raise SchemaError(path, describe(value), "an array")
        if len(value) < min_items:
            raise SchemaError(path, f"{len(value)} items", f"at least {min_items}")
        if max_items is not None and len(value) > max_items:
            raise over_limit(path, len(value), noun, max_items)
        return tuple(item(v, f"{path}[{i}]") for i, v in enumerate(value))

    plan = Plan("array", item=PLANS.get(item), min_items=min_items, max_items=max_items)
    return _planned(check, plan)


def object_of(name: Validator, item: Validator) -> Validator:
    def check(value: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise SchemaError(path, describe(value), "an object")
        return {name(k, f"{path} member name"): item(v, f"{path}.{k}") for k, v in value.items()}

    return check


def nullable(inner: Validator) -> Validator:
    def check(value: Any, path: str) -> Any:
        return None if value is None else inner(value, path)

    return check


def one_of(*allowed: str) -> Validator:
    def check(value: Any, path: str) -> str:
        if value not in allowed or not isinstance(value, str):
            raise SchemaError(path, describe(value), "one of " + ", ".join(map(repr, allowed)))
        return value

    return _planned(check, Plan("one_of", allowed=allowed))


S = TypeVar("S", bound="Struct")


class Struct:
    """Base of every body, entry and nested object: parse with :meth:`parse`."""

    __slots__ = ()
    _members: ClassVar[dict[str, Validator]]

    @classmethod
    def json_members(cls) -> dict[str, Validator]:
        """The JSON members of this struct and their validators (computed once)."""
        cached: dict[str, Validator] | None = cls.__dict__.get("_members")
        if cached is None:
            hints = typing.get_type_hints(cls, include_extras=True)
            assert is_dataclass(cls), f"{cls.__name__} must be a dataclass"
            cached = {f.name: validator_for(hints[f.name]) for f in fields(cls)}
            cls._members = cached
        return cached

    @classmethod
    def parse(cls: type[S], value: Any, path: str = "body") -> S:
        """Validate a parsed JSON object and build the struct; raises SchemaError."""
        if not isinstance(value, dict):
            raise SchemaError(path, describe(value), "an object")
        members = cls.json_members()
        if value.keys() != members.keys():
            missing = sorted(members.keys() - value.keys())
            unknown = sorted(value.keys() - members.keys())
            got = "; ".join(
                part
                for part in (
                    f"missing {', '.join(missing)}" if missing else "",
                    f"unknown {', '.join(unknown)}" if unknown else "",
                )
                if part
            )
            raise SchemaError(path, got, "exactly the members " + ", ".join(members))
        built = cls(**{name: check(value[name], f"{path}.{name}") for name, check in members.items()})
        built.validate(path)
        return built

    def validate(self, path: str) -> None:
        """Rules across members that the annotations cannot say; raise SchemaError."""

    def to_json(self) -> dict[str, Any]:
        """The JSON object this struct was parsed from (tuples as arrays)."""
        return {name: _to_json(getattr(self, name)) for name in self.json_members()}


def _to_json(value: Any) -> Any:
    if isinstance(value, Struct):
        return value.to_json()
    if isinstance(value, tuple | list):
        return [_to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_json(v) for k, v in value.items()}
    return value


def validator_for(annotation: Any) -> Validator:
    """Turn a type annotation into a validator (see the module docstring)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return typing.cast(Validator, annotation.__metadata__[0])
    if annotation is str:
        return text
    if annotation is bool:
        return boolean
    if annotation is int:
        return integer
    if isinstance(annotation, type) and issubclass(annotation, Struct):
        return annotation.parse
    if origin is Literal:
        return one_of(*get_args(annotation))
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(get_args(annotation)) == 2:
            return nullable(validator_for(args[0]))
    if origin is tuple:
        item, ellipsis = get_args(annotation)
        assert ellipsis is Ellipsis, "use tuple[X, ...] for arrays"
        return array_of(validator_for(item))
    if origin is dict:
        key, item = get_args(annotation)
        return object_of(validator_for(key), validator_for(item))
    raise TypeError(f"no validator for annotation {annotation!r}")
