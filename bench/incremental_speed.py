"""Time incremental verification: cold, warm, and after a harvest added ~1 % more records.

    .venv/bin/python bench/incremental_speed.py --car /tmp/s10k/evidence.car --work /tmp/incr-bench

Splits the CAR's records in two NDJSON files: WORK/later.ndjson holds ``--share`` of
them, drawn at random (``--seed``) among the record types published in bulk while an
election runs (registrants, vote blocks, receipts, tally nodes, disputes, accessibility
reports), as a harvest would find them published late; WORK/first.ndjson holds the rest.
Then, in one run, on one store:

1. harvest first.ndjson; verify without a cache (``no cache``);
2. verify with an empty cache (``cold``: everything checked, the cache written);
3. verify again (``warm``: everything reused);
4. harvest later.ndjson; verify (``+N records``: only the new ones checked);
5. verify the full store without a cache, and compare its report body with step 4's
   (they must be equal).

Prints each run's wall time, its costly stages and what the cache reused. The trust file
is trust.toml beside the CAR. Figures go into docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import time
from collections import Counter
from pathlib import Path

from auditor.harvest import ArchiveSource, harvest
from auditor.model.encoding import jcs
from auditor.model.envelope import parse_envelope
from auditor.report.body import report_body
from auditor.sources import iter_source
from auditor.trust import load_trust
from auditor.verify.engine import Verification, verify_store

STAGES = ("cache", "signatures", "timestamps", "recount")
BULK = ("registrant", "vote_block", "receipt", "tally_node", "dispute", "accessibility_report")


def split(car: Path, work: Path, share: float, seed: int) -> tuple[Path, Path, Counter[str]]:
    """Write first.ndjson and later.ndjson; return them and the late records by type."""
    records = [(raw.raw, parse_envelope(raw.raw, cid=raw.claimed_cid)) for raw in iter_source(car)]
    bulk = sorted(e.cid for _, e in records if e.type in BULK)
    late = set(random.Random(seed).sample(bulk, round(share * len(records))))
    first, later = work / "first.ndjson", work / "later.ndjson"
    kinds: Counter[str] = Counter()
    with open(first, "wb") as a, open(later, "wb") as b:
        for raw, envelope in records:
            (b if envelope.cid in late else a).write(raw + b"\n")
            if envelope.cid in late:
                kinds[envelope.type] += 1
    return first, later, kinds


def run(label: str, store: Path, trust: Path, cache: Path | None, workers: int) -> Verification:
    started = time.perf_counter()
    result = verify_store(store, load_trust(trust), workers=workers, cache=cache)
    wall = time.perf_counter() - started
    stages = {}
    for stage in result.stages:  # the first "signatures" is the verification, the last SIG-VALID
        stages.setdefault(stage.name, stage)
    costly = ", ".join(f"{n} {stages[n].seconds:.2f} s" for n in STAGES if n in stages)
    print(f"{label:<16}{wall:7.2f} s  verdict {result.verdict}; {costly}")
    if result.cache is not None:
        reused, checked = result.cache["reused"], result.cache["checked"]
        kinds = ("signatures", "tokens", "blocks")
        print(" " * 16 + "; ".join(f"{k} {reused[k]:,} reused, {checked[k]:,} checked" for k in kinds))
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--car", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--share", type=float, default=0.01, help="share of the records harvested later")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if args.work.exists():
        shutil.rmtree(args.work)
    args.work.mkdir(parents=True)
    os.environ.setdefault("XDG_CACHE_HOME", str(args.work / "xdg"))  # a fresh cache key
    trust = args.car.parent / "trust.toml"
    first, later, kinds = split(args.car, args.work, args.share, args.seed)
    late = sum(kinds.values())
    store, cache = args.work / "store", args.work / "cache"
    harvest([ArchiveSource(first)], store, workers=args.workers)
    composition = ", ".join(f"{n:,} {kind}" for kind, n in kinds.most_common())
    print(f"later: {late:,} records ({composition})")
    run("no cache", store, trust, None, args.workers)
    run("cold", store, trust, cache, args.workers)
    run("warm", store, trust, cache, args.workers)
    harvest([ArchiveSource(later)], store, workers=args.workers)
    incremental = run(f"+{late:,} records", store, trust, cache, args.workers)
    full = run("full, no cache", store, trust, None, args.workers)
    same = jcs(report_body(incremental, store, now=0)) == jcs(report_body(full, store, now=0))
    print(f"report body of the incremental run equals the full run's: {same}")
    parts = sorted(cache.glob("*.parquet"))
    print(f"cache: {len(parts)} parts, {sum(p.stat().st_size for p in parts) / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
