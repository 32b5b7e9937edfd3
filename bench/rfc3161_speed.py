"""How fast are RFC 3161 token issuance (test TSA) and verification (spec §3)?

    .venv/bin/python bench/rfc3161_speed.py            # 2,000 tokens per measurement
    .venv/bin/python bench/rfc3161_speed.py -n 500
    .venv/bin/python bench/rfc3161_speed.py --sweep    # every byte XOR 1..255 (minutes)

Each figure is microseconds per call, the best of ``--repeat`` runs, in CPU time of this
process (``time.process_time``) and, in brackets, wall-clock time: on a shared machine
the CPU time is the steadier. The certificate caches are warm, as they are after the
first of the ~100k tokens of an election. For scale, one bare ECDSA verification with
the same key is timed too: the rest of verify_token is parsing and checks.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from auditor.crypto.rfc3161 import verify_token
from auditor.sim.tsa import TestTsa

VECTORS = (
    Path(os.environ.get("VTAUDIT_SPEC_DIR") or Path(__file__).resolve().parents[2] / "shared" / "spec")
    / "vectors"
    / "rfc3161"
)


def best(fn: Callable[[int], object], n: int, repeat: int) -> tuple[float, float]:
    """(CPU µs, wall µs) per call of ``fn(i)`` for i in range(n), best of ``repeat``."""
    runs = []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        for i in range(n):
            fn(i)
        runs.append(((time.process_time() - cpu) / n * 1e6, (time.perf_counter() - wall) / n * 1e6))
    return min(runs)


def report(label: str, figures: tuple[float, float]) -> None:
    print(f"{label:<46} {figures[0]:8.1f} µs ({figures[1]:.1f})")


def sweep(name: str, token: bytes, digest: bytes, listed: list[bytes], roots: list[bytes]) -> None:
    """Change every byte to every other value; report any change that still verifies."""
    assert verify_token(token, digest, listed, roots).ok
    start, verified = time.process_time(), []
    for position in range(len(token)):
        for xor in range(1, 256):
            tampered = bytearray(token)
            tampered[position] ^= xor
            if verify_token(bytes(tampered), digest, listed, roots).ok:
                verified.append((position, xor))
    print(
        f"sweep {name}: {len(token) * 255:,} single-byte changes, {len(verified)} verify "
        f"{verified[:10]} ({time.process_time() - start:.0f} s CPU)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=2_000, help="calls per measurement")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sweep", action="store_true", help="run the single-byte-change sweep")
    args = ap.parse_args()
    n, repeat = args.n, args.repeat
    if args.sweep:
        tsa = TestTsa(hashlib.sha256(b"bench").digest())
        digest = hashlib.sha256(b"record").digest()
        token = tsa.issue(digest, 1_746_791_935_123, 1)
        sweep("TestTsa token", token, digest, [tsa.tsa_cert_der], [tsa.root_cert_der])
        if VECTORS.is_dir():
            pem = (VECTORS / "sigstage-ts_chain.pem").read_bytes()
            tsa_der = x509.load_pem_x509_certificates(pem)[0].public_bytes(Encoding.DER)
            der = (VECTORS / "sigstage-response-no-embedded-cert.token.der").read_bytes()
            sweep("Sigstore no-embedded-cert token", der, hashlib.sha256(b"hello").digest(), [tsa_der], [])
        return

    tsa = TestTsa(hashlib.sha256(b"bench").digest())
    digests = [hashlib.sha256(b"record %d" % i).digest() for i in range(n)]
    base = 1_746_791_935_000
    report("TestTsa.issue", best(lambda i: tsa.issue(digests[i], base + i, i), n, repeat))

    tokens = [tsa.issue(digests[i], base + i, i) for i in range(n)]
    listed, roots = [tsa.tsa_cert_der], [tsa.root_cert_der]
    for i in range(n):  # correctness first: every token verifies
        assert verify_token(tokens[i], digests[i], listed, roots).ok
    report(
        "verify_token, test TSA (P-256), no roots",
        best(lambda i: verify_token(tokens[i], digests[i], listed), n, repeat),
    )
    report(
        "verify_token, test TSA (P-256), chain to root",
        best(lambda i: verify_token(tokens[i], digests[i], listed, roots), n, repeat),
    )

    key = ec.derive_private_key(12345, ec.SECP256R1())
    signature = key.sign(b"x", ec.ECDSA(hashes.SHA256()))
    public = key.public_key()
    report(
        "  for scale: one bare P-256 ECDSA verify",
        best(lambda i: public.verify(signature, b"x", ec.ECDSA(hashes.SHA256())), n, repeat),
    )

    if VECTORS.is_dir():
        pem = (VECTORS / "sigstage-ts_chain.pem").read_bytes()
        tsa_der, root_der = (c.public_bytes(Encoding.DER) for c in x509.load_pem_x509_certificates(pem))
        token = (VECTORS / "sigstage-response-sha256.token.der").read_bytes()
        hello = hashlib.sha256(b"hello").digest()
        assert verify_token(token, hello, [tsa_der], [root_der]).ok
        report(
            "verify_token, Sigstore staging (P-384), chain",
            best(lambda i: verify_token(token, hello, [tsa_der], [root_der]), n, repeat),
        )


if __name__ == "__main__":
    main()
