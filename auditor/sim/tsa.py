"""A deterministic in-process time-stamp authority for the election simulator (spec §3).

:class:`TestTsa` issues bare RFC 3161 TimeStampTokens (DER ContentInfo of a CMS
SignedData, RFC 5652 §5) with a root CA and a TSA certificate derived from a 32-byte
seed. Everything is deterministic: keys and serial numbers come from the seed, ECDSA
signatures use RFC 6979 nonces, so the same seed and the same ``issue`` arguments give
the same bytes. Knobs break one rule at a time for tamper tests.

The tokens are assembled from precomputed DER pieces rather than through an ASN.1
library: the simulator issues about 100k of them, and only the imprint, the serial and
genTime change from one to the next. ``tests/test_rfc3161.py`` checks the result with
asn1crypto, with :mod:`auditor.crypto.rfc3161` and with ``openssl ts -verify``.

Policy OID: ``1.3.6.1.4.1.32473.3161.1``, under IANA's private enterprise number 32473,
which RFC 5612 reserves for documentation and examples. Sigstore's arc (57264, whose
``.2`` is its real TSA policy) is not ours to allocate from.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "DEFAULT_NOT_AFTER_MS",
    "DEFAULT_NOT_BEFORE_MS",
    "TEST_POLICY_OID",
    "TestTsa",
]

TEST_POLICY_OID = "1.3.6.1.4.1.32473.3161.1"  # RFC 5612 documentation PEN, see module doc
DEFAULT_NOT_BEFORE_MS = 946_684_800_000  # 2000-01-01T00:00:00Z
DEFAULT_NOT_AFTER_MS = 4_102_444_800_000  # 2100-01-01T00:00:00Z

_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_HASH_OIDS = {
    "sha1": "1.3.14.3.2.26",
    "sha256": "2.16.840.1.101.3.4.2.1",
    "sha384": "2.16.840.1.101.3.4.2.2",
    "sha512": "2.16.840.1.101.3.4.2.3",
}
_OID_SIGNED_DATA = "1.2.840.113549.1.7.2"
_OID_TST_INFO = "1.2.840.113549.1.9.16.1.4"
_OID_CONTENT_TYPE = "1.2.840.113549.1.9.3"
_OID_MESSAGE_DIGEST = "1.2.840.113549.1.9.4"
_OID_SIGNING_CERTIFICATE = "1.2.840.113549.1.9.16.2.12"
_OID_SIGNING_CERTIFICATE_V2 = "1.2.840.113549.1.9.16.2.47"
_P384_ORDER = (
    0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973
)
_P521_ORDER = int(
    "01FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFA51868783BF2F966B7FCC0148F709A5D"
    "03BB5C9B8899C47AEBB6FB71E91386409",
    16,
)
_OID_MGF1 = "1.2.840.113549.1.1.8"
# key type -> (curve and its order or None, CMS digest, signatureAlgorithm OID), RFC 5758 §3.2,
# RFC 4055 §5 and §3.1, RFC 8419 §3.1 (Ed25519 signs with SHA-512 as the CMS digest).
_KEY_TYPES: dict[str, tuple[tuple[ec.EllipticCurve, int] | None, str, str]] = {
    "p256": ((ec.SECP256R1(), _P256_ORDER), "sha256", "1.2.840.10045.4.3.2"),
    "p384": ((ec.SECP384R1(), _P384_ORDER), "sha384", "1.2.840.10045.4.3.3"),
    "p521": ((ec.SECP521R1(), _P521_ORDER), "sha512", "1.2.840.10045.4.3.4"),
    "ed25519": (None, "sha512", "1.3.101.112"),
    "rsa": (None, "sha256", "1.2.840.113549.1.1.11"),
    "rsa-pss": (None, "sha256", "1.2.840.113549.1.1.10"),
}
KeyType = Literal["p256", "p384", "p521", "ed25519", "rsa", "rsa-pss"]

# ---------------------------------------------------------------------------- DER


def _tlv(tag: int, content: bytes) -> bytes:
    """One DER element (X.690 §8.1): tag, definite minimal length, contents."""
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + content


def _seq(*parts: bytes) -> bytes:
    return _tlv(0x30, b"".join(parts))


def _set(*parts: bytes) -> bytes:
    """DER SET OF: elements in ascending order, shorter ones zero-padded (X.690 §11.6)."""
    width = max((len(p) for p in parts), default=0)

    def padded(part: bytes) -> bytes:
        return part.ljust(width, b"\x00")

    ordered: list[bytes] = sorted(parts, key=padded)
    return _tlv(0x31, b"".join(ordered))


def _int(value: int) -> bytes:
    return _tlv(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big", signed=True))


def _oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    body = bytearray()
    for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body += bytes(reversed(chunk))
    return _tlv(0x06, bytes(body))


def _octets(data: bytes) -> bytes:
    return _tlv(0x04, data)


def _algorithm(dotted: str) -> bytes:
    """AlgorithmIdentifier with parameters absent (RFC 5754 §2, RFC 5758 §3.2)."""
    return _seq(_oid(dotted))


def _gen_time(ms: int) -> bytes:
    """GeneralizedTime "YYYYMMDDhhmmss[.fff]Z", fraction without trailing zeros (§2.4.2)."""
    seconds, millis = divmod(ms, 1000)
    text = datetime.fromtimestamp(seconds, UTC).strftime("%Y%m%d%H%M%S")
    if millis:
        text += "." + f"{millis:03d}".rstrip("0")
    return _tlv(0x18, (text + "Z").encode("ascii"))


# ---------------------------------------------------------------------------- keys


def _derive_key(
    seed: bytes, label: bytes, curve: ec.EllipticCurve | None = None, order: int = _P256_ORDER
) -> ec.EllipticCurvePrivateKey:
    """sha256(seed ‖ label) mod the group order (expanded for P-521), never zero."""
    material = hashlib.sha256(seed + label).digest()
    if order.bit_length() > 256:
        material += (
            hashlib.sha256(seed + label + b"/2").digest() + hashlib.sha256(seed + label + b"/3").digest()
        )
    scalar = int.from_bytes(material, "big") % order
    return ec.derive_private_key(scalar or 1, curve or ec.SECP256R1())


def _derive_serial(seed: bytes, label: bytes) -> int:
    """A positive serial of at most 127 bits (RFC 5280 §4.1.2.2 allows 20 octets)."""
    return (int.from_bytes(hashlib.sha256(seed + label).digest()[:16], "big") >> 1) or 1


def _at(ms: int, *, round_up: bool) -> datetime:
    """A certificate time in whole seconds, rounded inward so validity stays within ms."""
    seconds = -(-ms // 1000) if round_up else ms // 1000
    return datetime.fromtimestamp(seconds, UTC)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "VoteTorrent test"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


# ---------------------------------------------------------------------------- the TSA


class TestTsa:
    """A deterministic test TSA: root CA, TSA certificate and token issuance.

    Certificate knobs (constructor): ``not_before_ms`` / ``not_after_ms`` bound the TSA
    certificate's validity (rounded inward to whole seconds); ``eku=False`` drops the
    extendedKeyUsage extension, ``eku_critical=False`` marks it non-critical and
    ``eku_extra_purposes`` adds purposes beside id-kp-timeStamping; ``sid_key_identifier``
    names the signer by subjectKeyIdentifier instead of issuer and serial.
    ``key_type`` picks the TSA key: ``p256`` (default), ``p384``, ``p521`` and ``ed25519``
    are derived from the seed; ``rsa`` (PKCS#1 v1.5) and ``rsa-pss`` need ``rsa_key``, and
    ``rsa-pss`` tokens differ from call to call (random salt). The root is always P-256.
    Token knobs are the keyword arguments of :meth:`issue`.
    """

    __test__ = False  # not a pytest test class, despite the name

    def __init__(
        self,
        seed: bytes,
        *,
        not_before_ms: int = DEFAULT_NOT_BEFORE_MS,
        not_after_ms: int = DEFAULT_NOT_AFTER_MS,
        eku: bool = True,
        eku_critical: bool = True,
        eku_extra_purposes: Sequence[str] = (),
        sid_key_identifier: bool = False,
        accuracy_ms: int | None = 1,
        key_type: KeyType = "p256",
        rsa_key: rsa.RSAPrivateKey | None = None,
    ) -> None:
        if len(seed) != 32:
            raise ValueError(f"TestTsa seed: got {len(seed)} bytes, expected 32")
        if accuracy_ms is not None and not 1 <= accuracy_ms <= 999:
            raise ValueError(f"accuracy_ms: got {accuracy_ms}, expected 1..999 (RFC 3161)")
        self._root_key = _derive_key(seed, b"votetorrent-test-tsa/root")
        curve, self._digest_name, self._signature_oid = _KEY_TYPES[key_type]
        self._key_type = key_type
        tsa_label = b"votetorrent-test-tsa/tsa"
        self._tsa_key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
        if curve is not None:
            self._tsa_key = _derive_key(seed, tsa_label, *curve)
        elif key_type == "ed25519":
            self._tsa_key = ed25519.Ed25519PrivateKey.from_private_bytes(
                hashlib.sha256(seed + tsa_label).digest()
            )
        elif rsa_key is None:
            raise ValueError(f"key_type {key_type!r} needs rsa_key (RSA keys cannot be derived)")
        else:
            self._tsa_key = rsa_key
        root_name = _name("VoteTorrent Test Root CA")
        root_public = self._root_key.public_key()
        tsa_public = self._tsa_key.public_key()
        self._root = (
            x509.CertificateBuilder()
            .subject_name(root_name)
            .issuer_name(root_name)
            .public_key(root_public)
            .serial_number(_derive_serial(seed, b"votetorrent-test-tsa/root-serial"))
            .not_valid_before(_at(DEFAULT_NOT_BEFORE_MS, round_up=True))
            .not_valid_after(_at(DEFAULT_NOT_AFTER_MS, round_up=False))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_public), False)
            .sign(self._root_key, hashes.SHA256(), ecdsa_deterministic=True)
        )
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name("VoteTorrent Test TSA"))
            .issuer_name(root_name)
            .public_key(tsa_public)
            .serial_number(_derive_serial(seed, b"votetorrent-test-tsa/tsa-serial"))
            .not_valid_before(_at(not_before_ms, round_up=True))
            .not_valid_after(_at(not_after_ms, round_up=False))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(tsa_public), False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_public), False)
        )
        if eku:
            purposes = [ExtendedKeyUsageOID.TIME_STAMPING]
            purposes += [x509.ObjectIdentifier(p) for p in eku_extra_purposes]
            builder = builder.add_extension(x509.ExtendedKeyUsage(purposes), eku_critical)
        self._tsa = builder.sign(self._root_key, hashes.SHA256(), ecdsa_deterministic=True)
        self._root_der = self._root.public_bytes(serialization.Encoding.DER)
        self._tsa_der = self._tsa.public_bytes(serialization.Encoding.DER)
        self._accuracy = b"" if accuracy_ms is None else _seq(_tlv(0x80, _int(accuracy_ms)[2:]))
        self._prepare(sid_key_identifier)
        self._sign = self._make_signer()

    def _prepare(self, sid_key_identifier: bool) -> None:
        """Precompute every DER piece that does not depend on digest, time or serial."""
        issuer = self._tsa.issuer.public_bytes()
        serial = _int(self._tsa.serial_number)
        # IssuerSerial ::= SEQUENCE { GeneralNames (directoryName [4] EXPLICIT), serial }
        issuer_serial = _seq(_seq(_tlv(0xA4, issuer)), serial)
        v2 = _seq(_seq(_octets(hashlib.sha256(self._tsa_der).digest()), issuer_serial))
        v1 = _seq(_seq(_octets(hashlib.sha1(self._tsa_der).digest()), issuer_serial))
        self._ess = {
            "v2": _seq(_oid(_OID_SIGNING_CERTIFICATE_V2), _set(_seq(v2))),
            "v1": _seq(_oid(_OID_SIGNING_CERTIFICATE), _set(_seq(v1))),
            "none": b"",
        }
        self._content_type_attr = _seq(_oid(_OID_CONTENT_TYPE), _set(_oid(_OID_TST_INFO)))
        self._md_attr_prefix = _oid(_OID_MESSAGE_DIGEST)
        if sid_key_identifier:  # RFC 5652 §5.3: version 3 with [0] subjectKeyIdentifier
            ski = self._tsa.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
            self._signer_prefix = _int(3) + _tlv(0x80, ski.value.key_identifier)
        else:
            self._signer_prefix = _int(1) + _seq(issuer, serial)
        digest_algorithm = _algorithm(_HASH_OIDS[self._digest_name])
        self._signer_prefix += digest_algorithm
        self._signature_algorithm = _signature_algorithm(self._signature_oid)
        self._sd_prefix = _int(3) + _set(digest_algorithm)
        self._certificates = _tlv(0xA0, self._tsa_der)  # [0] IMPLICIT SET OF Certificate
        self._tst_prefix = _int(1) + _oid(TEST_POLICY_OID)
        self._tst_info_oid = _oid(_OID_TST_INFO)
        self._signed_data_oid = _oid(_OID_SIGNED_DATA)
        self._imprint_algorithms = {name: _algorithm(oid) for name, oid in _HASH_OIDS.items()}

    # ------------------------------------------------------------------ properties

    @property
    def root_cert_der(self) -> bytes:
        """DER of the self-signed root CA certificate."""
        return self._root_der

    @property
    def tsa_cert_der(self) -> bytes:
        """DER of the TSA certificate: what an election lists (spec §4.2)."""
        return self._tsa_der

    @property
    def root_pem(self) -> bytes:
        """PEM of the root CA certificate (for ``openssl ts -verify -CAfile``)."""
        return self._root.public_bytes(serialization.Encoding.PEM)

    @property
    def tsa_pem(self) -> bytes:
        """PEM of the TSA certificate (for ``openssl ts -verify -untrusted``)."""
        return self._tsa.public_bytes(serialization.Encoding.PEM)

    # ------------------------------------------------------------------ issuance

    def issue(
        self,
        digest: bytes,
        gen_time_ms: int,
        serial: int,
        *,
        hash_algorithm: Literal["sha256", "sha384", "sha512", "sha1"] = "sha256",
        corrupt_signature: bool = False,
        embed_certificate: bool = True,
        signing_certificate: Literal["v2", "v1", "none"] = "v2",
    ) -> bytes:
        """A DER TimeStampToken over ``digest`` with genTime ``gen_time_ms`` (Unix ms UTC).

        ``digest`` is stamped as given under ``hash_algorithm`` (its length is not checked,
        so a tamper test can label a SHA-256 digest as SHA-384). ``corrupt_signature``
        flips the last bit of the ECDSA signature (the DER stays well formed);
        ``embed_certificate=False`` omits the certificate set;
        ``signing_certificate`` picks the ESS attribute (RFC 5035 v2, RFC 2634 v1, none).
        """
        if serial < 0:
            raise ValueError(f"serial: got {serial}, expected a non-negative integer")
        # RFC 3161 §2.4.2: TSTInfo
        imprint = _seq(self._imprint_algorithms[hash_algorithm], _octets(digest))
        tst_info = _seq(self._tst_prefix, imprint, _int(serial), _gen_time(gen_time_ms), self._accuracy)
        # RFC 5652 §5.3, §11; RFC 5035: signed attributes, signed as a DER SET OF (§5.4)
        tst_digest = hashlib.new(self._digest_name, tst_info).digest()
        message_digest = _seq(self._md_attr_prefix, _set(_octets(tst_digest)))
        attrs = [self._content_type_attr, message_digest]
        if self._ess[signing_certificate]:
            attrs.append(self._ess[signing_certificate])
        signed_set = _set(*attrs)
        signature = self._sign(signed_set)
        if corrupt_signature:
            signature = signature[:-1] + bytes([signature[-1] ^ 0x01])
        signer_info = _seq(
            self._signer_prefix,
            b"\xa0" + signed_set[1:],  # [0] IMPLICIT SET OF Attribute
            self._signature_algorithm,
            _octets(signature),
        )
        signed_data = _seq(
            self._sd_prefix,
            _seq(self._tst_info_oid, _tlv(0xA0, _octets(tst_info))),  # encapContentInfo
            self._certificates if embed_certificate else b"",
            _set(signer_info),
        )
        return _seq(self._signed_data_oid, _tlv(0xA0, signed_data))  # ContentInfo

    def _make_signer(self) -> Callable[[bytes], bytes]:
        """The signing function for the key type, its parameters built once.

        ECDSA uses RFC 6979 nonces (same input, same bytes); PSS uses a random salt.
        """
        key = self._tsa_key
        if isinstance(key, ec.EllipticCurvePrivateKey):
            by_name = {"sha256": hashes.SHA256(), "sha384": hashes.SHA384(), "sha512": hashes.SHA512()}
            ecdsa = ec.ECDSA(by_name[self._digest_name], deterministic_signing=True)
            return lambda data: key.sign(data, ecdsa)
        if isinstance(key, ed25519.Ed25519PrivateKey):
            return key.sign
        if self._key_type == "rsa-pss":
            pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
            return lambda data: key.sign(data, pss, hashes.SHA256())
        pkcs1 = padding.PKCS1v15()
        return lambda data: key.sign(data, pkcs1, hashes.SHA256())


def _signature_algorithm(oid: str) -> bytes:
    """The SignerInfo signatureAlgorithm for ``oid``, with its parameters."""
    if oid == "1.2.840.113549.1.1.11":  # sha256WithRSAEncryption: NULL parameters (RFC 4055 §5)
        return _seq(_oid(oid), b"\x05\x00")
    if oid == "1.2.840.113549.1.1.10":  # RSASSA-PSS-params: SHA-256, MGF1-SHA-256, salt 32
        sha256 = _algorithm(_HASH_OIDS["sha256"])
        params = _seq(_tlv(0xA0, sha256), _tlv(0xA1, _seq(_oid(_OID_MGF1), sha256)), _tlv(0xA2, _int(32)))
        return _seq(_oid(oid), params)
    return _algorithm(oid)  # ECDSA and Ed25519: parameters absent


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )
