"""Fuzz every parser of hostile input: the long job to run before a release (issue 9).

    .venv/bin/python bench/fuzz.py                      # 100,000 inputs over every parser
    .venv/bin/python bench/fuzz.py --inputs 1000000 --seed 7
    .venv/bin/python bench/fuzz.py --parser token --inputs 20000
    .venv/bin/python bench/fuzz.py --atheris --parser envelope -- -runs=200000   # coverage-guided

Seeds are the records of a small simulated election (60 voters) and what derives from
them (tests/fuzzing.py). Each input is a seed with one to four random mutations (bit flips,
bytes, cuts, repeats, splices of other records, hostile tokens such as ``[`` × 2000, and
structured changes of one JSON value: types, bounds, lists past the limits, members), or
plain random bytes (one input in ten). Inputs go round-robin to the parsers, in this process.

Every input must end as *accepted* or *refused* with the parser's own error type. Anything
else is a **crash**; an input that takes longer than ``--hang`` seconds (1 s) is a **hang**,
and one still running after ``--kill`` seconds (10 s) is interrupted by an alarm. Crashing
and hanging inputs are written to ``bench/out/fuzz-crashes/`` to become regression tests.
A table is printed and the figures are written to ``bench/out/fuzz.json``. The exit code is
1 when anything crashed or hung.

``--atheris`` hands one parser to atheris (``pip install atheris``), coverage-guided,
starting from the same seeds; arguments after ``--`` go to libFuzzer.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import random
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from tests.fuzzing import TARGETS, Corpus, build_corpus, mutate

OUT = Path(__file__).resolve().parent / "out"


class Hang(BaseException):
    """Raised by the alarm in an input that runs past --kill seconds."""


@dataclass
class Tally:
    inputs: int = 0
    accepted: int = 0
    refused: int = 0
    crashes: int = 0
    hangs: int = 0
    seconds: float = 0.0
    slowest: float = 0.0
    crash_types: Counter[str] = field(default_factory=Counter)
    samples: list[dict[str, Any]] = field(default_factory=list)


def _alarm(_signum: int, _frame: FrameType | None) -> None:
    raise Hang()


def _save(name: str, data: bytes, kind: str, error: str, tally: Tally) -> None:
    folder = OUT / "fuzz-crashes"
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(data).hexdigest()[:16]
    path = folder / f"{name}-{kind}-{digest}.bin"
    path.write_bytes(data)
    if len(tally.samples) < 20:
        tally.samples.append({"kind": kind, "error": error, "file": str(path), "head": data[:120].hex()})


def _one(corpus: Corpus, name: str, data: bytes, tally: Tally, hang: float, kill: float) -> None:
    target = TARGETS[name]
    signal.setitimer(signal.ITIMER_REAL, kill)
    started = time.perf_counter()
    outcome = "crash"
    error = ""
    try:
        outcome = target.run(corpus, data)
    except target.refusals:
        outcome = "refused"
    except Hang:
        outcome = "killed"
    except Exception as e:
        error = f"{type(e).__name__}: {e}"[:300]
        tally.crash_types[type(e).__name__] += 1
        if tally.crashes < 3:
            traceback.print_exc()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    spent = time.perf_counter() - started
    tally.inputs += 1
    tally.seconds += spent
    tally.slowest = max(tally.slowest, spent)
    if outcome == "accepted":
        tally.accepted += 1
    elif outcome == "refused":
        tally.refused += 1
    elif outcome == "crash":
        tally.crashes += 1
        _save(name, data, "crash", error, tally)
    if outcome == "killed" or spent > hang:
        tally.hangs += 1
        _save(name, data, "hang", f"{spent:.2f} s", tally)


def _inputs(corpus: Corpus, name: str, rng: random.Random) -> bytes:
    if rng.random() < 0.1:
        return rng.randbytes(rng.choice([0, 1, 2, 8, 37, 64, 300, 2000]))
    data: bytes = rng.choice(TARGETS[name].seeds(corpus))
    for _ in range(rng.choice([1, 1, 2, 3, 4])):
        data = mutate(rng, data, corpus)
    return data


def run(
    corpus: Corpus, names: list[str], inputs: int, seed: int, hang: float, kill: float
) -> dict[str, Tally]:
    rng = random.Random(seed)
    tallies = {n: Tally() for n in names}
    signal.signal(signal.SIGALRM, _alarm)
    report_every = max(1, inputs // 20)
    started = time.perf_counter()
    for i in range(inputs):
        name = names[i % len(names)]
        _one(corpus, name, _inputs(corpus, name, rng), tallies[name], hang, kill)
        if (i + 1) % report_every == 0:
            done = i + 1
            elapsed = time.perf_counter() - started
            crashes = sum(t.crashes for t in tallies.values())
            print(f"  {done:,} inputs, {elapsed:,.0f} s, crashes {crashes}", file=sys.stderr, flush=True)
    return tallies


def print_table(tallies: dict[str, Tally], wall: float) -> None:
    head = (
        f"{'parser':<12} {'inputs':>9} {'accepted':>9} {'refused':>9} {'crashes':>8} {'hangs':>6} "
        f"{'seconds':>8} {'slowest':>8}"
    )
    print(head)
    print("-" * len(head))
    total = Tally()
    for name, t in tallies.items():
        print(
            f"{name:<12} {t.inputs:>9,} {t.accepted:>9,} {t.refused:>9,} {t.crashes:>8,} {t.hangs:>6,} "
            f"{t.seconds:>8.1f} {t.slowest:>7.3f}s"
        )
        for field_ in ("inputs", "accepted", "refused", "crashes", "hangs"):
            setattr(total, field_, getattr(total, field_) + getattr(t, field_))
        total.seconds += t.seconds
        total.slowest = max(total.slowest, t.slowest)
    print("-" * len(head))
    print(
        f"{'all':<12} {total.inputs:>9,} {total.accepted:>9,} {total.refused:>9,} {total.crashes:>8,} "
        f"{total.hangs:>6,} {total.seconds:>8.1f} {total.slowest:>7.3f}s"
    )
    print(f"wall-clock {wall:,.1f} s")
    for name, t in tallies.items():
        for sample in t.samples[:5]:
            print(f"  {name}: {sample['kind']}: {sample['error']} ({sample['file']})")


def atheris_main(corpus: Corpus, name: str, extra: list[str]) -> None:
    try:
        import atheris  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError:
        sys.exit("atheris is not installed: .venv/bin/pip install atheris")
    target = TARGETS[name]
    seeds = Path(tempfile.mkdtemp(prefix=f"fuzz-{name}-"))
    for i, seed in enumerate(target.seeds(corpus)):
        (seeds / f"seed-{i}").write_bytes(seed)

    def one(data: bytes) -> None:
        with contextlib.suppress(*target.refusals):
            target.run(corpus, data)

    atheris.instrument_all()
    atheris.Setup([sys.argv[0], str(seeds), *extra], one)
    atheris.Fuzz()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inputs", type=int, default=100_000, help="inputs in all (default 100,000)")
    ap.add_argument("--seed", type=int, default=1, help="random seed of the mutations (default 1)")
    ap.add_argument("--parser", default="all", choices=["all", *TARGETS], help="one parser, or all (default)")
    ap.add_argument("--hang", type=float, default=1.0, help="seconds after which an input counts as a hang")
    ap.add_argument("--kill", type=float, default=10.0, help="seconds after which an input is interrupted")
    ap.add_argument(
        "--atheris", action="store_true", help="coverage-guided fuzzing of one parser with atheris"
    )
    ap.add_argument("extra", nargs="*", help="after --: arguments for libFuzzer (with --atheris)")
    args = ap.parse_args()
    names = list(TARGETS) if args.parser == "all" else [args.parser]
    with tempfile.TemporaryDirectory(prefix="vtaudit-fuzz-") as tmp:
        corpus = build_corpus(Path(tmp))
        if args.atheris:
            if len(names) != 1:
                sys.exit("--atheris fuzzes one parser: give --parser NAME")
            atheris_main(corpus, names[0], args.extra)
            return
        print(f"fuzzing {', '.join(names)}: {args.inputs:,} inputs, seed {args.seed}", file=sys.stderr)
        started = time.perf_counter()
        tallies = run(corpus, names, args.inputs, args.seed, args.hang, args.kill)
        wall = time.perf_counter() - started
    print_table(tallies, wall)
    OUT.mkdir(exist_ok=True)
    result = {
        "command": " ".join([".venv/bin/python", "bench/fuzz.py", *sys.argv[1:]]),
        "inputs": sum(t.inputs for t in tallies.values()),
        "seconds": round(wall, 1),
        "crashes": sum(t.crashes for t in tallies.values()),
        "hangs": sum(t.hangs for t in tallies.values()),
        "seed": args.seed,
        "python": platform.python_version(),
        "parsers": {
            name: {
                "inputs": t.inputs,
                "accepted": t.accepted,
                "refused": t.refused,
                "crashes": t.crashes,
                "crashTypes": dict(t.crash_types),
                "hangs": t.hangs,
                "seconds": round(t.seconds, 2),
                "slowestSeconds": round(t.slowest, 3),
                "samples": t.samples,
            }
            for name, t in tallies.items()
        },
    }
    (OUT / "fuzz.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"figures in {OUT / 'fuzz.json'}")
    sys.exit(1 if result["crashes"] or result["hangs"] else 0)


if __name__ == "__main__":
    main()
