"""AUTH-CHAIN and AUTH-THRESHOLD (spec §3, §4.1, §9).

An authority is identified by its founding administration record. Every later
administration names the founding CID and its predecessor and is signed by a threshold
of the predecessor's administrators; two successors of one administration are an
equivocation. Which founding records to trust comes from the trust file, never from the
evidence: without one, the authorities the election record names are taken as they are
and the audit says it is only self-consistent.
"""

from __future__ import annotations

from collections import defaultdict

from auditor.model.envelope import Envelope
from auditor.verify.context import Audit, distinct_content, fmt_time

__all__ = ["check_authority_signature", "check_chains", "fallback_event"]

# When an authority-signed record has no valid timestamp, the timeline event it belongs
# to stands in for its proven time when judging the administration's expiry (spec §3).
FALLBACK_EVENT = {
    "election": "KI",
    "ballot_template": "BF",
    "registration_roll": "RE",
    "block_tree": "HV",
    "result": "TS",
    "certification": "CS",
}


def _admin_keys(admin: Envelope) -> set[str]:
    return {a.key for a in admin.body.administrators}


def _signed_threshold(audit: Audit, record: Envelope, admin: Envelope) -> tuple[int, int]:
    """(distinct administrators of ``admin`` with a valid signature on ``record``, threshold)."""
    signers = audit.valid_signers.get(record.cid, set()) & _admin_keys(admin)
    return len(signers), admin.body.threshold


def check_chains(audit: Audit) -> None:
    """AUTH-CHAIN: every administration chains to its founding record, linearly, and the
    authorities the election relies on are the ones the trust file anchors."""
    f = audit.findings
    admins = {a.cid: a for a in audit.of_type("administration", election=False)}
    ok: dict[str, bool] = {}
    problems: dict[str, str] = {}
    for cid, admin in admins.items():
        if admin.body.is_founding:
            got, need = _signed_threshold(audit, admin, admin)
            ok[cid] = got >= need
            if not ok[cid]:
                problems[cid] = (
                    f"founding administration {cid} ({admin.body.name}) is signed by {got} of its own "
                    f"administrators, its threshold is {need}"
                )
    # successors, in chain order: a record is chained once its predecessor is
    successors: dict[str, list[Envelope]] = defaultdict(list)
    for admin in admins.values():
        if not admin.body.is_founding:
            successors[admin.body.previous].append(admin)
    frontier = [cid for cid, good in ok.items() if good]
    while frontier:
        previous_cid = frontier.pop()
        previous = admins[previous_cid]
        founding = previous_cid if previous.body.is_founding else previous.body.authority
        for admin in sorted(successors.get(previous_cid, []), key=lambda a: a.cid):
            body = admin.body
            got, need = _signed_threshold(audit, admin, previous)
            proven = audit.proven.get(admin.cid)
            if body.authority != founding:
                problems[admin.cid] = (
                    f"administration {admin.cid} names authority {body.authority}, but its predecessor "
                    f"{previous_cid} belongs to authority {founding}"
                )
            elif got < need:
                problems[admin.cid] = (
                    f"administration {admin.cid} is signed by {got} administrators of its predecessor "
                    f"{previous_cid}, whose threshold is {need}"
                )
            elif proven is not None and proven >= previous.body.expires:
                problems[admin.cid] = (
                    f"administration {admin.cid} was signed at {fmt_time(proven)}, after its predecessor "
                    f"{previous_cid} expired ({fmt_time(previous.body.expires)})"
                )
            else:
                ok[admin.cid] = True
                frontier.append(admin.cid)
                continue
            ok[admin.cid] = False
    for cid, admin in admins.items():
        if cid in ok:
            continue
        ok[cid] = False
        previous = admin.body.previous
        if previous not in admins:
            problems[cid] = (
                f"administration {cid} names predecessor {previous}, which is not an administration "
                "in the evidence"
            )
        else:
            problems[cid] = (
                f"administration {cid} follows {previous}, which does not chain to a founding record"
            )
    for cid, message in problems.items():
        f.fail("AUTH-CHAIN", cid, message, records=[cid])
    # forks: two chained successors of one administration
    for previous_cid, children in successors.items():
        chained = distinct_content(audit, (c for c in children if ok.get(c.cid)))
        if len(chained) > 1:  # the authority's chain forks
            audit.equivocation(
                "AUTH-CHAIN", chained, f"the succession of administration {previous_cid}", also=[previous_cid]
            )
    audit.admin_ok = ok
    f.checked("AUTH-CHAIN", len(admins), f"{len(admins)} administrations")
    _check_anchors(audit, admins, ok)


def _check_anchors(audit: Audit, admins: dict[str, Envelope], ok: dict[str, bool]) -> None:
    f = audit.findings
    election = audit.election
    if election is None:
        return
    body = election.body
    named = {
        "election": body.authority,
        "registration": body.registrationAuthority,
        "certification": body.certificationAuthority,
    }
    trust = audit.trust
    for role, founding in named.items():
        if trust is not None:
            anchor = getattr(trust, role)
            if anchor is None:
                f.fail(
                    "AUTH-CHAIN",
                    election.cid,
                    f"the trust file names no {role} authority, so the election's {role} authority "
                    f"{founding} is not anchored",
                    records=[election.cid],
                )
            elif anchor != founding:
                f.fail(
                    "AUTH-CHAIN",
                    election.cid,
                    f"the election names {role} authority {founding}; the trust file anchors {anchor}",
                    records=[election.cid],
                    trusted=anchor,
                )
        _check_founding(audit, admins, ok, founding, f"{role} authority")
    ballot_authorities = sorted({t.body.authority for t in audit.of_type("ballot_template")})
    for founding in ballot_authorities:
        if trust is not None and founding not in trust.ballot:
            f.fail(
                "AUTH-CHAIN",
                founding,
                f"ballot authority {founding} signs templates of this election but the trust file does "
                "not list it among [authorities] ballot",
                trusted=list(trust.ballot),
            )
        _check_founding(audit, admins, ok, founding, "ballot authority")


def _check_founding(
    audit: Audit, admins: dict[str, Envelope], ok: dict[str, bool], founding: str, role: str
) -> None:
    admin = admins.get(founding)
    if admin is None:
        audit.findings.fail(
            "AUTH-CHAIN",
            founding,
            f"the {role} {founding} has no founding administration record in the evidence",
        )
    elif not admin.body.is_founding:
        audit.findings.fail(
            "AUTH-CHAIN", founding, f"the {role} {founding} is an administration but not a founding record"
        )


def fallback_event(record_type: str) -> str | None:
    return FALLBACK_EVENT.get(record_type)


def check_authority_signature(audit: Audit, record: Envelope, founding: str) -> bool:
    """AUTH-THRESHOLD for one authority-signed record; True when it holds.

    The record's ``administration`` must chain to ``founding``, at least ``threshold`` of
    its administrators must have signed, and it must not have expired at the record's
    proven time (without a timestamp: at the timeline event the record belongs to).
    """
    f = audit.findings
    f.checked("AUTH-THRESHOLD", 1)
    cid, kind = record.cid, record.type
    admin_cid = record.body.administration
    admin = audit.records.get(admin_cid)
    if admin is None or admin.type != "administration":
        f.fail(
            "AUTH-THRESHOLD",
            cid,
            f"{kind} {cid} names administration {admin_cid}, which is not in the evidence",
            records=[admin_cid],
        )
        return False
    in_chain = admin_cid == founding or admin.body.authority == founding
    if not in_chain or not audit.admin_ok.get(admin_cid, False):
        why = "does not belong to" if not in_chain else "does not validly chain to"
        f.fail(
            "AUTH-THRESHOLD",
            cid,
            f"{kind} {cid} is signed under administration {admin_cid}, which {why} authority {founding}",
            records=[admin_cid],
        )
        return False
    got, need = _signed_threshold(audit, record, admin)
    if got < need:
        f.fail(
            "AUTH-THRESHOLD",
            cid,
            f"{kind} {cid}: {got} valid signatures by administrators of {admin_cid}, threshold {need}",
            records=[admin_cid],
            got=got,
            expected=need,
        )
        return False
    when = audit.proven.get(cid)
    basis = "proven time"
    if when is None:
        event = fallback_event(kind)
        when = audit.timeline(event) if event else None
        basis = f"timeline event {event}"
        if when is None and kind == "election" and audit.election is not None:
            when, basis = audit.election.body.date, "election date"
    if when is None:
        f.fail(
            "AUTH-THRESHOLD",
            cid,
            f"{kind} {cid} has no valid timestamp and no timeline event to judge its administration's "
            "expiry by",
            records=[admin_cid],
        )
        return False
    if when >= admin.body.expires:
        f.fail(
            "AUTH-THRESHOLD",
            cid,
            f"{kind} {cid} was signed under administration {admin_cid}, which expired "
            f"{fmt_time(admin.body.expires)}, before the record's {basis} {fmt_time(when)}",
            records=[admin_cid],
        )
        return False
    return True
