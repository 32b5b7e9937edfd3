"""The body of the validation report (spec §11), built from a finished verification.

Everything here is a pure function of the evidence, the trust file and the auditor
version: findings, checks and ballots are put in a fixed order and nothing measured
(seconds, paths, worker counts) goes in, so two runs give the same bytes except
``generatedAt``. The PDF and HTML reports are rendered from this body alone.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import duckdb

from auditor import __version__
from auditor.checkids import CHECK_IDS
from auditor.crypto import merkle
from auditor.model.encoding import b64u_encode, jcs
from auditor.rules import catalog, rules_hash
from auditor.store.bulk import sorted_cid_leaves
from auditor.store.evidence import connect
from auditor.trust import Trust
from auditor.verify.engine import Verification
from auditor.verify.findings import Finding

__all__ = [
    "REPORT_TYPE",
    "ballot_verdicts",
    "evidence_summary",
    "generated_at",
    "report_body",
    "trust_summary",
]

REPORT_TYPE = "validation_report"
CHECK_ORDER = {c: i for i, c in enumerate(CHECK_IDS)}
FAILING = ("critical", "error", "warning")  # severities that change a verdict (spec §11)

# Tables whose records name their template directly; receipts name it through their block.
_TEMPLATE_TABLES = (
    "vote_block",
    "tally_node",
    "result",
    "block_tree",
    "certification",
    "dispute",
    "accessibility_report",
)


def generated_at() -> int:
    """Now, in Unix milliseconds; ``SOURCE_DATE_EPOCH`` (seconds) pins it for reproducible files."""
    pinned = os.environ.get("SOURCE_DATE_EPOCH", "")
    if pinned.isdigit():
        return int(pinned) * 1000
    return time.time_ns() // 1_000_000


def trust_summary(trust: Trust | None) -> dict[str, Any] | None:
    """What was trusted: the founding records and the SHA-256 of each TSA root (not paths,
    which differ between machines)."""
    if trust is None:
        return None
    return {
        "election": trust.election,
        "registration": trust.registration,
        "certification": trust.certification,
        "ballot": sorted(trust.ballot),
        "tsaRoots": sorted(hashlib.sha256(der).hexdigest() for der in trust.tsa_roots),
    }


def evidence_summary(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """``records`` and ``root``: the §5.3 Merkle root over the binary CIDs of every
    well-formed harvested record, sorted; anyone holding the same records gets the same
    root, whatever the order they were harvested in. Quarantined inputs are counted
    apart (their bytes are not a record, or not the record they claimed to be), once per
    distinct content."""
    # streamed, sorted by DuckDB: ten million voters' 12.5 million CIDs held as Python
    # bytes took 2.5 GB (the ten-million run of session 8)
    root, count = merkle.root_of_stream(
        sorted_cid_leaves(con, "(SELECT DISTINCT cid FROM envelopes)", "the harvested records")
    )
    # distinct rejected contents, as REC-CID and REC-SCHEMA report them: not sightings,
    # which grow with every archive or node that held the same bad bytes
    quarantined = (
        con.execute(
            "SELECT count(*) FROM (SELECT DISTINCT check_id, claimed_cid, sha256(raw) FROM quarantine)"
        ).fetchone()
        if _has(con, "quarantine")
        else None
    )
    return {
        "records": count,
        "root": b64u_encode(root),
        "quarantined": int(quarantined[0]) if quarantined else 0,
    }


def _has(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    row = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table]
    ).fetchone()
    return bool(row and row[0])


def _templates_of(con: duckdb.DuckDBPyConnection, subjects: Iterable[str]) -> dict[str, str]:
    """The ballot template each subject CID belongs to, where the record says so."""
    wanted = sorted(set(subjects))
    if not wanted:
        return {}
    parts = [f"SELECT cid, template FROM {t}" for t in _TEMPLATE_TABLES if _has(con, t)]
    if _has(con, "ballot_template"):
        parts.append("SELECT cid, cid AS template FROM ballot_template")
    if _has(con, "receipt") and _has(con, "vote_block"):
        parts.append("SELECT r.cid, b.template FROM receipt r JOIN vote_block b ON r.block = b.cid")
    if not parts:
        return {}
    con.execute("CREATE OR REPLACE TEMP TABLE report_subjects (cid VARCHAR)")
    con.executemany("INSERT INTO report_subjects VALUES (?)", [[s] for s in wanted])
    rows = con.execute(
        f"SELECT DISTINCT m.cid, m.template FROM ({' UNION ALL '.join(parts)}) m "
        "JOIN report_subjects s USING (cid)"
    ).fetchall()
    found: dict[str, set[str]] = defaultdict(set)
    for cid, template in rows:
        found[cid].add(template)
    return {cid: next(iter(ts)) for cid, ts in found.items() if len(ts) == 1}


def _districts_of(con: duckdb.DuckDBPyConnection, election: str | None) -> dict[str, str]:
    """The district of every harvested template of the audited election (another
    election's template counts against every ballot, as any unattributed failure)."""
    if election is None or not _has(con, "ballot_template"):
        return {}
    rows = con.execute("SELECT cid, district FROM ballot_template WHERE election = ?", [election]).fetchall()
    return dict(rows)


def ballot_verdicts(
    verification: Verification,
    templates: dict[str, str],
    ballot_districts: dict[str, str | None],
    districts: dict[str, str] | None = None,
) -> dict[str, tuple[str, list[str]]]:
    """Each ballot's verdict (spec §11) and the checks that decided it: not-verified when a
    critical check fails for it or for the election as a whole, with warnings when only
    error or warning checks fail.

    A failure counts against one ballot only when every finding of that check names a
    record of that ballot's template (``templates``: subject CID -> template). A finding
    about another template (the losing side of an equivocation, an earlier revision's
    template: ``districts`` maps every template to its district) counts against the
    ballot of that template's district, and against every ballot when its district has
    none or is not known. A check that failed or could not run without such findings, or
    that failed more often than it kept findings, counts against every ballot: when in
    doubt, the stricter verdict.
    """
    by_check: dict[str, list[Finding]] = defaultdict(list)
    for f in verification.findings:
        by_check[f.check].append(f)
    ballots = list(ballot_districts)
    districts = districts or {}
    against: dict[str, dict[str, str]] = {b: {} for b in ballots}  # template -> check -> severity

    def mark(template: str | None, check: str, severity: str) -> None:
        if template is None:
            targets = ballots
        elif template in against:
            targets = [template]
        else:
            district = districts.get(template)
            targets = [b for b in ballots if district is not None and ballot_districts[b] == district]
            targets = targets or ballots  # a template of no ballot's district: every ballot
        for b in targets:
            against[b][check] = severity

    for outcome in verification.outcomes:
        if outcome.severity not in FAILING or outcome.status == "pass":
            continue
        findings = [f for f in by_check[outcome.id] if f.severity in FAILING]
        attributed = [_template_of(f, templates) for f in findings]
        if (
            outcome.status == "skipped"
            or not findings
            or None in attributed
            or outcome.failures > len(findings)
        ):
            mark(None, outcome.id, outcome.severity)
            continue
        for template in attributed:
            mark(template, outcome.id, outcome.severity)
    verdicts: dict[str, tuple[str, list[str]]] = {}
    for b, checks in against.items():
        critical = verification.internal_errors or "critical" in checks.values()
        verdict = "not-verified" if critical else "verified-with-warnings" if checks else "verified"
        verdicts[b] = (verdict, sorted(checks, key=CHECK_ORDER.__getitem__))
    return verdicts


def _template_of(finding: Finding, templates: dict[str, str]) -> str | None:
    named = finding.evidence.get("template") if isinstance(finding.evidence, dict) else None
    if isinstance(named, str) and named:
        return named
    return templates.get(finding.subject) if finding.subject else None


def report_body(verification: Verification, store_root: Path, *, now: int | None = None) -> dict[str, Any]:
    """The spec §11 body for ``verification`` of the store at ``store_root``."""
    con = connect(store_root)
    try:
        evidence = evidence_summary(con)
        subjects = [f.subject for f in verification.findings if f.subject]
        templates = _templates_of(con, subjects)
        districts = _districts_of(con, verification.election)
        info = _election_info(con, verification.election)
        ballots = verification.ballots or _unrecounted_ballots(con, verification.election)
    finally:
        con.close()
    verdicts = ballot_verdicts(verification, templates, {b["template"]: b.get("district") for b in ballots}, districts)
    rules = catalog()
    body: dict[str, Any] = {
        "election": verification.election,
        "electionInfo": info,
        "verdict": verification.verdict,
        "auditor": {"name": "vtaudit", "version": __version__, "rules": rules_hash()},
        "trust": trust_summary(verification.trust),
        "evidence": evidence,
        "checks": [
            {
                "id": o.id,
                "title": rules[o.id].title,
                "status": o.status,
                "severity": o.severity,
                "checked": o.checked,
                "failures": o.failures,
                "note": o.note,
            }
            for o in verification.outcomes
        ],
        "ballots": [_ballot(b, *verdicts[b["template"]]) for b in ballots],
        "findings": sorted((f.to_json() for f in verification.findings), key=_finding_order),
        "advisory": _advisory(verification.advisory),
        "internalErrors": list(verification.internal_errors),
        "generatedAt": generated_at() if now is None else now,
    }
    clean: dict[str, Any] = no_floats(body)
    return clean


def _election_info(con: duckdb.DuckDBPyConnection, election: str | None) -> dict[str, Any] | None:
    """The election record's title and date, as published (text from a record)."""
    if election is None or not _has(con, "election"):
        return None
    row = con.execute(
        "SELECT title, epoch_ms(date) FROM election WHERE cid = ? LIMIT 1", [election]
    ).fetchone()
    return {"title": row[0], "date": row[1]} if row else None


def _unrecounted_ballots(con: duckdb.DuckDBPyConnection, election: str | None) -> list[dict[str, Any]]:
    """When nothing was recounted (keys not released, ``--no-recount``, no valid revision),
    the report still lists the ballots, without counts: per district, the templates of the
    latest revision published (the effective one could not be established)."""
    if election is None or not _has(con, "ballot_template"):
        return []
    rows = con.execute(
        """SELECT cid, district FROM ballot_template WHERE election = ?
           QUALIFY rank() OVER (PARTITION BY district ORDER BY revision DESC) = 1
           ORDER BY district, cid""",
        [election],
    ).fetchall()
    return [{"template": cid, "district": district, "voters": None, "counts": {}} for cid, district in rows]


def _ballot(ballot: dict[str, Any], verdict: str, failed: list[str]) -> dict[str, Any]:
    """Spec §11 ballot members. A template can hold several single-winner questions (§10
    is per question): the ballot-level ``spread``, ``robust`` and ``runoff`` describe the
    closest of them (the smallest spread), any runoff required by any question makes the
    ballot's runoff required, and ``questions`` keeps every question's own figures."""
    questions = sorted(ballot.get("questions", []), key=lambda q: (q["spread"], q["question"]))
    closest = questions[0] if questions else None
    needing = [q for q in questions if q["runoff"]["required"]]
    deciding = needing[0] if needing else closest
    runoff = {
        "required": bool(needing),
        # the deciding question's triggers, in §10's order, as its participants are its own
        "triggers": list(deciding["runoff"]["triggers"]) if needing and deciding else [],
        "participants": list(deciding["runoff"]["participants"]) if needing and deciding else [],
        "question": deciding["question"] if needing and deciding else None,
        "due": deciding["runoff"]["due"] if needing and deciding else None,
    }
    return {
        "template": ballot["template"],
        "district": ballot.get("district"),
        "verdict": verdict,
        "failedChecks": failed,
        "voters": ballot.get("voters"),
        "counts": ballot.get("counts", {}),
        "spread": closest["spread"] if closest else None,
        "errorMargin": ballot.get("errorMargin", closest["errorMargin"] if closest else None),
        "robust": all(q["robust"] for q in questions) if questions else None,
        "runoff": runoff,
        "questions": questions,
        "instantRunoff": ballot.get("instantRunoff", []),
    }


def _finding_order(f: dict[str, Any]) -> tuple[int, str, str, bytes]:
    return (
        CHECK_ORDER.get(f["check"], len(CHECK_ORDER)),
        f["subject"] or "",
        f["message"],
        jcs(f["evidence"]),
    )


def _advisory(advisory: dict[str, Any]) -> dict[str, Any]:
    """The advisory layer without floats: shares in parts per million, z-scores in
    thousandths (spec §2 allows no floating-point numbers in records)."""
    out = dict(advisory)
    outliers = []
    for o in advisory.get("outliers", []):
        o = dict(o)
        for name in ("share", "districtShare"):
            if isinstance(o.get(name), float):
                o[name + "Ppm"] = round(o.pop(name) * 1_000_000)
        if isinstance(o.get("z"), float):
            o["zMilli"] = round(o.pop("z") * 1000)
        outliers.append(o)
    if "outliers" in advisory:
        out["outliers"] = outliers
    return out


def no_floats(value: Any) -> Any:
    """Any float left anywhere becomes its decimal text: the report must be canonical JSON
    under spec §2, which has no floating-point numbers."""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict):
        return {k: no_floats(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [no_floats(v) for v in value]
    return value
