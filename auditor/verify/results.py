"""Results: RES-MATCH's structural part (one authority-signed result per template, dated
in [TS, V), naming the verified block tree and the tally root it covers).

The comparison of the result's counts with a recount belongs to the recount stage; until
it runs, RES-MATCH reports what it could check and says the counts were not recounted.
"""

from __future__ import annotations

from collections import defaultdict

from auditor.model.envelope import Envelope
from auditor.verify.authority import check_authority_signature
from auditor.verify.context import Audit

__all__ = ["CHECKS", "check_results"]

CHECKS = ("RES-MATCH",)


def check_results(audit: Audit) -> None:
    f = audit.findings
    election = audit.election
    assert election is not None
    results = audit.of_type("result")
    by_template: dict[str, list[Envelope]] = defaultdict(list)
    for result in results:
        name = f"result {result.cid}"
        good = check_authority_signature(audit, result, election.body.authority)
        audit.auth_ok[result.cid] = good
        if not good:
            f.fail("RES-MATCH", result.cid, f"{name} is not validly authority-signed (AUTH-THRESHOLD)")
        when = audit.in_window(result.cid, "TS", "V")
        if when:
            f.fail("RES-MATCH", result.cid, f"{name} must be timestamped in [TS, V); {when}")
            good = False
        if good:
            by_template[result.body.template].append(result)
    templates = sorted(set(audit.templates) | set(by_template))
    f.checked("RES-MATCH", len(templates), f"{len(results)} results for {len(audit.templates)} templates")
    for template in templates:
        group = sorted(by_template.get(template, []), key=lambda r: (audit.proven.get(r.cid, 0), r.cid))
        if not group:
            f.fail("RES-MATCH", template, f"template {template} has no valid result")
            continue
        if len(group) > 1:
            f.fail(
                "RES-MATCH",
                group[1].cid,
                f"template {template} has {len(group)} different valid results "
                f"({', '.join(r.cid for r in group)}): an equivocation",
                records=[r.cid for r in group],
                envelopes={r.cid: audit.envelope_text(r.cid) for r in group},
            )
            continue
        result = group[0]
        body = result.body
        tree = audit.trees.get(template)
        problems = []
        if template not in audit.templates:
            problems.append(f"it is for template {template}, which is not an effective template")
        if tree is None:
            problems.append("the template has no verified block tree")
        elif body.blockTree != tree.cid:
            problems.append(f"it names block tree {body.blockTree}; the verified tree is {tree.cid}")
        root = _tally_node(audit, body.tallyRoot)
        if root is None:
            problems.append(f"its tally root {body.tallyRoot} is not in the evidence")
        elif tree is not None and (root[0], root[1]) != (0, tree.body.count):
            problems.append(
                f"its tally root covers [{root[0]}, {root[1]}), not the whole tree [0, {tree.body.count})"
            )
        for problem in problems:
            f.fail("RES-MATCH", result.cid, f"result {result.cid}: {problem}")
        if not problems:
            audit.results[template] = result


def _tally_node(audit: Audit, cid: str) -> tuple[int, int] | None:
    rows = audit.rows('SELECT start, "end" FROM tally_node WHERE cid = ?', [cid])
    return (rows[0][0], rows[0][1]) if rows else None
