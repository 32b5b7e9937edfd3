"""Findings and check outcomes: what the verification engine concludes, as data.

Every check of spec §8 ends ``pass``, ``fail`` or ``skipped``, with how many items it
examined and how many failed; a skipped check says why. A finding names its check, the
record it is about (its subject CID), a message that says what was checked, what was
found and what was expected, and the evidence a third party needs to be convinced
(the CIDs involved and, for an equivocation, both signed records in full).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from auditor.checkids import CHECK_IDS, SEVERITY

__all__ = ["CheckOutcome", "Finding", "Findings", "write_findings"]

# Findings per check kept in full; beyond this the outcome still counts every failure and
# the last finding says how many more there were (a million bad signatures is one fact).
MAX_FINDINGS_PER_CHECK = 1000


@dataclass(frozen=True)
class Finding:
    check: str
    severity: str
    subject: str | None
    message: str
    evidence: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "severity": self.severity,
            "subject": self.subject,
            "message": self.message,
            "evidence": self.evidence,
        }


@dataclass
class CheckOutcome:
    id: str
    severity: str
    status: str = "pass"  # pass | fail | skipped
    checked: int = 0  # items examined
    failures: int = 0
    note: str = ""  # for skipped: why; otherwise what was examined
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "severity": self.severity,
            "checked": self.checked,
            "failures": self.failures,
            "note": self.note,
        }


@dataclass
class Findings:
    """Collects findings and per-check outcomes while the checks run."""

    outcomes: dict[str, CheckOutcome] = field(
        default_factory=lambda: {c: CheckOutcome(c, SEVERITY[c]) for c in CHECK_IDS}
    )
    items: list[Finding] = field(default_factory=list)
    _kept: Counter[str] = field(default_factory=Counter)  # findings listed, failures and notes
    _noted: Counter[str] = field(default_factory=Counter)  # of which notes
    _ran: set[str] = field(default_factory=set)

    def fail(
        self,
        check: str,
        subject: str | None,
        message: str,
        *,
        records: Iterable[str] = (),
        **evidence: Any,
    ) -> None:
        """Record one failure of ``check``; ``records`` are the CIDs that prove it."""
        outcome = self.outcomes[check]
        outcome.failures += 1
        outcome.status = "fail"
        self._keep(check, subject, message, records, evidence)

    def note(
        self,
        check: str,
        subject: str | None,
        message: str,
        *,
        records: Iterable[str] = (),
        **evidence: Any,
    ) -> None:
        """Record a finding of ``check`` that is not a failure: what an info check found
        when it passes (spec §8 RUN-TRIGGER: "the finding states which fired")."""
        if self._keep(check, subject, message, records, evidence):
            self._noted[check] += 1

    def _keep(
        self, check: str, subject: str | None, message: str, records: Iterable[str], evidence: dict[str, Any]
    ) -> bool:
        """Add the finding unless ``check`` already has MAX_FINDINGS_PER_CHECK; whether it did."""
        if self._kept[check] >= MAX_FINDINGS_PER_CHECK:
            return False
        self._kept[check] += 1
        cids = sorted({c for c in ([subject] if subject else []) + list(records) if c})
        self.items.append(Finding(check, SEVERITY[check], subject, message, {"records": cids, **evidence}))
        return True

    def room(self, check: str) -> int:
        """How many more findings of ``check`` would be listed (the rest are only counted)."""
        return max(0, MAX_FINDINGS_PER_CHECK - self._kept[check])

    def checked(self, check: str, count: int, note: str = "") -> None:
        """Say that ``check`` examined ``count`` more items (``note`` describes them)."""
        outcome = self.outcomes[check]
        outcome.checked += count
        if note:
            outcome.note = f"{outcome.note}; {note}" if outcome.note else note
        self._ran.add(check)

    def skip(self, check: str, reason: str) -> None:
        """``check`` could not run; ``reason`` says why (a check that failed is not skipped)."""
        outcome = self.outcomes[check]
        self._ran.add(check)
        if outcome.status != "fail":
            outcome.status = "skipped"
            outcome.note = reason

    def ran(self, check: str) -> bool:
        return check in self._ran

    def finish(self) -> None:
        """Close the books: a check nothing ran for is skipped, never silently passed."""
        for check, outcome in self.outcomes.items():
            if check not in self._ran and outcome.status == "pass":
                outcome.status = "skipped"
                outcome.note = outcome.note or "not run"
            dropped = outcome.failures - (self._kept[check] - self._noted[check])
            if dropped > 0:
                self.items.append(
                    Finding(
                        check,
                        SEVERITY[check],
                        None,
                        f"{dropped:,} more {check} failures are counted but not listed "
                        f"(the first {MAX_FINDINGS_PER_CHECK:,} are)",
                        {"records": [], "omitted": dropped},
                    )
                )
        self.items.sort(key=lambda f: (CHECK_IDS.index(f.check), f.subject or "", f.message))

    def failed(self, check: str) -> bool:
        return self.outcomes[check].failures > 0


FINDINGS_SCHEMA = pa.schema(
    [
        ("check", pa.string()),
        ("severity", pa.string()),
        ("subject", pa.string()),
        ("message", pa.string()),
        ("records", pa.list_(pa.string())),
        ("evidence", pa.string()),  # canonical JSON text
    ]
)
CHECKS_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("severity", pa.string()),
        ("status", pa.string()),
        ("checked", pa.int64()),
        ("failures", pa.int64()),
        ("note", pa.string()),
    ]
)


def write_findings(
    outcomes: Iterable[CheckOutcome], items: Iterable[Finding], folder: Path
) -> tuple[Path, Path]:
    """Write ``findings.parquet`` (one row per finding) and ``checks.parquet`` (one row per
    check id) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [
        {
            "check": f.check,
            "severity": f.severity,
            "subject": f.subject,
            "message": f.message,
            "records": list(f.evidence.get("records", [])),
            "evidence": json.dumps(f.evidence, sort_keys=True, ensure_ascii=False, separators=(",", ":")),
        }
        for f in items
    ]
    findings_path = folder / "findings.parquet"
    checks_path = folder / "checks.parquet"
    _write_atomic(pa.Table.from_pylist(rows, schema=FINDINGS_SCHEMA), findings_path)
    _write_atomic(
        pa.Table.from_pylist(
            [{k: v for k, v in o.to_json().items() if k in CHECKS_SCHEMA.names} for o in outcomes],
            schema=CHECKS_SCHEMA,
        ),
        checks_path,
    )
    return findings_path, checks_path


def _write_atomic(table: pa.Table, path: Path) -> None:
    """Write through a temporary file and rename: a killed run leaves the old file or the
    new one, never half of one."""
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
