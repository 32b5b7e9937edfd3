"""Measure voter slice proofs: size, prove time and verify time (docs/slice-proofs.md).

    .venv/bin/python bench/slice_speed.py --voters 10000 --work /tmp/slice-bench
    .venv/bin/python bench/slice_speed.py --voters 300 --districts 1 --block 256 --work /tmp/slice-256

Simulates the election (unless WORK already holds it) with its voters' secrets,
harvests it into WORK/store, then proves and verifies the votes of up to --sample
voters (every voter of a counted block; evenly spread), and prints the proof sizes by
block size, the median and worst prove and verify times (in-process, trust file given),
and the wall time of `vtaudit slice verify` as a command (Python start-up included).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

from auditor.harvest import ArchiveSource, harvest
from auditor.sim.election import SimConfig, simulate
from auditor.slice.prove import Prover, write_proof
from auditor.slice.verify import parse_trust, verify_proof


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--voters", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--districts", type=int, default=3)
    parser.add_argument("--block", type=int, default=0, help="members per block (0: the simulator's 6-24)")
    parser.add_argument("--sample", type=int, default=300)
    parser.add_argument("--work", type=Path, required=True)
    args = parser.parse_args()
    election = args.work / "e"
    if not (election / "evidence.car").exists():
        sizes = {"block_min": args.block, "block_max": args.block} if args.block else {}
        config = SimConfig(
            voters=args.voters, seed=args.seed, districts=args.districts, formats=("car",), **sizes
        )
        if args.block:
            config = SimConfig(**{**config.__dict__, "turnout_ppm": 1_000_000})
        started = time.perf_counter()
        simulate(config, election)
        print(f"simulate: {time.perf_counter() - started:.1f} s")
    store = args.work / "store"
    if not (store / "store.json").exists():
        started = time.perf_counter()
        harvest([ArchiveSource(election / "evidence.car")], store)
        print(f"harvest: {time.perf_counter() - started:.1f} s")
    trust = parse_trust((election / "trust.toml").read_text(), lambda name: (election / name).read_bytes())
    lines = [json.loads(x) for x in (election / "secrets" / "voters.ndjson").read_text().splitlines()]
    counted = [x for x in lines if x["receiptResult"] == "accepted"]
    members = defaultdict(int)
    for line in counted:
        members[line["block"]] += 1
    step = max(1, len(counted) // args.sample)
    chosen = counted[::step][: args.sample]
    started = time.perf_counter()
    prover = Prover(store)
    print(f"prover opened in {time.perf_counter() - started:.2f} s")
    by_size: dict[int, list[int]] = defaultdict(list)
    prove_times, verify_times, answers = [], [], defaultdict(int)
    example, largest, largest_size = args.work / "proof.json", args.work / "largest.json", 0
    for line in chosen:
        built = prover.build(line["key"], line["nonce"])
        prove_times.append(built.seconds)
        size = write_proof(built.proof, example)
        data = example.read_bytes()
        report = verify_proof(data, trust)
        verify_times.append(report.seconds)
        answers[report.answer] += 1
        by_size[members[line["block"]]].append(size)
        if size > largest_size:
            largest.write_bytes(data)
            largest_size = size
    print(f"{len(chosen)} voters of {len(counted)} counted: answers {dict(answers)}")
    for name, times in (("prove", prove_times), ("verify", verify_times)):
        print(f"{name}: median {statistics.median(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms")
    all_sizes = [s for sizes in by_size.values() for s in sizes]
    print(
        f"proof size: min {min(all_sizes):,}, median {statistics.median(all_sizes):,.0f}, "
        f"max {max(all_sizes):,} bytes"
    )
    for size in sorted(by_size):
        values = by_size[size]
        median = statistics.median(values)
        print(f"  block of {size:>3} members: {median:>9,.0f} bytes (median of {len(values)})")
    walls = []
    trust_file = str(election / "trust.toml")
    command = [sys.executable, "-m", "auditor.cli", "slice", "verify", str(largest), "--trust", trust_file]
    for _ in range(5):
        started = time.perf_counter()
        subprocess.run(command, capture_output=True, check=False)
        walls.append(time.perf_counter() - started)
    print(
        f"`vtaudit slice verify` of the largest proof ({largest_size:,} bytes) as a command: "
        f"median {statistics.median(walls):.2f} s wall (start-up included)"
    )


if __name__ == "__main__":
    main()
