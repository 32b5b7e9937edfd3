"""Information beside the checks: instant-runoff rounds and the advisory anomaly layer.

Nothing here is a check of spec §8 and nothing here changes a verdict. Instant-runoff
rounds are what newsrooms report for ranked questions (the histogram of ranks cannot
give them). The anomaly layer points at what deserves a human look: turnout against
the roll, blocks too small to hide their members' votes, when receipts were issued,
and blocks whose votes are statistically unlike the rest of their district.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from auditor.verify.answers import question_counts, rankings
from auditor.verify.context import Audit

__all__ = ["OUTLIER_Z", "SMALL_BLOCK", "advise", "instant_runoff", "weighted_instant_runoff"]

SMALL_BLOCK = 3  # members; below this a block's histogram all but reveals its votes
OUTLIER_Z = 4.0  # |z| of a block's leading-candidate share against its district's


def instant_runoff(candidates: Sequence[str], ballots: Sequence[Sequence[str]]) -> list[dict[str, Any]]:
    """Instant-runoff rounds over rankings (most preferred first), one per ballot: see
    :func:`weighted_instant_runoff`."""
    return weighted_instant_runoff(candidates, Counter(tuple(b) for b in ballots).items())


def weighted_instant_runoff(
    candidates: Sequence[str], rankings: Iterable[tuple[Sequence[str], int]]
) -> list[dict[str, Any]]:
    """Instant-runoff rounds over rankings (most preferred first), each with the number
    of ballots that gave it: a round costs the distinct rankings (a few hundred), not the
    ballots (millions).

    Each round counts every ballot for its highest-ranked continuing candidate; a
    candidate with more than half of the ballots still counting wins; otherwise the
    candidate with the fewest votes is eliminated (a tie goes to the one with fewer
    votes in the earliest round that separates them, then to the later code in
    ascending order, so the result never depends on input order). Ballots that rank
    no continuing candidate are exhausted.
    """
    groups = [(tuple(ranking), n) for ranking, n in rankings]
    continuing = sorted(set(candidates))
    rounds: list[dict[str, Any]] = []
    history: list[Counter[str]] = []
    while continuing:
        tally: Counter[str] = Counter({c: 0 for c in continuing})
        exhausted = 0
        for ranking, n in groups:
            choice = next((c for c in ranking if c in tally), None)
            if choice is None:
                exhausted += n
            else:
                tally[choice] += n
        history.append(tally)
        live = sum(tally.values())
        entry: dict[str, Any] = {
            "round": len(rounds) + 1,
            "counts": dict(sorted(tally.items())),
            "exhausted": exhausted,
        }
        leader, votes = max(tally.items(), key=lambda kv: kv[1])  # a majority is unique
        if (live and 2 * votes > live) or len(continuing) == 1:
            entry["winner"] = leader
            rounds.append(entry)
            break
        if live == 0:
            entry["winner"] = None
            rounds.append(entry)
            break

        loser = min(continuing, key=lambda code: _weakness(code, history))
        entry["eliminated"] = loser
        rounds.append(entry)
        continuing.remove(loser)
    return rounds


def _weakness(code: str, history: list[Counter[str]]) -> tuple[Any, ...]:
    """Sort key of elimination: fewest votes now, then in the earliest round that
    separates, then the later code."""
    return (history[-1][code], *[h[code] for h in history], tuple(-ord(ch) for ch in code))


def advise(audit: Audit) -> None:
    """Fill ``audit.advisory`` and each ballot's instant-runoff rounds."""
    eligible = dict(audit.rows("SELECT district, count(*) FROM eligible GROUP BY district"))
    sizes = dict(audit.rows("SELECT members, count(*) FROM recount_block GROUP BY members ORDER BY members"))
    small = sum(size * n for size, n in sizes.items() if size < SMALL_BLOCK)
    advisory: dict[str, Any] = {
        "turnout": [],
        "blockSizes": {str(size): n for size, n in sizes.items()},
        "votersInSmallBlocks": small,
        "smallBlockSize": SMALL_BLOCK,
        "receiptTiming": _receipt_timing(audit),
        "outliers": [],
    }
    for ballot in audit.ballots:
        template = audit.templates[ballot["template"]].body
        district = ballot["district"]
        roll = eligible.get(district, 0)
        advisory["turnout"].append(
            {
                "district": district,
                "voters": ballot["voters"],
                "eligible": roll,
                "turnoutPpm": ballot["voters"] * 1_000_000 // roll if roll else None,
            }
        )
        irv = []
        for q in template.questions:
            if q.type != "rank":
                continue
            given = rankings(audit.con, ballot["template"], q.code)
            irv.append(
                {"question": q.code, "rounds": weighted_instant_runoff([o.code for o in q.options], given)}
            )
        ballot["instantRunoff"] = irv
        if ballot["questions"]:
            question = ballot["questions"][0]["question"]
            blocks = question_counts(audit.con, ballot["template"], question)
            advisory["outliers"].extend(_outliers(ballot, blocks))
    audit.advisory = advisory


def _receipt_timing(audit: Audit) -> dict[str, Any]:
    """Accepted receipts by tenth of the voting window [VS, AV)."""
    vs, av = audit.timeline("VS"), audit.timeline("AV")
    if vs is None or av is None or av <= vs:
        return {}
    rows = audit.rows(
        """
        SELECT least(9, greatest(0, floor((proven - $vs) * 10 / ($av - $vs))))::INTEGER AS tenth,
               count(DISTINCT block)  -- a block once, however many copies of its receipt
        FROM rcp WHERE valid AND result = 'accepted' GROUP BY tenth ORDER BY tenth
        """,
        {"vs": vs, "av": av},
    )
    found = dict(rows)
    return {"byTenthOfVotingWindow": [int(found.get(i, 0)) for i in range(10)]}


def _outliers(
    ballot: dict[str, Any], blocks: Sequence[tuple[str, int, dict[str, int]]]
) -> list[dict[str, Any]]:
    """Blocks whose share for the district's leading candidate is more than OUTLIER_Z
    binomial standard deviations from the district's share (first single-winner question).
    ``blocks``: (block CID, ballots, counts by option) for that question, per block."""
    if not ballot["questions"]:
        return []
    question = ballot["questions"][0]["question"]
    options = ballot["counts"][question]["options"]
    total = ballot["counts"][question]["ballots"]
    if not total:
        return []
    leader = max(options.items(), key=lambda kv: (kv[1], kv[0]))[0]
    p = options[leader] / total
    found = []
    for block, n, counts in blocks:
        if not n or p in (0.0, 1.0):
            continue
        share = counts.get(leader, 0) / n
        z = (share - p) / math.sqrt(p * (1 - p) / n)
        if abs(z) > OUTLIER_Z:
            found.append(
                {
                    "block": block,
                    "district": ballot["district"],
                    "question": question,
                    "candidate": leader,
                    "share": round(share, 4),
                    "districtShare": round(p, 4),
                    "ballots": n,
                    "z": round(z, 2),
                }
            )
    return found
