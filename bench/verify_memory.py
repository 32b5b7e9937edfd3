"""Who holds the memory of `vtaudit verify`, stage by stage.

    .venv/bin/python bench/verify_memory.py /tmp/b100/store --trust /tmp/b100/e/trust.toml

Verifies the store (2 workers, no cache) while a thread samples, every 0.1 s, the RSS of
this process and of each of its live descendants (the worker processes, and the fork
server that starts them). At the end of every stage it prints this process's RSS then,
the highest RSS of this process and of any one descendant during the stage, what
DuckDB says it holds (``duckdb_memory()``, by tag) and what Arrow's allocator holds
(``pyarrow.total_allocated_bytes()``: tables registered with DuckDB, kept in Python).
``--tracemalloc`` adds the Python heap's size and its largest allocation sites (slow).
"""

from __future__ import annotations

import argparse
import threading
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import pyarrow as pa

from auditor.trust import load_trust
from auditor.verify import context
from auditor.verify.engine import verify_store

MB = 1 << 20


class Sampler(threading.Thread):
    """The highest RSS of this process and of any one descendant since the last ``take``."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.me = psutil.Process()
        self.main = self.worker = 0
        self.overall_main = self.overall_worker = 0
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        while not self.stop.wait(0.1):
            with self.lock:  # a sample read before a take() counts for the stage before it
                self.main = max(self.main, self.me.memory_info().rss)
                for child in self.me.children(recursive=True):
                    try:
                        self.worker = max(self.worker, child.memory_info().rss)
                    except psutil.Error:
                        continue
                self.overall_main = max(self.overall_main, self.main)
                self.overall_worker = max(self.overall_worker, self.worker)

    def take(self) -> tuple[int, int]:
        with self.lock:
            main, worker = self.main, self.worker
            self.main = self.worker = 0
        return main, worker


def duckdb_tags(con: Any) -> dict[str, int]:
    rows = con.execute(
        "SELECT tag, memory_usage_bytes + temporary_storage_bytes FROM duckdb_memory() "
        "WHERE memory_usage_bytes + temporary_storage_bytes > 0"
    ).fetchall()
    return {tag: int(n) for tag, n in rows}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("store", type=Path)
    parser.add_argument("--trust", type=Path, required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument(
        "--sql", action="append", default=[], help="run on the connection first (experiments)"
    )
    args = parser.parse_args()
    if args.tracemalloc:
        tracemalloc.start(1)
    sampler = Sampler()
    sampler.start()
    original = context.Audit.stage

    @contextmanager
    def stage(self: context.Audit, name: str, detail: str = "") -> Iterator[context.Stage]:
        with original(self, name, detail) as entry:
            yield entry
        main, worker = sampler.take()
        now = sampler.me.memory_info().rss
        tags = duckdb_tags(self.con)
        shown = ", ".join(f"{t} {n / MB:.0f}" for t, n in sorted(tags.items(), key=lambda x: -x[1])[:4])
        line = (
            f"{name:<16} {entry.seconds:7.1f} s  RSS now {now / MB:6.0f} MB, peak {main / MB:6.0f} MB, "
            f"worker peak {worker / MB:6.0f} MB | duckdb {sum(tags.values()) / MB:5.0f} MB ({shown}) "
            f"| arrow {pa.total_allocated_bytes() / MB:5.0f} MB"
        )
        if args.tracemalloc:
            current, _ = tracemalloc.get_traced_memory()
            line += f" | python heap {current / MB:5.0f} MB"
        print(line, flush=True)
        if args.tracemalloc and entry.seconds > 1:
            for top in tracemalloc.take_snapshot().statistics("lineno")[:3]:
                print(f"    {top.size / MB:6.1f} MB  {top.traceback}", flush=True)

    context.Audit.stage = stage  # type: ignore[method-assign]
    connect = context.connect

    def connect_with(root: Path) -> Any:
        con = connect(root)
        for sql in args.sql:
            con.execute(sql)
        return con

    context.connect = connect_with  # type: ignore[assignment]
    started = time.perf_counter()
    result = verify_store(args.store, load_trust(args.trust), workers=args.workers)
    sampler.stop.set()
    sampler.join()
    print(
        f"verdict {result.verdict}, {time.perf_counter() - started:.1f} s; "
        f"peak RSS: main {sampler.overall_main / MB:.0f} MB, largest descendant "
        f"{sampler.overall_worker / MB:.0f} MB"
    )


if __name__ == "__main__":
    main()
