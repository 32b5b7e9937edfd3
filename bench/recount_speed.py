"""Time the recount's worker (``_read_batch``) in this process, on the batches of a real store.

    .venv/bin/python bench/recount_speed.py capture STORE TRUST --out /tmp/recount.pickle
    .venv/bin/python bench/recount_speed.py run /tmp/recount.pickle [--profile] [--repeat 3]

``capture`` verifies STORE up to the recount and keeps what the recount would send its
workers (the private key, the templates and every batch of blocks). ``run`` then calls
the worker's ``_init`` and ``_read_batch`` over those batches and prints the CPU time
(``time.process_time``) per vote, the best of ``--repeat`` runs; ``--profile`` prints
the cProfile of one run instead. Run it with the ``auditor`` package of two commits
(``PYTHONPATH=/tmp/old``) on the same capture for an A/B that no other stage disturbs.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import pickle
import pstats
import time
from pathlib import Path
from typing import Any

from auditor.parallel import LocalRunner


class _Captured(BaseException):  # not an Exception: the engine would report it as a bug
    pass


def capture(store: Path, trust: Path, out: Path) -> None:
    from auditor.trust import load_trust
    from auditor.verify.engine import verify_store

    original = LocalRunner.map

    def map_(self: LocalRunner, task: Any, batches: Any, *, small: bool = False) -> Any:
        if task.name != "recount":
            return original(self, task, batches, small=small)
        with out.open("wb") as f:
            pickle.dump((task.initargs, list(batches)), f, protocol=pickle.HIGHEST_PROTOCOL)
        raise _Captured

    LocalRunner.map = map_  # type: ignore[method-assign]
    try:
        verify_store(store, load_trust(trust), workers=1, audit_dir=out.parent / (out.stem + "-audit"))
    except _Captured:
        print(f"captured the recount's batches in {out}")
        return
    raise SystemExit("the recount did not run")


def floor(initargs: Any, batches: Any) -> float:
    """CPU seconds of the libsodium calls alone: per ciphertext, the scalar multiplication
    (which validates R) and the AEAD; per voter entry, the signature check (on the
    bytes the recount would check; the entries' parsing is not timed)."""
    from nacl._sodium import ffi, lib

    from auditor.crypto.ecies import ECIES_LABEL, decrypt
    from auditor.model.encoding import b64u_decode
    from auditor.model.entries import VoterEntry
    from auditor.model.envelope import signed_message
    from auditor.verify.recount import parse_entry

    key = initargs[0]
    shared, plain, length = (
        ffi.new("unsigned char[]", 32),
        ffi.new("unsigned char[]", 1 << 16),
        ffi.new("unsigned long long *"),
    )
    ciphertexts = [(c, item[1].encode()) for batch in batches for item in batch for c in item[4] + item[5]]
    signed = []
    for batch in batches:
        for item in batch:
            for c in item[5]:
                v = parse_entry(decrypt(c, key, item[1]), VoterEntry)
                signed.append((b64u_decode(v.signature) + signed_message(v.digest), b64u_decode(v.key)))
    keys = []  # each ciphertext's AEAD key (computed here, so that every open in the loop succeeds)
    for c, _ in ciphertexts:
        lib.crypto_scalarmult_ed25519_noclamp(shared, key, c[:32])
        keys.append(hashlib.sha256(ECIES_LABEL + c[:32] + bytes(ffi.buffer(shared, 32))).digest())
    started = time.process_time()
    for (c, aad), k in zip(ciphertexts, keys, strict=True):
        lib.crypto_scalarmult_ed25519_noclamp(shared, key, c[:32])  # validates R too (D46)
        lib.crypto_aead_xchacha20poly1305_ietf_decrypt(
            plain, ffi.NULL, ffi.NULL, c[32:], len(c) - 32, aad, len(aad), bytes(24), k
        )
    for message, public in signed:
        lib.crypto_sign_open(plain, length, message, len(message), public)
    return time.process_time() - started


def run(path: Path, profile: bool, repeat: int) -> None:
    from auditor.verify import recount

    with path.open("rb") as f:
        initargs, batches = pickle.load(f)
    votes = sum(len(item[4]) for batch in batches for item in batch)
    least = min(floor(initargs, batches) for _ in range(repeat))
    print(f"libsodium floor: {least / votes * 1e6:.0f} µs per vote")
    recount._init(*initargs)
    if profile:
        profiler = cProfile.Profile()
        profiler.enable()
        for batch in batches:
            recount._read_batch(batch)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
        return
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        for batch in batches:
            recount._read_batch(batch)
        best = min(best, time.process_time() - started)
    print(f"{len(batches)} batches, {votes:,} votes: {best:.2f} s CPU, {best / votes * 1e6:.0f} µs per vote")


def main() -> None:
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    c = commands.add_parser("capture")
    c.add_argument("store", type=Path)
    c.add_argument("trust", type=Path)
    c.add_argument("--out", type=Path, required=True)
    r = commands.add_parser("run")
    r.add_argument("capture", type=Path)
    r.add_argument("--profile", action="store_true")
    r.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if args.command == "capture":
        capture(args.store, args.trust, args.out)
    else:
        run(args.capture, args.profile, args.repeat)


if __name__ == "__main__":
    main()
