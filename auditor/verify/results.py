"""Results: RES-MATCH's structural part (one authority-signed result per template, dated
in [TS, V), naming the verified block tree and the tally root it covers).

The comparison of the result's counts with a recount belongs to the recount stage; until
it runs, RES-MATCH reports what it could check and says the counts were not recounted.
"""

from __future__ import annotations

from collections import defaultdict

from auditor.model.envelope import Envelope
from auditor.verify.authority import check_authority_signature
from auditor.verify.context import Audit, distinct_content

__all__ = ["check_results"]


def check_results(audit: Audit) -> None:
    f = audit.findings
    election = audit.election
    assert election is not None
    results = audit.of_type("result")
    by_template: dict[str, list[Envelope]] = defaultdict(list)
    for result in results:
        name = f"result {result.cid}"
        good = check_authority_signature(audit, result, election.body.authority)
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
        group = distinct_content(audit, by_template.get(template, []))
        if not group:
            f.fail("RES-MATCH", template, f"template {template} has no valid result")
            continue
        if len(group) > 1:
            audit.equivocation("RES-MATCH", group, f"the result of template {template}")
        result = group[0]
        body = result.body
        tree = audit.trees.get(template)
        problems = []
        if template not in audit.templates:
            problems.append(f"it is for template {template}, which is not an effective template")
        if tree is None:
            problems.append("the template has no verified block tree")
        elif not audit.same_record(body.blockTree, tree):
            problems.append(f"it names block tree {body.blockTree}; the verified tree is {tree.cid}")
        root = _tally_node(audit, body.tallyRoot, template)
        if root is None:
            if tree is None or tree.body.count > 0:  # an empty tree has no tally root (D12)
                problems.append(
                    f"its tally root {body.tallyRoot} is not a tally node of this election and template"
                )
        elif tree is not None and (root[0], root[1]) != (0, tree.body.count):
            problems.append(
                f"its tally root covers [{root[0]}, {root[1]}), not the whole tree [0, {tree.body.count})"
            )
        for problem in problems:
            f.fail("RES-MATCH", result.cid, f"result {result.cid}: {problem}")
        if not problems:
            audit.results[template] = result


def _tally_node(audit: Audit, cid: str, template: str) -> tuple[int, int] | None:
    """The range of tally node ``cid`` if it is a node of this election and template."""
    assert audit.election is not None
    rows = audit.rows(
        'SELECT start, "end" FROM tally_node WHERE cid = ? AND template = ? AND election = ?',
        [cid, template, audit.election.cid],
    )
    return (rows[0][0], rows[0][1]) if rows else None
