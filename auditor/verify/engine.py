"""The verification engine: every §8 check over an evidence store, in dependency order.

Each step says which checks it runs and what it needs (the election record, a valid
revision). A step whose prerequisite is missing marks its checks skipped with the
reason; the prerequisite's own failure is already a finding. A step that stops on an
unexpected exception (a bug in vtaudit, never the evidence's fault) marks its checks
skipped with the error and the audit goes on; the verdict can then not be "verified".
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from auditor.checkids import CHECK_IDS
from auditor.errors import ClusterError, InputError
from auditor.limits import DUCKDB_MEMORY
from auditor.parallel import Runner
from auditor.trust import Trust
from auditor.verify import advisory, authority, blocks, election, keys, outcome, records, recount, results
from auditor.verify.answers import ANSWERS
from auditor.verify.cache import ResultCache, open_cache
from auditor.verify.context import Audit, Stage, first_line
from auditor.verify.findings import CheckOutcome, Finding

__all__ = ["SHARED_CHECKS", "STEPS", "Verification", "verify_store"]


# Checks not owned by one step: tokens are verified when the audit opens (every record's
# proven time depends on them); AUTH-THRESHOLD is judged by every step that reads an
# authority-signed record (revisions, templates, roll, trees, results, certifications).
SHARED_CHECKS = ("TSA-TOKEN", "TSA-IMPRINT", "AUTH-THRESHOLD")


@dataclass(frozen=True)
class Step:
    name: str
    run: Callable[[Audit], None]
    checks: tuple[str, ...]
    needs: str = ""  # "", "election", "revision" or "recount"
    after: tuple[str, ...] = ()  # steps whose state it reads: if one stopped (or was held back by
    # a stopped step), it does not run


STEPS = (
    Step("quarantine", records.check_quarantine, ("REC-CID", "REC-SCHEMA")),
    Step("authorities", authority.check_chains, ("AUTH-CHAIN",)),
    Step("revisions", election.check_revisions, ("ELE-REVISION",), "election"),
    Step("timeline", election.check_timeline, ("ELE-TIMELINE",), "election"),
    Step("election key", election.check_election_key, ("ELE-KEY",), "election"),
    Step("templates", election.check_templates, ("TPL-VALID",), "election"),
    Step("roll", election.check_roll, ("REG-ROLL",), "election"),
    Step("receipts", blocks.check_receipts, ("RCP-VALID",), "revision"),
    Step(
        "blocks",
        blocks.check_blocks,
        ("BLK-SHAPE", "BLK-SIG", "BLK-ELIGIBLE", "BLK-UNIQUE", "RCP-CONSISTENT"),
        "revision",
    ),
    Step("block trees", blocks.check_tree, ("TREE-ROOT",), "revision", ("blocks",)),
    Step("key release", keys.check_key_release, ("KEY-RELEASE",), "revision"),
    Step("early keys", keys.check_key_early, ("KEY-EARLY",), "revision"),
    Step("results", results.check_results, ("RES-MATCH",), "revision", ("block trees",)),
    Step("recount", recount.recount, (*recount.RECOUNT_CHECKS, "RES-MATCH"), "revision", ("blocks",)),
    Step("disputes", outcome.check_disputes, ("DSP-RESOLVED", "ACC-REPORTS"), "revision", ("blocks",)),
    Step("runoff", outcome.check_runoff, ("RUN-TRIGGER",), "revision", ("blocks",)),
    Step("advisory", advisory.advise, (), "recount", ("blocks",)),
    Step("certifications", keys.check_certifications, ("CERT-MATCH",), "revision"),
    Step("references", records.check_references, ("REC-REF",)),
    Step("signatures", records.check_signatures, ("SIG-VALID",)),
)


# The block checks are the last step that reads every signature's outcome (sig_ok); after
# them the disputes step reads those of disputes and accessibility reports, and the
# signatures step those that do not verify: sig_ok keeps only these (Audit.keep_signatures).
SIGNATURES_READ_BY = "blocks"
SIGNED_LATER = ("dispute", "accessibility_report")


def _memory_advice() -> str:
    budget = os.environ.get("VTAUDIT_DUCKDB_MEMORY", DUCKDB_MEMORY) or "80 % of this machine's memory"
    return (
        f"DuckDB's memory budget ({budget}) is too small for this evidence: "
        "raise it, e.g. VTAUDIT_DUCKDB_MEMORY=8GB, or use a machine with more memory"
    )


def _out_of_memory(audit: Audit, e: duckdb.OutOfMemoryException) -> InputError:
    """Work outside a step ran out of DuckDB's budget: the audit cannot go on (exit 2)."""
    audit.close()
    return InputError(f"{e.__class__.__name__}: {first_line(e)}; {_memory_advice()}")


@dataclass
class Verification:
    election: str | None
    trust: Trust | None
    outcomes: list[CheckOutcome]
    findings: list[Finding]
    stages: list[Stage]
    verdict: str
    records: int
    internal_errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    ballots: list[dict[str, Any]] = field(default_factory=list)  # per template: recount and runoff
    advisory: dict[str, Any] = field(default_factory=dict)  # not checks: turnout, small blocks, outliers
    # the result cache: folder, what was reused and checked, parts ignored (None: no cache).
    # Measured, like stages and seconds: never part of the report body.
    cache: dict[str, Any] | None = None

    @property
    def verified(self) -> bool:
        return self.verdict in ("verified", "verified-with-warnings")

    def summary(self) -> dict[str, Any]:
        return {
            "election": self.election,
            "trust": self.trust.summary() if self.trust else None,
            "verdict": self.verdict,
            "records": self.records,
            "checks": [o.to_json() for o in self.outcomes],
            "findings": len(self.findings),
            "stages": [
                {"name": s.name, "seconds": round(s.seconds, 3), "cpu": round(s.cpu, 3), "detail": s.detail}
                for s in self.stages
            ],
            "internalErrors": self.internal_errors,
            "ballots": self.ballots,
            "advisory": self.advisory,
            "cache": self.cache,
            "seconds": round(self.seconds, 3),
        }


def verdict_of(outcomes: list[CheckOutcome], internal_errors: Sequence[str] = ()) -> str:
    """spec §11: not-verified when a critical check fails (or could not run), with warnings
    when only error or warning checks fail (or could not run), else verified. An internal
    error anywhere means the audit is incomplete: not verified."""
    if internal_errors or any(o.severity == "critical" and o.status != "pass" for o in outcomes):
        return "not-verified"
    if any(o.severity in ("error", "warning") and o.status != "pass" for o in outcomes):
        return "verified-with-warnings"
    return "verified"


def verify_store(
    root: Path,
    trust: Trust | None,
    *,
    workers: int = 2,
    election: str | None = None,
    progress: Callable[[str], None] | None = None,
    recount: bool = True,
    audit_dir: Path | None = None,
    cache: Path | None = None,
    runner: Runner | None = None,
) -> Verification:
    """Run every check of spec §8 over the evidence store at ``root``; ``recount=False``
    skips decryption and everything that needs it (the verdict cannot then be verified).
    The recount writes ``answers.parquet`` into ``audit_dir`` (a temporary folder when
    None); an earlier run's file there is removed first. The per-batch work runs on
    ``runner`` (``parallel.open_runner``: a Dask cluster), else on ``workers`` local
    threads or processes; the result is the same either way.

    ``cache`` is a result cache folder (auditor.verify.cache): signatures, tokens and
    recounted blocks it holds (under this user's key) are not checked again, and what is
    checked is added to it. The findings are the same with or without it."""
    started, cpu = time.perf_counter(), time.process_time()
    if audit_dir is not None:
        (audit_dir / ANSWERS).unlink(missing_ok=True)
    results, unusable = open_cache(cache) if cache is not None else (None, "")
    audit = Audit(
        root, trust, workers=workers, election=election, out=audit_dir, cache=results, runner=runner
    )
    if results is not None:
        parts = sum(results.parts().values())
        audit.stages.append(
            Stage(
                "cache",
                time.perf_counter() - started,
                f"{parts:,} parts read, {sum(results.ignored.values()):,} ignored",
                time.process_time() - cpu,
            )
        )
    try:
        verification = _run(audit, trust, recount, progress, started)
    finally:
        audit.close()
    if cache is not None:
        verification.cache = _cache_summary(cache, results, unusable)
    return verification


def _cache_summary(folder: Path, cache: ResultCache | None, unusable: str) -> dict[str, Any]:
    if cache is None:
        return {"folder": str(folder), "used": False, "notes": [f"the cache was not used: {unusable}"]}
    cache.finish()
    return {"used": True, **cache.summary()}


def _run(
    audit: Audit,
    trust: Trust | None,
    recount: bool,
    progress: Callable[[str], None] | None,
    started: float,
) -> Verification:
    say = progress or (lambda _: None)
    say("loading records, verifying signatures and timestamps")
    try:
        audit.open()
    except duckdb.OutOfMemoryException as e:
        raise _out_of_memory(audit, e) from None
    audit.con.execute("CREATE OR REPLACE TEMP TABLE counted (cid VARCHAR)")
    errors: list[str] = []
    stopped: set[str] = set()
    for step in STEPS:
        _step(audit, step, recount, say, errors, stopped)
        if step.name == SIGNATURES_READ_BY:  # whether it ran or not
            try:
                audit.keep_signatures(SIGNED_LATER)
            except duckdb.OutOfMemoryException as e:
                raise _out_of_memory(audit, e) from None
            audit.release_memory()
    if not audit.findings.ran("AUTH-THRESHOLD") and audit.election is None:
        audit.findings.skip("AUTH-THRESHOLD", audit.election_note)
    errors.extend(audit.internal_errors)
    audit.findings.finish()
    outcomes = [audit.findings.outcomes[c] for c in CHECK_IDS]
    return Verification(
        election=audit.election.cid if audit.election else None,
        trust=trust,
        outcomes=outcomes,
        findings=audit.findings.items,
        stages=audit.stages,
        verdict=verdict_of(outcomes, errors),
        records=audit.harvested,
        internal_errors=errors,
        seconds=time.perf_counter() - started,
        ballots=audit.ballots,
        advisory=audit.advisory,
    )


def _step(
    audit: Audit,
    step: Step,
    recount: bool,
    say: Callable[[str], None],
    errors: list[str],
    stopped: set[str],
) -> None:
    """Run one step, or mark its checks skipped when what it needs is missing."""
    missing = _missing(audit, step.needs)
    if not recount and step.name in RECOUNT_STEPS:
        missing = "not run: --no-recount"
    for before in step.after:
        if before in stopped:  # its tables would be missing or half made: no half-judgements
            missing = f"not run: it reads what the {before} step makes, and that step stopped"
            stopped.add(step.name)
    if missing:
        for check in step.checks:
            audit.findings.skip(check, missing)
        return
    say(step.name)
    with audit.stage(step.name) as stage:
        try:
            step.run(audit)
            stage.detail = audit.details.pop(step.name, "")
            audit.release_memory()  # what the step's queries freed, before the next step
        except ClusterError:  # work was lost, not a bug: no verdict at all (cluster.py)
            raise
        except Exception as e:
            if os.environ.get("VTAUDIT_DEBUG"):
                raise
            stopped.add(step.name)
            message = f"the {step.name} step stopped on an internal error ({type(e).__name__}: {e})"
            advice = "this is a bug in vtaudit, please report it"
            if isinstance(e, duckdb.OutOfMemoryException):
                message = f"the {step.name} step ran out of memory ({first_line(e)})"
                advice = _memory_advice()
            errors.append(f"{message}; {advice}")
            for check in step.checks:  # a failure found before the error stands
                audit.findings.skip(check, f"{message}; {advice}")


RECOUNT_STEPS = ("recount", "runoff", "advisory")


def _missing(audit: Audit, needs: str) -> str:
    if needs and audit.election is None:
        return audit.election_note or "no election record"
    if needs in ("revision", "recount") and audit.revision is None:
        return "no valid election revision (see ELE-REVISION)"
    if needs == "recount" and not audit.recounted:
        return "nothing was recounted"
    return ""
