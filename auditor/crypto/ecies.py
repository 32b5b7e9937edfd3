"""The election key and the encryption of entries (spec §5.1-§5.2).

Edwards25519 arithmetic and XChaCha20-Poly1305 come from libsodium through PyNaCl:
``crypto_scalarmult_ed25519_base_noclamp``, ``crypto_core_ed25519_add``,
``crypto_core_ed25519_scalar_add``, ``crypto_scalarmult_ed25519_noclamp`` and
``crypto_aead_xchacha20poly1305_ietf_{en,de}crypt``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt,
    crypto_aead_xchacha20poly1305_ietf_encrypt,
    crypto_core_ed25519_add,
    crypto_core_ed25519_is_valid_point,
    crypto_core_ed25519_scalar_add,
    crypto_core_ed25519_scalar_mul,
    crypto_core_ed25519_scalar_reduce,
    crypto_scalarmult_ed25519_base_noclamp,
    crypto_scalarmult_ed25519_noclamp,
)
from nacl.exceptions import CryptoError as NaclCryptoError

from auditor.errors import CryptoError

__all__ = [
    "ECIES_LABEL",
    "ELL",
    "combine_private",
    "combine_public",
    "decrypt",
    "derive_scalar",
    "encrypt",
    "encrypt_knowing_private",
    "is_valid_point",
    "is_valid_scalar",
    "public_of",
]

ELL = 2**252 + 27742317777372353535851937790883648493
ECIES_LABEL = b"votetorrent/1:ecies"
_ZERO_NONCE = bytes(24)
_TAG = 16


def is_valid_point(point: bytes) -> bool:
    """A canonical Edwards25519 point in the prime-order subgroup, not of small order."""
    return len(point) == 32 and bool(crypto_core_ed25519_is_valid_point(point))


def is_valid_scalar(scalar: bytes) -> bool:
    """32 bytes little-endian, reduced mod ℓ, nonzero (spec §4.12)."""
    return len(scalar) == 32 and 0 < int.from_bytes(scalar, "little") < ELL


def derive_scalar(material: bytes) -> bytes:
    """A scalar from 64 uniform bytes: crypto_core_ed25519_scalar_reduce(sha512(material))."""
    return bytes(crypto_core_ed25519_scalar_reduce(hashlib.sha512(material).digest()))


def public_of(scalar: bytes) -> bytes:
    """k·B for a valid scalar k (no clamping)."""
    if not is_valid_scalar(scalar):
        raise CryptoError("a private key must be 32 bytes, reduced mod ℓ and nonzero")
    return bytes(crypto_scalarmult_ed25519_base_noclamp(scalar))


def combine_public(points: Iterable[bytes]) -> bytes:
    """K = Σ K_i (spec §5.1); every K_i must be a valid point."""
    total: bytes | None = None
    for i, p in enumerate(points):
        if not is_valid_point(p):
            raise CryptoError(f"keyholder key {i} is not a valid prime-order Edwards25519 point")
        total = p if total is None else bytes(crypto_core_ed25519_add(total, p))
    if total is None:
        raise CryptoError("an election key needs at least one keyholder key")
    return total


def combine_private(scalars: Iterable[bytes]) -> bytes:
    """k = Σ k_i mod ℓ (spec §5.1)."""
    total = bytes(32)
    for i, k in enumerate(scalars):
        if not is_valid_scalar(k):
            raise CryptoError(f"released key {i} is not a reduced nonzero scalar")
        total = bytes(crypto_core_ed25519_scalar_add(total, k))
    return total


def _key(r_point: bytes, shared: bytes) -> bytes:
    return hashlib.sha256(ECIES_LABEL + r_point + shared).digest()


def encrypt(plaintext: bytes, election_key: bytes, template_cid: str, ephemeral: bytes) -> bytes:
    """R ‖ XChaCha20-Poly1305(key, nonce=0^24, aad=template CID) (spec §5.2).

    ``ephemeral`` is the random nonzero scalar r; callers draw it from a CSPRNG (the
    simulator from its seeded generator).
    """
    r_point = public_of(ephemeral)
    shared = bytes(crypto_scalarmult_ed25519_noclamp(ephemeral, election_key))
    sealed = crypto_aead_xchacha20poly1305_ietf_encrypt(
        plaintext, template_cid.encode("utf-8"), _ZERO_NONCE, _key(r_point, shared)
    )
    return r_point + bytes(sealed)


def encrypt_knowing_private(
    plaintext: bytes, election_private: bytes, template_cid: str, ephemeral: bytes
) -> bytes:
    """The bytes :func:`encrypt` makes for the election key ``public_of(election_private)``,
    for whoever holds the combined private key k (the simulator): S = r·K = (r·k mod ℓ)·B,
    two fixed-base multiplications instead of a fixed-base and a variable-base one, which
    also tests K's subgroup every time (about a third of the cost)."""
    r_point = public_of(ephemeral)
    shared = public_of(bytes(crypto_core_ed25519_scalar_mul(ephemeral, election_private)))
    sealed = crypto_aead_xchacha20poly1305_ietf_encrypt(
        plaintext, template_cid.encode("utf-8"), _ZERO_NONCE, _key(r_point, shared)
    )
    return r_point + bytes(sealed)


def decrypt(ciphertext: bytes, private_key: bytes, template_cid: str) -> bytes:
    """Open a ciphertext with the combined private key; CryptoError says why it failed."""
    if len(ciphertext) < 32 + _TAG:
        raise CryptoError(f"ciphertext of {len(ciphertext)} bytes, expected at least {32 + _TAG}")
    r_point = ciphertext[:32]
    if not is_valid_point(r_point):
        raise CryptoError("ciphertext R is not a valid prime-order Edwards25519 point")
    try:
        shared = bytes(crypto_scalarmult_ed25519_noclamp(private_key, r_point))
        return bytes(
            crypto_aead_xchacha20poly1305_ietf_decrypt(
                ciphertext[32:], template_cid.encode("utf-8"), _ZERO_NONCE, _key(r_point, shared)
            )
        )
    except (NaclCryptoError, ValueError, TypeError) as e:
        raise CryptoError("ciphertext does not decrypt under the election key and template") from e
