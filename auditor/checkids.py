"""The audit check ids of spec §8 with their severities (the catalog in rules/ explains each)."""

from __future__ import annotations

__all__ = ["CHECK_IDS", "SEVERITY"]

SEVERITY: dict[str, str] = {
    "REC-CID": "critical",
    "REC-SCHEMA": "error",
    "REC-REF": "error",
    "SIG-VALID": "critical",
    "AUTH-CHAIN": "critical",
    "AUTH-THRESHOLD": "critical",
    "TSA-TOKEN": "critical",
    "TSA-IMPRINT": "critical",
    "ELE-REVISION": "critical",
    "ELE-TIMELINE": "error",
    "ELE-KEY": "critical",
    "TPL-VALID": "critical",
    "REG-ROLL": "critical",
    "BLK-SHAPE": "critical",
    "BLK-SIG": "critical",
    "BLK-ELIGIBLE": "critical",
    "BLK-UNIQUE": "critical",
    "RCP-VALID": "critical",
    "RCP-CONSISTENT": "critical",
    "TREE-ROOT": "critical",
    "KEY-RELEASE": "critical",
    "KEY-EARLY": "warning",
    "DEC-ENTRIES": "critical",
    "DEC-VOTER": "critical",
    "DEC-NONCE": "error",
    "BAL-VALID": "error",
    "TALLY-TREE": "critical",
    "RES-MATCH": "critical",
    "DSP-RESOLVED": "warning",
    "ACC-REPORTS": "info",
    "CERT-MATCH": "error",
    "RUN-TRIGGER": "info",
}

CHECK_IDS: tuple[str, ...] = tuple(SEVERITY)
