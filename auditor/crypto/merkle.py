"""Merkle trees of spec §5.3: RFC 9162 §2.1 with SHA-256.

Pure functions, no I/O. The tree over ``n`` leaves ``D[0:n]`` is the one of
RFC 9162 §2.1.1:

* ``MTH({}) = SHA-256("")``;
* ``MTH({d0}) = SHA-256(0x00 ‖ d0)`` (the *leaf hash*);
* for ``n > 1``, with ``k`` the largest power of two strictly less than ``n``,
  ``MTH(D[n]) = SHA-256(0x01 ‖ MTH(D[0:k]) ‖ MTH(D[k:n]))`` (the *node hash*).

In VoteTorrent the leaves are binary CIDs in ascending byte order (spec §5.3); that
ordering is the caller's business, this module hashes whatever sequence it is given.

Everything here is iterative: no recursion, so a tree of any size is safe, and every
function that builds a tree hashes each node once (O(n) hashes for n leaves).

The tree is *left-complete*: hashing level by level, pairing neighbours and carrying
a lone last node up unchanged, gives exactly the RFC tree. :func:`root_of_leaf_hashes`
uses that; :class:`MerkleBuilder` uses the equivalent stack of perfect subtrees
(RFC 9162 §2.1.1 trees are what Certificate Transparency calls "compact ranges").

Verifiers (:func:`verify_inclusion`, :func:`verify_consistency`) follow the
algorithms of RFC 9162 §2.1.3.2 and §2.1.4.2 step by step; they never raise on bad
input, they return ``False``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple

__all__ = [
    "EMPTY_ROOT",
    "HASH_LEN",
    "MerkleBuilder",
    "TreeRange",
    "consistency_proof",
    "inclusion_proof",
    "iter_subtree_hashes",
    "iter_tree_ranges",
    "leaf_hash",
    "node_hash",
    "root",
    "root_from_inclusion",
    "root_of_leaf_hashes",
    "root_of_stream",
    "split",
    "subtree_root",
    "tree_ranges",
    "verify_consistency",
    "verify_inclusion",
]

HASH_LEN = 32
"""Length of every hash in the tree (SHA-256)."""

EMPTY_ROOT = hashlib.sha256(b"").digest()
"""MTH({}) = SHA-256 of the empty string (RFC 9162 §2.1.1, spec §5.3)."""

# Hash objects primed with the domain-separation prefix; ``.copy()`` of a primed
# object is cheaper than building a new one from a concatenated buffer.
_LEAF_PREFIX = hashlib.sha256(b"\x00")  # RFC 9162 §2.1.1: leaf hash prefix 0x00
_NODE_PREFIX = hashlib.sha256(b"\x01")  # RFC 9162 §2.1.1: node hash prefix 0x01

# A proof for a tree of fewer than 2**64 leaves has at most 64 hashes; anything longer
# is rejected before hashing (a defence against absurd inputs, not a format rule).
_MAX_PATH = 64


# ---------------------------------------------------------------------------- hashes


def leaf_hash(leaf: bytes) -> bytes:
    """``SHA-256(0x00 ‖ leaf)``: the hash of one leaf (RFC 9162 §2.1.1)."""
    h = _LEAF_PREFIX.copy()
    h.update(leaf)
    return h.digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 ‖ left ‖ right)``: the hash of an inner node (RFC 9162 §2.1.1)."""
    h = _NODE_PREFIX.copy()
    h.update(left)
    h.update(right)
    return h.digest()


def split(n: int) -> int:
    """The size of the left subtree of a tree of ``n`` leaves.

    The largest power of two strictly less than ``n`` (RFC 9162 §2.1.1, spec §5.3);
    e.g. ``split(2) == 1``, ``split(5) == 4``, ``split(8) == 4``. ``n`` must be at
    least 2 (smaller trees have no subtrees).
    """
    if n < 2:
        raise ValueError(f"split({n}): a tree of {n} leaves has no subtrees, expected n >= 2")
    return 1 << ((n - 1).bit_length() - 1)


# ---------------------------------------------------------------------------- roots


def _leaf_hashes(leaves: Iterable[bytes]) -> list[bytes]:
    return list(map(leaf_hash, leaves))


def _next_level(level: list[bytes]) -> list[bytes]:
    """Pair neighbours; a lone last node moves up unchanged (left-complete tree)."""
    prefix = _NODE_PREFIX.copy
    out: list[bytes] = []
    append = out.append
    pairs = iter(level)
    for left, right in zip(pairs, pairs, strict=False):
        h = prefix()
        h.update(left)
        h.update(right)
        append(h.digest())
    if len(level) & 1:
        append(level[-1])
    return out


def root_of_leaf_hashes(hashes: Sequence[bytes]) -> bytes:
    """MTH of a tree whose leaf hashes are given (RFC 9162 §2.1.1).

    Hashes each inner node once, level by level. With no hashes, :data:`EMPTY_ROOT`.
    """
    if not hashes:
        return EMPTY_ROOT
    level = list(hashes)
    while len(level) > 1:
        level = _next_level(level)
    return level[0]


def root(leaves: Sequence[bytes]) -> bytes:
    """MTH(D[n]) of the leaves, in the given order (RFC 9162 §2.1.1, spec §5.3)."""
    if not leaves:
        return EMPTY_ROOT
    return root_of_leaf_hashes(_leaf_hashes(leaves))


STREAM_GROUP = 1 << 16


def root_of_stream(chunks: Iterable[Sequence[bytes]], group: int | None = None) -> tuple[bytes, int]:
    """MTH of the leaves of ``chunks`` taken in order, and how many there were, holding at
    most ``group`` leaves at a time (RFC 9162 §2.1.1, spec §5.3).

    The leaves are cut into groups of ``group`` (a power of two) from the first: each full
    group is a perfect subtree of the whole tree, since every split of a left-complete
    tree above that size falls on a multiple of it, so the root of the whole is the root
    over the groups' roots taken as nodes (the last group, if short, as the subtree it is).
    A million leaves keep 16 group roots, not a million hashes. ``group``: by default
    :data:`STREAM_GROUP`.
    """
    group = STREAM_GROUP if group is None else group
    if group < 1 or group & (group - 1):
        raise ValueError(f"group: got {group}, expected a power of two")
    roots: list[bytes] = []
    pending: list[bytes] = []
    count = 0
    for chunk in chunks:
        count += len(chunk)
        pending.extend(chunk)
        while len(pending) >= group:
            roots.append(root(pending[:group]))
            del pending[:group]
    if pending:
        roots.append(root(pending))
    return root_of_leaf_hashes(roots), count


def subtree_root(leaves: Sequence[bytes], start: int, end: int) -> bytes:
    """MTH(D[start:end]): the hash of the subtree over leaves ``start`` to ``end - 1``.

    For the ranges :func:`tree_ranges` lists this is the hash of that node of the
    tree over all of ``leaves`` (spec §4.13 ``tally_node.hash``).
    """
    if not 0 <= start <= end <= len(leaves):
        raise ValueError(
            f"subtree [{start}, {end}) of {len(leaves)} leaves: expected 0 <= start <= end <= {len(leaves)}"
        )
    return root(leaves[start:end])


# ---------------------------------------------------------------------------- builder


class MerkleBuilder:
    """Streaming MTH: append leaves one at a time, keep O(log n) hashes.

    The state is the stack of roots of the perfect subtrees that tile the leaves
    appended so far, largest (leftmost) first; their sizes are the set bits of
    :attr:`size`, high to low. Appending merges equal-sized neighbours (one merge per
    trailing one bit of the old size). :meth:`root` folds the stack from right to left,
    which gives the RFC 9162 §2.1.1 tree because that tree is left-complete.

    >>> b = MerkleBuilder()
    >>> for leaf in (b"a", b"b", b"c"):
    ...     b.append(leaf)
    >>> b.root() == root([b"a", b"b", b"c"])
    True
    """

    __slots__ = ("_size", "_stack")

    def __init__(self) -> None:
        self._size = 0
        self._stack: list[bytes] = []

    @property
    def size(self) -> int:
        """The number of leaves appended so far."""
        return self._size

    def append(self, leaf: bytes) -> None:
        """Append one leaf (its data; it is hashed with :func:`leaf_hash`)."""
        self._push(leaf_hash(leaf))

    def extend(self, leaves: Iterable[bytes]) -> None:
        """Append several leaves in order."""
        push = self._push
        for h in map(leaf_hash, leaves):
            push(h)

    def append_hash(self, leaf_hash_: bytes) -> None:
        """Append one leaf given by its leaf hash (``SHA-256(0x00 ‖ leaf)``)."""
        if len(leaf_hash_) != HASH_LEN:
            raise ValueError(f"leaf hash: got {len(leaf_hash_)} bytes, expected {HASH_LEN}")
        self._push(bytes(leaf_hash_))

    def _push(self, h: bytes) -> None:
        stack = self._stack
        n = self._size
        self._size = n + 1
        while n & 1:  # each trailing one bit of the old size: merge two equal subtrees
            h = node_hash(stack.pop(), h)
            n >>= 1
        stack.append(h)

    def root(self) -> bytes:
        """MTH of the leaves appended so far (:data:`EMPTY_ROOT` if none)."""
        stack = self._stack
        if not stack:
            return EMPTY_ROOT
        acc = stack[-1]
        for i in range(len(stack) - 2, -1, -1):
            acc = node_hash(stack[i], acc)
        return acc


# ---------------------------------------------------------------------------- tree shape


class TreeRange(NamedTuple):
    """One node of the tree: the leaves ``[start, end)`` it covers.

    ``mid`` is where its right child starts, ``start + split(end - start)``, or
    ``None`` for a leaf node (``end == start + 1``). This is the shape of a spec §4.13
    ``tally_node``: a leaf node's child is one block, an inner node's children are the
    nodes ``[start, mid)`` and ``[mid, end)``.
    """

    start: int
    end: int
    mid: int | None

    @property
    def is_leaf(self) -> bool:
        return self.mid is None

    @property
    def size(self) -> int:
        return self.end - self.start


def iter_tree_ranges(n: int) -> Iterator[TreeRange]:
    """The nodes of the tree over ``n`` leaves, in post-order.

    Children come before their parent and a left subtree before its right sibling;
    the last node is the root ``(0, n)``. The tree over 0 leaves has no nodes. A tree
    over ``n >= 1`` leaves has ``2n - 1`` nodes; the iterator keeps O(log n) state.
    """
    if n < 0:
        raise ValueError(f"tree over {n} leaves: expected n >= 0")
    # The same walk as MerkleBuilder: a stack of perfect subtrees (start, end); each
    # leaf is emitted, then the merges it causes, and at the end the right-to-left
    # fold. That order is the post-order of the RFC 9162 §2.1.1 tree.
    stack: list[tuple[int, int]] = []
    for i in range(n):
        yield TreeRange(i, i + 1, None)
        start, end = i, i + 1
        k = i
        while k & 1:
            left_start, left_end = stack.pop()
            yield TreeRange(left_start, end, left_end)
            start = left_start
            k >>= 1
        stack.append((start, end))
    if stack:
        start, end = stack.pop()
        while stack:
            left_start, left_end = stack.pop()
            yield TreeRange(left_start, end, left_end)
            start = left_start


def tree_ranges(n: int) -> list[TreeRange]:
    """:func:`iter_tree_ranges` as a list (``2n - 1`` nodes; use the iterator for big n)."""
    return list(iter_tree_ranges(n))


def iter_subtree_hashes(leaves: Iterable[bytes]) -> Iterator[tuple[TreeRange, bytes]]:
    """Every node of the tree over ``leaves`` with its hash, in post-order.

    The same nodes in the same order as :func:`iter_tree_ranges` for ``len(leaves)``;
    each node is hashed once (O(n) in all) and the leaves may be a stream. A checker
    of spec §4.13 tally nodes can walk this alongside the tally tree.
    """
    stack: list[tuple[int, bytes]] = []  # (start of a perfect subtree, its hash)
    end = 0
    for i, leaf in enumerate(leaves):
        h = leaf_hash(leaf)
        end = i + 1
        yield TreeRange(i, end, None), h
        start = i
        k = i
        while k & 1:  # merges, as in MerkleBuilder
            left_start, left_hash = stack.pop()
            h = node_hash(left_hash, h)
            yield TreeRange(left_start, end, start), h
            start = left_start
            k >>= 1
        stack.append((start, h))
    if stack:  # the right-to-left fold: the ancestors of the last leaf
        start, h = stack.pop()
        while stack:
            left_start, left_hash = stack.pop()
            h = node_hash(left_hash, h)
            yield TreeRange(left_start, end, start), h
            start = left_start


# ---------------------------------------------------------------------------- inclusion


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """The audit path PATH(index, D[n]) of RFC 9162 §2.1.3.1, leaf to root.

    The first hash is the sibling of the leaf, the last the sibling of the child of the
    root on the leaf's side. Hashes O(n) nodes in all.
    """
    n = len(leaves)
    if not 0 <= index < n:
        raise ValueError(f"inclusion proof for leaf {index} of {n}: expected 0 <= index < {n}")
    hashes = _leaf_hashes(leaves)
    path: list[bytes] = []
    start, end = 0, n
    # Walk down from the root: at each node the path gets the MTH of the subtree the
    # leaf is not in (RFC 9162 §2.1.3.1); reversed at the end to run leaf to root.
    while end - start > 1:
        mid = start + split(end - start)
        if index < mid:
            path.append(root_of_leaf_hashes(hashes[mid:end]))
            end = mid
        else:
            path.append(root_of_leaf_hashes(hashes[start:mid]))
            start = mid
    path.reverse()
    return path


def _is_hash(value: object) -> bool:
    return isinstance(value, bytes | bytearray | memoryview) and len(value) == HASH_LEN


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def root_from_inclusion(leaf_hash_: bytes, index: int, size: int, path: Sequence[bytes]) -> bytes | None:
    """The root an audit path leads to, or ``None`` if the path cannot be right.

    Steps 1-3 of RFC 9162 §2.1.3.2: ``None`` when ``index >= size``, when the path is
    too long or too short for that index and size, or when an element is not a
    32-byte hash. Never raises.
    """
    if not (_is_count(index) and _is_count(size) and _is_hash(leaf_hash_)):
        return None
    if isinstance(path, str | bytes | bytearray | memoryview):
        return None  # a path is a sequence of hashes, not one string of bytes
    try:
        if len(path) > _MAX_PATH or not all(_is_hash(p) for p in path):
            return None
    except TypeError:
        return None
    # 1. index < size, else fail.
    if index >= size:
        return None
    # 2. fn = leaf_index, sn = tree_size - 1, r = hash.
    fn = index
    sn = size - 1
    r = bytes(leaf_hash_)
    # 3. For each p in the inclusion path:
    for p in path:
        # 3a. sn is 0: the path is too long.
        if sn == 0:
            return None
        # 3b. LSB(fn) set, or fn == sn: p is a left sibling.
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            # 3b-ii. then skip the levels where this node is a lone right child.
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        # 3c. one level up.
        fn >>= 1
        sn >>= 1
    # 4. sn must be 0 (the path was long enough).
    if sn != 0:
        return None
    return r


def verify_inclusion(leaf: bytes, index: int, size: int, path: Sequence[bytes], root: bytes) -> bool:
    """Whether ``path`` proves ``leaf`` is leaf ``index`` of the tree of ``size``
    leaves with MTH ``root`` (RFC 9162 §2.1.3.2).

    ``leaf`` is the leaf's data (for spec §5.3 trees, a binary CID); it is hashed with
    :func:`leaf_hash`. Returns ``False`` for any bad input; never raises.

    The proof binds the leaf, its index and the root. Like every RFC 9162 audit path
    it binds the size only as far as the size shapes the path: a path also verifies
    under another size whose tree puts the leaf at the same depth with the same
    siblings (e.g. leaf 0 under sizes 5 to 8 alike), so the size must come from a
    trusted source, as ``root`` does.
    """
    if not isinstance(leaf, bytes | bytearray | memoryview) or not _is_hash(root):
        return False
    got = root_from_inclusion(leaf_hash(leaf), index, size, path)
    return got is not None and got == bytes(root)


# ---------------------------------------------------------------------------- consistency


def consistency_proof(leaves: Sequence[bytes], old_size: int) -> list[bytes]:
    """The consistency proof PROOF(m, D[n]) of RFC 9162 §2.1.4.1, ``m = old_size``.

    Proves the tree over ``leaves[:old_size]`` is a prefix of the tree over
    ``leaves``. Needs ``0 < old_size <= len(leaves)``; for ``old_size == len(leaves)``
    the proof is empty. Hashes O(n) nodes in all.
    """
    n = len(leaves)
    if not 0 < old_size <= n:
        raise ValueError(f"consistency proof from {old_size} to {n} leaves: expected 0 < old_size <= {n}")
    hashes = _leaf_hashes(leaves)
    # SUBPROOF(m, D[start:end], b), unrolled: each step appends one MTH after the
    # sub-proof of the child it descends into, so collect and reverse at the end.
    tail: list[bytes] = []
    m = old_size
    start, end = 0, n
    whole = True  # b: the old tree is the whole of the current subtree's left edge
    while True:
        size = end - start
        if m == size:
            # SUBPROOF(m, D[m], true) = {}; SUBPROOF(m, D[m], false) = {MTH(D[m])}
            if not whole:
                tail.append(root_of_leaf_hashes(hashes[start:end]))
            break
        mid = start + split(size)
        if m <= mid - start:
            # m <= k: SUBPROOF(m, D[0:k], b) : MTH(D[k:n])
            tail.append(root_of_leaf_hashes(hashes[mid:end]))
            end = mid
        else:
            # m > k: SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k])
            tail.append(root_of_leaf_hashes(hashes[start:mid]))
            m -= mid - start
            start = mid
            whole = False
    tail.reverse()
    return tail


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """Whether ``proof`` shows the tree of ``old_size`` leaves with MTH ``old_root``
    is a prefix of the tree of ``new_size`` leaves with MTH ``new_root``
    (RFC 9162 §2.1.4.2).

    Edge cases, where the RFC algorithm does not apply: ``old_size == new_size``
    needs an empty proof and equal roots; ``old_size == 0`` needs an empty proof and
    ``old_root == EMPTY_ROOT`` (every tree extends the empty one). Returns ``False``
    for any bad input; never raises. As with inclusion proofs, the sizes are bound
    only as far as they shape the proof.
    """
    if not (_is_count(old_size) and _is_count(new_size)):
        return False
    if not (_is_hash(old_root) and _is_hash(new_root)):
        return False
    if isinstance(proof, str | bytes | bytearray | memoryview):
        return False
    try:
        if len(proof) > _MAX_PATH or not all(_is_hash(c) for c in proof):
            return False
    except TypeError:
        return False
    old_root = bytes(old_root)
    new_root = bytes(new_root)
    if old_size > new_size:
        return False
    if old_size == 0:
        return len(proof) == 0 and old_root == EMPTY_ROOT
    if old_size == new_size:
        return len(proof) == 0 and old_root == new_root
    # 1. An empty proof fails (0 < old_size < new_size from here on).
    if len(proof) == 0:
        return False
    path = [bytes(c) for c in proof]
    # 2. If old_size is an exact power of two, prepend old_root to the path.
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    # 3. fn = old_size - 1, sn = new_size - 1.
    fn = old_size - 1
    sn = new_size - 1
    # 4. If LSB(fn) is set, right-shift fn and sn until LSB(fn) is not set.
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # 5. fr = sr = the first value of the path.
    fr = sr = path[0]
    # 6. For each subsequent value c of the path:
    for c in path[1:]:
        # 6a. sn is 0: the proof is too long.
        if sn == 0:
            return False
        # 6b. LSB(fn) set, or fn == sn: c is a left sibling in both trees.
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            # 6b-ii. skip the levels where the old tree's edge is a lone right child.
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            # c is a right sibling that only the new tree has.
            sr = node_hash(sr, c)
        # 6c. one level up.
        fn >>= 1
        sn >>= 1
    # 7. fr == old_root, sr == new_root and sn == 0.
    return sn == 0 and fr == old_root and sr == new_root
