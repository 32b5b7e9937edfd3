"""How fast are the spec §5.3 Merkle functions on a big tree?

    .venv/bin/python bench/merkle_speed.py            # 1,000,000 leaves
    .venv/bin/python bench/merkle_speed.py -n 100000

The leaves are sorted binary CIDs, as in a real block tree (spec §4.11). Each timing
is the best of ``--repeat`` runs, in CPU seconds of this process (``time.process_time``)
and, in brackets, wall-clock seconds: on a shared machine the CPU time is the steadier.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from auditor.crypto import merkle
from auditor.model.encoding import cid_binary

WALL: list[float] = []  # wall-clock seconds of the last best() call


def best(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    """Best CPU time of ``repeat`` runs (and its wall time, in WALL[0])."""
    times = []
    result: object = None
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        times.append((time.process_time() - cpu, time.perf_counter() - wall))
    cpu_best, wall_best = min(times)
    WALL[:] = [wall_best]
    return cpu_best, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=1_000_000, help="number of leaves")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    n = args.n

    t = time.perf_counter()
    leaves = sorted(cid_binary(b"block %d" % i) for i in range(n))
    print(f"made {n:,} sorted binary CIDs in {time.perf_counter() - t:.2f} s (not timed below)")

    secs, ref = best(lambda: merkle.root(leaves), args.repeat)
    print(f"root(leaves)                  {secs:6.2f} s ({WALL[0]:.2f})  {n / secs:>10,.0f} leaves/s")

    def streamed() -> bytes:
        b = merkle.MerkleBuilder()
        for leaf in leaves:
            b.append(leaf)
        return b.root()

    secs, got = best(streamed, args.repeat)
    assert got == ref
    print(f"MerkleBuilder.append + root   {secs:6.2f} s ({WALL[0]:.2f})  {n / secs:>10,.0f} leaves/s")

    def walk() -> bytes:
        h = b""
        for _node, h in merkle.iter_subtree_hashes(leaves):  # noqa: B007
            pass
        return h

    secs, got = best(walk, args.repeat)
    assert got == ref
    print(f"iter_subtree_hashes (2n-1)    {secs:6.2f} s ({WALL[0]:.2f})  {n / secs:>10,.0f} leaves/s")

    secs, _ = best(lambda: sum(1 for _ in merkle.iter_tree_ranges(n)), args.repeat)
    print(f"iter_tree_ranges (2n-1)       {secs:6.2f} s ({WALL[0]:.2f})")

    index = n // 3
    secs, path = best(lambda: merkle.inclusion_proof(leaves, index), args.repeat)
    print(f"inclusion_proof(one leaf)     {secs:6.2f} s ({WALL[0]:.2f})  {len(path)} hashes")  # type: ignore[arg-type]
    t = time.perf_counter()
    ok = merkle.verify_inclusion(leaves[index], index, n, path, ref)  # type: ignore[arg-type]
    print(f"verify_inclusion              {(time.perf_counter() - t) * 1e6:6.0f} µs  -> {ok}")


if __name__ == "__main__":
    main()
