"""TALLY-TREE and RES-MATCH's counts, from the recount's answers table.

Each block's histogram is a group-by over its rows of the answers table (answers.py);
the tree over a template's counted blocks (spec §4.13, §5.3) is then walked in
post-order, each node's counts the sum of its children's, and every published tally
node is compared with the node of that range: hash, children, voters and counts. The
root's counts are the recount each result must state. For an effective template the
counts are added as vectors of integers (counts.py, D57), which gives the same texts.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Collection, Iterator
from typing import Any

from auditor.crypto import merkle
from auditor.model.encoding import b64u_encode, jcs
from auditor.model.histogram import Histogram, add_into, zero
from auditor.model.records import BallotTemplate
from auditor.store.bulk import cid_binaries
from auditor.store.tables import json_text
from auditor.verify import counts
from auditor.verify.answers import LeafBlock, block_histograms
from auditor.verify.context import Audit

__all__ = ["check_tally"]

# (start, end) -> (Merkle hash, sha256 of the counts' text, voters, mid) of every node of
# a tree: the digest, not the text, which is some 700 bytes a node and 1.2 million nodes
# at ten million voters (the texts the findings show are made again, for those nodes only)
Expected = counts.Expected
Range = counts.Range


def check_tally(audit: Audit) -> None:
    """TALLY-TREE for every template's tally nodes, then RES-MATCH's counts."""
    f = audit.findings
    election = audit.election
    assert election is not None
    by_template: dict[str, list[LeafBlock]] = defaultdict(list)
    for block, template, leaf, members, counted in audit.rows(
        "SELECT block, template, leaf, members, counted FROM recount_block ORDER BY leaf"
    ):
        by_template[template].append(LeafBlock(block, leaf, members, counted))
    published = dict(
        audit.rows(
            "SELECT template, count(*) FROM tally_node WHERE election = ? GROUP BY template", [election.cid]
        )
    )
    node_count = sum(published.values())
    f.checked("TALLY-TREE", node_count, f"{node_count:,} tally nodes")
    audit.recounts = {}
    for template in sorted(set(by_template) | set(published) | set(audit.templates)):
        # a template's published nodes, their counts as a digest of the text: ten million
        # voters' 1.2 million nodes hold some 900 MB of counts (the text of the few that
        # differ is read again for the findings)
        nodes = (
            audit.rows(
                'SELECT cid, template, start, "end", hash, voters, sha256(counts), children FROM tally_node '
                "WHERE election = ? AND template = ?",
                [election.cid, template],
            )
            if template in published
            else []
        )
        record = audit.records.get(template)
        if record is None or record.type != "ballot_template":
            for row in nodes:
                f.fail(
                    "TALLY-TREE", row[0], f"tally node {row[0]} is for {template}, which is not a template"
                )
            continue
        blocks = by_template.get(template, [])
        effective = audit.templates.get(template)
        shape = effective.body if effective is not None else None
        expected, _, total = _expected(audit, template, shape, blocks)
        audit.recounts[template] = (sum(b.members for b in blocks), total if blocks else zero(record.body))
        failures = _compare_nodes(audit, template, nodes, expected, [b.cid for b in blocks])
        if failures:
            _report_failures(audit, template, shape, blocks, failures)
    _check_result_counts(audit)


def _expected(
    audit: Audit,
    template: str,
    shape: BallotTemplate | None,
    blocks: list[LeafBlock],
    keep: Collection[Range] = (),
) -> tuple[Expected, dict[Range, str], Histogram]:
    """Every node of the tree over ``blocks`` (in leaf order), the text of the counts of
    the nodes of ``keep``, and the root's counts ({} for no blocks): from count vectors
    (counts.py, D57) for an effective template, else, or when that way is unsure of the
    answers, by adding histograms."""
    if shape is not None:
        fast = counts.expected_nodes(audit.con, template, counts.layout(shape), blocks, keep)
        if fast is not None:
            return fast
    return _expected_nodes_by_sum(blocks, block_histograms(audit.con, template, shape, blocks), keep)


def _expected_nodes_by_sum(
    blocks: list[LeafBlock], histograms: Iterator[Histogram], keep: Collection[Range] = ()
) -> tuple[Expected, dict[Range, str], Histogram]:
    """What _expected gives, each node's counts its children's added member-wise (§6)."""
    out: Expected = {}
    texts: dict[Range, str] = {}
    stack: list[tuple[bytes, Histogram, int]] = []  # the completed subtrees not yet merged
    binaries = cid_binaries([block.cid for block in blocks])
    for node in merkle.iter_tree_ranges(len(blocks)):
        if node.mid is None:
            block = blocks[node.start]
            entry = (merkle.leaf_hash(binaries[node.start]), next(histograms), block.members)
        else:  # post-order: the two subtrees on top of the stack are this node's children
            right, left = stack.pop(), stack.pop()
            entry = (merkle.node_hash(left[0], right[0]), add_into(left[1], right[1]), left[2] + right[2])
        # the text the store holds for a published node's counts (the same function)
        text = json_text(entry[1])
        rng = (node.start, node.end)
        out[rng] = (entry[0], hashlib.sha256(text.encode("utf-8")).digest(), entry[2], node.mid)
        if rng in keep:
            texts[rng] = text
        stack.append(entry)
    return out, texts, (stack[0][1] if stack else {})


def _compare_nodes(
    audit: Audit,
    template: str,
    published: list[tuple[Any, ...]],
    expected: Expected,
    leaves: list[str],
) -> list[tuple[str, str, Range]]:
    """Compare a template's published nodes with the tree's; the failures of nodes that
    are in the tree, to report (the others are reported here)."""
    f = audit.findings
    by_range: dict[tuple[int, int], list[str]] = defaultdict(list)
    contents: dict[tuple[int, int], set[tuple[Any, ...]]] = defaultdict(set)
    for cid, _, start, end, node_hash, voters, counts_digest, children in sorted(
        published, key=lambda r: r[0]
    ):
        by_range[(start, end)].append(cid)
        contents[(start, end)].add((bytes(node_hash), voters, counts_digest, tuple(children)))
    for rng, cids in sorted(by_range.items()):
        if len(contents[rng]) > 1:  # copies with other signatures are one node
            f.fail(
                "TALLY-TREE",
                sorted(cids)[1],
                f"{len(cids)} different tally nodes cover [{rng[0]}, {rng[1]}) of template {template}",
                records=sorted(cids),
            )
    failures: list[tuple[str, str, Range]] = []  # (node, message, its range)
    for cid, _, start, end, node_hash, voters, counts_digest, children in published:
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
        if bytes.fromhex(counts_digest) != w_counts:
            problems.append("its counts differ from the recount of its blocks")
        if problems:
            failures.append((cid, f"{name}: {'; '.join(problems)}", (start, end)))
    if leaves and (0, len(leaves)) not in by_range:
        f.fail("TALLY-TREE", template, f"template {template} has no tally root node [0, {len(leaves)})")
    return failures


def _report_failures(
    audit: Audit,
    template: str,
    shape: Any,
    blocks: list[LeafBlock],
    failures: list[tuple[str, str, Range]],
) -> None:
    """Fail TALLY-TREE for each of ``failures``, with the published and the recounted
    counts of the nodes whose findings are listed (not of every failure): the recounted
    texts are made again by a second walk of the tree, which only a failing election pays."""
    f = audit.findings
    failures.sort()
    listed = failures[: f.room("TALLY-TREE")]
    published = dict(
        audit.rows(
            "SELECT cid, counts FROM tally_node WHERE list_contains(?, cid)", [[c for c, _, _ in listed]]
        )
    )
    _, texts, _ = _expected(audit, template, shape, blocks, {rng for _, _, rng in listed})
    for cid, message, rng in failures:
        got, want = published.get(cid), texts.get(rng)
        evidence = {"got": json.loads(got), "expected": json.loads(want)} if got is not None and want else {}
        f.fail("TALLY-TREE", cid, message, **evidence)


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
