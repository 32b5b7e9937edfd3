"""Two parts of the verify timed the old way and the new way, alternated in one process
(D57): the host's speed moves too much between whole runs to resolve a few percent.

    .venv/bin/python bench/parts.py tally STORE --trust TRUST
    .venv/bin/python bench/parts.py recount STORE --trust TRUST

``tally``: a verify of STORE (two workers) that, where the tally check starts, builds
every template's expected tally nodes by member-wise sums of histograms and by count
vectors, alternately, twice each, prints both times and whether the two agree, then
checks the tally as usual. ``recount``: a verify of STORE in this process that keeps
the recount's batches, then times the workers' per-vote Python over them with the
libsodium calls replaced by lookups of the plaintexts (best of five). To compare with
another commit, run it from a worktree of that commit (``PYTHONPATH=WORKTREE``) and
alternate. Use a store of 10,000-50,000 voters for ``recount``: its batches are held in
memory.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from auditor.trust import load_trust
from auditor.verify import counts, recount, tally
from auditor.verify.answers import LeafBlock, block_histograms
from auditor.verify.context import Audit
from auditor.verify.engine import verify_store


def _tally(audit: Audit) -> None:
    by_template: dict[str, list[LeafBlock]] = defaultdict(list)
    for block, template, leaf, members, counted in audit.rows(
        "SELECT block, template, leaf, members, counted FROM recount_block ORDER BY leaf"
    ):
        by_template[template].append(LeafBlock(block, leaf, members, counted))
    for template, blocks in sorted(by_template.items()):
        shape = audit.templates[template].body
        for _ in range(2):
            started = time.perf_counter()
            sums = tally._expected_nodes_by_sum(blocks, block_histograms(audit.con, template, shape, blocks))
            middle = time.perf_counter()
            vectors = counts.expected_nodes(audit.con, template, counts.layout(shape), blocks)
            done = time.perf_counter()
            print(
                f"template {template}, {len(blocks):,} blocks: sums {middle - started:.2f} s, "
                f"vectors {done - middle:.2f} s, same: {sums == vectors}",
                flush=True,
            )
    _CHECK_TALLY(audit)


_CHECK_TALLY = recount.check_tally


class _Lookups:
    """The Opener's calls, answered from plaintexts decrypted beforehand."""

    def __init__(self, plaintexts: dict[bytes, bytes]) -> None:
        self.plaintexts = plaintexts

    def open(self, ciphertext: bytes, aad: bytes) -> bytes:
        return self.plaintexts[ciphertext]

    def verify(self, public_key: bytes, signature: bytes, message: bytes) -> bool:
        return True


def _recount(store: Path, trust: Path) -> None:
    kept: dict[str, Any] = {"batches": []}
    read_batch, init = recount._read_batch, recount._init

    def keep_init(*args: Any) -> None:
        kept["init"] = args
        init(*args)

    def keep_batch(batch: Any) -> Any:
        kept["batches"].append(list(batch))
        return read_batch(batch)

    recount._init, recount._read_batch = keep_init, keep_batch
    try:
        verify_store(store, load_trust(trust), workers=1)
    finally:
        recount._init, recount._read_batch = init, read_batch
    if "init" not in kept:
        raise SystemExit(f"{store}: the verify decrypted no vote (no released key?): nothing to time")
    recount._init(*kept["init"])
    opener = recount._STATE["opener"]
    plaintexts = {}
    for batch in kept["batches"]:
        for _, template, _, _, votes, voters in batch:
            for ciphertext in votes + voters:
                plaintexts[ciphertext] = opener.open(ciphertext, template.encode())
    recount._STATE["opener"] = _Lookups(plaintexts)
    votes = sum(len(item[4]) for batch in kept["batches"] for item in batch)
    best = float("inf")
    for _ in range(5):
        started = time.process_time()
        for batch in kept["batches"]:
            recount._read_batch(batch)
        best = min(best, time.process_time() - started)
    print(f"{votes:,} votes: {best:.3f} s of Python, {best / votes * 1e6:.1f} µs a vote (best of 5)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("part", choices=("tally", "recount"))
    parser.add_argument("store", type=Path)
    parser.add_argument("--trust", type=Path, required=True)
    args = parser.parse_args()
    if args.part == "tally":
        recount.check_tally = _tally
        try:
            with TemporaryDirectory() as audit_dir:
                verify_store(args.store, load_trust(args.trust), workers=2, audit_dir=Path(audit_dir))
        finally:
            recount.check_tally = _CHECK_TALLY
    else:
        _recount(args.store, args.trust)


if __name__ == "__main__":
    main()
