"""Ed25519 signatures as spec §3 uses them (RFC 8032, verified strictly by libsodium).

libsodium's ``crypto_sign_open`` rejects non-canonical S, small-order public keys and
non-canonical encodings of R, which is the strictness spec §3 asks for.
"""

from __future__ import annotations

import hashlib

from nacl.bindings import crypto_sign, crypto_sign_open, crypto_sign_seed_keypair
from nacl.exceptions import BadSignatureError
from nacl.exceptions import CryptoError as NaclCryptoError

from auditor.model.encoding import b64u_decode, b64u_encode
from auditor.model.envelope import signed_message

__all__ = ["SigningKey", "sign_digest", "verify", "verify_digest"]


class SigningKey:
    """An Ed25519 key pair from a 32-byte seed (RFC 8032 private key)."""

    __slots__ = ("_secret", "public", "public_b64u")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != 32:
            raise ValueError("an Ed25519 seed has 32 bytes")
        self.public, self._secret = crypto_sign_seed_keypair(seed)
        self.public_b64u = b64u_encode(self.public)

    @classmethod
    def derive(cls, *labels: bytes | str) -> SigningKey:
        """A deterministic key from labels (for the simulator and tests only)."""
        h = hashlib.sha256()
        for label in labels:
            part = label.encode() if isinstance(label, str) else label
            h.update(len(part).to_bytes(4, "big") + part)
        return cls(h.digest())

    def sign(self, message: bytes) -> bytes:
        """The 64-byte detached signature of ``message``."""
        return crypto_sign(message, self._secret)[:64]

    def sign_b64u(self, message: bytes) -> str:
        return b64u_encode(self.sign(message))

    def __repr__(self) -> str:  # never show the secret
        return f"SigningKey(public={self.public_b64u})"


def verify(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """Strict Ed25519 verification; False for any bad key, signature or length."""
    if len(public_key) != 32 or len(signature) != 64:
        return False
    try:
        crypto_sign_open(signature + message, public_key)
    except (BadSignatureError, NaclCryptoError, ValueError, TypeError):
        return False
    return True


def sign_digest(key: SigningKey, digest: bytes) -> dict[str, str]:
    """A spec §3 signature entry ``{"key", "sig"}`` over a record digest."""
    return {"key": key.public_b64u, "sig": key.sign_b64u(signed_message(digest))}


def verify_digest(key_b64u: str, sig_b64u: str, digest: bytes) -> bool:
    """Verify a spec §3 signature entry over a record digest; False on any malformation."""
    try:
        public_key = b64u_decode(key_b64u, length=32)
        signature = b64u_decode(sig_b64u, length=64)
    except Exception:
        return False
    return verify(public_key, signature, signed_message(digest))
