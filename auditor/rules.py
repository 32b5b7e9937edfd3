"""The check catalog (rules/catalog.toml): one plain-language entry per §8 check id."""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from auditor.checkids import SEVERITY

__all__ = ["CATALOG_PATH", "Rule", "catalog", "rules_hash"]

CATALOG_PATH = Path(__file__).resolve().parent.parent / "rules" / "catalog.toml"
FIELDS = ("severity", "spec", "title", "statement", "proves", "does_not_prove", "implemented")


@dataclass(frozen=True)
class Rule:
    id: str
    severity: str
    spec: str
    title: str
    statement: str
    proves: str
    does_not_prove: str
    implemented: str


@cache
def catalog() -> dict[str, Rule]:
    """The catalog in §8 order; raises ValueError if an entry is missing or malformed."""
    data = tomllib.loads(CATALOG_PATH.read_text(encoding="utf-8"))
    rules: dict[str, Rule] = {}
    for check_id, severity in SEVERITY.items():
        entry = data.get(check_id)
        if not isinstance(entry, dict) or set(entry) != set(FIELDS):
            raise ValueError(f"{CATALOG_PATH}: entry [{check_id}] must have exactly {', '.join(FIELDS)}")
        if entry["severity"] != severity:
            raise ValueError(
                f"{CATALOG_PATH}: [{check_id}] severity {entry['severity']}, spec §8 says {severity}"
            )
        rules[check_id] = Rule(id=check_id, **{k: str(entry[k]) for k in FIELDS})
    extra = set(data) - set(SEVERITY)
    if extra:
        raise ValueError(f"{CATALOG_PATH}: entries for unknown check ids {sorted(extra)}")
    return rules


def rules_hash() -> str:
    """SHA-256 (hex) of the catalog file: the ``auditor.rules`` of a report (spec §11)."""
    return hashlib.sha256(CATALOG_PATH.read_bytes()).hexdigest()
