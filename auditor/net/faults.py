"""Deterministic fault injection for :class:`auditor.net.server.NodeServer`.

A node can be slow, wrong or malicious (spec §7.1); the harvester must survive all of
it. :class:`Faults` says how a test node misbehaves. Every decision is a pure function
of the seed and what is asked: a record-level fault (wrong bytes, truncated bytes, a
record left out of the log) depends on ``(seed, kind, cid)``; a request-level fault
(stall, reset, cut, 500) on ``(seed, kind, request path, how many times this path was
asked before)``, so a retry of the same request gets a fresh, but reproducible, draw.

The CLI form (``vtaudit node serve --fault``) is ``key=value`` pairs separated by
commas, e.g. ``error=0.2,wrong=0.01,seed=3`` (see :func:`parse_faults`).
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from auditor.errors import InputError
from auditor.model.encoding import is_cid_text

__all__ = ["ENDPOINTS", "Faults", "parse_faults"]

ENDPOINTS = frozenset({"log", "ipfs", "car"})
"""The endpoints of spec §7.1, by short name: ``/v1/log``, ``/ipfs/<cid>``, ``/v1/car``."""

_RATES = ("stall_rate", "reset", "cut", "error", "wrong", "truncate", "omit")


@dataclass(frozen=True)
class Faults:
    """How a node misbehaves. The default misbehaves in no way.

    Request-level faults (for requests to ``endpoints``):

    - ``stall``: seconds to sleep before answering, for a ``stall_rate`` share of requests;
    - ``reset``: share of requests answered by closing the connection abruptly (TCP RST);
    - ``cut``: share of responses cut off halfway through the body (then RST);
    - ``error``: share of requests answered ``500 Internal Server Error``;
    - ``slow``: seconds of pause before each ``slow_chunk`` bytes of every body.

    Record-level faults (the same for every request naming the record):

    - ``wrong`` / ``wrong_cids``: serve different bytes (one bit flipped) for these CIDs;
    - ``truncate`` / ``truncate_cids``: serve the first half of the bytes;
    - ``omit`` / ``omit_cids``: the node does not have the record (left out of its log,
      404 on ``/ipfs``);
    - ``hide_cids``: the node has the record (``/ipfs`` serves it) but leaves it out of
      its log, as a node that got a block without its announcement;
    - ``extra``: envelopes the node has and announces after its own records (a node
      with a different log: e.g. a second ``result`` for a template).
    """

    seed: int = 0
    stall: float = 0.0
    stall_rate: float = 1.0
    reset: float = 0.0
    cut: float = 0.0
    error: float = 0.0
    slow: float = 0.0
    slow_chunk: int = 4096
    wrong: float = 0.0
    truncate: float = 0.0
    omit: float = 0.0
    wrong_cids: frozenset[str] = frozenset()
    truncate_cids: frozenset[str] = frozenset()
    omit_cids: frozenset[str] = frozenset()
    hide_cids: frozenset[str] = frozenset()
    extra: tuple[bytes, ...] = ()
    endpoints: frozenset[str] = field(default=ENDPOINTS)

    def __post_init__(self) -> None:
        for name in _RATES:
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise InputError(f"fault {name}: got {value}, expected a share between 0 and 1")
        for name in ("stall", "slow"):
            if getattr(self, name) < 0:
                raise InputError(f"fault {name}: got {getattr(self, name)}, expected seconds >= 0")
        if self.slow_chunk < 1:
            raise InputError(f"fault slow_chunk: got {self.slow_chunk}, expected bytes >= 1")
        unknown = set(self.endpoints) - ENDPOINTS
        if unknown:
            raise InputError(
                f"fault endpoints: got {', '.join(sorted(unknown))}, "
                f"expected some of {', '.join(sorted(ENDPOINTS))}"
            )
        for name in ("wrong_cids", "truncate_cids", "omit_cids", "hide_cids"):
            bad = [c for c in getattr(self, name) if not is_cid_text(c)]
            if bad:
                raise InputError(f"fault {name}: {bad[0]!r} is not a CID; give CIDs starting 'bagaaiera'")

    @property
    def active(self) -> bool:
        """Whether this node misbehaves at all."""
        return self != Faults(seed=self.seed)

    def draw(self, kind: str, key: str, n: int = 0) -> float:
        """A number in [0, 1) fixed by the seed, the fault kind, a key and a counter."""
        digest = hashlib.sha256(f"{self.seed}\x00{kind}\x00{key}\x00{n}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    def hits_request(self, kind: str, endpoint: str, path: str, n: int) -> bool:
        """Whether the ``n``-th request (from 0) for ``path`` suffers request fault ``kind``."""
        rate: float = getattr(self, kind)
        if kind == "stall":
            rate = self.stall_rate if self.stall > 0 else 0.0
        return endpoint in self.endpoints and rate > 0 and self.draw(kind, path, n) < rate

    def hits_record(self, kind: str, cid: str) -> bool:
        """Whether the record ``cid`` suffers record fault ``kind`` (wrong, truncate, omit)."""
        if cid in getattr(self, f"{kind}_cids"):
            return True
        rate: float = getattr(self, kind)
        return rate > 0 and self.draw(kind, cid) < rate

    def serve(self, cid: str, data: bytes) -> bytes:
        """The bytes this node serves for ``cid``: ``data``, or a wrong or truncated copy."""
        if self.hits_record("wrong", cid):
            if not data:
                return b"{}"
            at = int(self.draw("wrong-at", cid) * len(data))
            return data[:at] + bytes((data[at] ^ 0x01,)) + data[at + 1 :]
        if self.hits_record("truncate", cid):
            return data[: len(data) // 2]
        return data


_FLOATS = {"stall", "stall_rate", "reset", "cut", "error", "slow", "wrong", "truncate", "omit"}
_CID_SETS = {
    "wrong_cid": "wrong_cids",
    "truncate_cid": "truncate_cids",
    "omit_cid": "omit_cids",
    "hide_cid": "hide_cids",
}


def parse_faults(spec: str) -> Faults:
    """Parse the CLI form: ``key=value`` pairs separated by commas.

    Keys: ``seed`` (int); ``stall``, ``slow`` (seconds); ``stall-rate``, ``reset``,
    ``cut``, ``error``, ``wrong``, ``truncate``, ``omit`` (shares 0–1); ``slow-chunk``
    (bytes); ``wrong-cid``, ``truncate-cid``, ``omit-cid``, ``hide-cid`` (a CID, repeatable);
    ``endpoints`` (``log+ipfs+car`` or a subset); ``extra`` (an archive whose records
    the node announces in addition: a .car, .ndjson or directory of envelopes).
    """
    from auditor.sources import iter_source

    values: dict[str, object] = {}
    sets: dict[str, set[str]] = {v: set() for v in _CID_SETS.values()}
    extra: list[bytes] = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        value = value.strip()
        if not sep or not value:
            raise InputError(f"--fault {item!r}: expected key=value, e.g. error=0.2 or stall=5")
        try:
            if key in _FLOATS:
                values[key] = float(value)
            elif key in ("seed", "slow_chunk"):
                values[key] = int(value)
            elif key in _CID_SETS:
                sets[_CID_SETS[key]].add(value)
            elif key == "endpoints":
                values[key] = frozenset(value.split("+"))
            elif key == "extra":
                extra.extend(r.raw for r in iter_source(Path(value)) if r.defect is None)
            else:
                known = sorted([*_FLOATS, "seed", "slow_chunk", "endpoints", "extra", *_CID_SETS])
                names = ", ".join(k.replace("_", "-") for k in known)
                raise InputError(f"--fault {item!r}: unknown key {key!r}; known: {names}")
        except ValueError as e:
            raise InputError(f"--fault {item!r}: {value!r} is not a number ({e})") from e
    for name, cids in sets.items():
        if cids:
            values[name] = frozenset(cids)
    if extra:
        values["extra"] = tuple(extra)
    fields = {f.name for f in dataclasses.fields(Faults)}
    return Faults(**{k: v for k, v in values.items() if k in fields})  # type: ignore[arg-type]
