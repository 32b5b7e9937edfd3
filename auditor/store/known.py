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

from auditor.store.bulk import cid_binary_grid, is_canonical_cid_run

RUN = 1 << 16  # CIDs waiting as text before they become a sorted run
_PREFIX_LEN = 5  # the binary CID's bytes before its digest


class CidSet:
    """A set of text CIDs, held as sorted digests (see the module docstring)."""

    def __init__(self, cids: Iterable[str] = ()) -> None:
        self._prefixes: list[np.ndarray] = []  # each run's first 8 digest bytes, ascending
        self._digests: list[np.ndarray] = []  # each run's (n, 32) digests, in that order
        self._recent: set[str] = set()  # canonical CIDs not yet in a run
        self._odd: set[str] = set()  # texts that are not canonical CIDs
        self.update(cids)

    def __len__(self) -> int:
        return sum(len(p) for p in self._prefixes) + len(self._recent) + len(self._odd)

    def __contains__(self, cid: object) -> bool:
        if not isinstance(cid, str):
            return False
        return bool(self.contains_many([cid])[0])

    def contains_many(self, cids: Sequence[str]) -> list[bool]:
        """For each of ``cids``, whether the set holds it."""
        found = [cid in self._recent or cid in self._odd for cid in cids]
        if not self._prefixes or not cids:
            return found
        canonical = _canonical_positions(cids)
        if not canonical:
            return found
        digests = _digests([cids[i] for i in canonical])
        prefixes = _prefix_keys(digests)
        hit = np.zeros(len(canonical), bool)
        for run_prefixes, run_digests in zip(self._prefixes, self._digests, strict=True):
            low = np.searchsorted(run_prefixes, prefixes, "left")
            high = np.searchsorted(run_prefixes, prefixes, "right")
            width = high - low
            single = np.flatnonzero(width == 1)
            if len(single):
                rows = low[single]
                hit[single] |= (run_digests[rows] == digests[single]).all(axis=1)
            for j in np.flatnonzero(width > 1):  # digests sharing a prefix: each compared
                hit[j] |= bool((run_digests[low[j] : high[j]] == digests[j]).all(axis=1).any())
        for j in np.flatnonzero(hit):
            found[canonical[j]] = True
        return found

    def isdisjoint(self, cids: Sequence[str]) -> bool:
        return not any(self.contains_many(cids))

    def add(self, cid: str) -> None:
        self.update([cid])

    def update(self, cids: Iterable[str]) -> None:
        """Add ``cids`` (the caller has checked that the set does not hold them yet, or
        does not mind; a CID added twice is still found, and counted twice by len)."""
        cids = list(cids)
        canonical = set(_canonical_positions(cids))
        for i, cid in enumerate(cids):
            (self._recent if i in canonical else self._odd).add(cid)
        if len(self._recent) >= RUN:
            self._seal()

    def _seal(self) -> None:
        """Make the waiting CIDs a run, and merge runs of about the same size."""
        texts = sorted(self._recent)
        self._recent = set()
        digests = _digests(texts)
        prefixes = _prefix_keys(digests)
        order = np.argsort(prefixes, kind="stable")
        self._prefixes.append(prefixes[order])
        self._digests.append(digests[order])
        while len(self._prefixes) > 1 and len(self._prefixes[-2]) <= len(self._prefixes[-1]):
            prefixes = np.concatenate([self._prefixes.pop(), self._prefixes.pop()])
            digests = np.concatenate([self._digests.pop(), self._digests.pop()])
            order = np.argsort(prefixes, kind="stable")
            self._prefixes.append(prefixes[order])
            self._digests.append(digests[order])
            del prefixes, digests, order


def _canonical_positions(cids: Sequence[str]) -> list[int]:
    if is_canonical_cid_run(cids):
        return list(range(len(cids)))
    return [i for i, cid in enumerate(cids) if is_canonical_cid_run([cid])]


def _digests(texts: Sequence[str]) -> np.ndarray:
    """The (n, 32) digests of canonical text CIDs."""
    return np.ascontiguousarray(cid_binary_grid(texts)[:, _PREFIX_LEN:])


def _prefix_keys(digests: np.ndarray) -> np.ndarray:
    """Each digest's first 8 bytes as an unsigned integer that sorts as they do."""
    return np.ascontiguousarray(digests[:, :8]).view(">u8").ravel().astype(np.uint64)
