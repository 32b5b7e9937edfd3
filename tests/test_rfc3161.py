"""RFC 3161 tokens (spec §3): real Sigstore vectors, the test TSA, tampering, openssl.

Good and tampered tokens sit side by side: the Sigstore staging vectors from
``../shared/spec/vectors/rfc3161`` and tokens from :class:`auditor.sim.tsa.TestTsa`,
whose knobs break one rule at a time.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditor.crypto.rfc3161 import (
    TokenInfo,
    TokenVerification,
    _parse_gen_time,
    parse_token,
    verify_token,
)
from auditor.errors import TimestampError
from auditor.sim.tsa import TEST_POLICY_OID, KeyType, TestTsa
from tests.specdir import RFC3161_VECTORS

VECTORS = RFC3161_VECTORS
HELLO = hashlib.sha256(b"hello").digest()
SEED = bytes(range(32))
DIGEST = hashlib.sha256(b"a record digest").digest()
GEN_MS = 1_746_791_935_123  # 2025-05-09T11:58:55.123Z
SERVER_AUTH = "1.3.6.1.5.5.7.3.1"

needs_vectors = pytest.mark.skipif(not VECTORS.is_dir(), reason="shared spec vectors missing")
_TSA = TestTsa(SEED)
_TOKEN = _TSA.issue(DIGEST, GEN_MS, 7)


def _vector(name: str) -> bytes:
    return (VECTORS / f"sigstage-{name}").read_bytes()


@pytest.fixture(scope="module")
def chain() -> tuple[bytes, bytes]:
    """(TSA certificate, root) of the Sigstore staging TSA, as DER."""
    if not VECTORS.is_dir():
        pytest.skip("shared spec vectors missing")
    pem = (VECTORS / "sigstage-ts_chain.pem").read_bytes()
    tsa, root = (c.public_bytes(Encoding.DER) for c in x509.load_pem_x509_certificates(pem))
    return tsa, root


@pytest.fixture
def tsa() -> TestTsa:
    return _TSA


@pytest.fixture
def token() -> bytes:
    return _TOKEN


def _assert_messages(result: TokenVerification) -> None:
    for problem in (*result.token_problems, *result.imprint_problems):
        assert problem.startswith("checked "), problem
        assert ": got " in problem and ", expected " in problem, problem


# ---------------------------------------------------------------------------- vectors


@needs_vectors
@pytest.mark.parametrize(
    ("name", "listed", "roots", "token_ok", "imprint_ok"),
    [
        ("response-sha256", "tsa", "root", True, True),
        ("response-sha256", "tsa", None, True, True),
        ("response-sha256", "root", None, False, True),  # signer not listed
        ("response-sha384", "tsa", "root", True, False),  # imprint must be SHA-256
        ("response-invalid-signature", "tsa", "root", False, True),
        ("response-no-embedded-cert", "tsa", "root", True, True),
        ("response-no-embedded-cert", "root", "root", False, True),  # cert nowhere
        ("response-no-embedded-cert", None, None, False, True),
    ],
)
def test_sigstage_vectors(
    chain: tuple[bytes, bytes],
    name: str,
    listed: str | None,
    roots: str | None,
    token_ok: bool,
    imprint_ok: bool,
) -> None:
    by_name = {"tsa": chain[0], "root": chain[1]}
    result = verify_token(
        _vector(f"{name}.token.der"),
        HELLO,
        [by_name[listed]] if listed else [],
        [by_name[roots]] if roots else [],
    )
    assert (not result.token_problems) is token_ok, result.token_problems
    assert (not result.imprint_problems) is imprint_ok, result.imprint_problems
    assert result.ok is (token_ok and imprint_ok)
    assert result.gen_time_ms is not None
    if token_ok:
        assert result.tsa_certificate == chain[0]
    _assert_messages(result)


@needs_vectors
def test_parse_sigstage_token(chain: tuple[bytes, bytes]) -> None:
    info = parse_token(_vector("response-sha256.token.der"))
    assert info == TokenInfo(
        gen_time_ms=int(datetime(2025, 5, 9, 11, 58, 55, tzinfo=UTC).timestamp()) * 1000,
        hash_algorithm="sha256",
        hashed_message=HELLO,
        serial_number=686758101025552741671190982006166081499178774174,
        policy="1.3.6.1.4.1.57264.2",
        certificates=(chain[0],),
    )
    assert parse_token(_vector("response-no-embedded-cert.token.der")).certificates == ()
    assert parse_token(_vector("response-sha384.token.der")).hash_algorithm == "sha384"


@needs_vectors
def test_timestamp_response_is_not_a_token(chain: tuple[bytes, bytes]) -> None:
    """Evidence carries bare tokens (spec §3); the TimeStampResp wrapper is refused."""
    result = verify_token(_vector("response-sha256.tsr"), HELLO, [chain[0]], [chain[1]])
    assert result.token_problems and result.gen_time_ms is None
    with pytest.raises(TimestampError):
        parse_token(_vector("response-sha256.tsr"))


@needs_vectors
def test_crls_field_is_refused(chain: tuple[bytes, bytes]) -> None:
    """An empty [0] certificates turned into an empty [1] crls: still a token problem."""
    der = _vector("response-no-embedded-cert.token.der")
    at = der.index(b"\xa0\x00\x31")
    tampered = der[:at] + b"\xa1" + der[at + 1 :]
    result = verify_token(tampered, HELLO, [chain[0]], [chain[1]])
    assert any("crls" in p for p in result.token_problems), result.token_problems


# ---------------------------------------------------------------------------- test TSA


def test_test_tsa_token_verifies(tsa: TestTsa, token: bytes) -> None:
    for roots in ([], [tsa.root_cert_der], [tsa.tsa_cert_der]):  # a listed root counts
        result = verify_token(token, DIGEST, [tsa.tsa_cert_der], roots)
        assert result.ok, result
        assert result.gen_time_ms == GEN_MS
        assert result.tsa_certificate == tsa.tsa_cert_der
    info = parse_token(token)
    assert (info.policy, info.serial_number, info.hash_algorithm) == (TEST_POLICY_OID, 7, "sha256")
    assert info.hashed_message == DIGEST and info.certificates == (tsa.tsa_cert_der,)


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, b"19700101000000Z"),
        (1, b"19700101000000.001Z"),
        (120, b"19700101000000.12Z"),  # RFC 3161 §2.4.2: no trailing zeros
        (500, b"19700101000000.5Z"),
        (GEN_MS, b"20250509115855.123Z"),
        (GEN_MS - 123, b"20250509115855Z"),
        (4_102_444_799_999, b"20991231235959.999Z"),
    ],
)
def test_gen_time_round_trip(tsa: TestTsa, ms: int, text: bytes) -> None:
    der = tsa.issue(DIGEST, ms, 1)
    assert b"\x18" + bytes([len(text)]) + text in der
    assert parse_token(der).gen_time_ms == ms


@pytest.mark.parametrize(
    ("raw", "ms"),
    [
        (b"20250509115855Z", 1_746_791_935_000),
        (b"20250509115855.1Z", 1_746_791_935_100),
        (b"20250509115855.1239Z", 1_746_791_935_123),  # sub-millisecond digits: floor
        (b"20250509115855.0009Z", 1_746_791_935_000),
    ],
)
def test_gen_time_parsing(raw: bytes, ms: int) -> None:
    assert _parse_gen_time(raw).ms == ms


@pytest.mark.parametrize(
    "raw",
    [b"20250509115855.10Z", b"20250509115855", b"202505091158Z", b"20250509115855+0000",
     b"20250230115855Z", b"20250509115855,1Z", b"20250509115860Z"],
)  # fmt: skip
def test_gen_time_rejected(raw: bytes) -> None:
    with pytest.raises(TimestampError):
        _parse_gen_time(raw)


def test_same_inputs_same_bytes(tsa: TestTsa, token: bytes) -> None:
    twin = TestTsa(SEED)
    assert twin.tsa_cert_der == tsa.tsa_cert_der and twin.root_cert_der == tsa.root_cert_der
    assert twin.issue(DIGEST, GEN_MS, 7) == token
    assert tsa.issue(DIGEST, GEN_MS, 8) != token
    assert TestTsa(bytes(32)).tsa_cert_der != tsa.tsa_cert_der
    assert tsa.root_pem.startswith(b"-----BEGIN CERTIFICATE-----")


# Each knob breaks one rule: (constructor kwargs, issue kwargs, token ok, imprint ok, words)
KNOBS = [
    ({}, {}, True, True, ""),
    ({"eku": False}, {}, False, True, "extendedKeyUsage"),
    ({"eku_critical": False}, {}, False, True, "non-critical"),
    ({"eku_extra_purposes": (SERVER_AUTH,)}, {}, False, True, "only"),
    ({"not_after_ms": GEN_MS - 1_000}, {}, False, True, "validity"),
    ({"not_before_ms": GEN_MS + 1_000}, {}, False, True, "validity"),
    ({"sid_key_identifier": True}, {}, True, True, ""),
    ({"accuracy_ms": None}, {}, True, True, ""),
    ({}, {"hash_algorithm": "sha384"}, True, False, "hashAlgorithm"),
    ({}, {"corrupt_signature": True}, False, True, "signature"),
    ({}, {"embed_certificate": False}, True, True, ""),
    ({}, {"signing_certificate": "v1"}, True, True, ""),
    ({}, {"signing_certificate": "none"}, False, True, "ESS"),
]


@pytest.mark.parametrize(("make", "issue", "token_ok", "imprint_ok", "words"), KNOBS)
def test_knobs(
    make: dict[str, object],
    issue: dict[str, object],
    token_ok: bool,
    imprint_ok: bool,
    words: str,
) -> None:
    tsa = TestTsa(SEED, **make)  # type: ignore[arg-type]
    der = tsa.issue(DIGEST, GEN_MS, 3, **issue)  # type: ignore[arg-type]
    result = verify_token(der, DIGEST, [tsa.tsa_cert_der], [tsa.root_cert_der])
    assert (not result.token_problems) is token_ok, result.token_problems
    assert (not result.imprint_problems) is imprint_ok, result.imprint_problems
    problems = " ".join(result.token_problems + result.imprint_problems)
    assert words in problems
    _assert_messages(result)


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, 2048)


KEY_TYPES = ["p256", "p384", "p521", "ed25519", "rsa", "rsa-pss"]


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_signature_algorithms(key_type: KeyType, rsa_key: rsa.RSAPrivateKey) -> None:
    """ECDSA P-256/384/521, Ed25519 (RFC 8419), RSA PKCS#1 v1.5 and RSA-PSS (RFC 4055)."""
    tsa = TestTsa(SEED, key_type=key_type, rsa_key=rsa_key)
    result = verify_token(tsa.issue(DIGEST, GEN_MS, 1), DIGEST, [tsa.tsa_cert_der], [tsa.root_cert_der])
    assert result.ok, result
    bad = verify_token(tsa.issue(DIGEST, GEN_MS, 1, corrupt_signature=True), DIGEST, [tsa.tsa_cert_der])
    assert [p for p in bad.token_problems if "SignerInfo signature" in p], bad
    assert not bad.imprint_problems


def test_validity_edges() -> None:
    """RFC 5280 validity is inclusive; a fraction past notAfter is after it."""
    tsa = TestTsa(SEED, not_before_ms=GEN_MS - 123, not_after_ms=GEN_MS - 123)
    at = GEN_MS - 123  # a whole second
    assert verify_token(tsa.issue(DIGEST, at, 1), DIGEST, [tsa.tsa_cert_der]).ok
    late = verify_token(tsa.issue(DIGEST, at + 1, 1), DIGEST, [tsa.tsa_cert_der])
    early = verify_token(tsa.issue(DIGEST, at - 1, 1), DIGEST, [tsa.tsa_cert_der])
    assert not late.ok and not early.ok


def test_wrong_digest_is_an_imprint_problem(tsa: TestTsa, token: bytes) -> None:
    result = verify_token(token, hashlib.sha256(b"another").digest(), [tsa.tsa_cert_der])
    assert not result.token_problems
    assert len(result.imprint_problems) == 1 and "hashedMessage" in result.imprint_problems[0]


def test_unlisted_certificate_is_a_token_problem(token: bytes) -> None:
    other = TestTsa(bytes(32))
    result = verify_token(token, DIGEST, [other.tsa_cert_der])  # token embeds its own cert
    assert not result.imprint_problems
    assert any("not listed" in p for p in result.token_problems), result.token_problems
    assert result.tsa_certificate is None
    assert not verify_token(token, DIGEST, []).ok


def test_chain_to_wrong_root_is_a_token_problem(tsa: TestTsa, token: bytes) -> None:
    other = TestTsa(bytes(32))
    result = verify_token(token, DIGEST, [tsa.tsa_cert_der], [other.root_cert_der])
    assert any("chain" in p for p in result.token_problems), result.token_problems
    assert not result.imprint_problems


def test_embedded_copy_of_listed_certificate_must_be_identical(tsa: TestTsa, token: bytes) -> None:
    """The certificate set is unsigned; a corrupt copy of the listed certificate is caught."""
    serial_at = token.index(tsa.tsa_cert_der) + 20  # inside the certificate's serialNumber
    tampered = token[:serial_at] + bytes([token[serial_at] ^ 1]) + token[serial_at + 1 :]
    result = verify_token(tampered, DIGEST, [tsa.tsa_cert_der], [tsa.root_cert_der])
    assert any("embedded certificate" in p for p in result.token_problems), result


# ---------------------------------------------------------------------------- bad input

CONTENT_INFO_DATA = cms.ContentInfo({"content_type": "data", "content": b"hello"}).dump()


@pytest.mark.parametrize(
    ("der", "words"),
    [
        (b"", "too short"),
        (b"\x00", "too short"),
        (b"\x30\x00", "ContentInfo elements"),
        (b"\x31\x00", "ContentInfo"),
        (b"\x30\x80\x00\x00", "indefinite"),
        (b"\x04\x81\x01\x00", "non-minimal length"),
        (b"\x02\x02\x00\x01", "non-minimal INTEGER"),
        (b"\x24\x03\x04\x01\x00", "constructed form"),
        (b"\x30\x03\x01\x01\x01", "BOOLEAN"),
        (CONTENT_INFO_DATA, "contentType"),
        (b"\x30\x82\x00\x03\x02\x01\x01", "non-minimal length"),
    ],
)
def test_malformed_input_is_a_token_problem(der: bytes, words: str) -> None:
    result = verify_token(der, DIGEST, [])
    assert result.gen_time_ms is None and not result.ok
    assert words in result.token_problems[0], result.token_problems
    assert result.imprint_problems  # an unreadable imprint is not a good one
    _assert_messages(result)
    with pytest.raises(TimestampError):
        parse_token(der)


@pytest.mark.parametrize("cut", [1, 2, 100, 500])
def test_truncated_and_padded_tokens(tsa: TestTsa, token: bytes, cut: int) -> None:
    for der in (token[:-cut], token[cut:], token + bytes(cut)):
        result = verify_token(der, DIGEST, [tsa.tsa_cert_der])
        assert not result.ok and result.token_problems


def test_wrong_argument_types_do_not_raise(tsa: TestTsa, token: bytes) -> None:
    assert not verify_token(None, DIGEST, [tsa.tsa_cert_der]).ok  # type: ignore[arg-type]
    assert not verify_token(token, None, [tsa.tsa_cert_der]).ok  # type: ignore[arg-type]
    assert not verify_token(token, DIGEST, [b"not a certificate"]).ok
    assert not verify_token(token, DIGEST, [tsa.tsa_cert_der], [b"junk"]).ok


# ---------------------------------------------------------------------------- properties


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_never_raise_nor_verify(der: bytes) -> None:
    result = verify_token(der, DIGEST, [_TSA.tsa_cert_der], [])
    assert not result.ok


@settings(max_examples=150, deadline=None)
@given(st.integers(0, len(_TOKEN) - 1), st.integers(1, 255))
def test_single_byte_changes_never_verify(position: int, xor: int) -> None:
    """Any one-byte change is caught, the unsigned parts included.

    Parts of a token are outside the signature (the certificate set, the SignedData and
    SignerInfo framing, the sid). A change there cannot forge a time, but it gives a
    second encoding of "the same" token; strict DER, exact tag layouts, byte-equal
    certificate copies and byte-equal sid names leave no such second encoding, so no
    single-byte change is semantically neutral and none may verify.
    """
    tampered = bytearray(_TOKEN)
    tampered[position] ^= xor
    result = verify_token(bytes(tampered), DIGEST, [_TSA.tsa_cert_der], [_TSA.root_cert_der])
    assert not result.ok, (position, xor)


def test_every_position_flipped() -> None:
    """The low bit of every byte in turn (a full 255-value sweep is in docs/rfc3161.md)."""
    for position in range(len(_TOKEN)):
        tampered = bytearray(_TOKEN)
        tampered[position] ^= 0x01
        assert not verify_token(bytes(tampered), DIGEST, [_TSA.tsa_cert_der]).ok, position


@needs_vectors
@settings(max_examples=60, deadline=None)
@given(st.data())
def test_single_byte_changes_of_sigstage_never_verify(data: st.DataObject) -> None:
    pem = (VECTORS / "sigstage-ts_chain.pem").read_bytes()
    tsa_der = x509.load_pem_x509_certificates(pem)[0].public_bytes(Encoding.DER)
    der = bytearray(_vector("response-sha256.token.der"))
    position = data.draw(st.integers(0, len(der) - 1))
    der[position] ^= data.draw(st.integers(1, 255))
    assert not verify_token(bytes(der), HELLO, [tsa_der]).ok


# ---------------------------------------------------------------------------- openssl


# `openssl ts -verify` goes through OpenSSL's PKCS#7 code, which has no RSA-PSS; the CMS
# code has. OpenSSL 3.0 can neither sign nor verify Ed25519 CMS with signed attributes.
OPENSSL_CASES = [
    (key_type, corrupt, "cms" if key_type == "rsa-pss" else "ts")
    for key_type in ("p256", "p384", "p521", "rsa", "rsa-pss")
    for corrupt in (False, True)
]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI not installed")
@pytest.mark.parametrize(("key_type", "corrupt", "command"), OPENSSL_CASES)
def test_openssl_agrees(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, key_type: KeyType, corrupt: bool, command: str
) -> None:
    """Cross-check with an independent verifier: ``openssl ts -verify`` (or ``cms -verify``)."""
    tsa = TestTsa(SEED, key_type=key_type, rsa_key=rsa_key)
    tmp_path.joinpath("tok.der").write_bytes(tsa.issue(DIGEST, GEN_MS, 11, corrupt_signature=corrupt))
    tmp_path.joinpath("root.pem").write_bytes(tsa.root_pem)
    tmp_path.joinpath("tsa.pem").write_bytes(tsa.tsa_pem)
    if command == "ts":
        argv = ["openssl", "ts", "-verify", "-token_in", "-in", "tok.der", "-digest",
                DIGEST.hex(), "-CAfile", "root.pem", "-untrusted", "tsa.pem"]  # fmt: skip
    else:
        argv = ["openssl", "cms", "-verify", "-inform", "DER", "-in", "tok.der", "-CAfile",
                "root.pem", "-certfile", "tsa.pem", "-purpose", "any", "-out", "/dev/null"]  # fmt: skip
    done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, check=False)
    assert (done.returncode == 0) is not corrupt, done.stderr
    if command == "ts" and not corrupt:
        assert "Verification: OK" in done.stdout
