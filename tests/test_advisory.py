"""Instant-runoff rounds and the advisory anomaly layer (information, never a verdict)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from auditor.verify.advisory import OUTLIER_Z, _outliers, instant_runoff, weighted_instant_runoff
from auditor.verify.answers import rankings


def test_a_majority_in_the_first_round_wins_at_once() -> None:
    rounds = instant_runoff(["a", "b", "c"], [["a"], ["a", "b"], ["b"]])
    assert rounds == [{"round": 1, "counts": {"a": 2, "b": 1, "c": 0}, "exhausted": 0, "winner": "a"}]


def test_transfers_after_elimination() -> None:
    # a 4, b 3, c 2 (c's voters rank b next): c goes, b wins 5 to 4
    ballots = [["a"]] * 4 + [["b"]] * 3 + [["c", "b"]] * 2
    rounds = instant_runoff(["a", "b", "c"], ballots)
    assert [r.get("eliminated") for r in rounds] == ["c", None]
    assert rounds[-1]["winner"] == "b" and rounds[-1]["counts"] == {"a": 4, "b": 5}


def test_exhausted_ballots_do_not_count_toward_the_majority() -> None:
    ballots = [["a"]] * 3 + [["b"]] * 2 + [["c"]] * 2
    rounds = instant_runoff(["a", "b", "c"], ballots)
    # b and c tie at 2: the later code (c) goes first, then its ballots are exhausted
    assert rounds[0]["eliminated"] == "c"
    assert rounds[1]["exhausted"] == 2 and rounds[1]["winner"] == "a"


@given(
    st.lists(
        st.permutations(["a", "b", "c", "d"]).flatmap(lambda p: st.integers(0, 4).map(lambda n: p[:n])),
        max_size=40,
    )
)
def test_rounds_are_consistent_and_independent_of_ballot_order(ballots: list[list[str]]) -> None:
    rounds = instant_runoff(["a", "b", "c", "d"], ballots)
    assert rounds and "winner" in rounds[-1]
    for r in rounds:
        assert sum(r["counts"].values()) + r["exhausted"] == len(ballots)
    assert instant_runoff(["d", "c", "b", "a"], list(reversed(ballots))) == rounds


def _block(cid: str, yes: int, no: int) -> tuple[str, int, dict[str, int]]:
    return cid, yes + no, {"yes": yes, "no": no}


def test_a_block_far_from_its_district_is_an_outlier() -> None:
    blocks = [_block(f"b{i}", 10, 10) for i in range(50)] + [_block("odd", 40, 0)]
    ballot = {
        "district": "north",
        "questions": [{"question": "t"}],
        "counts": {"t": {"ballots": 1040, "options": {"yes": 540, "no": 500}}},
    }
    found = _outliers(ballot, blocks)
    assert [o["block"] for o in found] == ["odd"] and found[0]["z"] > OUTLIER_Z


@given(
    st.lists(
        st.tuples(
            st.permutations(["a", "b", "c", "d"]).flatmap(
                lambda p: st.integers(0, 4).map(lambda n: tuple(p[:n]))
            ),
            st.integers(1, 5),
        ),
        max_size=12,
    )
)
def test_weighted_rankings_give_the_rounds_of_the_ballots_they_stand_for(
    groups: list[tuple[tuple[str, ...], int]],
) -> None:
    ballots = [list(ranking) for ranking, n in groups for _ in range(n)]
    assert weighted_instant_runoff(["a", "b", "c", "d"], groups) == instant_runoff(
        ["a", "b", "c", "d"], ballots
    )


def test_the_advisory_reads_rankings_grouped() -> None:
    import duckdb

    con = duckdb.connect()
    con.execute(
        "CREATE TABLE answers (template VARCHAR, question VARCHAR, block VARCHAR, vote INT, "
        "option VARCHAR, rank INT)"
    )
    rows = [
        ("t", "q", "b1", 0, "x", 1),
        ("t", "q", "b1", 0, "y", 2),
        ("t", "q", "b1", 1, "x", 1),
        ("t", "q", "b1", 1, "y", 2),
        ("t", "q", "b2", 0, "y", 1),
        ("t", "q", "b2", 1, None, None),
    ]
    con.executemany("INSERT INTO answers VALUES (?, ?, ?, ?, ?, ?)", rows)
    assert rankings(con, "t", "q") == [((), 1), (("x", "y"), 2), (("y",), 1)]


def test_the_advisory_queries_run_as_one_scan_and_leave_the_settings_as_they_were() -> None:
    """DuckDB 2's ``partitioned_execution`` split each advisory GROUP BY over ten million
    voters' answers into a dozen ranges, each a whole scan of answers.parquet (×53 the
    time of a million voters): both queries run with it off, and the setting is restored,
    even when a query fails."""
    import duckdb
    import pytest

    from auditor.verify import answers
    from auditor.verify.answers import PARTITIONED, question_counts

    con = duckdb.connect()
    con.execute(
        "CREATE TABLE answers (template VARCHAR, question VARCHAR, block VARCHAR, vote INT, "
        "option VARCHAR, rank INT)"
    )
    con.executemany(
        "INSERT INTO answers VALUES (?, ?, ?, ?, ?, ?)",
        [("t", "q", "b1", 0, "x", 1), ("t", "q", "b1", 0, None, None), ("t", "q", "b2", 0, None, None)],
    )
    exists = con.execute("SELECT count(*) FROM duckdb_optimizers() WHERE name = ?", [PARTITIONED]).fetchall()
    setting = "SELECT current_setting('disabled_optimizers')"
    before = con.execute(setting).fetchall()[0][0]
    seen: list[str] = []

    class Watching:  # the connection, noting the disabled optimizers when answers is read
        def execute(self, sql: str, params: object = None) -> duckdb.DuckDBPyConnection:
            if "FROM answers" in sql:
                seen.append(con.execute(setting).fetchall()[0][0])
            return con.execute(sql, params) if params is not None else con.execute(sql)

    watching: object = Watching()
    assert rankings(watching, "t", "q") == [((), 1), (("x",), 1)]  # type: ignore[arg-type]
    assert question_counts(watching, "t", "q") == [("b1", 1, {"x": 1}), ("b2", 1, {})]  # type: ignore[arg-type]
    assert len(seen) == 2
    if exists[0][0]:
        assert all(PARTITIONED in s.split(",") for s in seen)
    assert con.execute(setting).fetchall()[0][0] == before
    with pytest.raises(duckdb.Error), answers.one_scan(con):
        con.execute("SELECT * FROM no_such_table")
    assert con.execute(setting).fetchall()[0][0] == before
