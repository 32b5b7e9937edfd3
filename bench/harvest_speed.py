"""How fast is harvesting over HTTP from a network node (spec §7.1) vs from the CAR file?

    .venv/bin/python bench/harvest_speed.py                  # a 20,000-voter election
    .venv/bin/python bench/harvest_speed.py --voters 2000 --repeat 1

Simulates the election once into ``bench/out/harvest-<voters>/`` (git-ignored; reused
when present), then, each best of ``--repeat`` runs, in records per second of wall time:

- ``car file``: ``vtaudit harvest evidence.car`` (ArchiveSource) into a new store;
- ``http bulk``: ``HttpNodesSource`` from one node (``vtaudit node serve`` in its own
  process on 127.0.0.1), fetching each log page as one ``/v1/car``;
- ``http per record``: the same with ``bulk=False``, one ``/ipfs/<cid>`` per record
  (what happens when a node's CAR answers fail);
- ``fetch only``: the client alone (bulk), records counted and dropped, no store: the
  network part's own ceiling.

Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from auditor.harvest import ArchiveSource, Source, harvest
from auditor.net.client import HttpNodesSource, NetOptions
from auditor.sim.election import SimConfig, simulate


def _best(repeat: int, run: Callable[[], int]) -> tuple[int, float]:
    best = float("inf")
    count = 0
    for _ in range(repeat):
        started = time.perf_counter()
        count = run()
        best = min(best, time.perf_counter() - started)
    return count, best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--voters", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--page", type=int, default=2000, help="log entries per page")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "out"))
    args = ap.parse_args()

    election = Path(args.out) / f"harvest-{args.voters}"
    car = election / "evidence.car"
    if not car.exists():
        shutil.rmtree(election, ignore_errors=True)
        started = time.perf_counter()
        simulate(SimConfig(voters=args.voters, seed=7, formats=("car",), secrets=False), election)
        print(f"simulated {args.voters:,} voters in {time.perf_counter() - started:.1f} s")
    print(f"{car}: {car.stat().st_size / 1e6:,.1f} MB")

    command = [sys.executable, "-m", "auditor.cli", "node", "serve", str(car), "--port", "0"]
    node = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert node.stdout is not None
        first = node.stdout.readline()
        url = first.rsplit(" ", 1)[-1].strip()
        if not url.startswith("http://127.0.0.1:"):
            raise SystemExit(f"the node did not start: {first!r}")

        def into_store(make: Callable[[], Source]) -> Callable[[], int]:
            def run() -> int:
                with tempfile.TemporaryDirectory(dir=args.out) as tmp:
                    _, stats = harvest([make()], Path(tmp) / "ev")
                    return stats.new

            return run

        def fetch_only() -> int:
            source = HttpNodesSource([url], NetOptions(page=args.page))
            return sum(1 for _ in source.records(None))

        runs = {
            "car file": into_store(lambda: ArchiveSource(car)),
            "http bulk (/v1/car)": into_store(lambda: HttpNodesSource([url], NetOptions(page=args.page))),
            "http per record (/ipfs)": into_store(
                lambda: HttpNodesSource([url], NetOptions(page=args.page, bulk=False))
            ),
            "fetch only (bulk, no store)": fetch_only,
        }
        print(f"{'source':<30}{'records':>10}{'seconds':>10}{'records/s':>12}")
        for name, run in runs.items():
            count, seconds = _best(args.repeat, run)
            print(f"{name:<30}{count:>10,}{seconds:>10.2f}{count / seconds:>12,.0f}")
    finally:
        node.terminate()
        node.wait(timeout=10)


if __name__ == "__main__":
    main()
