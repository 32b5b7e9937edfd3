"""Tests of auditor.crypto.merkle (spec §5.3, RFC 9162 §2.1).

Three kinds of evidence that the tree is the standard one:

1. the shared spec vectors (``../shared/spec/vectors/vectors.json``, "merkle", through
   the ``vectors`` fixture of ``conftest.py``);
2. the published RFC 6962 / Certificate Transparency reference tree (expected hashes
   transcribed from transparency-dev/merkle, see ``CT_*`` below);
3. properties over every small tree, checked against an independent, recursive
   reading of the RFC definitions written here (``_ref_*``), so that the bit-twiddling
   verifiers of RFC 9162 §2.1.3.2 / §2.1.4.2 are compared with the plain recursion of
   §2.1.3.1 / §2.1.4.1 on every input, good or tampered.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditor.crypto import merkle
from auditor.crypto.merkle import (
    EMPTY_ROOT,
    MerkleBuilder,
    TreeRange,
    consistency_proof,
    inclusion_proof,
    iter_subtree_hashes,
    iter_tree_ranges,
    leaf_hash,
    node_hash,
    root,
    root_from_inclusion,
    root_of_leaf_hashes,
    split,
    subtree_root,
    tree_ranges,
    verify_consistency,
    verify_inclusion,
)
from auditor.model.encoding import b64u_decode, cid_binary


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _leaves(n: int) -> list[bytes]:
    """Distinct leaves for property tests (any bytes will do)."""
    return [b"leaf %d" % i for i in range(n)]


# ---------------------------------------------------------------------------- reference
# Independent, recursive readings of the RFC 9162 definitions, for differential tests.


def _ref_mth(leaves: Sequence[bytes]) -> bytes:
    """MTH, RFC 9162 §2.1.1, by the recursive definition."""
    n = len(leaves)
    if n == 0:
        return _sha(b"")
    if n == 1:
        return _sha(b"\x00" + leaves[0])
    k = 1
    while k * 2 < n:
        k *= 2
    return _sha(b"\x01" + _ref_mth(leaves[:k]) + _ref_mth(leaves[k:]))


def _ref_inclusion_root(h: bytes, i: int, n: int, path: Sequence[bytes]) -> bytes | None:
    """The root PATH(i, D[n]) leads to, by recursion on RFC 9162 §2.1.3.1."""
    if not 0 <= i < n:
        return None
    if n == 1:
        return h if not path else None
    if not path:
        return None
    k = split(n)
    if i < k:
        sub = _ref_inclusion_root(h, i, k, path[:-1])
        return None if sub is None else _sha(b"\x01" + sub + path[-1])
    sub = _ref_inclusion_root(h, i - k, n - k, path[:-1])
    return None if sub is None else _sha(b"\x01" + path[-1] + sub)


def _ref_verify_inclusion(leaf: bytes, i: int, n: int, path: Sequence[bytes], root_hash: bytes) -> bool:
    if any(len(p) != 32 for p in path):
        return False
    return _ref_inclusion_root(_sha(b"\x00" + leaf), i, n, path) == root_hash


def _ref_consistency(
    m: int, n: int, whole: bool, proof: Sequence[bytes], old_root: bytes
) -> tuple[bytes, bytes] | None:
    """(old MTH, new MTH) rebuilt from SUBPROOF(m, D[n], b), RFC 9162 §2.1.4.1."""
    if m == n:
        if whole:
            return (old_root, old_root) if not proof else None
        return (proof[0], proof[0]) if len(proof) == 1 else None
    if not proof:
        return None
    k = split(n)
    last = proof[-1]
    if m <= k:
        sub = _ref_consistency(m, k, whole, proof[:-1], old_root)
        return None if sub is None else (sub[0], _sha(b"\x01" + sub[1] + last))
    sub = _ref_consistency(m - k, n - k, False, proof[:-1], old_root)
    if sub is None:
        return None
    return _sha(b"\x01" + last + sub[0]), _sha(b"\x01" + last + sub[1])


def _ref_verify_consistency(m: int, n: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> bool:
    if any(len(p) != 32 for p in proof) or not 0 < m <= n:
        return False
    got = _ref_consistency(m, n, True, list(proof), old_root)
    return got is not None and got == (old_root, new_root)


def _flip(h: bytes, at: int = 0, bit: int = 1) -> bytes:
    return h[:at] + bytes([h[at] ^ bit]) + h[at + 1 :]


# ---------------------------------------------------------------------------- spec vectors


def _spec_leaves(n: int) -> list[bytes]:
    # vectors.json "leaves_note": the binary CIDs of 'block 0'..'block n-1', sorted.
    return sorted(cid_binary(f"block {i}".encode()) for i in range(n))


def test_spec_vector_roots(vectors: dict[str, Any]) -> None:
    cases = vectors["merkle"]["roots"]
    assert [c["size"] for c in cases] == list(range(11))
    for case in cases:
        leaves = _spec_leaves(case["size"])
        expected = b64u_decode(case["root"], length=32)
        assert root(leaves) == expected, case["size"]
        builder = MerkleBuilder()
        builder.extend(leaves)
        assert builder.root() == expected, case["size"]


def test_spec_vector_inclusion_size_7(vectors: dict[str, Any]) -> None:
    section = vectors["merkle"]["inclusion_size_7"]
    leaves = _spec_leaves(7)
    root_hash = b64u_decode(section["root"], length=32)
    assert root(leaves) == root_hash
    assert [p["index"] for p in section["proofs"]] == list(range(7))
    for proof in section["proofs"]:
        index = proof["index"]
        leaf = b64u_decode(proof["leaf"])
        path = [b64u_decode(h, length=32) for h in proof["path"]]
        assert leaves[index] == leaf
        assert inclusion_proof(leaves, index) == path
        assert verify_inclusion(leaf, index, 7, path, root_hash)
        assert not verify_inclusion(leaf, (index + 1) % 7, 7, path, root_hash)


# ---------------------------------------------------------------------------- CT vectors
# The RFC 6962 reference tree used by Certificate Transparency implementations.
# Leaves and hashes transcribed (data only) from transparency-dev/merkle:
#   testonly/constants.go  (LeafInputs, NodeHashes, RootHashes), commit 582a6ad1,
#   proof/verify_test.go   (inclusionProofs, consistencyProofs), commit 02194e9a;
# the same values appear in google/certificate-transparency-go merkletree tests and in
# the C++ certificate-transparency merkle_tree_test.cc.

CT_LEAVES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]

CT_ROOTS = [  # index = tree size
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]

# NodeHashes: level (0 = leaf hashes) -> hashes of the perfect subtrees, left to right.
CT_NODES = [
    [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
        "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
        "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
        "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
    ],
    [
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    ],
    [
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    ["5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"],
]

# (index, size, path): verify_test.go numbers leaves from 1; converted to 0-based here.
CT_INCLUSION = [
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]

# (old size, new size, proof)
CT_CONSISTENCY = [
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]


def test_ct_roots() -> None:
    assert EMPTY_ROOT.hex() == CT_ROOTS[0]
    for size, expected in enumerate(CT_ROOTS):
        assert root(CT_LEAVES[:size]).hex() == expected, size
        builder = MerkleBuilder()
        builder.extend(CT_LEAVES[:size])
        assert builder.size == size
        assert builder.root().hex() == expected, size


def test_ct_node_hashes() -> None:
    assert leaf_hash(b"").hex() == CT_NODES[0][0]
    leaf_hashes = [bytes.fromhex(h) for h in CT_NODES[0]]
    assert node_hash(leaf_hashes[0], leaf_hashes[1]).hex() == CT_NODES[1][0]
    for level, hashes in enumerate(CT_NODES):
        width = 1 << level
        for j, expected in enumerate(hashes):
            got = subtree_root(CT_LEAVES, j * width, (j + 1) * width)
            assert got.hex() == expected, (level, j)
    # Every perfect subtree shows up, with its published hash, in the post-order walk.
    walked = {(r.start, r.end): h.hex() for r, h in iter_subtree_hashes(CT_LEAVES)}
    for level, hashes in enumerate(CT_NODES):
        width = 1 << level
        for j, expected in enumerate(hashes):
            assert walked[(j * width, (j + 1) * width)] == expected


@pytest.mark.parametrize(("index", "size", "path_hex"), CT_INCLUSION)
def test_ct_inclusion(index: int, size: int, path_hex: list[str]) -> None:
    leaves = CT_LEAVES[:size]
    path = [bytes.fromhex(h) for h in path_hex]
    root_hash = bytes.fromhex(CT_ROOTS[size])
    assert inclusion_proof(leaves, index) == path
    assert verify_inclusion(leaves[index], index, size, path, root_hash)
    assert root_from_inclusion(leaf_hash(leaves[index]), index, size, path) == root_hash
    # transparency-dev's probes (proof/verify_test.go, corruptInclusionProof):
    some_hash = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")
    leaf = leaves[index]
    assert not verify_inclusion(leaf, index - 1, size, path, root_hash)
    assert not verify_inclusion(leaf, index + 1, size, path, root_hash)
    assert not verify_inclusion(leaf, index ^ 2, size, path, root_hash)
    assert not verify_inclusion(leaf, index, size * 2, path, root_hash)
    assert not verify_inclusion(leaf, index, size // 2, path, root_hash)
    assert not verify_inclusion(b"WrongLeaf", index, size, path, root_hash)
    assert not verify_inclusion(leaf, index, size, path, EMPTY_ROOT)
    assert not verify_inclusion(leaf, index, size, path, some_hash)
    assert not verify_inclusion(leaf, index, size, [*path, b""], root_hash)
    assert not verify_inclusion(leaf, index, size, [*path, root_hash], root_hash)
    assert not verify_inclusion(leaf, index, size, [b"", *path], root_hash)
    assert not verify_inclusion(leaf, index, size, [root_hash, *path], root_hash)
    assert not verify_inclusion(leaf, index, size, path[:-1], root_hash)
    assert not verify_inclusion(leaf, index, size, [path[0], some_hash, *path[1:]], root_hash)
    for i in range(len(path)):
        bad = [*path[:i], _flip(path[i], 0, 8), *path[i + 1 :]]
        assert not verify_inclusion(leaf, index, size, bad, root_hash)


@pytest.mark.parametrize(("old", "new", "proof_hex"), CT_CONSISTENCY)
def test_ct_consistency(old: int, new: int, proof_hex: list[str]) -> None:
    proof = [bytes.fromhex(h) for h in proof_hex]
    old_root = bytes.fromhex(CT_ROOTS[old])
    new_root = bytes.fromhex(CT_ROOTS[new])
    assert consistency_proof(CT_LEAVES[:new], old) == proof
    assert verify_consistency(old, new, old_root, new_root, proof)
    if not proof:
        return
    # transparency-dev's probes (proof/verify_test.go, corruptConsistencyProof):
    assert not verify_consistency(old - 1, new, old_root, new_root, proof)
    assert not verify_consistency(old + 1, new, old_root, new_root, proof)
    assert not verify_consistency(old ^ 2, new, old_root, new_root, proof)
    assert not verify_consistency(old, new * 2, old_root, new_root, proof)
    assert not verify_consistency(old, new // 2, old_root, new_root, proof)
    assert not verify_consistency(old, new, _flip(old_root), new_root, proof)
    assert not verify_consistency(old, new, old_root, _flip(new_root), proof)
    assert not verify_consistency(old, new, new_root, old_root, proof)
    assert not verify_consistency(old, new, old_root, new_root, [])
    for extra in (b"", old_root, new_root):
        assert not verify_consistency(old, new, old_root, new_root, [*proof, extra])
        assert not verify_consistency(old, new, old_root, new_root, [extra, *proof])
    assert not verify_consistency(old, new, old_root, new_root, [proof[0], *proof])
    assert not verify_consistency(old, new, old_root, new_root, proof[:-1])
    for i in range(len(proof)):
        bad = [*proof[:i], _flip(proof[i], 0, 16), *proof[i + 1 :]]
        assert not verify_consistency(old, new, old_root, new_root, bad)


# ---------------------------------------------------------------------------- split and roots


@pytest.mark.parametrize(
    ("n", "k"),
    [
        (2, 1),
        (3, 2),
        (4, 2),
        (5, 4),
        (6, 4),
        (7, 4),
        (8, 4),
        (9, 8),
        (1000, 512),
        (1 << 40, 1 << 39),
        ((1 << 40) + 1, 1 << 40),
        ((1 << 63) + 1, 1 << 63),
    ],
)
def test_split_is_largest_power_of_two_below_n(n: int, k: int) -> None:
    assert split(n) == k


@pytest.mark.parametrize("n", [-1, 0, 1])
def test_split_needs_two_leaves(n: int) -> None:
    with pytest.raises(ValueError, match="expected n >= 2"):
        split(n)


def test_roots_match_recursive_definition() -> None:
    for n in range(0, 70):
        leaves = _leaves(n)
        expected = _ref_mth(leaves)
        assert root(leaves) == expected
        assert root_of_leaf_hashes([leaf_hash(x) for x in leaves]) == expected
        assert subtree_root(leaves, 0, n) == expected


def test_subtree_root_bounds() -> None:
    leaves = _leaves(5)
    assert subtree_root(leaves, 2, 2) == EMPTY_ROOT
    assert subtree_root(leaves, 1, 4) == _ref_mth(leaves[1:4])
    for start, end in ((-1, 2), (3, 2), (0, 6)):
        with pytest.raises(ValueError, match="subtree"):
            subtree_root(leaves, start, end)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=300))
def test_builder_matches_root(leaves: list[bytes]) -> None:
    builder = MerkleBuilder()
    assert builder.root() == EMPTY_ROOT
    for i, leaf in enumerate(leaves):
        if i % 2:
            builder.append(leaf)
        else:
            builder.append_hash(leaf_hash(leaf))
    assert builder.size == len(leaves)
    assert builder.root() == root(leaves)
    # root() does not consume the state: more leaves can follow.
    builder.append(b"one more")
    assert builder.root() == root([*leaves, b"one more"])


def test_builder_every_prefix() -> None:
    leaves = _leaves(130)
    builder = MerkleBuilder()
    for n, leaf in enumerate(leaves, start=1):
        builder.append(leaf)
        assert builder.root() == _ref_mth(leaves[:n])
        assert len(builder._stack) == bin(n).count("1")  # O(log n) state


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(0, 70),
    group=st.sampled_from([1, 2, 4, 8, 16]),
    cuts=st.lists(st.integers(0, 70), max_size=8),
)
def test_stream_root_is_the_recursive_root_whatever_the_chunks(n: int, group: int, cuts: list[int]) -> None:
    leaves = _leaves(n)
    bounds = sorted({0, n, *(c for c in cuts if c <= n)})
    chunks = [leaves[a:b] for a, b in pairwise(bounds)]
    assert merkle.root_of_stream(chunks, group) == (_ref_mth(leaves), n)


def test_stream_root_of_the_default_group_and_beyond() -> None:
    leaves = _leaves(3 * merkle.STREAM_GROUP + 5)
    chunks = [leaves[i : i + 10_000] for i in range(0, len(leaves), 10_000)]
    assert merkle.root_of_stream(chunks) == (root(leaves), len(leaves))
    assert merkle.root_of_stream([]) == (EMPTY_ROOT, 0)
    with pytest.raises(ValueError, match="power of two"):
        merkle.root_of_stream([leaves[:3]], group=3)
    # a leaf moved to another place changes the root: order matters, as in the tree
    swapped = [leaves[1], leaves[0], *leaves[2:]]
    assert merkle.root_of_stream([swapped])[0] != root(leaves)


def test_builder_rejects_bad_hash() -> None:
    with pytest.raises(ValueError, match="expected 32"):
        MerkleBuilder().append_hash(b"short")


# ---------------------------------------------------------------------------- tree shape


def _check_ranges(n: int, ranges: list[TreeRange]) -> None:
    if n == 0:
        assert ranges == []
        return
    assert len(ranges) == 2 * n - 1
    assert ranges[-1].start == 0 and ranges[-1].end == n  # the root comes last
    position = {(r.start, r.end): i for i, r in enumerate(ranges)}
    assert len(position) == len(ranges)  # no node twice
    leaves = [r for r in ranges if r.is_leaf]
    assert sorted((r.start, r.end) for r in leaves) == [(i, i + 1) for i in range(n)]
    for i, r in enumerate(ranges):
        if r.is_leaf:
            assert r.end == r.start + 1 and r.mid is None
            continue
        assert r.size >= 2
        assert r.mid == r.start + split(r.size)  # spec §4.13: split as in §5.3
        left = position[(r.start, r.mid)]
        right = position[(r.mid, r.end)]
        assert left < right < i  # post-order: left subtree, right subtree, node
        # the right child's subtree immediately precedes the node
        assert right == i - 1


@pytest.mark.parametrize("n", [*range(0, 70), 127, 128, 129, 1000])
def test_tree_ranges_post_order(n: int) -> None:
    ranges = tree_ranges(n)
    _check_ranges(n, ranges)
    assert list(iter_tree_ranges(n)) == ranges


def test_tree_ranges_match_subtree_hashes() -> None:
    for n in (0, 1, 2, 3, 5, 7, 8, 13, 33):
        leaves = _leaves(n)
        walked = list(iter_subtree_hashes(leaves))
        assert [r for r, _ in walked] == tree_ranges(n)
        for r, h in walked:
            assert h == _ref_mth(leaves[r.start : r.end])
        if n:
            assert walked[-1][1] == root(leaves)


def test_tree_ranges_big_and_negative() -> None:
    n = (1 << 16) + 3
    assert sum(1 for _ in iter_tree_ranges(n)) == 2 * n - 1
    with pytest.raises(ValueError, match="n >= 0"):
        tree_ranges(-1)


# ---------------------------------------------------------------------------- inclusion


def test_inclusion_every_size_and_index() -> None:
    """Every leaf of every tree of 1..70 leaves: the proof verifies, tampering fails."""
    for n in range(1, 71):
        leaves = _leaves(n)
        root_hash = root(leaves)
        for i in range(n):
            path = inclusion_proof(leaves, i)
            leaf = leaves[i]
            assert verify_inclusion(leaf, i, n, path, root_hash), (n, i)
            assert _ref_verify_inclusion(leaf, i, n, path, root_hash)
            assert root_from_inclusion(leaf_hash(leaf), i, n, path) == root_hash
            # wrong leaf, wrong root, wrong index (every other index)
            assert not verify_inclusion(leaf + b"!", i, n, path, root_hash)
            assert not verify_inclusion(leaf, i, n, path, _flip(root_hash, 31))
            others = range(n) if n <= 40 else {0, i - 1, i + 1, i ^ 1, i ^ 2, n - 1}
            for j in others:
                if j != i and 0 <= j < n:
                    assert not verify_inclusion(leaf, j, n, path, root_hash), (n, i, j)
            # index outside the tree
            assert not verify_inclusion(leaf, n, n, path, root_hash)
            # truncated and extended paths
            assert not verify_inclusion(leaf, i, n, [*path, path[-1] if path else root_hash], root_hash)
            if path:
                assert not verify_inclusion(leaf, i, n, path[:-1], root_hash)
                assert not verify_inclusion(leaf, i, n, path[1:], root_hash)
            # any flipped byte of any element
            for k, element in enumerate(path):
                for at in (0, 17, 31):
                    bad = [*path[:k], _flip(element, at), *path[k + 1 :]]
                    assert not verify_inclusion(leaf, i, n, bad, root_hash)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_inclusion_wrong_size_agrees_with_reference(data: st.DataObject) -> None:
    """Under another size a path verifies exactly when the recursive definition says so.

    RFC 9162 paths bind the size only through the shape of the path (see
    verify_inclusion): e.g. leaf 0's path in a tree of 5 also fits sizes 6, 7 and 8.
    Whatever the verifier says must agree with the plain recursion of §2.1.3.1.
    """
    n = data.draw(st.integers(1, 70), label="n")
    i = data.draw(st.integers(0, n - 1), label="index")
    other = data.draw(st.integers(0, 140), label="other size")
    leaves = _leaves(n)
    root_hash = root(leaves)
    path = inclusion_proof(leaves, i)
    got = verify_inclusion(leaves[i], i, other, path, root_hash)
    assert got == _ref_verify_inclusion(leaves[i], i, other, path, root_hash)
    if other == n:
        assert got


def test_paths_bind_the_size_only_through_their_shape() -> None:
    """A documented property of RFC 9162 proofs, not a bug: sizes come from signed heads."""
    leaves = _leaves(5)
    path = inclusion_proof(leaves, 0)
    sizes = [s for s in range(1, 20) if verify_inclusion(leaves[0], 0, s, path, root(leaves))]
    assert sizes == [5, 6, 7, 8]  # leaf 0 sits at depth 3 with the same siblings
    proof = consistency_proof(leaves, 2)
    old_root, new_root = root(leaves[:2]), root(leaves)
    pairs = [
        (m, n)
        for m in range(1, 10)
        for n in range(m, 12)
        if verify_consistency(m, n, old_root, new_root, proof)
    ]
    assert (2, 5) in pairs and (2, 6) in pairs and (1, 3) in pairs
    assert all(_ref_verify_consistency(m, n, old_root, new_root, proof) for m, n in pairs)


@pytest.mark.parametrize(
    "args",
    [
        (b"x", -1, 1, [], EMPTY_ROOT),
        (b"x", 0, 0, [], EMPTY_ROOT),
        (b"x", 0, -5, [], EMPTY_ROOT),
        (b"x", True, 2, [EMPTY_ROOT], EMPTY_ROOT),
        (b"x", 0, 2.0, [EMPTY_ROOT], EMPTY_ROOT),
        (b"x", "0", 2, [EMPTY_ROOT], EMPTY_ROOT),
        (None, 0, 1, [], EMPTY_ROOT),
        ("x", 0, 1, [], EMPTY_ROOT),
        (b"x", 0, 1, None, EMPTY_ROOT),
        (b"x", 0, 1, [], None),
        (b"x", 0, 1, [], b"short"),
        (b"x", 0, 2, [b"short"], EMPTY_ROOT),
        (b"x", 0, 2, ["a" * 32], EMPTY_ROOT),
        (b"x", 0, 2, [None], EMPTY_ROOT),
        (b"x", 0, 2, EMPTY_ROOT, EMPTY_ROOT),
        (b"x", 0, 2, "ab", EMPTY_ROOT),
        (b"x", 0, 2, iter([EMPTY_ROOT]), EMPTY_ROOT),
        (b"x", 0, 2**200, [EMPTY_ROOT] * 65, EMPTY_ROOT),
        (b"x", 2**64, 2**65, [EMPTY_ROOT] * 3, EMPTY_ROOT),
    ],
)
def test_verify_inclusion_never_raises(args: tuple[object, ...]) -> None:
    assert verify_inclusion(*args) is False  # type: ignore[arg-type]


def test_single_leaf_tree() -> None:
    # transparency-dev TestVerifyInclusionSingleEntry: root == leaf hash, empty proof.
    h = leaf_hash(b"data")
    assert verify_inclusion(b"data", 0, 1, [], h)
    assert not verify_inclusion(b"data", 0, 1, [], b"")
    assert root_from_inclusion(h, 0, 1, []) == h
    assert root_from_inclusion(b"", 0, 1, []) is None


def test_inclusion_proof_bounds() -> None:
    for index in (-1, 3):
        with pytest.raises(ValueError, match="0 <= index < 3"):
            inclusion_proof(_leaves(3), index)


# ---------------------------------------------------------------------------- consistency


def _consistency_tampers(
    m: int, n: int, old_root: bytes, new_root: bytes, proof: list[bytes]
) -> list[tuple[int, int, bytes, bytes, list[bytes]]]:
    probes = [
        (m, n, _flip(old_root), new_root, proof),
        (m, n, old_root, _flip(new_root, 31), proof),
        (m, n, old_root, new_root, [*proof, new_root]),
        (m, n, old_root, new_root, [old_root, *proof]),
        (m, n, old_root, new_root, proof[:-1]),
        (m, n, old_root, new_root, proof[1:]),
    ]
    if old_root != new_root:
        probes.append((m, n, new_root, old_root, proof))
    for k, element in enumerate(proof):
        for at in (0, 31):
            probes.append((m, n, old_root, new_root, [*proof[:k], _flip(element, at), *proof[k + 1 :]]))
    return [p for p in probes if p[4] != proof or p[2:4] != (old_root, new_root)]


def test_consistency_every_pair() -> None:
    """Every 0 < m <= n <= 40: the proof verifies and every tampering fails."""
    roots = [root(_leaves(n)) for n in range(41)]
    leaves = _leaves(40)
    for n in range(1, 41):
        for m in range(1, n + 1):
            proof = consistency_proof(leaves[:n], m)
            assert verify_consistency(m, n, roots[m], roots[n], proof), (m, n)
            assert _ref_verify_consistency(m, n, roots[m], roots[n], proof)
            assert (m == n) == (proof == [])
            for probe in _consistency_tampers(m, n, roots[m], roots[n], proof):
                assert not verify_consistency(*probe), (m, n, probe[2:4])


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_consistency_other_sizes_agree_with_reference(data: st.DataObject) -> None:
    """With other sizes, the verifier agrees with the recursion of RFC 9162 §2.1.4.1."""
    n = data.draw(st.integers(1, 40), label="n")
    m = data.draw(st.integers(1, n), label="m")
    m2 = data.draw(st.integers(0, 45), label="other m")
    n2 = data.draw(st.integers(0, 45), label="other n")
    leaves = _leaves(n)
    old_root, new_root = root(leaves[:m]), root(leaves)
    proof = consistency_proof(leaves, m)
    got = verify_consistency(m2, n2, old_root, new_root, proof)
    if m2 == 0:
        assert not got  # old_root is not EMPTY_ROOT
    elif m2 == n2:
        assert got == (proof == [] and old_root == new_root)
    else:
        assert got == _ref_verify_consistency(m2, n2, old_root, new_root, proof)


def test_consistency_edge_cases() -> None:
    some = root(_leaves(3))
    # the empty tree is a prefix of every tree, and only EMPTY_ROOT is its root
    assert verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    assert verify_consistency(0, 3, EMPTY_ROOT, some, [])
    assert not verify_consistency(0, 3, some, some, [])
    assert not verify_consistency(0, 3, EMPTY_ROOT, some, [some])
    # equal sizes: empty proof, equal roots
    assert verify_consistency(3, 3, some, some, [])
    assert not verify_consistency(3, 3, some, EMPTY_ROOT, [])
    assert not verify_consistency(3, 3, some, some, [some])
    # time travel
    assert not verify_consistency(4, 3, some, some, [])
    # junk never raises
    junk: list[tuple[object, ...]] = [
        (-1, 3, some, some, []),
        (1, 3, some, some, None),
        (1, 3, some, some, [None]),
        (1, 3, some, some, some),
        (1, 3, some, some, "x"),
        (1, 3, None, some, [some]),
        (1, 3, some, b"", [some]),
        (True, 3, some, some, [some]),
        (1.0, 3, some, some, [some]),
        (1, 2**300, some, some, [some] * 80),
        (2**70, 2**71, some, some, [some] * 3),
    ]
    for args in junk:
        assert verify_consistency(*args) is False  # type: ignore[arg-type]


def test_consistency_proof_bounds() -> None:
    for m in (0, 4, -1):
        with pytest.raises(ValueError, match="0 < old_size <= 3"):
            consistency_proof(_leaves(3), m)


def test_public_api() -> None:
    for name in merkle.__all__:
        assert hasattr(merkle, name), name
