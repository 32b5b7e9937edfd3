"""Blocks, receipts and the block tree: RCP-VALID, BLK-*, RCP-CONSISTENT, TREE-ROOT.

Everything here is set-based SQL over the Parquet tables: a vote block's shape, its
signers, its members' eligibility and uniqueness are computed for all blocks at once.
Blocks are judged whether counted or not: a counted block's defects are BLK-* failures;
a rejected block's defects are what its receipt must be consistent with (spec §4.9).
"""

from __future__ import annotations

from collections import defaultdict

from auditor.crypto import merkle
from auditor.model.encoding import b64u_decode, b64u_encode
from auditor.model.envelope import Envelope
from auditor.store.bulk import cid_binaries
from auditor.verify.authority import check_authority_signature
from auditor.verify.context import Audit, distinct_content, fmt_time

__all__ = ["check_blocks", "check_receipts", "check_tree"]

# b64u text of a binary value, to compare sort orders as the spec defines them (§2:
# "sorted" lists of keys and ciphertexts are sorted by their ASCII text, not their bytes).
MACROS = """
CREATE OR REPLACE TEMP MACRO b64u(x) AS rtrim(replace(replace(to_base64(x), '+', '-'), '/', '_'), '=');
CREATE OR REPLACE TEMP MACRO b64u16(x) AS
    rtrim(replace(replace(left(to_base64(x), 16), '+', '-'), '/', '_'), '=');
"""
# b64u16(x) is left(b64u(x), 16): the text of the first 12 bytes, or all of a shorter
# value's. If these prefixes of a list's values are strictly increasing (sorted and
# distinct), so are the whole texts: two values differ within their first 16 characters,
# or one text is all of a short value's and a proper prefix of the other. A list that
# passes on prefixes is sorted and distinct; any other is judged on the whole texts.


def _up(column: str, prefixes: str) -> str:
    """SQL: the values of the list ``column`` are non-NULL and their b64u prefixes
    strictly increasing."""
    return (
        f"(list_count({column}) = len({column}) AND {prefixes} = list_sort({prefixes}) "
        f"AND len(list_distinct({prefixes})) = len({column}))"
    )


def _whole(column: str, up: str, fact: str) -> str:
    """SQL: whether the list ``column`` is sorted (``fact`` "sorted") or distinct by the
    b64u text of its values; true when ``up`` (the prefixes said so), else computed on
    the whole texts."""
    text = f"list_transform({column}, lambda x: b64u(x))"
    whole = f"{text} = list_sort({text})" if fact == "sorted" else f"len(list_distinct({text})) = len({text})"
    return f"CASE WHEN {up} THEN true ELSE {whole} END"


def shape_query(source: str, where: str = "") -> str:
    """SQL: each block of ``source`` (``where`` filters them) with its member, vote and
    voter counts and whether each list is sorted and distinct by b64u text (spec §2), as
    the columns cid, template, members, n_members, n_votes, n_voters, members_sorted,
    members_distinct, votes_sorted, votes_distinct, voters_sorted, voters_distinct.
    The b64u text of each whole ciphertext (≈ 520 characters) is made only for a list
    whose 16-character prefixes do not already show it sorted and distinct (b64u16)."""
    lists = (("members", "mp", "m_up"), ("votes", "vp", "v_up"), ("voters", "wp", "w_up"))
    prefixes = ", ".join(f"list_transform({c}, lambda x: b64u16(x)) AS {p}" for c, p, _ in lists)
    ups = ", ".join(f"{_up(c, p)} AS {u}" for c, p, u in lists)
    facts = ", ".join(
        f"{_whole(c, u, fact)} AS {c}_{fact}" for c, _, u in lists for fact in ("sorted", "distinct")
    )
    return f"""
        WITH p AS (SELECT cid, template, members, votes, voters, {prefixes} FROM {source} {where}),
             u AS (SELECT *, {ups} FROM p)
        SELECT cid, template, members, len(members) AS n_members, len(votes) AS n_votes,
               len(voters) AS n_voters, {facts}
        FROM u
    """


def check_receipts(audit: Audit) -> None:
    """RCP-VALID: receipts are signed by the receipt key and timestamped; one per block.
    The blocks with a valid ``accepted`` receipt are the counted blocks."""
    f = audit.findings
    assert audit.election is not None and audit.revision is not None
    audit.con.execute(MACROS)
    receipt_key = b64u_decode(audit.revision.body.receiptKey)
    audit.con.execute(
        """
        CREATE OR REPLACE TEMP TABLE rcp AS
        SELECT r.cid, r.block, r.result, r.registrants, p.t AS proven,
               coalesce((SELECT bool_or(s.ok) FROM sig_ok s WHERE s.cid = r.cid AND s.key = $key), false)
                   AS signed,
               (SELECT count(*) FROM token_ok t WHERE t.cid = r.cid) AS tokens
        FROM receipt r LEFT JOIN proven p USING (cid)
        WHERE r.election = $election
        """,
        {"key": receipt_key, "election": audit.election.cid},
    )
    audit.con.execute("ALTER TABLE rcp ADD COLUMN valid BOOLEAN")
    audit.con.execute("UPDATE rcp SET valid = signed AND proven IS NOT NULL")
    total = audit.rows("SELECT count(*) FROM rcp")[0][0]
    f.checked("RCP-VALID", total, f"{total:,} receipts")
    key_text = audit.revision.body.receiptKey
    for cid, block, signed, tokens in audit.rows(
        "SELECT cid, block, signed, tokens FROM rcp WHERE NOT valid ORDER BY cid"
    ):
        if not signed:
            f.fail(
                "RCP-VALID",
                cid,
                f"receipt {cid} for block {block} is not validly signed by the receipt key {key_text}",
                records=[block],
            )
        else:
            state = "has no valid timestamp" if tokens else "is not timestamped"
            f.fail("RCP-VALID", cid, f"receipt {cid} for block {block} {state}", records=[block])
    for block, cids, results in audit.rows(
        """
        SELECT r.block, list(r.cid ORDER BY r.cid), list(r.result ORDER BY r.cid)
        FROM rcp r JOIN envelopes e ON e.cid = r.cid
        GROUP BY r.block HAVING count(DISTINCT e.digest) > 1 ORDER BY r.block
        """
    ):
        f.fail(
            "RCP-VALID",
            cids[1],
            f"block {block} has {len(cids)} receipts ("
            + ", ".join(f"{c}: {r}" for c, r in zip(cids, results, strict=True))
            + "); a block gets at most one",
            records=[block, *cids],
            envelopes={c: audit.envelope_text(c) for c in cids[:4]},
        )
    audit.con.execute(
        "CREATE OR REPLACE TEMP TABLE counted AS "
        "SELECT DISTINCT block AS cid FROM rcp WHERE valid AND result = 'accepted'"
    )
    audit.counted = {r[0] for r in audit.rows("SELECT cid FROM counted")}


def check_blocks(audit: Audit) -> None:
    """BLK-SHAPE, BLK-SIG, BLK-ELIGIBLE, BLK-UNIQUE over every block of the election, then
    RCP-CONSISTENT: each receipt's verdict agrees with what the block shows."""
    f = audit.findings
    assert audit.election is not None
    con = audit.con
    con.execute(MACROS)
    # each block's signatures, counted once (of the blocks only: the per-part queries below
    # each read this table whole, and every record's count would make that O(parts x
    # records)); then the blocks a Parquet part at a time (their ciphertexts, as b64u
    # text, are held while a part is judged: Audit.sources)
    con.execute(
        "CREATE OR REPLACE TEMP TABLE blk_sigs AS SELECT cid, count(*) AS n FROM signatures "
        "WHERE cid IN (SELECT cid FROM vote_block WHERE election = ?) GROUP BY cid",
        [audit.election.cid],
    )
    for i, source in enumerate(audit.sources("vote_block")):
        con.execute(
            f"""
            {"CREATE OR REPLACE TEMP TABLE blk AS" if i == 0 else "INSERT INTO blk"}
            WITH b AS ({shape_query(source, "WHERE election = ?")})
            SELECT b.cid, b.template, b.members, b.n_members, b.n_votes, b.n_voters,
                   coalesce(s.n, 0) AS n_sigs, b.members_sorted, b.members_distinct,
                   b.votes_sorted, b.votes_distinct, b.voters_sorted, b.voters_distinct,
                   b.cid IN (SELECT cid FROM counted) AS counted
            FROM b LEFT JOIN blk_sigs s USING (cid)
            """,
            [audit.election.cid],
        )
    con.execute("DROP TABLE blk_sigs")
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE member AS
        SELECT cid, template, counted, unnest(members) AS key FROM blk
        """
    )
    # Each block's signers, from sig_ok (every record's signatures: twenty million rows at
    # ten million voters, which joined with the members on (cid, key) spills gigabytes),
    # as lists a block: its valid signers' keys and every signature's key, in sig_ok's rows.
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE blk_signer AS
        SELECT cid, coalesce(list(key) FILTER (WHERE ok AND key IS NOT NULL), []) AS valid,
               list(key) AS keys
        FROM sig_ok WHERE cid IN (SELECT cid FROM blk) GROUP BY cid
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE blk_problem AS
        SELECT cid, 'BLK-SHAPE' AS check_id, concat_ws('; ',
                 CASE WHEN NOT (n_members = n_votes AND n_votes = n_voters AND n_voters = n_sigs)
                      THEN format('{} members, {} votes, {} voters and {} signatures (all must be equal)',
                                  n_members, n_votes, n_voters, n_sigs) END,
                 CASE WHEN n_members = 0 THEN 'no members' END,
                 CASE WHEN NOT members_sorted THEN 'members are not sorted' END,
                 CASE WHEN NOT members_distinct THEN 'members are not distinct' END,
                 CASE WHEN NOT votes_sorted THEN 'votes are not sorted' END,
                 CASE WHEN NOT votes_distinct THEN 'votes are not distinct' END,
                 CASE WHEN NOT voters_sorted THEN 'voters are not sorted' END,
                 CASE WHEN NOT voters_distinct THEN 'voters are not distinct' END) AS message
        FROM blk
        WHERE NOT (n_members = n_votes AND n_votes = n_voters AND n_voters = n_sigs AND n_members > 0
                   AND members_sorted AND members_distinct AND votes_sorted AND votes_distinct
                   AND voters_sorted AND voters_distinct)
        UNION ALL
        SELECT cid, 'BLK-SIG', 'member ' || b64u(key) || ' has no valid signature on the block'
        FROM (
            SELECT b.cid, unnest(list_filter(b.members,
                       lambda x: x IS NULL OR NOT list_contains(coalesce(g.valid, []), x))) AS key
            FROM blk b LEFT JOIN blk_signer g ON g.cid = b.cid
        )
        UNION ALL
        SELECT cid, 'BLK-SIG', 'key ' || b64u(key) || ' signed the block but is not a member'
        FROM (
            SELECT b.cid, unnest(list_filter(g.keys, lambda x: NOT list_contains(b.members, x))) AS key
            FROM blk b JOIN blk_signer g ON g.cid = b.cid
        )
        UNION ALL
        SELECT cid, 'BLK-ELIGIBLE', 'it names template ' || template
               || ', which is not the effective template of a district'
        FROM blk WHERE template NOT IN (SELECT cid FROM tpl)
        UNION ALL
        SELECT m.cid, 'BLK-ELIGIBLE', 'member ' || b64u(m.key) || coalesce(
                   ' is registered in district '
                   || (SELECT min(e.district) FROM eligible e WHERE e.key = m.key)
                   || ', not ' || t.district,
                   ' is not on the roll')
        FROM member m JOIN tpl t ON t.cid = m.template
        WHERE NOT EXISTS (SELECT 1 FROM eligible e WHERE e.key = m.key AND e.district = t.district)
        """
    )
    con.execute("DROP TABLE blk_signer")
    # keys in more than one counted member row: only they can be in two counted blocks
    # (BLK-UNIQUE, RCP-CONSISTENT); counted with a hash table of keys, not listed per key
    con.execute(
        "CREATE OR REPLACE TEMP TABLE member_twice AS "
        "SELECT key FROM member WHERE counted GROUP BY key HAVING count(*) > 1"
    )
    blocks, counted_blocks = audit.rows("SELECT count(*), count(*) FILTER (WHERE counted) FROM blk")[0]
    note = f"{counted_blocks:,} counted blocks"
    for check in ("BLK-SHAPE", "BLK-SIG", "BLK-ELIGIBLE", "BLK-UNIQUE"):
        f.checked(check, counted_blocks, note)
    if audit.roll is None:
        f.checked("BLK-ELIGIBLE", 0, "no valid roll: eligibility judged against the harvested registrants")
    for cid, check, messages in audit.rows(
        """
        SELECT p.cid, p.check_id, list(p.message ORDER BY p.message) FROM blk_problem p
        JOIN blk b USING (cid) WHERE b.counted GROUP BY p.cid, p.check_id ORDER BY p.cid, p.check_id
        """
    ):
        shown = "; ".join(messages[:10]) + (f"; and {len(messages) - 10} more" if len(messages) > 10 else "")
        f.fail(check, cid, f"counted block {cid}: {shown}", problems=messages[:100])
    for key, cids in audit.rows(
        """
        SELECT key, list(DISTINCT cid ORDER BY cid) FROM member m
        WHERE counted AND EXISTS (SELECT 1 FROM member_twice t WHERE t.key IS NOT DISTINCT FROM m.key)
        GROUP BY key HAVING count(DISTINCT cid) > 1 ORDER BY key
        """
    ):
        f.fail(
            "BLK-UNIQUE",
            cids[1],
            f"registrant key {b64u_encode(bytes(key))} is a member of {len(cids)} counted blocks "
            f"({', '.join(cids)})",
            records=list(cids),
            key=b64u_encode(bytes(key)),
        )
    _check_consistency(audit, blocks)


def _check_consistency(audit: Audit, blocks: int) -> None:
    """RCP-CONSISTENT for every valid receipt (spec §8)."""
    f = audit.findings
    vs, av = audit.timeline("VS"), audit.timeline("AV")
    total = audit.rows("SELECT count(*) FROM rcp WHERE valid")[0][0]
    f.checked("RCP-CONSISTENT", total, f"{total:,} valid receipts over {blocks:,} blocks")
    window = f"[VS {fmt_time(vs or 0)}, AV {fmt_time(av or 0)})"
    quarantined = "(SELECT claimed_cid FROM quarantine WHERE claimed_cid IS NOT NULL)"
    failures: list[tuple[str, str, str]] = []
    # accepted: the block is in the evidence and passes every block check
    for cid, block, messages in audit.rows(
        """
        SELECT r.cid, r.block,
               list(DISTINCT p.message ORDER BY p.message) FILTER (WHERE p.message IS NOT NULL)
        FROM rcp r LEFT JOIN blk_problem p ON p.cid = r.block
        WHERE r.valid AND r.result = 'accepted'
        GROUP BY r.cid, r.block
        HAVING r.block NOT IN (SELECT cid FROM blk) OR count(p.message) > 0
        ORDER BY r.cid
        """
    ):
        if not messages:
            failures.append(
                (cid, block, f"receipt {cid} accepted block {block}, which is not in the evidence")
            )
        else:
            failures.append(
                (cid, block, f"receipt {cid} accepted block {block}, which fails: {'; '.join(messages[:5])}")
            )
    # accepted: no member already in a counted block accepted earlier
    for cid, block, key, other in audit.rows(
        """
        WITH acc AS (SELECT block, min(proven) AS t, min(cid) AS receipt FROM rcp
                     WHERE valid AND result = 'accepted' GROUP BY block)
        SELECT a1.receipt, m1.cid, m1.key, min(m2.cid)
        FROM member m1 JOIN member m2 ON m1.key = m2.key AND m1.cid <> m2.cid AND m1.counted AND m2.counted
             AND m1.key IN (SELECT key FROM member_twice)
        JOIN acc a1 ON a1.block = m1.cid JOIN acc a2 ON a2.block = m2.cid
        WHERE a2.t < a1.t OR (a2.t = a1.t AND m2.cid < m1.cid)
        GROUP BY a1.receipt, m1.cid, m1.key ORDER BY 1, 3
        """
    ):
        failures.append(
            (
                cid,
                block,
                f"receipt {cid} accepted block {block}, but its member {b64u_encode(bytes(key))} was already "
                f"in counted block {other}",
            )
        )
    # accepted: received while voting was open; inopportune: received outside it
    if vs is not None and av is not None:
        for cid, block, result, proven in audit.rows(
            """
            SELECT cid, block, result, proven FROM rcp
            WHERE valid AND ((result = 'accepted' AND NOT (proven >= $vs AND proven < $av))
                          OR (result = 'inopportune' AND proven >= $vs AND proven < $av))
            ORDER BY cid
            """,
            {"vs": vs, "av": av},
        ):
            relation = "outside" if result == "accepted" else "inside"
            failures.append(
                (
                    cid,
                    block,
                    f"receipt {cid} says {result} for block {block}, but its proven time "
                    f"{fmt_time(proven)} is {relation} voting {window}",
                )
            )
    # spec §4.10: registrants are the offending members of a duplicate or invalid block, "else empty"
    for cid, block, result, named in audit.rows(
        "SELECT cid, block, result, len(registrants) FROM rcp "
        "WHERE valid AND result NOT IN ('duplicate', 'invalid') AND len(registrants) > 0 ORDER BY cid"
    ):
        failures.append(
            (
                cid,
                block,
                f"receipt {cid} says {result} for block {block} but names {named} registrant(s); only a "
                "duplicate or invalid receipt names the offending members (spec §4.10)",
            )
        )
    # duplicate: each named registrant is a member of this block and of another counted block
    for cid, block in audit.rows(
        "SELECT cid, block FROM rcp WHERE valid AND result = 'duplicate' AND len(registrants) = 0"
    ):
        failures.append(
            (cid, block, f"receipt {cid} rejects block {block} as duplicate but names no registrant")
        )
    for cid, block, key, reason in audit.rows(
        """
        WITH named AS (SELECT cid, block, unnest(registrants) AS key FROM rcp
                       WHERE valid AND result IN ('duplicate', 'invalid')),
             -- the member rows of the named keys, the only ones the conditions below can meet
             -- (a hash table of the few named keys, not of every member)
             mk AS (SELECT cid, key, counted FROM member WHERE key IN (SELECT key FROM named))
        SELECT n.cid, n.block, n.key,
               CASE WHEN NOT EXISTS (SELECT 1 FROM mk m WHERE m.cid = n.block AND m.key = n.key)
                    THEN 'is not a member of the block'
                    ELSE 'is in no other counted block' END
        FROM named n JOIN rcp r ON r.cid = n.cid
        WHERE NOT EXISTS (SELECT 1 FROM mk m WHERE m.cid = n.block AND m.key = n.key)
                  AND n.block IN (SELECT cid FROM blk)
           OR (r.result = 'duplicate'
               AND NOT EXISTS (SELECT 1 FROM mk m WHERE m.key = n.key AND m.counted AND m.cid <> n.block))
        ORDER BY 1, 3
        """
    ):
        failures.append(
            (cid, block, f"receipt {cid} names registrant {b64u_encode(bytes(key))}, who {reason}")
        )
    # invalid: the block fails a check (or could not even be read: it is in quarantine, or
    # it is a block of another election, which is no valid block of this one)
    for cid, block, exists in audit.rows(
        f"""
        SELECT r.cid, r.block, r.block IN (SELECT cid FROM blk) AS harvested FROM rcp r
        WHERE r.valid AND r.result = 'invalid'
          AND r.block NOT IN (SELECT cid FROM blk_problem)
          AND r.block NOT IN (SELECT cid FROM vote_block WHERE election IS DISTINCT FROM $e)
          AND (harvested OR r.block NOT IN {quarantined})
        ORDER BY r.cid
        """,
        {"e": audit.election.cid if audit.election is not None else None},
    ):
        why = (
            "passes every block check" if exists else "is not in the evidence, so its defect cannot be shown"
        )
        failures.append((cid, block, f"receipt {cid} rejects block {block} as invalid, but the block {why}"))
    for cid, block, message in failures:
        f.fail("RCP-CONSISTENT", cid, message, records=[block])


def check_tree(audit: Audit) -> None:
    """TREE-ROOT: per template, the block tree commits exactly the counted blocks, in [HV, RK)."""
    f = audit.findings
    election = audit.election
    assert election is not None
    trees = audit.of_type("block_tree")
    valid: dict[str, list[Envelope]] = defaultdict(list)
    for tree in trees:
        good = check_authority_signature(audit, tree, election.body.authority)
        if not good:
            f.fail(
                "TREE-ROOT",
                tree.cid,
                f"block tree {tree.cid} is not validly authority-signed (AUTH-THRESHOLD)",
            )
        when = audit.in_window(tree.cid, "HV", "RK")
        if when:
            f.fail("TREE-ROOT", tree.cid, f"block tree {tree.cid} must be committed in [HV, RK); {when}")
            good = False
        if good:
            valid[tree.body.template].append(tree)
    expected: dict[str, list[str]] = defaultdict(list)
    for template, block in audit.rows(
        "SELECT b.template, c.cid FROM counted c LEFT JOIN vote_block b ON b.cid = c.cid ORDER BY c.cid"
    ):
        if template is None:
            f.fail(
                "TREE-ROOT",
                block,
                f"block {block} has an accepted receipt but is not in the evidence: its template, and so "
                "its tree, is unknown",
            )
            continue
        expected[template].append(block)
    templates = sorted(set(expected) | set(valid) | set(audit.templates))
    f.checked("TREE-ROOT", len(templates), f"{len(trees)} block trees, {len(templates)} templates")
    for template in templates:
        candidates = distinct_content(audit, valid.get(template, []))
        blocks = expected.get(template, [])
        leaves = sorted(cid_binaries(blocks))  # harvested CIDs: canonical (base32 in numpy)
        if len(candidates) > 1:
            audit.equivocation("TREE-ROOT", candidates, f"the block tree of template {template}")
        if not candidates:
            if not leaves:  # nothing was counted and nothing committed: nothing to check (D12)
                f.checked("TREE-ROOT", 0, f"template {template} has no counted block and no tree")
                continue
            f.fail(
                "TREE-ROOT",
                template,
                f"template {template} has {len(leaves):,} counted blocks but no valid block tree",
            )
            continue
        tree = candidates[0]
        audit.trees[template] = tree
        root = merkle.root(leaves)
        if template not in audit.templates:
            f.fail(
                "TREE-ROOT", tree.cid, f"block tree {tree.cid} is for {template}, not an effective template"
            )
        if root != b64u_decode(tree.body.root) or len(leaves) != tree.body.count:
            extra, missing = _diagnose(audit, template, set(blocks))
            detail = ""
            if extra or missing:
                detail = (
                    f"; the tally tree's leaves suggest it includes {len(extra)} block(s) without an "
                    f"accepted receipt and leaves out {len(missing)} counted block(s)"
                )
            f.fail(
                "TREE-ROOT",
                tree.cid,
                f"block tree {tree.cid} commits {tree.body.count:,} blocks with root {tree.body.root}; the "
                f"{len(leaves):,} blocks with accepted receipts give root {b64u_encode(root)}{detail}",
                got={"count": tree.body.count, "root": tree.body.root},
                expected={"count": len(leaves), "root": b64u_encode(root)},
                extra=extra[:50],
                missing=missing[:50],
            )


def _diagnose(audit: Audit, template: str, expected: set[str]) -> tuple[list[str], list[str]]:
    """Which blocks the tally tree's leaves name that are not counted, and the reverse."""
    named = {
        r[0]
        for r in audit.rows(
            'SELECT children[1] FROM tally_node WHERE template = ? AND "end" = start + 1', [template]
        )
    }
    if not named:
        return [], []
    return sorted(named - expected), sorted(expected - named)
