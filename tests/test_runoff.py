"""Spec §10 runoff rules at, just below and just above each threshold; participants at the cut."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from auditor.model.records import Runoff
from auditor.verify.outcome import RunoffInputs, participants_of, runoff_triggers

RULES = Runoff(
    disputeMargin=True, accessibilityPpm=5000, closeMarginPpm=5000, intervalDays=14, participants=2
)


def _fired(x: RunoffInputs, rules: Runoff = RULES) -> list[str]:
    return runoff_triggers(x, rules)[0]


@given(st.integers(0, 10**6), st.integers(-2, 2))
def test_dispute_margin_fires_only_when_disputed_exceeds_the_spread(spread: int, delta: int) -> None:
    disputed = max(0, spread + delta)
    x = RunoffInputs(spread=spread, total=10**9, disputed=disputed, unreached=0, eligible=10**9)
    assert ("dispute-margin" in _fired(x)) == (disputed > spread)
    off = Runoff(False, 5000, 5000, 14, 2)
    assert "dispute-margin" not in _fired(x, off)


@given(st.integers(1, 10**7), st.integers(0, 10**6), st.integers(-1, 1))
def test_accessibility_fires_above_the_ppm_of_eligible_voters(eligible: int, ppm: int, delta: int) -> None:
    rules = Runoff(True, ppm, 0, 14, 2)
    at = ppm * eligible // 1_000_000  # the largest count with count × 10^6 ≤ ppm × eligible
    unreached = max(0, at + delta)
    x = RunoffInputs(spread=10**9, total=0, disputed=0, unreached=unreached, eligible=eligible)
    assert ("accessibility" in _fired(x, rules)) == (unreached * 1_000_000 > ppm * eligible)
    assert ("accessibility" in _fired(x, rules)) == (delta > 0 or unreached > at)


@given(st.integers(0, 10**7), st.integers(0, 10**6), st.integers(-1, 1))
def test_close_margin_fires_below_the_ppm_of_ballots(total: int, ppm: int, delta: int) -> None:
    rules = Runoff(False, 10**6, ppm, 14, 2)
    exact, remainder = divmod(ppm * total, 1_000_000)
    threshold = exact + (1 if remainder else 0)  # the smallest spread that does not fire
    spread = max(0, threshold + delta)
    x = RunoffInputs(spread=spread, total=total, disputed=0, unreached=0, eligible=1)
    assert ("close-margin" in _fired(x, rules)) == (spread < threshold)


def test_exact_thresholds_do_not_fire() -> None:
    # 5000 ppm of 200 ballots is a spread of exactly 1: not "less than"
    assert _fired(RunoffInputs(spread=1, total=200, disputed=0, unreached=0, eligible=200)) == []
    assert _fired(RunoffInputs(spread=0, total=200, disputed=0, unreached=1, eligible=200)) == [
        "close-margin"
    ]
    # one unresolved report among 200 eligible is exactly 5000 ppm: not "more than"
    assert "accessibility" not in _fired(RunoffInputs(5, 10, 0, 1, 200))
    assert "accessibility" in _fired(RunoffInputs(5, 10, 0, 2, 200))


def test_participants_include_ties_at_the_cut() -> None:
    ordered = [("a", 10), ("b", 7), ("c", 7), ("d", 3)]
    assert participants_of(ordered, 2) == ["a", "b", "c"]
    assert participants_of(ordered, 1) == ["a"]
    assert participants_of(ordered, 4) == ["a", "b", "c", "d"]
    assert participants_of(ordered, 9) == ["a", "b", "c", "d"]
    assert participants_of([], 2) == []
