"""The election's set-up: ELE-REVISION, ELE-TIMELINE, ELE-KEY, TPL-VALID, REG-ROLL.

These checks decide what the later ones measure against: the effective revision (its
timeline, keyholders, receipt key), the effective template of each district, and the
roll of eligible voters (kept in DuckDB as the table ``eligible``, D48).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator

import pyarrow as pa

from auditor.crypto import merkle
from auditor.crypto.ecies import combine_public
from auditor.errors import AuditError
from auditor.model.encoding import b64u_decode, b64u_encode
from auditor.model.envelope import Envelope
from auditor.store.bulk import sorted_cid_leaves
from auditor.verify.authority import check_authority_signature
from auditor.verify.context import Audit, distinct_content, fmt_time

__all__ = ["check_election_key", "check_revisions", "check_roll", "check_templates", "check_timeline"]


def _effective(
    audit: Audit,
    check: str,
    valid: list[Envelope],
    number: Callable[[Envelope], int],
    what: str,
) -> Envelope | None:
    """The valid record with the highest number; equal numbers with different content are
    an equivocation (reported); then the earliest proven one is used, and the finding says so."""
    by_number: dict[int, list[Envelope]] = defaultdict(list)
    for record in valid:
        by_number[number(record)].append(record)
    for n, records in sorted(by_number.items()):
        ordered = distinct_content(audit, records)
        by_number[n] = ordered
        if len(ordered) > 1:
            audit.equivocation(check, ordered, f"{what} number {n}")
    if not by_number:
        return None
    best = sorted(by_number[max(by_number)], key=lambda r: (audit.proven.get(r.cid, 0), r.cid))
    return best[0]


def check_revisions(audit: Audit) -> None:
    """ELE-REVISION: valid revisions are authority-signed and timestamped no later than the
    revision deadline; the effective one is the highest; no number is used twice."""
    f = audit.findings
    election = audit.election
    assert election is not None
    deadline = election.body.revisionDeadline
    founding = election.body.authority
    revisions = audit.of_type("election_revision")
    valid = []
    for rev in revisions:
        if not check_authority_signature(audit, rev, founding):
            continue
        times = _valid_token_times(audit, rev.cid)
        if not any(t <= deadline for t in times):
            got = (
                f"timestamped {', '.join(fmt_time(t) for t in times)}" if times else "not validly timestamped"
            )
            f.fail(
                "ELE-REVISION",
                rev.cid,
                f"revision {rev.body.revision} ({rev.cid}) is {got}; a revision needs a timestamp no "
                f"later than the revision deadline {fmt_time(deadline)}",
            )
            continue
        valid.append(rev)
    f.checked("ELE-REVISION", len(revisions), f"{len(revisions)} revisions")
    audit.revision = _effective(audit, "ELE-REVISION", valid, lambda r: int(r.body.revision), "revision")
    if audit.revision is None:
        f.fail(
            "ELE-REVISION",
            election.cid,
            f"election {election.cid} has no valid revision: there is no timeline, keyholder list or "
            "receipt key to audit against",
        )
    # the election record itself, now that the timeline can date it
    check_authority_signature(audit, election, founding)


def _valid_token_times(audit: Audit, cid: str) -> list[int]:
    """genTimes of the valid tokens of a record and of its copies, which share its digest
    and so its tokens' imprint (D26; one query, revisions are few; a store written before
    the digest column has no digests to match, only the record's own tokens)."""
    rows = audit.rows(
        """
        SELECT DISTINCT t.gen_time FROM token_ok t JOIN envelopes e USING (cid)
        WHERE t.ok AND (t.cid = $cid OR e.digest IN (SELECT digest FROM envelopes WHERE cid = $cid))
        ORDER BY t.gen_time
        """,
        {"cid": cid},
    )
    return [r[0] for r in rows]


def check_timeline(audit: Audit) -> None:
    """ELE-TIMELINE: the effective timeline is in the order of §1."""
    f = audit.findings
    if audit.revision is None:
        f.skip("ELE-TIMELINE", "no valid revision, so no timeline (ELE-REVISION failed)")
        return
    f.checked("ELE-TIMELINE", 1, f"the timeline of revision {audit.revision.body.revision}")
    problems = audit.revision.body.timeline.order_problems()
    if problems:
        f.fail(
            "ELE-TIMELINE",
            audit.revision.cid,
            f"the effective timeline is out of order: {'; '.join(problems)}",
            timeline=audit.revision.body.timeline.to_json(),
        )


def check_election_key(audit: Audit) -> None:
    """ELE-KEY: the election key is the sum of the listed keyholders' keys, each keyholder
    record self-signed and timestamped in [KI, KA)."""
    f = audit.findings
    revision = audit.revision
    if revision is None:
        f.skip("ELE-KEY", "no valid revision lists the keyholders (ELE-REVISION failed)")
        return
    listed = list(revision.body.keyholders)
    f.checked("ELE-KEY", len(listed) + 1, f"{len(listed)} keyholders and the election key")
    if len(set(listed)) != len(listed):
        f.fail("ELE-KEY", revision.cid, "the revision lists a keyholder more than once", keyholders=listed)
    points = []
    complete = True
    for cid in dict.fromkeys(listed):
        keyholder = audit.records.get(cid)
        if keyholder is None or keyholder.type != "keyholder":
            f.fail(
                "ELE-KEY", cid, f"keyholder {cid} listed by revision {revision.cid} is not in the evidence"
            )
            complete = False
            continue
        body = keyholder.body
        points.append(b64u_decode(body.electionKey))
        if audit.election is None or body.election != audit.election.cid:
            f.fail("ELE-KEY", cid, f"keyholder {cid} belongs to election {body.election}, not this one")
        if not audit.signed_by(cid, body.registrantKey):
            f.fail(
                "ELE-KEY",
                cid,
                f"keyholder {cid} ({body.name}) is not validly signed by its registrant key "
                f"{body.registrantKey}",
            )
        late = audit.in_window(cid, "KI", "KA")
        if late:
            f.fail("ELE-KEY", cid, f"keyholder {cid} ({body.name}) must be timestamped in [KI, KA); {late}")
    if complete and points:
        try:
            expected = combine_public(points)
        except (AuditError, ValueError) as e:
            f.fail("ELE-KEY", revision.cid, f"the keyholders' keys cannot be added: {e}")
            return
        if expected != b64u_decode(revision.body.electionKey):
            f.fail(
                "ELE-KEY",
                revision.cid,
                f"the election key {revision.body.electionKey} is not the sum of the {len(points)} "
                f"keyholders' keys, which is {b64u_encode(expected)}",
                got=revision.body.electionKey,
                expected=b64u_encode(expected),
            )


def check_templates(audit: Audit) -> None:
    """TPL-VALID: each template is authority-signed by its ballot authority, timestamped no
    later than BF and well formed; one effective revision per (authority, district)."""
    f = audit.findings
    templates = audit.of_type("ballot_template")
    f.checked("TPL-VALID", len(templates), f"{len(templates)} templates")
    valid: dict[tuple[str, str], list[Envelope]] = defaultdict(list)
    for tpl in templates:
        body = tpl.body
        name = f"template {tpl.cid} ({body.district}, revision {body.revision})"
        good = check_authority_signature(audit, tpl, body.authority)
        if not good:
            f.fail(
                "TPL-VALID", tpl.cid, f"{name} is not validly signed by its ballot authority (AUTH-THRESHOLD)"
            )
        when = audit.in_window(tpl.cid, None, "BF", end_inclusive=True) if audit.revision else ""
        if when:
            f.fail("TPL-VALID", tpl.cid, f"{name} must be timestamped no later than BF; {when}")
            good = False
        problems = body.problems()
        if problems:
            f.fail(
                "TPL-VALID", tpl.cid, f"{name} is not well formed: {'; '.join(problems)}", problems=problems
            )
            good = False
        if good:
            valid[(body.authority, body.district)].append(tpl)
    effective = {}
    for group in valid.values():
        first = group[0].body
        chosen = _effective(
            audit,
            "TPL-VALID",
            group,
            lambda t: int(t.body.revision),
            f"the template of district {first.district} by {first.authority}, revision",
        )
        if chosen is not None:
            effective[chosen.cid] = chosen
    districts = defaultdict(list)
    for tpl in effective.values():
        districts[tpl.body.district].append(tpl)
    for district, group in sorted(districts.items()):
        if len(group) > 1:
            f.fail(
                "TPL-VALID",
                group[1].cid,
                f"district {district} has effective templates from {len(group)} ballot authorities",
                records=[t.cid for t in group],
            )
    audit.templates = effective
    audit.register(
        "tpl",
        pa.table(
            {
                "cid": pa.array(list(effective), pa.string()),
                "district": pa.array([t.body.district for t in effective.values()], pa.string()),
            }
        ),
    )


def check_roll(audit: Audit) -> None:
    """REG-ROLL: the roll is authority-signed, rolled in [RE, BF], and its root and counts are
    those recomputed from the harvested registrants, each self-signed, one per key."""
    f = audit.findings
    election = audit.election
    assert election is not None
    authority = election.body.registrationAuthority
    # registrants of this registration authority up to RE (an authority serves many
    # elections: later registrations belong to later rolls), each self-signed or not
    registration_end = audit.timeline("RE")
    if registration_end is None:
        registration_end = 2**62
    later = audit.rows(
        "SELECT count(*) FROM registrant WHERE registrationAuthority = ? AND epoch_ms(registered) > ?",
        [authority, registration_end],
    )[0][0]
    if later:
        f.checked("REG-ROLL", 0, f"{later:,} registrants registered after RE are not part of this roll")
    # The registrants and the eligible voters stay in DuckDB, which spills them to disk
    # under a memory budget; Python holds one batch of CIDs at a time (ten million
    # registrants as Arrow or Python objects would take gigabytes).
    chosen = "FROM registrant r WHERE r.registrationAuthority = ? AND epoch_ms(r.registered) <= ?"
    params = [authority, registration_end]
    signed = "EXISTS (SELECT 1 FROM sig_ok s WHERE s.cid = r.cid AND s.key = r.key AND s.ok)"
    total = audit.rows(f"SELECT count(*) {chosen}", params)[0][0]
    f.checked("REG-ROLL", total, f"{total:,} registrants")
    # One join of the registrants with sig_ok (20 million rows at ten million voters,
    # past DuckDB's budget: each such join spills gigabytes), a semi join that builds on
    # the registrants. Every chosen registrant is either signed (in eligible) or not, so
    # the unsigned ones are looked for only when the counts say there are some.
    audit.con.execute(
        f"CREATE OR REPLACE TEMP TABLE eligible AS SELECT r.cid, r.key, r.district {chosen} AND {signed}",
        params,
    )
    if audit.rows("SELECT count(*) FROM eligible")[0][0] < total:
        for (cid,) in audit.rows(f"SELECT r.cid {chosen} AND NOT {signed} ORDER BY r.cid", params):
            f.fail("REG-ROLL", cid, f"registrant {cid} is not validly signed by the key it registers")
    # keys registered more than once: counted first (a hash table of keys and counts),
    # then only those keys' registrants listed (a list per key of ten million is costly)
    for key, group in audit.rows(
        f"""
        WITH twice AS (SELECT r.key {chosen} GROUP BY r.key HAVING count(*) > 1)
        SELECT r.key, list(r.cid ORDER BY r.cid) {chosen}
            AND EXISTS (SELECT 1 FROM twice t WHERE t.key IS NOT DISTINCT FROM r.key)
        GROUP BY r.key ORDER BY r.key
        """,
        params + params,
    ):
        f.fail(
            "REG-ROLL",
            group[1],
            f"key {b64u_encode(bytes(key))} is registered {len(group)} times ({', '.join(group)}); "
            "a key may be registered once",
            records=list(group),
        )
    rolls = [r for r in audit.of_type("registration_roll")]
    valid = []
    for roll in rolls:
        good = check_authority_signature(audit, roll, authority)
        if roll.body.registrationAuthority != authority:
            f.fail(
                "REG-ROLL",
                roll.cid,
                f"roll {roll.cid} is by registration authority {roll.body.registrationAuthority}; the "
                f"election names {authority}",
            )
            good = False
        when = audit.in_window(roll.cid, "RE", "BF", end_inclusive=True) if audit.revision else ""
        if when:
            f.fail("REG-ROLL", roll.cid, f"roll {roll.cid} must be timestamped in [RE, BF]; {when}")
            good = False
        if good:
            valid.append(roll)
    if not valid:
        f.fail("REG-ROLL", election.cid, "no valid registration roll: the eligible voters are unknown")
        return
    valid = distinct_content(audit, valid)
    if len(valid) > 1:
        audit.equivocation("REG-ROLL", valid, f"the roll of election {election.cid}")
    roll = sorted(valid, key=lambda r: (audit.proven.get(r.cid, 0), r.cid))[0]
    audit.roll = roll
    root, count = merkle.root_of_stream(_eligible_leaves(audit))
    body = roll.body
    if root != b64u_decode(body.root) or count != body.count:
        f.fail(
            "REG-ROLL",
            roll.cid,
            f"roll {roll.cid} states {body.count:,} registrants with root {body.root}; the "
            f"{count:,} self-signed registrants harvested give root {b64u_encode(root)}",
            got={"count": body.count, "root": body.root},
            expected={"count": count, "root": b64u_encode(root)},
        )
    counts = dict(audit.rows("SELECT district, count(*) FROM eligible GROUP BY district ORDER BY district"))
    stated = dict(body.districts)
    # a district the roll states with 0 registrants is recomputed as 0 too (a GROUP BY
    # has no row for it): only counts that differ are a failure
    differ = sorted(d for d in set(counts) | set(stated) if counts.get(d, 0) != stated.get(d, 0))
    if differ:
        f.fail(
            "REG-ROLL",
            roll.cid,
            "the roll's district counts differ from the harvested registrants in "
            + ", ".join(f"{d} (roll {stated.get(d, 0):,}, harvested {counts.get(d, 0):,})" for d in differ),
            # pairs, not objects keyed by district: a registrant's district is free text,
            # and member names must be ASCII (§2) for the report to be a record itself
            districts=[{"district": d, "roll": stated.get(d, 0), "harvested": counts.get(d, 0)} for d in differ],
        )


def _eligible_leaves(audit: Audit) -> Iterator[list[bytes]]:
    """The eligible registrants' binary CIDs in ascending byte order (spec §4.7, §5.3), a
    batch at a time, sorted by DuckDB (bulk.sorted_cid_leaves)."""
    # on the audit's own connection (a cursor would not see its temp tables): nothing
    # else queries it while the leaves stream
    try:
        yield from sorted_cid_leaves(audit.con, "eligible", "the eligible registrants")
    except ValueError as e:
        raise AuditError(str(e)) from e
