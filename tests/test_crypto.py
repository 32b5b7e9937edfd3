"""Ed25519 (spec §3, strict as libsodium) and the election key / ECIES (spec §5.1-§5.2)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from nacl.bindings import crypto_core_ed25519_add

from auditor.crypto.ecies import (
    ELL,
    combine_private,
    combine_public,
    decrypt,
    derive_scalar,
    encrypt,
    encrypt_knowing_private,
    is_valid_point,
    is_valid_scalar,
    public_of,
)
from auditor.crypto.ed25519 import SigningKey, sign_digest, verify, verify_digest
from auditor.errors import CryptoError
from auditor.model.encoding import b64u_decode, b64u_encode, jcs, parse_json
from auditor.model.entries import VoteEntry, VoterEntry, voter_entry_digest
from auditor.model.envelope import parse_envelope, signed_message
from tests.conftest import load_vectors

VECTORS = load_vectors()
RECORD = VECTORS["record"]
VOTER = VECTORS["voter_entry"]
KEYS = VECTORS["election_key"]
ECIES = VECTORS["ecies"]

IDENTITY = bytes([1]) + bytes(31)
ORDER_8 = bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a")
BASE = public_of((1).to_bytes(32, "little"))
P = 2**255 - 19


def scalar(n: int) -> bytes:
    return n.to_bytes(32, "little")


def flip(data: bytes, index: int, bit: int = 0) -> bytes:
    changed = bytearray(data)
    changed[index] ^= 1 << bit
    return bytes(changed)


# ---------------------------------------------------------------------------- Ed25519 vectors


def test_vector_record_signature() -> None:
    key = SigningKey(bytes.fromhex(RECORD["signer_seed_hex"]))
    assert key.public_b64u == RECORD["body"]["registrantKey"]
    env = parse_envelope(RECORD["envelope_jcs_utf8"].encode("utf-8"), cid=RECORD["cid"])
    (signature,) = env.signatures
    assert signature.key == key.public_b64u
    # Ed25519 is deterministic: the vector signature is reproduced exactly.
    assert sign_digest(key, env.digest) == {"key": signature.key, "sig": signature.sig}
    assert key.sign(bytes.fromhex(RECORD["signed_message_hex"])) == b64u_decode(signature.sig)
    assert verify_digest(signature.key, signature.sig, env.digest)
    assert verify(key.public, b64u_decode(signature.sig), env.signed_message)


def test_vector_voter_entry_signature() -> None:
    key = SigningKey(bytes.fromhex(VOTER["signer_seed_hex"]))
    fields = VOTER["signed_fields"]
    assert key.public_b64u == fields["key"]
    digest = voter_entry_digest(fields["key"], fields["registrant"], fields["template"])
    assert digest.hex() == VOTER["digest_hex"]
    entry = VoterEntry.parse(VOTER["entry"], "entry")
    assert entry.digest == digest
    assert key.sign_b64u(signed_message(digest)) == entry.signature
    assert verify_digest(entry.key, entry.signature, entry.digest)


def test_signing_key_basics() -> None:
    a = SigningKey.derive("tests", "a")
    assert SigningKey.derive("tests", "a").public == a.public
    assert SigningKey.derive("tests", "b").public != a.public
    assert SigningKey.derive("tests", "ab").public != SigningKey.derive("tests", "a", "b").public
    assert "secret" not in repr(a) and a.public_b64u in repr(a)
    with pytest.raises(ValueError, match="32 bytes"):
        SigningKey(bytes(31))


# ---------------------------------------------------------------------------- Ed25519 rejections

SIGNER = SigningKey(bytes.fromhex(RECORD["signer_seed_hex"]))
MESSAGE = bytes.fromhex(RECORD["signed_message_hex"])
SIG = SIGNER.sign(MESSAGE)
KEY = SIGNER.public


def _s_plus_ell(sig: bytes) -> bytes:
    s = int.from_bytes(sig[32:], "little")
    return sig[:32] + (s + ELL).to_bytes(32, "little")


def _identity_forgery() -> tuple[bytes, bytes]:
    """With A = identity, [S]B = R + [k]A holds for R = [S]B and any message: a lax
    verifier would accept this; libsodium rejects the small-order key."""
    s = scalar(12345)
    return IDENTITY, public_of(s) + s


REJECTED: list[tuple[str, Callable[[], tuple[bytes, bytes, bytes]]]] = [
    ("message bit 0 of byte 0", lambda: (KEY, SIG, flip(MESSAGE, 0))),
    ("message last bit", lambda: (KEY, SIG, flip(MESSAGE, 45, 7))),
    ("message digest bit", lambda: (KEY, SIG, flip(MESSAGE, 20, 3))),
    ("message one byte longer", lambda: (KEY, SIG, MESSAGE + b"\x00")),
    ("message one byte shorter", lambda: (KEY, SIG, MESSAGE[:-1])),
    ("signature R bit", lambda: (KEY, flip(SIG, 0), MESSAGE)),
    ("signature S bit", lambda: (KEY, flip(SIG, 40, 5), MESSAGE)),
    ("signature top bit", lambda: (KEY, flip(SIG, 63, 7), MESSAGE)),
    ("key bit", lambda: (flip(KEY, 0), SIG, MESSAGE)),
    ("key sign bit", lambda: (flip(KEY, 31, 7), SIG, MESSAGE)),
    ("non-canonical S (S + ℓ)", lambda: (KEY, _s_plus_ell(SIG), MESSAGE)),
    ("identity key, forged signature", lambda: (*_identity_forgery(), MESSAGE)),
    ("identity key", lambda: (IDENTITY, SIG, MESSAGE)),
    ("order-8 key", lambda: (ORDER_8, SIG, MESSAGE)),
    ("another signer's key", lambda: (SigningKey.derive("other").public, SIG, MESSAGE)),
    ("key of 31 bytes", lambda: (KEY[:31], SIG, MESSAGE)),
    ("key of 33 bytes", lambda: (KEY + b"\x00", SIG, MESSAGE)),
    ("signature of 63 bytes", lambda: (KEY, SIG[:63], MESSAGE)),
    ("signature of 65 bytes", lambda: (KEY, SIG + b"\x00", MESSAGE)),
    ("empty key and signature", lambda: (b"", b"", MESSAGE)),
]


def test_unchanged_signature_verifies() -> None:
    assert verify(KEY, SIG, MESSAGE) is True


@pytest.mark.parametrize("case", [c[1] for c in REJECTED], ids=[c[0] for c in REJECTED])
def test_verify_rejects(case: Callable[[], tuple[bytes, bytes, bytes]]) -> None:
    key, sig, message = case()
    assert verify(key, sig, message) is False


def test_s_plus_ell_is_the_same_signature_mod_ell() -> None:
    # The rejected S + ℓ differs from S only by ℓ: a lax verifier reducing S would accept it.
    s = int.from_bytes(SIG[32:], "little")
    t = int.from_bytes(_s_plus_ell(SIG)[32:], "little")
    assert t - s == ELL and t < 2**256


@pytest.mark.parametrize(
    ("key", "sig"),
    [
        ("", ""),
        (b64u_encode(KEY) + "=", b64u_encode(SIG)),
        (b64u_encode(KEY), b64u_encode(SIG) + "A"),
        (b64u_encode(KEY[:31]), b64u_encode(SIG)),
        (b64u_encode(KEY), b64u_encode(SIG[:63])),
        (None, None),
        (b64u_encode(IDENTITY), b64u_encode(SIG)),
    ],
)
def test_verify_digest_rejects_malformed(key: object, sig: object) -> None:
    digest = bytes.fromhex(RECORD["digest_hex"])
    assert verify_digest(key, sig, digest) is False  # type: ignore[arg-type]


@given(st.binary(max_size=40), st.binary(max_size=70), st.binary(max_size=60))
def test_verify_never_raises(key: bytes, sig: bytes, message: bytes) -> None:
    assert verify(key, sig, message) is False


@given(st.binary(max_size=200))
def test_sign_then_verify(message: bytes) -> None:
    assert verify(KEY, SIGNER.sign(message), message)
    assert not verify(KEY, SIGNER.sign(message + b"x"), message)


# ---------------------------------------------------------------------------- election key (§5.1)


def test_vector_election_key() -> None:
    scalars = [b64u_decode(s, length=32) for s in KEYS["private_scalars"]]
    points = [b64u_decode(p, length=32) for p in KEYS["public_points"]]
    # derivation_note: scalar i = scalar_reduce(sha512("keyholder-i")), i = 0, 1, 2
    assert [derive_scalar(f"keyholder-{i}".encode()) for i in range(3)] == scalars
    assert all(is_valid_scalar(s) for s in scalars)
    assert [public_of(s) for s in scalars] == points
    assert all(is_valid_point(p) for p in points)
    combined_public = combine_public(points)
    combined_private = combine_private(scalars)
    assert b64u_encode(combined_public) == KEYS["combined_public"] == ECIES["election_key"]
    assert b64u_encode(combined_private) == KEYS["combined_private"] == ECIES["combined_private"]
    assert public_of(combined_private) == combined_public
    assert (
        int.from_bytes(combined_private, "little") == sum(int.from_bytes(s, "little") for s in scalars) % ELL
    )


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        (scalar(0), False),
        (scalar(ELL), False),
        (scalar(ELL + 1), False),
        (b"\xff" * 32, False),  # 2^256 - 1
        (scalar(1)[:31], False),
        (scalar(1) + b"\x00", False),
        (b"", False),
        (scalar(1), True),
        (scalar(ELL - 1), True),
        (scalar(2**252), True),
    ],
    ids=["0", "ℓ", "ℓ+1", "2^256-1", "31 bytes", "33 bytes", "empty", "1", "ℓ-1", "2^252"],
)
def test_is_valid_scalar(value: bytes, valid: bool) -> None:
    assert is_valid_scalar(value) is valid
    if not valid:
        with pytest.raises(CryptoError):
            public_of(value)
        with pytest.raises(CryptoError):
            combine_private([scalar(1), value])


def _torsioned() -> bytes:
    """B + (a point of order 2): on the curve, not in the prime-order subgroup."""
    return bytes(crypto_core_ed25519_add(BASE, scalar(P - 1)))  # y = -1: order 2


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        (BASE, True),
        *((b64u_decode(p), True) for p in KEYS["public_points"]),
        (IDENTITY, False),
        (ORDER_8, False),
        (scalar(P - 1), False),  # y = -1, order 2
        (scalar(P + 1), False),  # non-canonical encoding of y = 1
        (scalar(2**255 - 1), False),  # y ≥ p
        (scalar(2), False),  # not on the curve
        (_torsioned(), False),
        (BASE[:31], False),
        (b"", False),
    ],
)
def test_is_valid_point(value: bytes, valid: bool) -> None:
    assert is_valid_point(value) is valid
    if not valid:
        with pytest.raises(CryptoError):
            combine_public([BASE, value])


def test_combine_public_needs_a_key() -> None:
    with pytest.raises(CryptoError, match="at least one"):
        combine_public([])
    assert combine_private([]) == bytes(32)


SCALARS = st.integers(1, ELL - 1).map(scalar)


@given(st.lists(SCALARS, min_size=1, max_size=5))
def test_combine_public_matches_combine_private(scalars: list[bytes]) -> None:
    combined = combine_private(scalars)
    assume(combined != bytes(32))  # the sum can be 0 mod ℓ; that has no public key
    assert combine_public(public_of(s) for s in scalars) == public_of(combined)
    assert combine_private(reversed(scalars)) == combined


# ---------------------------------------------------------------------------- ECIES (§5.2)

ELECTION_KEY = b64u_decode(ECIES["election_key"])
PRIVATE = b64u_decode(ECIES["combined_private"])
TEMPLATE = ECIES["template"]
CIPHERTEXT = b64u_decode(ECIES["ciphertext"])
PLAINTEXT = jcs(ECIES["entry"])


def test_vector_ciphertext_reproduces() -> None:
    ephemeral = b64u_decode(ECIES["ephemeral_scalar"], length=32)
    assert encrypt(PLAINTEXT, ELECTION_KEY, TEMPLATE, ephemeral) == CIPHERTEXT
    assert CIPHERTEXT[:32] == public_of(ephemeral)  # R = r·B
    assert len(CIPHERTEXT) == 32 + len(PLAINTEXT) + 16


def test_vector_ciphertext_decrypts() -> None:
    plaintext = decrypt(CIPHERTEXT, PRIVATE, TEMPLATE)
    assert plaintext == PLAINTEXT
    entry = VoteEntry.parse(parse_json(plaintext), "entry")
    assert entry.template == TEMPLATE
    assert entry.to_json() == ECIES["entry"]


OTHER_TEMPLATE = VECTORS["cid"][1]["cid"]
SINGLE_KEYHOLDER = b64u_decode(KEYS["private_scalars"][0])

UNDECRYPTABLE: list[tuple[str, bytes, bytes, str]] = [
    ("wrong template CID (AAD)", CIPHERTEXT, PRIVATE, OTHER_TEMPLATE),
    ("template CID with a newline", CIPHERTEXT, PRIVATE, TEMPLATE + "\n"),
    ("one keyholder's key only", CIPHERTEXT, SINGLE_KEYHOLDER, TEMPLATE),
    ("key off by one", CIPHERTEXT, scalar(int.from_bytes(PRIVATE, "little") + 1), TEMPLATE),
    ("zero key", CIPHERTEXT, bytes(32), TEMPLATE),
    ("key of 31 bytes", CIPHERTEXT, PRIVATE[:31], TEMPLATE),
    ("flipped byte in R", flip(CIPHERTEXT, 3), PRIVATE, TEMPLATE),
    ("flipped byte in the AEAD body", flip(CIPHERTEXT, 40), PRIVATE, TEMPLATE),
    ("flipped byte in the tag", flip(CIPHERTEXT, len(CIPHERTEXT) - 1, 7), PRIVATE, TEMPLATE),
    ("truncated by one byte", CIPHERTEXT[:-1], PRIVATE, TEMPLATE),
    ("truncated to R and tag size", CIPHERTEXT[:48], PRIVATE, TEMPLATE),
    ("truncated below R and tag", CIPHERTEXT[:47], PRIVATE, TEMPLATE),
    ("empty", b"", PRIVATE, TEMPLATE),
    ("one byte appended", CIPHERTEXT + b"\x00", PRIVATE, TEMPLATE),
    ("R is the identity", IDENTITY + CIPHERTEXT[32:], PRIVATE, TEMPLATE),
    ("R of order 8", ORDER_8 + CIPHERTEXT[32:], PRIVATE, TEMPLATE),
    ("R not canonical", scalar(2**255 - 1) + CIPHERTEXT[32:], PRIVATE, TEMPLATE),
    ("R not on the curve", scalar(2) + CIPHERTEXT[32:], PRIVATE, TEMPLATE),
    ("R torsioned", _torsioned() + CIPHERTEXT[32:], PRIVATE, TEMPLATE),
    ("R another valid point", BASE + CIPHERTEXT[32:], PRIVATE, TEMPLATE),
]


@pytest.mark.parametrize(
    ("ciphertext", "key", "template"),
    [c[1:] for c in UNDECRYPTABLE],
    ids=[c[0] for c in UNDECRYPTABLE],
)
def test_decrypt_fails_with_crypto_error(ciphertext: bytes, key: bytes, template: str) -> None:
    with pytest.raises(CryptoError):  # and no other exception type
        decrypt(ciphertext, key, template)


@given(st.binary(max_size=120))
def test_decrypt_of_arbitrary_bytes_raises_only_crypto_error(data: bytes) -> None:
    with pytest.raises(CryptoError):
        decrypt(data, PRIVATE, TEMPLATE)


@given(st.binary(max_size=600), SCALARS, SCALARS)
def test_encrypt_decrypt_round_trip(plaintext: bytes, private: bytes, ephemeral: bytes) -> None:
    election_key = public_of(private)
    ciphertext = encrypt(plaintext, election_key, TEMPLATE, ephemeral)
    assert len(ciphertext) == 32 + len(plaintext) + 16
    assert decrypt(ciphertext, private, TEMPLATE) == plaintext
    with pytest.raises(CryptoError):
        decrypt(ciphertext, private, OTHER_TEMPLATE)


@given(st.binary(max_size=200), st.lists(SCALARS, min_size=1, max_size=4), SCALARS)
def test_encrypting_with_the_private_key_gives_the_same_bytes(
    plaintext: bytes, scalars: list[bytes], ephemeral: bytes
) -> None:
    """The simulator's fixed-base encryption (S = (r·k)·B) is byte for byte encrypt's (S = r·K)."""
    private = combine_private(scalars)
    assume(private != bytes(32))
    election_key = combine_public(public_of(s) for s in scalars)
    expected = encrypt(plaintext, election_key, TEMPLATE, ephemeral)
    assert encrypt_knowing_private(plaintext, private, TEMPLATE, ephemeral) == expected
    # and with a private key that is not the election key's, the bytes differ
    other = combine_private([*scalars, (1).to_bytes(32, "little")])
    assume(other != bytes(32))
    assert encrypt_knowing_private(plaintext, other, TEMPLATE, ephemeral) != expected


@given(st.lists(SCALARS, min_size=1, max_size=4), SCALARS, st.binary(max_size=64))
def test_encrypt_to_combined_key_decrypts_with_combined_private(
    scalars: list[bytes], ephemeral: bytes, plaintext: bytes
) -> None:
    private = combine_private(scalars)
    assume(private != bytes(32))
    election_key = combine_public(public_of(s) for s in scalars)
    ciphertext = encrypt(plaintext, election_key, TEMPLATE, ephemeral)
    assert decrypt(ciphertext, private, TEMPLATE) == plaintext
