"""Time `vtaudit verify` stage by stage on a simulated election.

    .venv/bin/python bench/verify_speed.py --voters 100000 --work /tmp/b100

Simulates the election (unless WORK already holds it), harvests it into WORK/store
(unless already there), then verifies it (the recount's answers.parquet goes to
WORK/audit) and prints every stage's wall time, the CPU share of the whole run, the
peak RSS and the size of answers.parquet. Figures go into docs/performance.md.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

from auditor.harvest import ArchiveSource, harvest
from auditor.sim.election import SimConfig, simulate
from auditor.trust import load_trust
from auditor.verify.engine import verify_store


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--voters", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    election = args.work / "e"
    if not (election / "evidence.car").exists():
        started = time.perf_counter()
        simulate(SimConfig(voters=args.voters, seed=args.seed, formats=("car",), secrets=False), election)
        print(f"simulate: {time.perf_counter() - started:.1f} s")
    store = args.work / "store"
    if not (store / "store.json").exists():
        started = time.perf_counter()
        harvest([ArchiveSource(election / "evidence.car")], store)
        print(f"harvest: {time.perf_counter() - started:.1f} s")
    cpu0 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    audit = args.work / "audit"
    result = verify_store(store, load_trust(election / "trust.toml"), workers=args.workers, audit_dir=audit)
    wall = time.perf_counter() - started
    cpu1 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = sum(b.ru_utime + b.ru_stime - a.ru_utime - a.ru_stime for a, b in zip(cpu0, cpu1, strict=True))
    print(f"verify: {wall:.1f} s wall, {cpu / wall:.0%} CPU, verdict {result.verdict}")
    for stage in result.stages:
        if stage.seconds >= 0.05:
            print(f"  {stage.name:<16}{stage.seconds:8.2f} s  {stage.detail}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"peak RSS: main process {peak:.0f} MB, largest worker {workers:.0f} MB")
    answers = audit / "answers.parquet"
    if answers.exists():
        print(f"answers.parquet: {answers.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
