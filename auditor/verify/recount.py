"""The recount: DEC-ENTRIES, DEC-VOTER, DEC-NONCE, BAL-VALID, TALLY-TREE and RES-MATCH's counts.

With every keyholder's released key, the combined private key opens every vote and
voter ciphertext of every counted block. Blocks are decrypted in worker processes (the
AEAD and scalar multiplication are in libsodium, the JSON and ballot rules in Python),
each returning its block's histogram of valid votes and what was wrong. The tally tree
is then checked node by node against the recount, and each result against its root.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pyarrow as pa

from auditor.crypto import merkle
from auditor.crypto.ecies import combine_private, decrypt
from auditor.crypto.ed25519 import verify_digest
from auditor.errors import AuditError
from auditor.model.ballot import count_vote, vote_problems
from auditor.model.encoding import b64u_decode, b64u_encode, cid_to_binary, jcs, parse_json
from auditor.model.entries import VoteEntry, VoterEntry
from auditor.model.histogram import Histogram, add_into, zero
from auditor.model.records import BallotTemplate
from auditor.parallel import bounded_map
from auditor.verify.context import Audit

__all__ = ["RECOUNT_CHECKS", "BlockCount", "recount"]

RECOUNT_CHECKS = ("DEC-ENTRIES", "DEC-VOTER", "DEC-NONCE", "BAL-VALID", "TALLY-TREE")
BATCH = 64


@dataclass
class BlockCount:
    """What one counted block holds once decrypted (returned by a worker)."""

    cid: str
    template: str
    members: int
    histogram: bytes  # JCS of the histogram of the block's valid votes
    problems: list[tuple[str, str]] = field(default_factory=list)  # (check id, message)
    nonces: list[str] = field(default_factory=list)
    voters: list[tuple[str, str]] = field(default_factory=list)  # (key, registrant) of signed voter entries
    # (question, ranking) of each valid vote's rank answers, for instant-runoff rounds
    ranked: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    # internal errors (bugs in vtaudit), never the evidence's fault
    errors: list[str] = field(default_factory=list)


_STATE: dict[str, Any] = {}
E = TypeVar("E", VoteEntry, VoterEntry)


def _init(private_key: bytes, templates: dict[str, bytes]) -> None:
    _STATE["key"] = private_key
    _STATE["templates"] = {
        cid: BallotTemplate.parse(parse_json(raw), "template") for cid, raw in templates.items()
    }


def _count_batch(batch: Sequence[tuple[str, str, list[bytes], list[bytes], list[bytes]]]) -> list[BlockCount]:
    out = []
    for item in batch:
        try:
            out.append(_count_block(*item))
        except Exception as e:  # a bug in vtaudit: keep counting the other blocks, report it
            failed = BlockCount(item[0], item[1], len(item[2]), b"{}")
            failed.errors.append(f"block {item[0]} could not be counted ({type(e).__name__}: {e})")
            out.append(failed)
    return out


def _count_block(
    cid: str, template_cid: str, members: list[bytes], votes: list[bytes], voters: list[bytes]
) -> BlockCount:
    template: BallotTemplate | None = _STATE["templates"].get(template_cid)
    member_keys = [b64u_encode(m) for m in members]
    out = BlockCount(cid, template_cid, len(members), b"")
    if template is None:
        out.problems.append(
            (
                "DEC-ENTRIES",
                f"the votes of block {cid} are not counted: it names template {template_cid}, which is "
                "not an effective template (see BLK-ELIGIBLE)",
            )
        )
        out.histogram = b"{}"
        return out
    histogram: Histogram = zero(template)
    for i, ciphertext in enumerate(votes):
        where = f"block {cid}, votes[{i}]"
        vote = _open(out, ciphertext, where, VoteEntry, "BAL-VALID")  # it decrypts but is no vote: §6
        if vote is None:
            continue
        out.nonces.append(vote.nonce)
        problems = vote_problems(template, vote)
        if vote.template != template_cid:
            problems.insert(0, f"it names template {vote.template}, the block is for {template_cid}")
        if problems:
            out.problems.append(
                ("BAL-VALID", f"{where} (nonce {vote.nonce}) is not a valid vote: {'; '.join(problems)}")
            )
            continue
        count_vote(histogram, template, vote)
        for answer in vote.answers:
            question = template.question(answer.question)
            if question is not None and question.type == "rank" and isinstance(answer.values, tuple):
                out.ranked.append((answer.question, answer.values))
    out.histogram = jcs(histogram)
    seen_keys = []
    for i, ciphertext in enumerate(voters):
        where = f"block {cid}, voters[{i}]"
        voter = _open(out, ciphertext, where, VoterEntry, "DEC-VOTER")
        if voter is None:
            continue
        seen_keys.append(voter.key)
        if not verify_digest(voter.key, voter.signature, voter.digest):
            out.problems.append(
                ("DEC-VOTER", f"{where}: the voter entry's signature by {voter.key} does not verify")
            )
        else:
            out.voters.append((voter.key, voter.registrant))
        if voter.template != template_cid:
            out.problems.append(
                ("DEC-VOTER", f"{where} names template {voter.template}; the block is for {template_cid}")
            )
    if len(seen_keys) == len(voters) and sorted(seen_keys) != sorted(member_keys):
        strangers = sorted(set(seen_keys) - set(member_keys))
        absent = sorted(set(member_keys) - set(seen_keys))
        out.problems.append(
            (
                "DEC-VOTER",
                f"block {cid}: the voter entries' keys are not its members (entries of non-members: "
                f"{', '.join(strangers) or 'none'}; members without an entry: {', '.join(absent) or 'none'})",
            )
        )
    return out


def _open(out: BlockCount, ciphertext: bytes, where: str, entry: type[E], check: str) -> E | None:
    """The decrypted ``entry``; a ciphertext that does not open is DEC-ENTRIES, a plaintext
    that is not a well-formed entry of that kind is ``check`` (BAL-VALID or DEC-VOTER, D28)."""
    try:
        plaintext = decrypt(ciphertext, _STATE["key"], out.template)
    except AuditError as e:
        out.problems.append(("DEC-ENTRIES", f"{where} does not decrypt: {e}"))
        return None
    try:
        return entry.parse(parse_json(plaintext, what="entry"), "entry")
    except AuditError as e:
        out.problems.append(
            (check, f"{where} decrypts to something that is not a valid {entry.__name__}: {e}")
        )
        return None


def _batches(audit: Audit) -> Iterator[list[tuple[str, str, list[bytes], list[bytes], list[bytes]]]]:
    result = audit.con.execute(
        "SELECT b.cid, b.template, b.members, b.votes, b.voters FROM vote_block b "
        "WHERE b.cid IN (SELECT cid FROM counted) ORDER BY b.cid"
    )
    while rows := result.fetchmany(BATCH):
        yield [(c, t, list(m), list(v), list(w)) for c, t, m, v, w in rows]


def recount(audit: Audit) -> None:
    """Decrypt and count every counted block, then check the tally trees and results."""
    f = audit.findings
    listed = set(audit.revision.body.keyholders) if audit.revision else set()
    if not listed or not listed <= set(audit.released):
        reason = "the votes cannot be decrypted: not every keyholder released a valid key (KEY-RELEASE)"
        for check in (*RECOUNT_CHECKS, "RES-MATCH"):
            f.skip(check, reason)
        return
    private_key = combine_private(audit.released.values())
    templates = {cid: jcs(t.body.to_json()) for cid, t in audit.templates.items()}
    counts: dict[str, BlockCount] = {}
    workers = audit.workers if len(audit.counted) > 4 * BATCH else 1
    if workers == 1:
        _init(private_key, templates)
        for batch in _batches(audit):
            for block in _count_batch(batch):
                counts[block.cid] = block
    else:
        with ProcessPoolExecutor(
            max_workers=workers, initializer=_init, initargs=(private_key, templates)
        ) as pool:
            for part in bounded_map(pool, _count_batch, _batches(audit), 4 * workers):
                for block in part:
                    counts[block.cid] = block
    audit.block_counts = counts
    votes = sum(b.members for b in counts.values())
    note = f"{len(counts):,} blocks, {votes:,} votes and as many voter entries"
    for check in ("DEC-ENTRIES", "DEC-VOTER", "DEC-NONCE", "BAL-VALID"):
        f.checked(check, votes, note)
    missing = audit.counted - set(counts)
    for cid in sorted(missing):
        f.fail(
            "DEC-ENTRIES", cid, f"counted block {cid} is not in the evidence: its votes cannot be decrypted"
        )
    for block in counts.values():
        for check, message in block.problems:
            f.fail(check, block.cid, message)
        audit.internal_errors.extend(block.errors)
    _check_nonces(audit, counts)
    _check_registrants(audit, counts)
    _check_tally(audit, counts)


def _check_nonces(audit: Audit, counts: dict[str, BlockCount]) -> None:
    seen: dict[tuple[str, str], str] = {}
    for block in sorted(counts.values(), key=lambda b: b.cid):
        for nonce in block.nonces:
            first = seen.setdefault((block.template, nonce), block.cid)
            if first != block.cid or block.nonces.count(nonce) > 1:
                audit.findings.fail(
                    "DEC-NONCE",
                    block.cid,
                    f"vote nonce {nonce} of template {block.template} appears in block {first} and again in "
                    f"block {block.cid}: a copied vote",
                    records=[first],
                    nonce=nonce,
                )


def _check_registrants(audit: Audit, counts: dict[str, BlockCount]) -> None:
    """DEC-VOTER: each signed voter entry names its key's own roll entry (a set operation)."""
    rows = [(b.cid, key, registrant) for b in counts.values() for key, registrant in b.voters]
    audit.register(
        "voter_entry",
        pa.table(
            {
                "block": pa.array([r[0] for r in rows], pa.string()),
                "key": pa.array([b64u_decode(r[1]) for r in rows], pa.binary()),
                "registrant": pa.array([r[2] for r in rows], pa.string()),
            }
        ),
    )
    for block, key, registrant in audit.rows(
        """
        SELECT v.block, v.key, v.registrant FROM voter_entry v
        WHERE NOT EXISTS (SELECT 1 FROM eligible e WHERE e.cid = v.registrant AND e.key = v.key)
        ORDER BY 1, 3
        """
    ):
        audit.findings.fail(
            "DEC-VOTER",
            block,
            f"block {block}: a voter entry of key {b64u_encode(bytes(key))} names registrant {registrant}, "
            "which is not that key's entry on the roll",
            records=[registrant],
        )


def _check_tally(audit: Audit, counts: dict[str, BlockCount]) -> None:
    """TALLY-TREE for every template's tally nodes, then RES-MATCH's counts."""
    f = audit.findings
    election = audit.election
    assert election is not None
    by_template: dict[str, list[BlockCount]] = defaultdict(list)
    for block in counts.values():
        by_template[block.template].append(block)
    nodes: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for row in audit.rows(
        'SELECT cid, template, start, "end", hash, voters, counts, children FROM tally_node '
        "WHERE election = ?",
        [election.cid],
    ):
        nodes[row[1]].append(row)
    f.checked(
        "TALLY-TREE",
        sum(len(v) for v in nodes.values()),
        f"{sum(len(v) for v in nodes.values()):,} tally nodes",
    )
    audit.recounts = {}
    for template in sorted(set(by_template) | set(nodes) | set(audit.templates)):
        record = audit.records.get(template)
        if record is None or record.type != "ballot_template":
            for row in nodes.get(template, []):
                f.fail(
                    "TALLY-TREE", row[0], f"tally node {row[0]} is for {template}, which is not a template"
                )
            continue
        blocks = sorted(by_template.get(template, []), key=lambda b: cid_to_binary(b.cid))
        expected = _expected_nodes(record.body, blocks)
        total = expected[(0, len(blocks))][1] if blocks else zero(record.body)
        audit.recounts[template] = (sum(b.members for b in blocks), total)
        _compare_nodes(audit, template, nodes.get(template, []), expected, [b.cid for b in blocks])
    _check_result_counts(audit)


def _expected_nodes(
    template: BallotTemplate, blocks: list[BlockCount]
) -> dict[tuple[int, int], tuple[bytes, Histogram, int, int | None]]:
    """(start, end) -> (Merkle hash, histogram, voters, mid) for every node of the tree."""
    out: dict[tuple[int, int], tuple[bytes, Histogram, int, int | None]] = {}
    for node in merkle.iter_tree_ranges(len(blocks)):
        if node.mid is None:
            block = blocks[node.start]
            out[(node.start, node.end)] = (
                merkle.leaf_hash(cid_to_binary(block.cid)),
                json.loads(block.histogram),
                block.members,
                None,
            )
        else:
            left, right = out[(node.start, node.mid)], out[(node.mid, node.end)]
            counts = add_into(json.loads(jcs(left[1])), right[1])
            out[(node.start, node.end)] = (
                merkle.node_hash(left[0], right[0]),
                counts,
                left[2] + right[2],
                node.mid,
            )
    return out


def _compare_nodes(
    audit: Audit,
    template: str,
    published: list[tuple[Any, ...]],
    expected: dict[tuple[int, int], tuple[bytes, Histogram, int, int | None]],
    leaves: list[str],
) -> None:
    f = audit.findings
    by_range: dict[tuple[int, int], list[str]] = defaultdict(list)
    contents: dict[tuple[int, int], set[tuple[Any, ...]]] = defaultdict(set)
    for cid, _, start, end, node_hash, voters, counts_text, children in sorted(published, key=lambda r: r[0]):
        by_range[(start, end)].append(cid)
        contents[(start, end)].add((bytes(node_hash), voters, counts_text, tuple(children)))
    for rng, cids in sorted(by_range.items()):
        if len(contents[rng]) > 1:  # copies with other signatures are one node
            f.fail(
                "TALLY-TREE",
                sorted(cids)[1],
                f"{len(cids)} different tally nodes cover [{rng[0]}, {rng[1]}) of template {template}",
                records=sorted(cids),
            )
    for cid, _, start, end, node_hash, voters, counts_text, children in published:
        want = expected.get((start, end))
        name = f"tally node {cid} [{start}, {end})"
        if want is None:
            f.fail(
                "TALLY-TREE",
                cid,
                f"{name} is not a node of the tree over the {len(leaves):,} counted blocks of template "
                f"{template}",
            )
            continue
        w_hash, w_counts, w_voters, mid = want
        problems = []
        if bytes(node_hash) != w_hash:
            problems.append(f"its hash is {b64u_encode(bytes(node_hash))}, expected {b64u_encode(w_hash)}")
        if mid is None:
            if list(children) != [leaves[start]]:
                problems.append(f"its child is {', '.join(children)}, expected block {leaves[start]}")
        else:
            left, right = by_range.get((start, mid), []), by_range.get((mid, end), [])
            if len(children) != 2 or children[0] not in left or children[1] not in right:
                problems.append(
                    f"its children are {', '.join(children)}, expected the nodes of [{start}, {mid}) "
                    f"and [{mid}, {end})"
                )
        if voters != w_voters:
            problems.append(f"it counts {voters:,} voters, the recount {w_voters:,}")
        if counts_text != jcs(w_counts).decode("utf-8"):
            problems.append("its counts differ from the recount of its blocks")
        if problems:
            f.fail(
                "TALLY-TREE",
                cid,
                f"{name}: {'; '.join(problems)}",
                got=json.loads(counts_text),
                expected=w_counts,
            )
    for (start, end), _ in sorted(expected.items()):
        if (start, end) not in by_range and (start, end) == (0, len(leaves)):
            f.fail("TALLY-TREE", template, f"template {template} has no tally root node [0, {len(leaves)})")


def _check_result_counts(audit: Audit) -> None:
    f = audit.findings
    for template, result in sorted(audit.results.items()):
        recounted = audit.recounts.get(template)
        if recounted is None:
            continue
        voters, counts = recounted
        body = result.body
        problems = []
        if body.voters != voters:
            problems.append(f"it states {body.voters:,} voters, the recount {voters:,}")
        if jcs(body.counts) != jcs(counts):
            differ = sorted(
                q for q in set(body.counts) | set(counts) if jcs(body.counts.get(q)) != jcs(counts.get(q))
            )
            problems.append(f"its counts differ from the recount for question(s) {', '.join(differ)}")
        if problems:
            f.fail(
                "RES-MATCH",
                result.cid,
                f"result {result.cid}: {'; '.join(problems)}",
                got=body.counts,
                expected=counts,
            )
            del audit.results[template]
    audit.results_recounted = True
