"""After the count: DSP-RESOLVED, ACC-REPORTS and RUN-TRIGGER (spec §8, §10).

As §8 words it, a dispute is refuted by evidence when the voter's block is counted (the
disputer's key is a member of a harvested block with a valid accepted receipt);
otherwise it is confirmed when a receipted block is missing (its valid receipt accepted
a block that is not in the evidence), and unresolved in every other case (D21). An
accessibility report is negated the same way: by the voter's presence in a counted
block. Runoff rules are evaluated on the recount.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from auditor.model.encoding import b64u_encode
from auditor.model.records import Runoff
from auditor.verify.context import Audit

__all__ = ["DAY_MS", "RunoffInputs", "check_disputes", "check_runoff", "participants_of", "runoff_triggers"]

DAY_MS = 86_400_000


def _asked(audit: Audit) -> None:
    """The rows the disputes and accessibility reports of the election ask about, as small
    temp tables: the claims (``dsp``, ``acc``), the memberships of their keys
    (``asked_member``), the outcomes of their own signatures (``asked_sig``), the blocks
    their receipts name (``asked_blk``), the roll entries they name (``asked_eligible``),
    the roll entries of the disputers' keys (``asked_voter``) and the counted blocks
    among the memberships (``asked_counted``). Joined against the whole
    ``member``, ``sig_ok`` and ``eligible`` tables, a few hundred claims built hash tables
    over millions of rows (at a million voters the step peaked at 2,135 MB, D44); each
    table here is a semi-join whose build side is the claims."""
    assert audit.election is not None
    con, election = audit.con, {"e": audit.election.cid}
    con.execute(
        "CREATE OR REPLACE TEMP TABLE dsp AS "
        "SELECT cid, template, receipt, key FROM dispute WHERE election = $e",
        election,
    )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE acc AS "
        "SELECT cid, template, registrant, key FROM accessibility_report WHERE election = $e",
        election,
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE asked_member AS
        SELECT cid, key FROM member WHERE key IN (SELECT key FROM dsp UNION SELECT key FROM acc);
        CREATE OR REPLACE TEMP TABLE asked_sig AS
        SELECT cid, key, ok FROM sig_ok WHERE cid IN (SELECT cid FROM dsp UNION SELECT cid FROM acc);
        CREATE OR REPLACE TEMP TABLE asked_blk AS
        SELECT cid, template FROM blk
        WHERE cid IN (SELECT block FROM rcp WHERE cid IN (SELECT receipt FROM dsp));
        CREATE OR REPLACE TEMP TABLE asked_eligible AS
        SELECT cid, key, district FROM eligible WHERE cid IN (SELECT registrant FROM acc);
        CREATE OR REPLACE TEMP TABLE asked_voter AS
        SELECT key, district FROM eligible WHERE key IN (SELECT key FROM dsp);
        """
    )
    # the counted blocks a claim can ask about: those of the claimants' keys
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE asked_counted AS
        SELECT cid FROM counted WHERE cid IN (SELECT cid FROM asked_member)
        """
    )


ASKED = (
    "dsp",
    "acc",
    "asked_member",
    "asked_sig",
    "asked_blk",
    "asked_eligible",
    "asked_voter",
    "asked_counted",
)


def check_disputes(audit: Audit) -> None:
    """DSP-RESOLVED and ACC-REPORTS."""
    f = audit.findings
    assert audit.election is not None
    _asked(audit)
    audit.disputed = defaultdict(set)
    audit.unreached = defaultdict(set)
    rows = audit.rows(
        """
        SELECT d.cid, d.template, d.receipt, d.key, r.cid IS NOT NULL, coalesce(r.valid, false),
               r.result, r.block,
               EXISTS (SELECT 1 FROM asked_member m WHERE m.cid = r.block AND m.key = d.key),
               EXISTS (SELECT 1 FROM asked_member m JOIN asked_counted k USING (cid) WHERE m.key = d.key),
               EXISTS (SELECT 1 FROM asked_sig s WHERE s.cid = d.cid AND s.key = d.key AND s.ok),
               (SELECT min(b.template) FROM asked_blk b WHERE b.cid = r.block),  -- null: block not harvested
               EXISTS (SELECT 1 FROM asked_voter v JOIN tpl t ON t.district = v.district
                       WHERE v.key = d.key AND t.cid = d.template)
        FROM dsp d LEFT JOIN rcp r ON r.cid = d.receipt
        ORDER BY d.cid
        """
    )
    f.checked("DSP-RESOLVED", len(rows), f"{len(rows)} disputes")
    for row in rows:
        cid, named, receipt, key, found, valid, result, block, member, counted, signed = row[:11]
        of_block, voter = row[11:]
        who = b64u_encode(bytes(key))
        template = of_block or named  # spec §10 counts disputes per template: the block's
        if not signed:
            status, why = "invalid", f"it is not validly signed by the disputer's key {who}"
        elif of_block is not None and of_block != named:
            status, why = "invalid", f"it names template {named}, but the receipt's block is for {of_block}"
        elif counted:
            continue  # refuted by evidence: the voter's key is a member of a counted block
        elif of_block is None and not voter:
            # spec §10 counts disputes of registrants: with no block to show the disputer's
            # membership, the key must at least be an eligible voter of the template's district
            # (else anyone could publish disputes from fresh keys and force a runoff)
            status, why = (
                "invalid",
                f"the disputer {who} is not an eligible voter of template {named}'s district, and "
                + (
                    f"the receipt's block {block} is not in the evidence"
                    if found
                    else f"its receipt {receipt} is not in the evidence"
                ),
            )
        elif not found:
            status, why = (
                "unresolved",
                f"its receipt {receipt} is not in the evidence and no counted block holds the voter {who}",
            )
        elif not member and of_block is not None:
            status, why = "invalid", f"the disputer {who} is not a member of block {block}"
        elif valid and result == "accepted" and of_block is None:
            status, why = (
                "confirmed",
                f"receipt {receipt} accepted block {block}, which is not a block of this election in the "
                f"evidence, and no counted block holds the voter {who}",
            )
        else:
            state = "a valid" if valid else "an invalid"
            status, why = (
                "unresolved",
                f"its receipt {receipt} is {state} '{result}' receipt and no counted block holds the "
                f"voter {who}",
            )
        if status != "invalid":
            audit.disputed[template].add(who)
        f.fail("DSP-RESOLVED", cid, f"dispute {cid} is {status}: {why}", records=[receipt], status=status)
    reports = audit.rows(
        """
        SELECT a.cid, a.template, a.registrant, a.key,
               EXISTS (SELECT 1 FROM asked_eligible e JOIN tpl t ON t.district = e.district
                       WHERE e.cid = a.registrant AND e.key = a.key AND t.cid = a.template),
               EXISTS (SELECT 1 FROM asked_sig s WHERE s.cid = a.cid AND s.key = a.key AND s.ok),
               EXISTS (SELECT 1 FROM asked_member m JOIN asked_counted k USING (cid) WHERE m.key = a.key)
        FROM acc a ORDER BY a.cid
        """
    )
    for table in ASKED:
        audit.con.execute(f"DROP TABLE {table}")
    negated = 0
    for cid, template, registrant, key, eligible, signed, voted in reports:
        who = b64u_encode(bytes(key))
        if not eligible:
            f.fail(
                "ACC-REPORTS",
                cid,
                f"accessibility report {cid} is from key {who}, which is not registrant {registrant} of the "
                f"district of template {template} on the roll",
                records=[registrant],
            )
        elif not signed:
            f.fail("ACC-REPORTS", cid, f"accessibility report {cid} is not validly signed by its voter {who}")
        elif voted:
            negated += 1
        else:
            audit.unreached[template].add(registrant)
    unresolved = sum(len(v) for v in audit.unreached.values())
    f.checked(
        "ACC-REPORTS",
        len(reports),
        f"{len(reports)} reports: {negated} negated by the voter's counted block, {unresolved} unresolved",
    )


@dataclass(frozen=True)
class RunoffInputs:
    spread: int  # votes of the first minus votes of the second candidate
    total: int  # ballots that answered the question
    disputed: int  # distinct voters with confirmed or unresolved disputes
    unreached: int  # distinct eligible registrants with unresolved accessibility reports
    eligible: int  # eligible voters of the district


def runoff_triggers(x: RunoffInputs, rules: Runoff) -> tuple[list[str], list[str]]:
    """The spec §10 triggers that fire, with a sentence each giving the numbers."""
    triggers, why = [], []
    if rules.disputeMargin and x.disputed > x.spread:
        triggers.append("dispute-margin")
        why.append(f"dispute-margin: {x.disputed} disputed voters > spread {x.spread}")
    if x.unreached * 1_000_000 > rules.accessibilityPpm * x.eligible:
        triggers.append("accessibility")
        why.append(
            f"accessibility: {x.unreached} unresolved reports × 10^6 > {rules.accessibilityPpm} ppm × "
            f"{x.eligible} eligible voters"
        )
    if x.spread * 1_000_000 < rules.closeMarginPpm * x.total:
        triggers.append("close-margin")
        why.append(f"close-margin: spread {x.spread} × 10^6 < {rules.closeMarginPpm} ppm × {x.total} ballots")
    return triggers, why


def participants_of(ordered: list[tuple[str, int]], count: int) -> list[str]:
    """The top ``count`` candidates, with everyone tied at the cut (spec §10)."""
    if not ordered:
        return []
    cut = ordered[min(count, len(ordered)) - 1][1]
    return [code for code, votes in ordered if votes >= cut]


def check_runoff(audit: Audit) -> None:
    """RUN-TRIGGER: spec §10's rules, per template and single-winner select question."""
    f = audit.findings
    revision = audit.revision
    assert revision is not None
    if not audit.recounts:
        f.skip("RUN-TRIGGER", "there is no recount to evaluate the runoff rules on")
        return
    rules = revision.body.runoff
    closed = revision.body.timeline.C
    # spec §10: members of blocks *rejected* as error or with an invalid receipt. Anyone can
    # publish an unsigned receipt, or a block of fresh keys: so a block counts when it is not
    # counted and has a valid error receipt, or only invalid receipts (a valid receipt of
    # another result decided it), and only its members who are eligible voters of the
    # template's district count
    margin_blocks = dict(
        audit.rows(
            """
            WITH judged AS (
                SELECT block, bool_or(valid AND result = 'error') AS error,
                       bool_or(valid AND result <> 'error') AS decided, bool_or(NOT valid) AS invalid
                FROM rcp GROUP BY block),
            rejected AS (
                SELECT b.template, m.key FROM judged j JOIN blk b ON b.cid = j.block
                JOIN member m ON m.cid = b.cid
                WHERE b.cid NOT IN (SELECT cid FROM counted) AND (j.error OR (j.invalid AND NOT j.decided)))
            SELECT r.template, count(DISTINCT r.key) FROM rejected r JOIN tpl t ON t.cid = r.template
            WHERE EXISTS (SELECT 1 FROM eligible e WHERE e.key = r.key AND e.district = t.district)
            GROUP BY r.template
            """
        )
    )
    eligible = dict(audit.rows("SELECT district, count(*) FROM eligible GROUP BY district"))
    evaluated = 0
    audit.ballots = []
    for template_cid, template in sorted(audit.templates.items()):
        recount = audit.recounts.get(template_cid)
        if recount is None:
            continue
        voters, counts = recount
        district = template.body.district
        disputed = len(audit.disputed.get(template_cid, ()))
        unreached = len(audit.unreached.get(template_cid, ()))
        error_margin = disputed + unreached + int(margin_blocks.get(template_cid, 0))
        questions: list[dict[str, Any]] = []
        for q in template.body.questions:
            if q.type != "select" or q.max != 1:
                continue
            evaluated += 1
            entry = counts[q.code]
            ordered = sorted(entry["options"].items(), key=lambda kv: (-kv[1], kv[0]))
            first = ordered[0][1] if ordered else 0
            second = ordered[1][1] if len(ordered) > 1 else 0
            spread, total = first - second, entry["ballots"]
            inputs = RunoffInputs(spread, total, disputed, unreached, eligible.get(district, 0))
            triggers, why = runoff_triggers(inputs, rules)
            required = bool(triggers)
            chosen = participants_of(ordered, rules.participants) if required else []
            questions.append(
                {
                    "question": q.code,
                    "spread": spread,
                    "total": total,
                    "errorMargin": error_margin,
                    "robust": error_margin < spread,
                    "runoff": {
                        "required": required,
                        "triggers": triggers,
                        "participants": chosen,
                        "due": closed + rules.intervalDays * DAY_MS if required else None,
                    },
                    "inputs": {
                        "disputed": disputed,
                        "unresolvedReports": unreached,
                        "eligible": eligible.get(district, 0),
                    },
                }
            )
            # spec §8: the check passes when the rules were evaluated, "the finding states
            # which fired" (D50): a note per question, whether a runoff is required or not
            where = f"template {template_cid} ({district}), question {q.code}"
            if required:
                message = f"{where}: a runoff is required between {', '.join(chosen)}; {'; '.join(why)}"
            else:
                message = (
                    f"{where}: no runoff rule fired (spread {spread:,} of {total:,} ballots, "
                    f"{disputed:,} disputed, {unreached:,} unresolved accessibility reports)"
                )
            f.note(
                "RUN-TRIGGER", template_cid, message, question=q.code, triggers=triggers, participants=chosen
            )
        audit.ballots.append(
            {
                "template": template_cid,
                "district": district,
                "voters": voters,
                "counts": counts,
                "errorMargin": error_margin,  # §10: of the ballot, single-winner questions or not
                "questions": questions,
            }
        )
    f.checked("RUN-TRIGGER", evaluated, f"{evaluated} single-winner questions")
