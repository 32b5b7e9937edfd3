"""The set of CIDs an evidence store holds, small enough for ten million records.

A harvest asks, for every record it reads, whether the store already holds it. A Python
``set`` of text CIDs costs about 150 bytes a CID (the string object and its slot): 1.9 GB
at the 12.5 million records of a ten-million-voter election, most of the harvest's peak.

:class:`CidSet` keeps a canonical CID (spec §2: the 5-byte prefix and a sha256 digest) as
its 32-byte digest, in sorted runs of numpy arrays: 40 bytes a CID with the 8-byte
prefix the runs are sorted by. Membership is exact: a candidate found by its prefix is
compared over all 32 bytes, and every record whose prefix another shares (which an
adversary can arrange: 64 bits fall to a birthday search) is compared with each of them.
The newest CIDs wait in a small Python set until there are :data:`RUN` of them; runs are
merged as a binary counter does (a run no larger than the one after it takes it in), so a CID
is copied about log2(n / RUN) times and there are as many runs.

A text that is not a canonical CID (the store accepts none, but the set does not rely on
that) is kept as text, beside the runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from auditor.model.encoding import CID_TEXT_LEN
from auditor.store.bulk import checked_cid_grid

RUN = 1 << 17  # CIDs waiting as text before they become a sorted run
_PREFIX_LEN = 5  # the binary CID's bytes before its digest


class CidSet:
    """A set of text CIDs, held as sorted digests (see the module docstring)."""

    def __init__(self, cids: Iterable[str] = ()) -> None:
        self._prefixes: list[np.ndarray] = []  # each run's first 8 digest bytes, ascending
        self._digests: list[np.ndarray] = []  # each run's (n, 32) digests, in that order
        self._recent: set[str] = set()  # canonical CIDs not yet in a run
        self._waiting: list[np.ndarray] = []  # their digests, to make the next run of
        self._odd: set[str] = set()  # texts that are not canonical CIDs
        self.update(cids)

    def __len__(self) -> int:
        return sum(len(p) for p in self._prefixes) + len(self._recent) + len(self._odd)

    def __contains__(self, cid: object) -> bool:
        if not isinstance(cid, str):
            return False
        return self.contains_many([cid])[0]

    def contains_many(self, cids: Sequence[str]) -> list[bool]:
        """For each of ``cids``, whether the set holds it."""
        return self._lookup(cids)[0]

    def isdisjoint(self, cids: Sequence[str]) -> bool:
        return not any(self.contains_many(cids))

    def add(self, cid: str) -> None:
        self.update([cid])

    def update(self, cids: Iterable[str]) -> None:
        self.add_absent(list(cids))

    def add_absent(self, cids: Sequence[str]) -> list[bool]:
        """Add ``cids``; for each, whether the set held it before this call (a CID twice in
        ``cids`` is added once, and is False both times unless it was held)."""
        found, canonical, digests = self._lookup(cids)
        every = len(canonical) == len(cids)
        row_of = None if every else {i: j for j, i in enumerate(canonical)}
        rows: list[int] = []
        recent, odd = self._recent, self._odd
        for i, cid in enumerate(cids):
            if found[i] or cid in recent or cid in odd:
                continue
            j = i if row_of is None else row_of.get(i)
            if j is None:
                odd.add(cid)
            else:
                recent.add(cid)
                rows.append(j)
        if rows:
            assert digests is not None
            self._waiting.append(digests if len(rows) == len(digests) else digests[rows])
        if len(recent) >= RUN:
            self._seal()
        return found

    def _lookup(self, cids: Sequence[str]) -> tuple[list[bool], list[int], np.ndarray | None]:
        """Whether each of ``cids`` is held, the positions of the canonical ones, and
        their (n, 32) digests."""
        recent, odd = self._recent, self._odd
        found = [cid in recent or cid in odd for cid in cids]
        canonical, digests = _canonical_digests(cids)
        if not self._prefixes or digests is None:
            return found, canonical, digests
        prefixes = _prefix_keys(digests)
        order = np.argsort(prefixes)  # needles in order: each search starts where the last ended
        prefixes, wanted = prefixes[order], digests[order]
        hit = np.zeros(len(order), bool)
        for run_prefixes, run_digests in zip(self._prefixes, self._digests, strict=True):
            last = len(run_prefixes) - 1
            low = np.minimum(np.searchsorted(run_prefixes, prefixes), last)
            candidates = np.flatnonzero(run_prefixes[low] == prefixes)
            if not len(candidates):
                continue
            rows = low[candidates]
            hit[candidates] |= (run_digests[rows] == wanted[candidates]).all(axis=1)
            following = np.minimum(rows + 1, last)
            shared = candidates[(rows < last) & (run_prefixes[following] == prefixes[candidates])]
            for j in shared:  # digests sharing a prefix: each compared
                high = np.searchsorted(run_prefixes, prefixes[j], "right")
                hit[j] |= bool((run_digests[low[j] : high] == wanted[j]).all(axis=1).any())
        for j in order[hit]:
            found[canonical[j]] = True
        return found, canonical, digests

    def _seal(self) -> None:
        """Make the waiting CIDs a run, and merge runs of about the same size."""
        digests = np.concatenate(self._waiting)
        self._recent, self._waiting = set(), []
        self._push(_prefix_keys(digests), digests)
        while len(self._prefixes) > 1 and len(self._prefixes[-2]) <= len(self._prefixes[-1]):
            prefixes = np.concatenate([self._prefixes.pop(), self._prefixes.pop()])
            digests = np.concatenate([self._digests.pop(), self._digests.pop()])
            self._push(prefixes, digests)
            del prefixes, digests

    def _push(self, prefixes: np.ndarray, digests: np.ndarray) -> None:
        order = np.argsort(prefixes, kind="stable")
        self._prefixes.append(prefixes[order])
        self._digests.append(digests[order])


def _canonical_digests(cids: Sequence[str]) -> tuple[list[int], np.ndarray | None]:
    """The positions of the canonical CIDs among ``cids`` and their (n, 32) digests."""
    if set(map(len, cids)) == {CID_TEXT_LEN} and all(map(str.isascii, cids)):
        sized: Sequence[int] = range(len(cids))
        grid, canonical = checked_cid_grid(cids)
    else:  # only texts of the right length and ASCII can be canonical
        sized = [i for i, cid in enumerate(cids) if len(cid) == CID_TEXT_LEN and cid.isascii()]
        grid, canonical = checked_cid_grid([cids[i] for i in sized])
    if canonical.all():
        positions, digests = list(sized), grid[:, _PREFIX_LEN:]
    else:
        positions, digests = np.asarray(sized, np.int64)[canonical].tolist(), grid[canonical][:, _PREFIX_LEN:]
    if not positions:
        return [], None
    return positions, np.ascontiguousarray(digests)


def _prefix_keys(digests: np.ndarray) -> np.ndarray:
    """Each digest's first 8 bytes as an unsigned integer that sorts as they do."""
    return np.ascontiguousarray(digests[:, :8]).view(">u8").ravel().astype(np.uint64)
