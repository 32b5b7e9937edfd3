"""How fast are the CARv1 reader and writer (spec §7.2) on many small blocks?

    .venv/bin/python bench/car_speed.py              # 1,000,000 blocks of ~300 bytes
    .venv/bin/python bench/car_speed.py -n 200000 --size 1000

Writes ``bench/out/speed.car`` (git-ignored), then reads it back. Each timing is the
best of ``--repeat`` runs, in CPU seconds of this process (``time.process_time``) and,
in brackets, wall-clock seconds: on a shared machine the CPU time is the steadier.
"read + CID check" also hashes every block and compares it with its CID, which is what
a harvester does with each block.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from auditor.model.encoding import CID_PREFIX, cid_binary
from auditor.store.car import CarBlock, CarWriter, read_car


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=1_000_000, help="number of blocks")
    ap.add_argument("--size", type=int, default=300, help="bytes per block (about)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "out", "speed.car"))
    args = ap.parse_args()
    n = args.n
    os.makedirs(os.path.dirname(args.out), exist_ok=True)

    t = time.perf_counter()
    pad = os.urandom(args.size).hex().encode()[: max(0, args.size - 24)]
    blocks = []
    for i in range(n):
        data = b'{"i":%d,"p":"%b"}' % (i, pad)  # an envelope-like JSON block
        blocks.append((cid_binary(data), data))
    print(f"made {n:,} blocks of ~{len(blocks[0][1])} bytes in {time.perf_counter() - t:.1f} s")

    runs = []
    for _ in range(args.repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        with open(args.out, "wb", buffering=1 << 20) as f:
            w = CarWriter(f, [blocks[0][0]])
            add = w.add
            for cid, data in blocks:
                add(cid, data)
        runs.append((time.process_time() - cpu, time.perf_counter() - wall))
    secs, wall_secs = min(runs)
    size = os.path.getsize(args.out)
    print(
        f"write  {secs:6.2f} s ({wall_secs:.2f})  {n / secs:>10,.0f} blocks/s  "
        f"{size / secs / 1e6:5.0f} MB/s  ({size / 1e6:.0f} MB file)"
    )
    del blocks

    def read(check: bool) -> tuple[float, float]:
        runs = []
        for _ in range(args.repeat):
            wall, cpu = time.perf_counter(), time.process_time()
            count = bad = 0
            with open(args.out, "rb") as f:
                _header, sections = read_car(f)
                for item in sections:
                    if type(item) is CarBlock:
                        count += 1
                        if check and CID_PREFIX + hashlib.sha256(item.data).digest() != item.cid:
                            bad += 1
                    else:
                        bad += 1
            runs.append((time.process_time() - cpu, time.perf_counter() - wall))
            assert count == n and bad == 0, (count, bad)
        return min(runs)

    secs, wall_secs = read(False)
    print(
        f"read   {secs:6.2f} s ({wall_secs:.2f})  {n / secs:>10,.0f} blocks/s  {size / secs / 1e6:5.0f} MB/s"
    )
    secs, wall_secs = read(True)
    print(f"read + CID check {secs:6.2f} s ({wall_secs:.2f})  {n / secs:>10,.0f} blocks/s")


if __name__ == "__main__":
    main()
