"""Record-level checks over the store: REC-CID, REC-SCHEMA, REC-REF, SIG-VALID.

What failed REC-CID or REC-SCHEMA at harvest sits in the quarantine table with its
bytes and reason; each distinct record there becomes a finding. Bytes that a source
served under a CID they do not hash to are a failure, except when only network nodes
served them and the record was obtained intact from another node: spec §7.1 expects
nodes to be wrong or malicious, and a node that serves garbage for a CID another node
served correctly is a fault of that node (reported in the check's note), not of the
evidence. Wrong bytes inside an archive are the archive's own publication: they fail.
"""

from __future__ import annotations

from auditor.model.encoding import b64u_encode
from auditor.store.evidence import sql_literal
from auditor.verify.context import Audit, of_other_elections

NETWORK_PREFIX = "http:"  # auditor.net.client names its source "http:<urls>"

__all__ = ["REFERENCES", "check_quarantine", "check_references", "check_signatures"]

# Every CID-valued member of every record type (spec §4); `[]` marks a list of CIDs.
REFERENCES: dict[str, tuple[str, ...]] = {
    "administration": ("authority", "previous"),
    "election": ("authority", "administration", "registrationAuthority", "certificationAuthority"),
    "keyholder": ("election",),
    "election_revision": ("election", "administration", "keyholders[]"),
    "ballot_template": ("election", "authority", "administration"),
    "registrant": ("registrationAuthority",),
    "registration_roll": ("election", "registrationAuthority", "administration"),
    "vote_block": ("election", "template"),
    "receipt": ("election", "block"),
    "block_tree": ("election", "template", "administration"),
    "key_release": ("election", "keyholder"),
    "key_disclosure": ("election", "keyholder"),
    "tally_node": ("election", "template", "children[]"),
    "result": ("election", "template", "administration", "blockTree", "tallyRoot"),
    "accessibility_report": ("election", "template", "registrant"),
    "dispute": ("election", "template", "receipt"),
    "certification": ("election", "template", "authority", "administration", "result"),
}


def check_quarantine(audit: Audit) -> None:
    """REC-CID and REC-SCHEMA for what the harvest set aside: one finding per distinct
    rejected content (check, claimed CID, SHA-256 of the bytes kept), however many times
    and wherever it was seen.

    The report body must be the same for the same evidence (§11), so a finding names what
    was wrong, the bytes' SHA-256 and size and the network nodes that served them (a node
    serving wrong bytes is evidence about the network), never an archive's path on this
    machine: where each copy was found stays in the store's quarantine table (D32)."""
    f = audit.findings
    groups = audit.rows(
        """
        WITH q AS (
            SELECT check_id, claimed_cid, sha256(raw) AS digest, reason, octet_length(raw) AS size,
                   starts_with(source, $net) AS network,
                   -- the node that served them is in the location (a network source names
                   -- every node of its run): http://host:port/ipfs/<cid> or …/v1/car?…@offset
                   CASE WHEN starts_with(source, $net)
                        THEN regexp_extract(location, '^(https?://[^/?#]+)') END AS node
            FROM quarantine
        )
        SELECT check_id, claimed_cid, digest, min(reason), max(size),
               list(DISTINCT node ORDER BY node) FILTER (WHERE node IS NOT NULL), bool_and(network)
        FROM q
        GROUP BY check_id, claimed_cid, digest
        ORDER BY check_id, claimed_cid, digest
        """,
        {"net": NETWORK_PREFIX},
    )
    for check in ("REC-CID", "REC-SCHEMA"):
        f.checked(check, audit.harvested + len(groups), f"{audit.harvested:,} records, {len(groups):,} set aside")
    recovered = 0
    for check, claimed, digest, reason, size, nodes, network_only in groups:
        intact = (
            check == "REC-CID"
            and claimed is not None
            and audit.rows("SELECT count(*) FROM envelopes WHERE cid = ?", [claimed])[0][0] > 0
        )
        if intact and network_only:
            recovered += 1
            continue
        if intact:
            reason += "; intact bytes for this CID were also obtained, but an archive itself holds these"
        check_id = check if check in ("REC-CID", "REC-SCHEMA") else "REC-SCHEMA"
        nodes = list(nodes or [])
        served = f"; served by {', '.join(nodes[:3])}" if nodes else ""
        if not network_only:
            served += (" and found in an archive" if nodes else "; found in an archive") + (
                " (where: the store's quarantine table)"
            )
        f.fail(
            check_id,
            claimed,
            f"{reason} ({size:,} bytes kept, SHA-256 {digest}{served})",
            sha256=digest,
            bytes=size,
            nodes=nodes[:20],
        )
    if recovered:
        f.checked(
            "REC-CID",
            0,
            f"{recovered} CIDs were served with wrong bytes by some source but obtained intact from another "
            "(see the store's quarantine table)",
        )


def check_references(audit: Audit) -> None:
    """REC-REF: every CID a record refers to was harvested."""
    f = audit.findings
    parts = []
    for table, members in REFERENCES.items():
        for member in members:
            column = member.removesuffix("[]")
            value = f"unnest({_ident(column)})" if member.endswith("[]") else _ident(column)
            parts.append(
                f"SELECT cid, '{table}' AS type, '{column}' AS member, {value} AS ref FROM {_ident(table)}"
            )
    # another election's records are not in use here (D4): their references are its audit's
    election = sql_literal(audit.election.cid) if audit.election is not None else "NULL"
    union = f"SELECT * FROM ({' UNION ALL '.join(parts)}) WHERE cid NOT IN ({of_other_elections(election)})"
    # streamed twice rather than kept as a table (3 million references at a million
    # voters held ≈ 280 MB to the end of the audit): once counted, once for the missing
    total = audit.rows(f"SELECT count(*) FROM ({union}) WHERE ref IS NOT NULL")[0][0]
    f.checked("REC-REF", total, f"{total:,} references")
    for cid, record_type, member, ref, quarantined in audit.rows(
        f"""
        WITH missing AS (  -- anti-joins (NOT EXISTS) spill under a small budget; NOT IN did not
            SELECT * FROM ({union}) r
            WHERE r.ref IS NOT NULL AND NOT EXISTS (SELECT 1 FROM envelopes e WHERE e.cid = r.ref)
              AND NOT (r.type = 'vote_block' AND NOT EXISTS (SELECT 1 FROM counted c WHERE c.cid = r.cid))
        )
        SELECT r.cid, r.type, r.member, r.ref,
               (SELECT min(q.check_id) FROM quarantine q WHERE q.claimed_cid = r.ref)
        FROM missing r
        ORDER BY r.cid, r.member, r.ref
        """
    ):
        why = f"; bytes served under that CID were set aside ({quarantined})" if quarantined else ""
        f.fail(
            "REC-REF",
            cid,
            f"{record_type} {cid} refers to {member} {ref}, which was not harvested{why}",
            records=[],
            missing=ref,
        )


def check_signatures(audit: Audit) -> None:
    """SIG-VALID: every signature on every record in use verifies. A vote block that no valid
    receipt accepted is not in use: its bad signatures are evidence for its receipt (D4). A
    dispute or accessibility report that its own key did not validly sign is an invalid
    claim, which DSP-RESOLVED or ACC-REPORTS reports and the runoff rules leave out: not in
    use either (anyone can publish one; D4)."""
    f = audit.findings
    total = audit.signature_count  # sig_ok keeps only some rows by now (Audit.keep_signatures)
    f.checked("SIG-VALID", total, f"{total:,} signatures")
    election = audit.election.cid if audit.election is not None else None  # None: no claim is judged
    for cid, record_type, idx, key in audit.rows(
        """
        WITH claim AS (  -- the audited election's: DSP-RESOLVED and ACC-REPORTS judge these
            SELECT cid, key FROM dispute WHERE election = $e
            UNION ALL SELECT cid, key FROM accessibility_report WHERE election = $e),
        elsewhere AS ({elsewhere})  -- records of another election: not in use in this one
        SELECT s.cid, e.type, s.idx, s.key FROM sig_ok s JOIN envelopes e USING (cid)
        WHERE NOT s.ok AND NOT (e.type = 'vote_block' AND s.cid NOT IN (SELECT cid FROM counted))
          AND s.cid NOT IN (SELECT cid FROM elsewhere)
          AND NOT (s.cid IN (SELECT cid FROM claim) AND NOT EXISTS (
                   SELECT 1 FROM sig_ok g JOIN claim c ON c.cid = g.cid AND c.key = g.key
                   WHERE g.cid = s.cid AND g.ok))
        ORDER BY s.cid, s.idx
        """.replace("{elsewhere}", of_other_elections("$e")),
        {"e": election},
    ):
        f.fail(
            "SIG-VALID",
            cid,
            f"signatures[{idx}] on {record_type} {cid}, by {b64u_encode(bytes(key))}, does not verify "
            "over the record digest",
            signature=idx,
        )


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
