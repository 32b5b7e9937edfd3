"""End-to-end benchmark with the cryptographic floor, measured in one run.

    .venv/bin/python bench/run.py --voters 100000
    .venv/bin/python bench/run.py --car /tmp/s1m/evidence.car --work /tmp/b1m

Simulates the election (cached in WORK by voters and seed; or takes an existing CAR
with its trust.toml beside it), then runs each stage in its own process, so that each
has its own peak RSS: harvest from the CAR, verify (every §8 check and the recount) and
the reports (JSON, HTML, PDF). Then, on the same cores, the **cryptographic floor**: a
tight loop of the libsodium calls the audit cannot avoid, for the same number of
operations (every signature in the store verified once; per counted vote and voter
entry a variable-base scalar multiplication, which validates R, and an AEAD open), made
as directly as the audit makes them, in as many processes as the audit used. The ratio
end-to-end / floor says how much the auditor costs beyond the cryptography. A *host
probe*, a fixed small share of the floor's loops, is timed before the stages and again
after them: when the two differ by more than 5 %, the host's speed moved during the run
and the ratio with it (a shared host can be 10 % slower an hour later), and the bench
says so. Output: a table on stdout and WORK/bench.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parents[1]


def _peak_mb(descendants: int = 0) -> float:
    """The highest RSS of this process and of any one of its children, in MB. The worker
    processes are children of the fork server (auditor/parallel.py), not of this process:
    ``descendants`` is their highest RSS, sampled while they ran."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children, descendants // 1024) / 1024


class _Descendants(threading.Thread):
    """Reads, every 0.5 s, the peak RSS the kernel kept for every live descendant
    (``VmHWM`` in ``/proc/PID/status``: the highest a process ever reached, so a peak
    between two readings is not missed); keeps the highest. It used to read every
    descendant's current RSS every 0.1 s through psutil, which cost the stage measured
    some 10 s of CPU in a million-voter verify (its scan of every process's parent).

    It also keeps each descendant's CPU seconds as last read: their sum is the workers'
    CPU, short of what a process used in its last half second."""

    PERIOD = 0.5

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = 0
        self.cpu: dict[int, float] = {}
        self.done = threading.Event()

    def run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self.done.wait(self.PERIOD):
            for child in me.children(recursive=True):
                self.peak = max(self.peak, _high_water(child))
                try:
                    times = child.cpu_times()
                except psutil.Error:  # it ended
                    continue
                self.cpu[child.pid] = times.user + times.system


def _high_water(process: Any) -> int:
    """A process's peak RSS in bytes (0 if it is gone or the system does not say)."""
    try:
        with open(f"/proc/{process.pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(process.memory_info().rss)
    except Exception:  # psutil.Error: the process ended
        return 0


# ---------------------------------------------------------------------------- stages (child processes)


def stage_harvest(work: Path, car: Path, workers: int) -> dict[str, Any]:
    from auditor.harvest import ArchiveSource, harvest

    store = work / "store"
    if store.exists():
        shutil.rmtree(store)
    _, stats = harvest([ArchiveSource(car)], store, workers=workers)
    return {"records": stats.read, "new": stats.new, "quarantined": stats.quarantined}


def stage_verify(work: Path, car: Path, workers: int, cluster: str | None = None) -> dict[str, Any]:
    from auditor.parallel import open_runner
    from auditor.report.body import report_body
    from auditor.trust import load_trust
    from auditor.verify.engine import verify_store

    runner = open_runner(cluster, workers)
    try:
        result = verify_store(
            work / "store",
            load_trust(car.parent / "trust.toml"),
            workers=workers,
            audit_dir=work / "audit",
            runner=runner,
        )
    finally:
        runner.close()
    body = report_body(result, work / "store")
    (work / "body.json").write_text(json.dumps(body, ensure_ascii=False, sort_keys=True), encoding="utf-8")
    return {
        "verdict": result.verdict,
        "stages": _stage_times(result.stages),
        "stageCpu": _stage_times(result.stages, "cpu"),  # this process's CPU (not its workers')
        "voters": sum(b.get("voters") or 0 for b in result.ballots),
        **_counts(work / "store"),
    }


def _stage_times(stages: list[Any], measure: str = "seconds") -> dict[str, float]:
    """Seconds per stage (``measure``: ``seconds`` of wall time or ``cpu`` of this
    process); a name met again (the opening's signatures and the SIG-VALID step) gets a
    number, so neither hides the other."""
    times: dict[str, float] = {}
    for stage in stages:
        name = (
            stage.name
            if stage.name not in times
            else f"{stage.name} ({sum(k.startswith(stage.name) for k in times) + 1})"
        )
        times[name] = round(getattr(stage, measure), 2)
    return times


def _counts(store: Path) -> dict[str, int]:
    from auditor.store.evidence import connect

    con = connect(store)
    signatures = con.execute("SELECT count(*) FROM signatures").fetchone()
    ciphertexts = con.execute("SELECT coalesce(sum(len(votes) + len(voters)), 0) FROM vote_block").fetchone()
    return {
        "signatures": int(signatures[0]) if signatures else 0,
        "ciphertexts": int(ciphertexts[0]) if ciphertexts else 0,
    }


def stage_reports(work: Path, car: Path, workers: int) -> dict[str, Any]:
    from auditor.crypto.ed25519 import SigningKey
    from auditor.report.body import no_floats
    from auditor.report.render import html_report, pdf_report
    from auditor.report.signed import sign_report

    body = no_floats(json.loads((work / "body.json").read_text(encoding="utf-8")))
    started = time.perf_counter()
    report = sign_report(body, SigningKey(b"\x01" * 32))
    html = html_report(report)
    pdf = pdf_report(report)
    (work / "report.pdf").write_bytes(pdf)
    return {"jsonBytes": len(report), "htmlBytes": len(html), "pdfBytes": len(pdf),
            "seconds": round(time.perf_counter() - started, 2)}  # fmt: skip


STAGES = {"harvest": stage_harvest, "verify": stage_verify, "reports": stage_reports}


def run_stage(name: str, work: Path, car: Path, workers: int, cluster: str | None = None) -> dict[str, Any]:
    """Run one stage in a fresh interpreter; its wall time and peak RSS (workers included,
    except a cluster's)."""
    started = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            __file__,
            "--stage",
            name,
            "--work",
            str(work),
            "--car",
            str(car),
            "--workers",
            str(workers),
            *(["--cluster", cluster] if cluster else []),
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["wall"] = round(time.perf_counter() - started, 2)
    return result


# ---------------------------------------------------------------------------- the floor


DISTINCT_SIGNATURES = 256  # the floor's signatures: as many keys, each over a message of its own (D52)


class _FloorInputs(NamedTuple):
    signatures: list[tuple[bytes, bytes]]  # (public key, signature ‖ message), as crypto_sign_open takes them
    private: bytes  # the election's private scalar
    aad: bytes  # a template CID's UTF-8 bytes
    r_point: bytes  # a ciphertext's R ...
    sealed: bytes  # ... and its AEAD part, of a vote entry encrypted to public_of(private)


def _floor_inputs() -> _FloorInputs:
    """What the floors verify and open, the same every time. The first signature is the
    one the floors of sessions 1 to 9 verified again and again; Ed25519 verification takes
    a time that depends on the signature and key (it is variable-time), and that one is
    among the quick ones, so the floor cycles through ``DISTINCT_SIGNATURES`` (D52)."""
    from auditor.crypto import ecies
    from auditor.crypto.ed25519 import SigningKey

    signatures = []
    for i in range(DISTINCT_SIGNATURES):
        key = SigningKey(b"\x02" * 32) if i == 0 else SigningKey(hashlib.sha256(b"floor key %d" % i).digest())
        message = b"votetorrent/1:" + (b"\x03" * 32 if i == 0 else hashlib.sha256(b"floor %d" % i).digest())
        signatures.append((key.public, key.sign(message) + message))
    private = ecies.derive_scalar(b"floor")
    template = "bagaaiera" + "a" * 52
    entry = json.dumps({"answers": [{"question": "mayor", "values": ["brown"]}], "nonce": "x" * 22}).encode()
    ciphertext = ecies.encrypt(entry, ecies.public_of(private), template, ecies.derive_scalar(b"r"))
    return _FloorInputs(signatures, private, template.encode(), ciphertext[:32], ciphertext[32:])


def _floor_part(args: tuple[int, int, int]) -> float:
    """The libsodium calls of one worker's share, called as directly as the audit calls them
    (PyNaCl's cffi module, buffers allocated once: ``auditor/crypto/opener.py``). A
    ciphertext is one scalar multiplication, which refuses any R that is not a valid
    prime-order point, and one AEAD open (D46). The signatures verified cycle through the
    first ``distinct`` of the inputs' (1: as in sessions 7 to 9)."""
    from nacl._sodium import ffi, lib

    signatures, ciphertexts, distinct = args
    inputs = _floor_inputs()
    private, aad, r_point, sealed = inputs.private, inputs.aad, inputs.r_point, inputs.sealed
    cycle = inputs.signatures[:distinct]
    shared, plain, length = (
        ffi.new("unsigned char[]", 32),
        ffi.new("unsigned char[]", 4096),
        ffi.new("unsigned long long *"),
    )
    zero_nonce = bytes(24)
    started = time.perf_counter()
    for i in range(signatures):
        public, signed = cycle[i % distinct]
        if lib.crypto_sign_open(plain, length, signed, len(signed), public) != 0:
            raise AssertionError("the floor's signature must verify")
    for _ in range(ciphertexts):
        lib.crypto_scalarmult_ed25519_noclamp(shared, private, r_point)
        aead_key = hashlib.sha256(b"votetorrent/1:ecies" + r_point + bytes(ffi.buffer(shared, 32))).digest()
        if (
            lib.crypto_aead_xchacha20poly1305_ietf_decrypt(
                plain, ffi.NULL, ffi.NULL, sealed, len(sealed), aad, len(aad), zero_nonce, aead_key
            )
            != 0
        ):
            raise AssertionError("the floor's ciphertext must open")
    return time.perf_counter() - started


def _former_floor_part(args: tuple[int, int, int]) -> float:
    """The floor as measured up to session 6, for comparisons across sessions: PyNaCl's
    wrappers around every call, and per ciphertext a separate point check before the
    scalar multiplication (which checks the point again: D46)."""
    from nacl.bindings import (
        crypto_aead_xchacha20poly1305_ietf_decrypt,
        crypto_core_ed25519_is_valid_point,
        crypto_scalarmult_ed25519_noclamp,
        crypto_sign_open,
    )

    signatures, ciphertexts, _ = args
    inputs = _floor_inputs()
    (public, signed), private, aad, r_point, sealed = inputs.signatures[0], *inputs[1:]
    started = time.perf_counter()
    for _ in range(signatures):
        crypto_sign_open(signed, public)
    for _ in range(ciphertexts):
        crypto_core_ed25519_is_valid_point(r_point)
        shared = crypto_scalarmult_ed25519_noclamp(private, r_point)
        key = hashlib.sha256(b"votetorrent/1:ecies" + r_point + shared).digest()
        crypto_aead_xchacha20poly1305_ietf_decrypt(sealed, aad, b"\x00" * 24, key)
    return time.perf_counter() - started


def floor(
    signatures: int,
    ciphertexts: int,
    voters: int,
    workers: int,
    *,
    former: bool = False,
    distinct: int = DISTINCT_SIGNATURES,
    fraction: float = 1.0,
) -> float:
    """Seconds of wall time for the unavoidable libsodium work, split over ``workers``
    processes: every signature in the store, every ciphertext opened, and each voter
    entry's signature (``former``: as measured up to session 6; ``distinct=1``: as in
    sessions 7 to 9, one signature verified again and again, D52). With ``fraction`` < 1,
    that share of the operations is timed and the loops' time scaled up (their cost is
    linear in their count: at ten million voters the whole floor alone takes ≈ 40 min)."""
    total_sigs = round((signatures + voters) * fraction)
    ciphertexts = round(ciphertexts * fraction)

    def share(n: int, i: int) -> int:
        return n // workers + (i < n % workers)

    parts = [(share(total_sigs, i), share(ciphertexts, i), distinct) for i in range(workers)]
    started = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        loops = pool.map(_former_floor_part if former else _floor_part, parts)
    wall = time.perf_counter() - started
    # starting the processes is paid once, whatever the share: only the loops scale
    return wall + max(loops) * (1 / fraction - 1)


# ---------------------------------------------------------------------------- main


PROBE_OPERATIONS = 40_000  # signatures, and as many ciphertexts, of the host probe (≈ 3 s on 2 cores)
PROBE_TOLERANCE = 0.05  # a change of the probe's time beyond which the bench warns


def host_probe(workers: int) -> float:
    """Seconds of a small fixed share of the floor's loops, timed before the stages and
    again after them: on a shared host the same work can take 10 % more an hour later
    (docs/performance.md, session 12), and a ratio of stage times to a floor timed
    minutes later is only as steady as the host was between the two."""
    return floor(PROBE_OPERATIONS, PROBE_OPERATIONS, 0, workers)


def probe_report(before: float, after: float) -> tuple[dict[str, float], list[str]]:
    """The probe's two times as bench.json keeps them, and the lines the bench prints: a
    warning when the host's speed moved by more than PROBE_TOLERANCE."""
    drift = after / before - 1
    lines = [f"host probe {before:.2f} s before the stages, {after:.2f} s after ({drift:+.1%})"]
    if abs(drift) > PROBE_TOLERANCE:
        lines.append(
            f"  the host's speed moved by {drift:+.1%} during the run: the ratio below is that noisy; "
            "compare runs whose probes agree"
        )
    return {"before": round(before, 2), "after": round(after, 2), "drift": round(drift, 3)}, lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--voters", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--car", type=Path, help="an existing CAR (its trust.toml beside it) instead of simulating"
    )
    parser.add_argument("--work", type=Path, help="working folder (default bench/out/run-<voters>)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--cluster",
        metavar="ADDRESS",
        help="verify on the workers of this Dask scheduler (the floor still runs on this machine)",
    )
    parser.add_argument(
        "--former-floor",
        action="store_true",
        help="also measure the floor as it was measured up to session 6 (PyNaCl's wrappers and a "
        "second point check per ciphertext, D46), for comparisons with older figures",
    )
    parser.add_argument(
        "--one-signature-floor",
        action="store_true",
        help=f"also measure the floor as it was measured in sessions 7 to 9 (one signature verified "
        f"again and again, instead of {DISTINCT_SIGNATURES} distinct ones: D52), for comparisons with their "
        "figures",
    )
    parser.add_argument(
        "--floor-fraction",
        type=float,
        default=1.0,
        help="time this share of the floor's operations and scale the time up (e.g. 0.1 at ten "
        "million voters, whose whole floor takes about 40 minutes); default: all of them",
    )
    parser.add_argument("--stage", choices=sorted(STAGES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not 0 < args.floor_fraction <= 1:
        parser.error("--floor-fraction must be in (0, 1]")
    work: Path = args.work or ROOT / "bench" / "out" / f"run-{args.voters}-{args.seed}"
    work.mkdir(parents=True, exist_ok=True)
    if args.stage:
        sampler = _Descendants()
        sampler.start()
        if args.stage == "verify":
            out = stage_verify(work, args.car, args.workers, args.cluster)
        else:
            out = STAGES[args.stage](work, args.car, args.workers)
        sampler.done.set()
        sampler.join()
        out["peakMB"] = round(_peak_mb(sampler.peak))
        usage = resource.getrusage(resource.RUSAGE_SELF)
        out["peakMainMB"] = round(usage.ru_maxrss / 1024)
        out["cpuMain"] = round(usage.ru_utime + usage.ru_stime, 1)  # this process, all its threads
        out["cpuWorkers"] = round(sum(sampler.cpu.values()), 1)  # sampled (the class says how)
        print(json.dumps(out))
        return
    car = args.car
    simulated = None
    if car is None:
        election = work / "e"
        car = election / "evidence.car"
        if not car.exists():
            from auditor.sim.election import SimConfig, simulate

            started = time.perf_counter()
            simulate(SimConfig(voters=args.voters, seed=args.seed, formats=("car",), secrets=False), election)
            simulated = round(time.perf_counter() - started, 1)
    results: dict[str, Any] = {
        "car": str(car),
        "workers": args.workers,
        "cluster": args.cluster,
        "cpus": os.cpu_count(),
        "simulate": simulated,
    }
    probe_before = host_probe(args.workers)
    for name in ("harvest", "verify", "reports"):
        results[name] = run_stage(name, work, car.resolve(), args.workers, args.cluster)
        print(
            f"{name:<8} {results[name]['wall']:8.1f} s  peak RSS {results[name]['peakMB']:6,} MB", flush=True
        )
    verify = results["verify"]
    results["hostProbe"], lines = probe_report(probe_before, host_probe(args.workers))
    print("\n".join(lines))
    results["floorFraction"] = args.floor_fraction
    results["floor"] = round(
        floor(
            verify["signatures"],
            verify["ciphertexts"],
            verify["voters"],
            args.workers,
            fraction=args.floor_fraction,
        ),
        2,
    )
    end_to_end = sum(results[n]["wall"] for n in ("harvest", "verify", "reports"))
    results["endToEnd"] = round(end_to_end, 1)
    results["ratio"] = round(end_to_end / results["floor"], 2) if results["floor"] else None
    results["peakMB"] = max(results[n]["peakMB"] for n in ("harvest", "verify", "reports"))
    scaled = f"; {args.floor_fraction:g} of them timed, scaled up" if args.floor_fraction < 1 else ""
    print(f"floor    {results['floor']:8.1f} s  ({verify['signatures'] + verify['voters']:,} signatures, "
          f"{verify['ciphertexts']:,} ciphertexts, {args.workers} processes{scaled})")  # fmt: skip
    print(f"end to end {end_to_end:.1f} s = {results['ratio']}x the floor; verdict {verify['verdict']}; "
          f"{verify['voters']:,} voters counted; peak RSS {results['peakMB']:,} MB")  # fmt: skip
    comparisons = (
        (args.former_floor, "former", "up to session 6", {"former": True}),
        (args.one_signature_floor, "oneSignature", "sessions 7 to 9", {"distinct": 1}),
    )
    for wanted, name, when, how in comparisons:
        if not wanted:
            continue
        seconds = floor(
            verify["signatures"],
            verify["ciphertexts"],
            verify["voters"],
            args.workers,
            fraction=args.floor_fraction,
            **how,
        )
        results[f"{name}Floor"] = round(seconds, 2)
        results[f"{name}Ratio"] = round(end_to_end / seconds, 2)
        label = "former floor" if name == "former" else "one-signature floor"
        print(f"{label} {seconds:.1f} s ({when}): end to end = {results[f'{name}Ratio']}x that floor")
    print("verify stages: " + ", ".join(f"{k} {v:.1f} s" for k, v in verify["stages"].items() if v >= 0.5))
    # where the cores went: CPU seconds of each stage's process and of its workers, beside
    # the floor's (its loops keep every worker busy: about floor x workers)
    cpu = {n: results[n]["cpuMain"] + results[n]["cpuWorkers"] for n in ("harvest", "verify", "reports")}
    results["cpu"] = {n: round(v, 1) for n, v in cpu.items()}
    busy = sum(cpu.values()) / (end_to_end * args.workers) if end_to_end else 0
    cores = (
        f"the {args.workers} cores {busy:.0%} busy"
        if not args.cluster
        else "the cluster's workers are not counted"
    )
    print(
        "CPU seconds: "
        + ", ".join(
            f"{n} {cpu[n]:.1f} (its process {results[n]['cpuMain']:.1f}, "
            f"workers {results[n]['cpuWorkers']:.1f})"
            for n in cpu
        )
        + f"; {sum(cpu.values()):.1f} in all against the floor's ≈ {results['floor'] * args.workers:.1f}; "
        + cores
    )
    (work / "bench.json").write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
