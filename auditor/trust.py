"""The auditor's trust file (spec §9): which founding records and TSA roots to trust."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from auditor.errors import InputError
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


def load_trust(path: Path) -> Trust:
    """Read a TOML trust file; relative root paths are relative to the file (spec §9)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise InputError(f"{path}: trust file not found") from e
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not a valid TOML trust file: {e}") from e
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
    roots: list[bytes] = []
    tsa = data.get("tsa", {})
    for name in tsa.get("roots", []) if isinstance(tsa, dict) else []:
        root_path = (path.parent / str(name)).resolve()
        try:
            pem = root_path.read_bytes()
        except OSError as e:
            raise InputError(f"{path}: TSA root {name!r} cannot be read ({e.strerror})") from e
        try:
            certs = x509.load_pem_x509_certificates(pem)
        except ValueError as e:
            raise InputError(f"{path}: TSA root {name!r} holds no PEM certificate") from e
        roots.extend(c.public_bytes(Encoding.DER) for c in certs)
    return Trust(
        single["election"], single["registration"], single["certification"], ballot, tuple(roots), str(path)
    )
