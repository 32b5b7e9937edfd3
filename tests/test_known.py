"""The store's set of held CIDs (auditor.store.known.CidSet) against a Python set."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditor.store import known
from auditor.store.bulk import cid_texts
from auditor.store.known import CidSet


def _cids(tag: str, n: int) -> list[str]:
    return cid_texts([hashlib.sha256(f"{tag}{i}".encode()).digest() for i in range(n)])


@pytest.fixture
def small_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(known, "RUN", 50)


def test_membership_is_exact_across_runs_and_waiting_cids(small_runs: None) -> None:
    held, absent = _cids("held", 1_000), _cids("absent", 1_000)
    cids = CidSet()
    for start in range(0, len(held), 37):
        cids.update(held[start : start + 37])
    assert len(cids._prefixes) > 1 and cids._recent  # runs of several sizes, and a few waiting
    assert len(cids) == len(held)
    assert cids.contains_many(held) == [True] * len(held)
    assert cids.contains_many(absent) == [False] * len(absent)
    assert cids.isdisjoint(absent) and not cids.isdisjoint([absent[0], held[500]])
    assert held[999] in cids and absent[0] not in cids and 12 not in cids


def test_runs_merge_as_a_binary_counter(small_runs: None) -> None:
    cids = CidSet()
    for start in range(0, 50 * 7, 50):
        cids.update(_cids(f"r{start}", 50))
    # seven runs of 50 make 4 + 2 + 1 runs' worth, never a run per batch
    assert [len(p) for p in cids._prefixes] == [200, 100, 50]
    assert all((p[:-1] <= p[1:]).all() for p in cids._prefixes)


def test_digests_sharing_their_first_eight_bytes_are_told_apart(small_runs: None) -> None:
    """An adversary can publish records whose digests share 64 bits (a birthday search):
    each must still be a record of its own, and an absent one must not be found."""
    shared = b"\x07" * 8
    digests = [shared + hashlib.sha256(str(i).encode()).digest()[:24] for i in range(200)]
    texts = cid_texts(digests)
    cids = CidSet(texts[:150])
    cids.update(_cids("filler", 120))  # sealed runs hold the colliding digests
    assert not cids._recent or all(t not in cids._recent for t in texts[:150])
    assert cids.contains_many(texts) == [True] * 150 + [False] * 50


def test_texts_that_are_not_canonical_cids_are_kept_as_text(small_runs: None) -> None:
    odd = ["", "bafy-not-a-cid", _cids("x", 1)[0].upper()]
    cids = CidSet(odd + _cids("y", 60))
    assert cids.contains_many(odd) == [True, True, True]
    assert cids.contains_many([_cids("x", 1)[0], "other"]) == [False, False]
    assert len(cids) == 63


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.lists(st.integers(0, 400), max_size=90), max_size=25),
    st.lists(st.integers(0, 500), max_size=80),
)
def test_it_answers_as_a_python_set_does(batches: list[list[int]], probes: list[int]) -> None:
    pool = _cids("p", 501)
    old_run = known.RUN
    known.RUN = 40
    try:
        cids, model = CidSet(), set()
        for batch in batches:
            texts = [pool[i] for i in batch if pool[i] not in model]
            cids.update(texts)
            model.update(texts)
            asked = [pool[i] for i in probes]
            assert cids.contains_many(asked) == [t in model for t in asked]
        assert len(cids) == len(model)
    finally:
        known.RUN = old_run


def test_add_absent_says_what_was_held_and_adds_the_rest_once(small_runs: None) -> None:
    old, new = _cids("old", 80), _cids("new", 30)
    cids = CidSet(old)
    batch = [new[0], old[3], new[0], "odd", old[79], new[1], "odd"]
    assert cids.add_absent(batch) == [False, True, False, False, True, False, False]
    assert len(cids) == 80 + 2 + 1  # each new CID once, the odd text once
    assert cids.add_absent(batch) == [True] * len(batch)
