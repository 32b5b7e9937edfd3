"""The recount's per-ciphertext libsodium calls, made directly (spec §3, §5.2).

:func:`auditor.crypto.ecies.decrypt` and :func:`auditor.crypto.ed25519.verify` go
through PyNaCl's bindings, which check their arguments' types and lengths, allocate
output buffers and copy results on every call: some 25 µs a ciphertext, a tenth of the
cryptographic work itself. The recount opens two ciphertexts and checks one signature
per vote, millions of times with one key, so :class:`Opener` calls the same libsodium
functions through PyNaCl's own cffi module, with buffers allocated once a thread. Same
errors and messages: tests/test_recount_fast.py checks that ``Opener.open`` agrees with
``decrypt`` and ``Opener.verify`` with ``verify``, on good and broken inputs (D41).

One call fewer than ``decrypt`` makes: libsodium's ``crypto_scalarmult_ed25519_noclamp``
refuses R by itself unless it is canonical, not of small order, on the curve and in the
prime-order subgroup, which is everything ``crypto_core_ed25519_is_valid_point`` checks
(that function's separate on-curve test is implied by the decoding both do). So R is
multiplied first and tested alone only when the multiplication refuses, to word the
refusal as ``decrypt`` does; the prime-order test, a multiplication by ℓ that cost about
half of the scalar multiplication itself, now runs once per ciphertext, not twice (D46).
"""

from __future__ import annotations

import hashlib
import threading
from typing import Any

from nacl._sodium import ffi, lib

from auditor.crypto.ecies import _TAG, _ZERO_NONCE, ECIES_LABEL
from auditor.errors import CryptoError

__all__ = ["Opener", "SignatureChecker"]

_NOT_A_POINT = "ciphertext R is not a valid prime-order Edwards25519 point"
_NO_OPEN = "ciphertext does not decrypt under the election key and template"


class _Buffers(threading.local):
    """The buffers libsodium writes its outputs into, one set per thread: cffi lets go of
    the GIL during a call, so threads sharing one set (a Dask worker started with several
    threads runs a stage's batches side by side in one process) would read each other's
    shared points and plaintexts. The output buffer is allocated again only when a call
    needs more."""

    def __init__(self) -> None:
        self.shared = ffi.new("unsigned char[]", 32)  # a scalar multiplication's point
        self.length = ffi.new("unsigned long long *")  # crypto_sign_open's message length
        self.size = 0
        self.out = ffi.new("unsigned char[]", 0)
        self.need(1024)

    def need(self, size: int) -> Any:
        """This thread's output buffer, of at least ``size`` bytes."""
        if size > self.size:
            self.size = max(size, 2 * self.size)
            self.out = ffi.new("unsigned char[]", self.size)
        return self.out


class SignatureChecker:
    """Strict Ed25519 verification as ``auditor.crypto.ed25519.verify`` (libsodium's
    crypto_sign_open), its buffers allocated once a thread: the signature stage checks
    millions of signatures a process (D41, D52)."""

    __slots__ = ("_buffers",)

    def __init__(self) -> None:
        self._buffers = _Buffers()

    def verify(self, public_key: bytes, signature: bytes, message: bytes) -> bool:
        """True if ``signature`` by ``public_key`` verifies over ``message``; False for any
        bad key, signature or length."""
        if len(public_key) != 32 or len(signature) != 64:
            return False
        signed = signature + message
        buffers = self._buffers
        out = buffers.need(len(signed))
        return bool(lib.crypto_sign_open(out, buffers.length, signed, len(signed), public_key) == 0)


class Opener:
    """Opens ciphertexts with one private key, as ``decrypt(ciphertext, private_key, aad)``,
    and verifies Ed25519 signatures, as ``verify``; its buffers are allocated once a thread."""

    __slots__ = ("_buffers", "_checker", "_key")

    def __init__(self, private_key: bytes) -> None:
        if len(private_key) != 32:  # decrypt's scalarmult refuses any other length (as "does not decrypt")
            raise ValueError("a private key has 32 bytes")
        self._key = bytes(private_key)
        self._buffers = _Buffers()
        self._checker = SignatureChecker()

    def open(self, ciphertext: bytes, aad: bytes) -> bytes:
        """The plaintext (``aad``: the template CID's UTF-8 bytes); CryptoError says why not,
        with decrypt's words."""
        if len(ciphertext) < 32 + _TAG:
            raise CryptoError(f"ciphertext of {len(ciphertext)} bytes, expected at least {32 + _TAG}")
        r_point = ciphertext[:32]
        buffers = self._buffers
        shared = buffers.shared
        # spec §5.2: R MUST be a valid point; the multiplication refuses any other R (D46)
        if lib.crypto_scalarmult_ed25519_noclamp(shared, self._key, r_point) != 0:
            if lib.crypto_core_ed25519_is_valid_point(r_point) != 1:
                raise CryptoError(_NOT_A_POINT)
            raise CryptoError(_NO_OPEN)
        key = hashlib.sha256(ECIES_LABEL + r_point + bytes(ffi.buffer(shared, 32))).digest()
        sealed = ciphertext[32:]
        size = len(sealed) - _TAG
        plain = buffers.need(size)
        if (
            lib.crypto_aead_xchacha20poly1305_ietf_decrypt(
                plain, ffi.NULL, ffi.NULL, sealed, len(sealed), aad, len(aad), _ZERO_NONCE, key
            )
            != 0
        ):
            raise CryptoError(_NO_OPEN)
        return bytes(ffi.buffer(plain, size))

    def verify(self, public_key: bytes, signature: bytes, message: bytes) -> bool:
        """Strict Ed25519 verification (libsodium's crypto_sign_open, as ``verify``); False for
        any bad key, signature or length."""
        return self._checker.verify(public_key, signature, message)
