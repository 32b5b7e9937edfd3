"""The auditor's trust file (spec §9): which founding records and TSA roots to trust."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from auditor.errors import InputError
from auditor.limits import MAX_TRUST_FILE_BYTES, MAX_TRUST_ROOTS, WHERE
from auditor.model.encoding import is_cid_text

__all__ = ["Trust", "load_trust"]


@dataclass(frozen=True)
class Trust:
    election: str | None
    registration: str | None
    certification: str | None
    ballot: tuple[str, ...]
    tsa_roots: tuple[bytes, ...]  # DER certificates
    source: str

    def summary(self) -> dict[str, Any]:
        return {
            "election": self.election,
            "registration": self.registration,
            "certification": self.certification,
            "ballot": list(self.ballot),
            "tsaRoots": len(self.tsa_roots),
        }


def _cid(value: Any, where: str, path: Path) -> str:
    if not is_cid_text(value):
        raise InputError(f"{path}: {where} must be a founding-record CID ('bagaaiera…'), got {value!r}")
    return str(value)


def _read(path: Path, what: str, limit: int) -> bytes:
    """At most ``limit`` bytes of ``path``; a longer file is refused unread."""
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except FileNotFoundError as e:
        raise InputError(f"{path}: {what} not found") from e
    except OSError as e:
        raise InputError(f"{path}: {what} cannot be read ({e.strerror})") from e
    if len(data) > limit:
        raise InputError(f"{path}: {what} larger than {limit:,} bytes ({WHERE}); is it the right file?")
    return data


def load_trust(path: Path) -> Trust:
    """Read a TOML trust file; relative root paths are relative to the file (spec §9).

    Anything that is not a trust file (unknown tables or keys, wrong types, more than
    MAX_TRUST_ROOTS roots, a file over MAX_TRUST_FILE_BYTES) is an InputError: a typo must
    not silently leave an authority unanchored.
    """
    raw = _read(path, "trust file", MAX_TRUST_FILE_BYTES)
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not a valid TOML trust file: {e}") from e
    except RecursionError as e:  # tomllib recurses into nested arrays and inline tables
        raise InputError(f"{path}: not a trust file: arrays or tables nested too deeply") from e
    unknown = set(data) - {"authorities", "tsa"}
    if unknown:
        raise InputError(
            f"{path}: unknown tables or keys {', '.join(sorted(unknown))}; "
            "a trust file has [authorities] and [tsa]"
        )
    authorities = data.get("authorities", {})
    if not isinstance(authorities, dict):
        raise InputError(f"{path}: [authorities] must be a table")
    unknown = set(authorities) - {"election", "registration", "certification", "ballot"}
    if unknown:
        raise InputError(f"{path}: unknown keys in [authorities]: {', '.join(sorted(unknown))}")
    single = {
        name: _cid(authorities[name], f"authorities.{name}", path) if name in authorities else None
        for name in ("election", "registration", "certification")
    }
    ballot_value = authorities.get("ballot", [])
    if isinstance(ballot_value, str):
        ballot_value = [ballot_value]
    if not isinstance(ballot_value, list):
        raise InputError(f"{path}: authorities.ballot must be a CID or a list of CIDs")
    ballot = tuple(_cid(v, "authorities.ballot", path) for v in ballot_value)
    tsa = data.get("tsa", {})
    if not isinstance(tsa, dict):
        raise InputError(f"{path}: [tsa] must be a table")
    if set(tsa) - {"roots"}:
        raise InputError(f"{path}: unknown keys in [tsa]: {', '.join(sorted(set(tsa) - {'roots'}))}")
    names = tsa.get("roots", [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise InputError(f"{path}: tsa.roots must be a list of PEM file names")
    if len(names) > MAX_TRUST_ROOTS:
        raise InputError(f"{path}: {len(names)} TSA root files, at most {MAX_TRUST_ROOTS} ({WHERE})")
    roots: list[bytes] = []
    for name in names:
        root_path = (path.parent / name).resolve()
        pem = _read(root_path, f"TSA root {name!r}", MAX_TRUST_FILE_BYTES)
        try:
            certs = x509.load_pem_x509_certificates(pem)
        except (ValueError, x509.InvalidVersion) as e:  # InvalidVersion is not a ValueError
            raise InputError(f"{path}: TSA root {name!r} holds no PEM certificate") from e
        roots.extend(c.public_bytes(Encoding.DER) for c in certs)
        if len(roots) > MAX_TRUST_ROOTS:
            raise InputError(f"{path}: more than {MAX_TRUST_ROOTS} TSA root certificates ({WHERE})")
    return Trust(
        single["election"], single["registration"], single["certification"], ballot, tuple(roots), str(path)
    )
