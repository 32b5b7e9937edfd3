"""RFC 3161 timestamp tokens checked offline, on the standard library and PyNaCl alone.

The full audit verifies tokens with ``cryptography`` and ``asn1crypto``
(:mod:`auditor.crypto.rfc3161`, docs/rfc3161.md). A slice proof carries a handful of
tokens (receipt, block tree, result, the election's records) and must be checked on a
phone, so this module has its own strict DER reader, the X.509 fields a TSA check
needs, and the signature schemes TSAs use: ECDSA on P-256 and P-384 (short Weierstrass
arithmetic in Jacobian coordinates, plain Python integers), RSA PKCS#1 v1.5 with
SHA-256/384/512 (2048 bits or more) and Ed25519 (libsodium). What it checks, in order
(the numbers tag the blocks of :func:`verify_token`):

1. the token is strict DER: a ContentInfo of signedData (version 3) holding one
   SignerInfo (its version matching its sid, its digest algorithm listed in
   digestAlgorithms) and an encapsulated id-ct-TSTInfo of version 1; no CRLs;
2. the TSTInfo's messageImprint is (SHA-256, the record digest) (spec §3);
3. the signed attributes: content-type is id-ct-TSTInfo, message-digest is the digest
   of the TSTInfo octets, an ESS signing-certificate (v2 or v1) names the signer;
4. the signer (found by the SignerInfo's sid) is a certificate the election lists,
   byte for byte (spec §3, §4.2);
5. the signature over the DER SET OF signed attributes verifies with its key;
6. the certificate carries a critical extendedKeyUsage of id-kp-timeStamping alone,
   its keyUsage (if any) allows signatures, and it is valid at genTime;
7. with trust roots: it chains to one of them (each link's signature, validity at
   genTime and, for intermediates, cA) in at most 4 links.

Revocation is out of scope (spec §3). Not checked here (the full audit does): the DER
order of the signed attributes, an ESS issuerSerial, the TSTInfo ``tsa`` name, the
embedded certificates beyond their use as chain links (they are outside the signature
and prove nothing else), RSA-PSS and P-521 signatures (reported as "cannot be checked
offline").
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

from nacl.bindings import crypto_sign_open
from nacl.exceptions import BadSignatureError
from nacl.exceptions import CryptoError as NaclCryptoError

from auditor.slice.core import ProofError

__all__ = ["Certificate", "TokenCheck", "parse_certificate", "pem_certificates", "verify_token"]

# ---------------------------------------------------------------------------- DER (X.690 §10)

SEQUENCE, SET, OID_TAG, INTEGER, OCTETS, BITS, BOOLEAN, NULL = 0x30, 0x31, 0x06, 0x02, 0x04, 0x03, 0x01, 0x05
GENERALIZED_TIME, UTC_TIME = 0x18, 0x17


@dataclass(frozen=True)
class Tlv:
    """One DER element of ``data``: its tag, where its header starts and its contents lie."""

    tag: int
    data: bytes
    head: int
    start: int
    end: int

    @property
    def content(self) -> bytes:
        return self.data[self.start : self.end]

    @property
    def raw(self) -> bytes:
        return self.data[self.head : self.end]


def _read(data: bytes, pos: int, limit: int) -> Tlv:
    if pos + 2 > limit:
        raise ProofError("DER: an element is cut short")
    tag, length, p = data[pos], data[pos + 1], pos + 2
    if tag & 0x1F == 0x1F:
        raise ProofError("DER: a high tag number, which no element here uses")
    if length & 0x80:
        n = length & 0x7F
        if not 1 <= n <= 4 or p + n > limit or data[p] == 0:
            raise ProofError("DER: an indefinite or non-minimal length")
        length = int.from_bytes(data[p : p + n], "big")
        if length < 0x80:
            raise ProofError("DER: a non-minimal length")
        p += n
    if p + length > limit:
        raise ProofError("DER: an element runs past its container")
    return Tlv(tag, data, pos, p, p + length)


def parse_der(data: bytes, tag: int, what: str) -> Tlv:
    """The one element ``data`` holds, which must carry ``tag``."""
    element = _read(data, 0, len(data))
    if element.end != len(data):
        raise ProofError(f"DER: bytes after the {what}")
    return expect(element, tag, what)


def children(element: Tlv) -> list[Tlv]:
    if not element.tag & 0x20:
        raise ProofError(f"DER: element with tag {element.tag:#04x} is not constructed")
    out, pos = [], element.start
    while pos < element.end:
        child = _read(element.data, pos, element.end)
        out.append(child)
        pos = child.end
    return out


def expect(element: Tlv, tag: int, what: str) -> Tlv:
    if element.tag != tag:
        raise ProofError(f"DER: {what} has tag {element.tag:#04x}, expected {tag:#04x}")
    return element


def fields(element: Tlv, tag: int, what: str, low: int, high: int | None = None) -> list[Tlv]:
    """The children of a constructed element of ``tag``, between ``low`` and ``high`` of them."""
    items = children(expect(element, tag, what))
    if len(items) < low or (high is not None and len(items) > high):
        raise ProofError(f"DER: {what} has {len(items)} elements")
    return items


def oid(element: Tlv) -> str:
    body = expect(element, OID_TAG, "an OID").content
    if not body or body[-1] & 0x80:
        raise ProofError("DER: a malformed OID")
    arcs, value = [], 0
    for i, byte in enumerate(body):
        if value == 0 and byte == 0x80 and (i == 0 or not body[i - 1] & 0x80):
            raise ProofError("DER: a non-minimal OID arc")
        value = value << 7 | byte & 0x7F
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(a) for a in (first, arcs[0] - 40 * first, *arcs[1:]))


def integer(element: Tlv) -> int:
    body = expect(element, INTEGER, "an INTEGER").content
    if not body or (len(body) > 1 and (body[0], body[1] >> 7) in ((0, 0), (0xFF, 1))):
        raise ProofError("DER: a malformed INTEGER")
    return int.from_bytes(body, "big", signed=True)


def bits(element: Tlv) -> bytes:
    body = expect(element, BITS, "a BIT STRING").content
    if not body or body[0] != 0:
        raise ProofError("DER: a BIT STRING with unused bits where whole bytes are expected")
    return body[1:]


_GENERALIZED = re.compile(r"(\d{14})(?:\.(\d*[1-9]))?Z")


def time_ms(element: Tlv) -> int:
    """A UTCTime or GeneralizedTime as Unix milliseconds (fractions floored)."""
    text = element.content.decode("ascii", "replace")
    if element.tag == UTC_TIME and re.fullmatch(r"\d{12}Z", text):
        year = int(text[:2])
        text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"  # RFC 5280 §4.1.2.5.1
    elif element.tag != GENERALIZED_TIME:
        raise ProofError("DER: a time that is neither UTCTime nor GeneralizedTime")
    match = _GENERALIZED.fullmatch(text)
    if match is None:
        raise ProofError(f"DER: the time {text!r} is not YYYYMMDDhhmmss[.f]Z")
    try:
        moment = datetime.strptime(match.group(1), "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    except ValueError as e:
        raise ProofError(f"DER: the time {text!r} is not a real date") from e
    millis = int((match.group(2) or "0")[:3].ljust(3, "0"))
    return int(moment.timestamp()) * 1000 + millis


# ---------------------------------------------------------------------------- signatures

HASHES = {
    "2.16.840.1.101.3.4.2.1": "sha256",
    "2.16.840.1.101.3.4.2.2": "sha384",
    "2.16.840.1.101.3.4.2.3": "sha512",
}
SIGNATURE_HASH = {  # signature algorithm -> its hash (RFC 5758 §3.2, RFC 4055 §5); Ed25519: none
    "1.2.840.10045.4.3.2": "sha256",
    "1.2.840.10045.4.3.3": "sha384",
    "1.2.840.10045.4.3.4": "sha512",
    "1.2.840.113549.1.1.11": "sha256",
    "1.2.840.113549.1.1.12": "sha384",
    "1.2.840.113549.1.1.13": "sha512",
    "1.3.101.112": "",
}
BARE_KEY_ALGORITHMS = ("1.2.840.10045.2.1", "1.2.840.113549.1.1.1")  # take the CMS digestAlgorithm
EC_KEY, RSA_KEY, ED25519_KEY = "1.2.840.10045.2.1", "1.2.840.113549.1.1.1", "1.3.101.112"
# DigestInfo prefixes of EMSA-PKCS1-v1_5 (RFC 8017 §9.2 note 1)
_DIGEST_INFO = {
    "sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "sha384": bytes.fromhex("3041300d060960864801650304020205000430"),
    "sha512": bytes.fromhex("3051300d060960864801650304020305000440"),
}


@dataclass(frozen=True)
class Curve:
    """A short Weierstrass curve y² = x³ − 3x + b over GF(p) with a base point of order n."""

    name: str
    p: int
    b: int
    n: int
    gx: int
    gy: int

    @property
    def size(self) -> int:
        return (self.p.bit_length() + 7) // 8


CURVES = {  # SEC 2 §2.4.2 and §2.5.1 (FIPS 186-4 D.1.2.3-4)
    "1.2.840.10045.3.1.7": Curve(
        "P-256",
        p=0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF,
        b=0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B,
        n=0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
        gx=0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296,
        gy=0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5,
    ),
    "1.3.132.0.34": Curve(
        "P-384",
        p=int(
            "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFFFF0000000000000000FFFFFFFF",
            16,
        ),
        b=int(
            "B3312FA7E23EE7E4988E056BE3F82D19181D9C6EFE8141120314088F5013875AC656398D8A2ED19D2A85C8EDD3EC2AEF",
            16,
        ),
        n=int(
            "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973",
            16,
        ),
        gx=int(
            "AA87CA22BE8B05378EB1C71EF320AD746E1D3B628BA79B9859F741E082542A385502F25DBF55296C3A545E3872760AB7",
            16,
        ),
        gy=int(
            "3617DE4A96262C6F5D9E98BF9292DC29F8F41DBD289A147CE9DA3113B5F0B8C00A60B1CE1D7E819D7A431D7C90EA0E5F",
            16,
        ),
    ),
}

Jacobian = tuple[int, int, int]  # (X, Y, Z) for x = X/Z², y = Y/Z³; Z = 0 is the point at infinity
INFINITY: Jacobian = (1, 1, 0)


def _double(c: Curve, pt: Jacobian) -> Jacobian:
    x, y, z = pt
    if z == 0 or y == 0:
        return INFINITY
    p = c.p
    delta, gamma = z * z % p, y * y % p
    beta = x * gamma % p
    alpha = 3 * (x - delta) * (x + delta) % p  # a = −3
    x3 = (alpha * alpha - 8 * beta) % p
    z3 = ((y + z) ** 2 - gamma - delta) % p
    y3 = (alpha * (4 * beta - x3) - 8 * gamma * gamma) % p
    return x3, y3, z3


def _add(c: Curve, a: Jacobian, b: Jacobian) -> Jacobian:
    if a[2] == 0:
        return b
    if b[2] == 0:
        return a
    p = c.p
    x1, y1, z1 = a
    x2, y2, z2 = b
    z1z1, z2z2 = z1 * z1 % p, z2 * z2 % p
    u1, u2 = x1 * z2z2 % p, x2 * z1z1 % p
    s1, s2 = y1 * z2 * z2z2 % p, y2 * z1 * z1z1 % p
    if u1 == u2:
        return _double(c, a) if s1 == s2 else INFINITY
    h, r = (u2 - u1) % p, (s2 - s1) % p
    hh = h * h % p
    hhh, v = h * hh % p, u1 * hh % p
    x3 = (r * r - hhh - 2 * v) % p
    y3 = (r * (v - x3) - s1 * hhh) % p
    return x3, y3, h * z1 * z2 % p


def _on_curve(c: Curve, x: int, y: int) -> bool:
    return 0 <= x < c.p and 0 <= y < c.p and (y * y - (x * x * x - 3 * x + c.b)) % c.p == 0


def _ec_point(c: Curve, encoded: bytes) -> tuple[int, int] | None:
    """An uncompressed (04) or compressed (02/03) SEC 1 point on the curve, else None."""
    size = c.size
    if len(encoded) == 1 + 2 * size and encoded[0] == 4:
        x, y = int.from_bytes(encoded[1 : 1 + size], "big"), int.from_bytes(encoded[1 + size :], "big")
    elif len(encoded) == 1 + size and encoded[0] in (2, 3):
        x = int.from_bytes(encoded[1:], "big")
        if x >= c.p:
            return None
        y = pow((x * x * x - 3 * x + c.b) % c.p, (c.p + 1) // 4, c.p)  # p ≡ 3 (mod 4) for both curves
        if y & 1 != encoded[0] & 1:
            y = c.p - y
    else:
        return None
    return (x, y) if _on_curve(c, x, y) else None


def ecdsa_verify(c: Curve, point: bytes, digest: bytes, signature: bytes) -> bool:
    """ECDSA verification (SEC 1 §4.1.4) of a DER Ecdsa-Sig-Value over a message digest."""
    q = _ec_point(c, point)
    try:
        r_el, s_el = fields(
            parse_der(signature, SEQUENCE, "the ECDSA signature"), SEQUENCE, "signature", 2, 2
        )
        r, s = integer(r_el), integer(s_el)
    except ProofError:
        return False
    if q is None or not (0 < r < c.n and 0 < s < c.n):
        return False
    e = int.from_bytes(digest, "big") >> max(0, 8 * len(digest) - c.n.bit_length())
    w = pow(s, -1, c.n)
    u1, u2 = e * w % c.n, r * w % c.n
    g: Jacobian = (c.gx, c.gy, 1)
    qj: Jacobian = (q[0], q[1], 1)
    both = _add(c, g, qj)
    acc = INFINITY
    for i in range(max(u1.bit_length(), u2.bit_length()) - 1, -1, -1):  # Shamir's trick
        acc = _double(c, acc)
        pick = (u1 >> i & 1, u2 >> i & 1)
        if pick == (1, 1):
            acc = _add(c, acc, both)
        elif pick == (1, 0):
            acc = _add(c, acc, g)
        elif pick == (0, 1):
            acc = _add(c, acc, qj)
    x, _, z = acc
    if z == 0:
        return False
    return x * pow(z * z, -1, c.p) % c.p % c.n == r


def rsa_verify(n: int, e: int, hash_name: str, data: bytes, signature: bytes) -> bool:
    """RSASSA-PKCS1-v1_5 verification (RFC 8017 §8.2.2), keys of 2048 bits or more."""
    k = (n.bit_length() + 7) // 8
    if n.bit_length() < 2048 or len(signature) != k or hash_name not in _DIGEST_INFO:
        return False
    s = int.from_bytes(signature, "big")
    if s >= n:
        return False
    t = _DIGEST_INFO[hash_name] + hashlib.new(hash_name, data).digest()
    expected = b"\x00\x01" + b"\xff" * (k - len(t) - 3) + b"\x00" + t
    return pow(s, e, n).to_bytes(k, "big") == expected


def ed25519_verify(key: bytes, data: bytes, signature: bytes) -> bool:
    if len(key) != 32 or len(signature) != 64:
        return False
    try:
        crypto_sign_open(signature + data, key)
    except (BadSignatureError, NaclCryptoError, ValueError, TypeError):
        return False
    return True


# ---------------------------------------------------------------------------- X.509 (RFC 5280)

EXT_KEY_USAGE, KEY_USAGE, BASIC_CONSTRAINTS, SUBJECT_KEY_ID = (
    "2.5.29.37",
    "2.5.29.15",
    "2.5.29.19",
    "2.5.29.14",
)
TIME_STAMPING = "1.3.6.1.5.5.7.3.8"


@dataclass(frozen=True)
class Certificate:
    der: bytes
    tbs: bytes
    signature_algorithm: str
    signature: bytes
    serial: int
    issuer: bytes  # DER of the Name
    subject: bytes
    not_before: int  # Unix ms
    not_after: int
    key_algorithm: str
    key_parameters: str | None  # the named curve of an EC key
    key: bytes  # the subjectPublicKey bits
    extensions: dict[str, tuple[bool, bytes]]  # OID -> (critical, extnValue octets)

    def verifies(
        self, signature_algorithm: str, hash_name: str | None, data: bytes, signature: bytes
    ) -> bool:
        """Whether ``signature`` over ``data`` verifies under this certificate's key."""
        if self.key_algorithm == ED25519_KEY:
            return signature_algorithm == ED25519_KEY and ed25519_verify(self.key, data, signature)
        if hash_name not in ("sha256", "sha384", "sha512"):
            return False
        if self.key_algorithm == EC_KEY and self.key_parameters in CURVES:
            digest = hashlib.new(hash_name, data).digest()
            return ecdsa_verify(CURVES[self.key_parameters], self.key, digest, signature)
        if self.key_algorithm == RSA_KEY:
            try:
                n_el, e_el = fields(parse_der(self.key, SEQUENCE, "RSA key"), SEQUENCE, "RSA key", 2, 2)
                return rsa_verify(integer(n_el), integer(e_el), hash_name, data, signature)
            except ProofError:
                return False
        return False

    def issued(self, child: Certificate) -> bool:
        """Whether this certificate's key signed ``child``."""
        return _issued(self.der, child.der)

    def valid_at(self, ms: int) -> bool:
        return self.not_before <= ms <= self.not_after

    @property
    def is_ca(self) -> bool:
        critical_value = self.extensions.get(BASIC_CONSTRAINTS)
        if critical_value is None:
            return False
        items = children(parse_der(critical_value[1], SEQUENCE, "basicConstraints"))
        return bool(items) and items[0].tag == BOOLEAN and items[0].content == b"\xff"


@lru_cache(maxsize=64)
def parse_certificate(der: bytes) -> Certificate:
    """The fields of an X.509 certificate a TSA check needs; ProofError when malformed."""
    tbs, algorithm, signature = fields(parse_der(der, SEQUENCE, "certificate"), SEQUENCE, "certificate", 3, 3)
    items = fields(tbs, SEQUENCE, "tbsCertificate", 6)
    if items[0].tag == 0xA0:  # [0] EXPLICIT version
        items = items[1:]
    serial, _, issuer, validity, subject, spki = items[:6]
    extensions: dict[str, tuple[bool, bytes]] = {}
    for extra in items[6:]:
        if extra.tag != 0xA3:  # [1], [2]: unique identifiers, unused here
            continue
        (seq,) = fields(extra, 0xA3, "extensions", 1, 1)
        for ext in fields(seq, SEQUENCE, "extensions", 1):
            parts = fields(ext, SEQUENCE, "extension", 2, 3)
            critical = len(parts) == 3 and expect(parts[1], BOOLEAN, "critical").content == b"\xff"
            name = oid(parts[0])
            if name in extensions:
                raise ProofError(f"certificate: the extension {name} appears twice")
            extensions[name] = (critical, expect(parts[-1], OCTETS, "extnValue").content)
    not_before, not_after = fields(validity, SEQUENCE, "validity", 2, 2)
    key_algorithm, key_bits = fields(spki, SEQUENCE, "subjectPublicKeyInfo", 2, 2)
    key_parts = fields(key_algorithm, SEQUENCE, "key algorithm", 1, 2)
    return Certificate(
        der=der,
        tbs=tbs.raw,
        signature_algorithm=oid(fields(algorithm, SEQUENCE, "signatureAlgorithm", 1, 2)[0]),
        signature=bits(signature),
        serial=integer(serial),
        issuer=expect(issuer, SEQUENCE, "issuer").raw,
        subject=expect(subject, SEQUENCE, "subject").raw,
        not_before=time_ms(not_before),
        not_after=time_ms(not_after),
        key_algorithm=oid(key_parts[0]),
        key_parameters=oid(key_parts[1]) if len(key_parts) == 2 and key_parts[1].tag == OID_TAG else None,
        key=bits(key_bits),
        extensions=extensions,
    )


@lru_cache(maxsize=64)
def _issued(issuer_der: bytes, child_der: bytes) -> bool:
    issuer, child = parse_certificate(issuer_der), parse_certificate(child_der)
    algorithm = child.signature_algorithm
    if algorithm not in SIGNATURE_HASH or child.issuer != issuer.subject:
        return False
    return issuer.verifies(algorithm, SIGNATURE_HASH[algorithm] or None, child.tbs, child.signature)


def pem_certificates(text: str) -> list[bytes]:
    """The DER certificates of a PEM file (RFC 7468)."""
    found = re.findall(r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", text, re.S)
    try:
        return [base64.b64decode("".join(block.split()), validate=True) for block in found]
    except ValueError as e:
        raise ProofError(f"a PEM certificate is not base64: {e}") from e


def _purpose_problems(cert: Certificate) -> list[str]:
    problems = []
    eku = cert.extensions.get(EXT_KEY_USAGE)
    if eku is None or not eku[0]:
        problems.append("the TSA certificate has no critical extendedKeyUsage (RFC 3161 §2.3)")
    else:
        purposes = [oid(p) for p in children(parse_der(eku[1], SEQUENCE, "extendedKeyUsage"))]
        if purposes != [TIME_STAMPING]:
            problems.append(f"the TSA certificate's purposes are {purposes}, expected timeStamping alone")
    usage = cert.extensions.get(KEY_USAGE)
    if usage is not None:
        flags = expect(parse_der(usage[1], BITS, "keyUsage"), BITS, "keyUsage").content[1:2] or b"\x00"
        if not flags[0] & 0xC0:  # digitalSignature (bit 0) or nonRepudiation (bit 1)
            problems.append("the TSA certificate's keyUsage does not allow signatures")
    return problems


# ---------------------------------------------------------------------------- tokens

SIGNED_DATA, TST_INFO = "1.2.840.113549.1.7.2", "1.2.840.113549.1.9.16.1.4"
CONTENT_TYPE, MESSAGE_DIGEST = "1.2.840.113549.1.9.3", "1.2.840.113549.1.9.4"
SIGNING_CERTIFICATE, SIGNING_CERTIFICATE_V2 = "1.2.840.113549.1.9.16.2.12", "1.2.840.113549.1.9.16.2.47"


@dataclass(frozen=True)
class TokenCheck:
    """The outcome of one token: ``gen_time`` (Unix ms) only when ``problems`` is empty."""

    gen_time: int | None
    problems: tuple[str, ...]
    tsa: str = ""  # the TSA certificate's subject, shortened, for messages


def verify_token(
    token: bytes, digest: bytes, listed: Sequence[bytes], roots: Sequence[bytes] = ()
) -> TokenCheck:
    """Check one bare TimeStampToken over a record digest (see the module docstring)."""
    try:
        return _verify(token, digest, listed, roots)
    except ProofError as e:
        return TokenCheck(None, (f"the token cannot be read: {e}",))
    except Exception as e:  # never raise, whatever the bytes
        return TokenCheck(None, (f"the token cannot be read ({type(e).__name__})",))


def _algorithm_oid(element: Tlv, what: str) -> str:
    parts = fields(element, SEQUENCE, what, 1, 2)
    if len(parts) == 2 and parts[1].tag != NULL:
        raise ProofError(f"{what} has parameters where none are expected")
    return oid(parts[0])


def _verify(token: bytes, digest: bytes, listed: Sequence[bytes], roots: Sequence[bytes]) -> TokenCheck:
    # 1. ContentInfo { signedData, [0] SignedData { version, digestAlgorithms, eContentInfo,
    #    [0] certificates?, signerInfos } } (RFC 5652 §3, §5.1), one SignerInfo (RFC 3161 §2.4.1)
    content_type, explicit = fields(parse_der(token, SEQUENCE, "ContentInfo"), SEQUENCE, "ContentInfo", 2, 2)
    if oid(content_type) != SIGNED_DATA:
        raise ProofError("the ContentInfo is not signedData")
    (signed_data,) = fields(explicit, 0xA0, "[0] content", 1, 1)
    parts = fields(signed_data, SEQUENCE, "SignedData", 4, 5)
    version, digest_algorithms, encapsulated, *rest = parts
    if integer(version) != 3:
        raise ProofError("SignedData version is not 3")
    listed_digests = {
        _algorithm_oid(a, "digestAlgorithm") for a in children(expect(digest_algorithms, SET, "x"))
    }
    embedded = [c.raw for c in children(rest[0])] if rest[0].tag == 0xA0 else []
    if rest[0].tag not in (0xA0, SET) or (len(rest) == 2 and rest[0].tag != 0xA0):
        raise ProofError("SignedData holds CRLs or unknown fields (revocation data is refused)")
    signer_infos = fields(rest[-1], SET, "signerInfos", 1)
    if len(signer_infos) != 1:
        raise ProofError(f"{len(signer_infos)} SignerInfos, expected exactly one")
    e_type, e_content = fields(encapsulated, SEQUENCE, "encapContentInfo", 2, 2)
    if oid(e_type) != TST_INFO:
        raise ProofError("the encapsulated content is not a TSTInfo")
    (octets,) = fields(e_content, 0xA0, "eContent", 1, 1)
    tst_der = expect(octets, OCTETS, "eContent").content
    tst = fields(parse_der(tst_der, SEQUENCE, "TSTInfo"), SEQUENCE, "TSTInfo", 5)
    if integer(tst[0]) != 1:
        raise ProofError("TSTInfo version is not 1")
    imprint_algorithm, hashed = fields(tst[2], SEQUENCE, "messageImprint", 2, 2)
    gen_time = time_ms(expect(tst[4], GENERALIZED_TIME, "genTime"))
    problems: list[str] = []
    # 2. the imprint is (SHA-256, the record digest) (spec §3)
    if HASHES.get(_algorithm_oid(imprint_algorithm, "imprint algorithm")) != "sha256":
        problems.append("the token's imprint is not a SHA-256 hash")
    if expect(hashed, OCTETS, "hashedMessage").content != digest:
        problems.append("the token stamps another record (its imprint is not this record's digest)")
    # 3. SignerInfo { version, sid, digestAlgorithm, [0] signedAttrs, signatureAlgorithm, signature }
    info = fields(signer_infos[0], SEQUENCE, "SignerInfo", 6, 7)
    signer_version, sid, digest_algorithm, attrs, signature_algorithm, signature = info[:6]
    if integer(signer_version) != (1 if sid.tag == SEQUENCE else 3):  # RFC 5652 §5.3
        raise ProofError("the SignerInfo version does not match its sid")
    if len(info) == 7 and info[6].tag != 0xA1:
        raise ProofError("the SignerInfo ends with an unknown field")
    digest_oid = _algorithm_oid(digest_algorithm, "digestAlgorithm")
    if digest_oid not in listed_digests:
        raise ProofError("the SignerInfo's digest algorithm is not among SignedData's digestAlgorithms")
    hash_name = HASHES.get(digest_oid)
    if hash_name is None:
        return TokenCheck(None, (*problems, "the token's digest algorithm cannot be checked offline"))
    attributes: dict[str, list[Tlv]] = {}
    for attribute in fields(attrs, 0xA0, "signedAttrs", 1):
        kind, values = fields(attribute, SEQUENCE, "Attribute", 2, 2)
        name = oid(kind)
        if name in attributes:
            raise ProofError(f"the signed attribute {name} appears twice")
        attributes[name] = fields(values, SET, "attribute values", 1)
    content_types = attributes.get(CONTENT_TYPE, [])
    if len(content_types) != 1 or oid(content_types[0]) != TST_INFO:
        problems.append("the signed content-type attribute is not id-ct-TSTInfo")
    digests = attributes.get(MESSAGE_DIGEST, [])
    if (
        len(digests) != 1
        or expect(digests[0], OCTETS, "messageDigest").content != hashlib.new(hash_name, tst_der).digest()
    ):
        problems.append("the signed message-digest is not the digest of the TSTInfo (it was altered)")
    # 4. the signer is a certificate the election lists, found by issuer and serial or key id
    cert = _signer(sid, listed)
    if cert is None:
        return TokenCheck(
            None, (*problems, "the token is not signed by a TSA certificate the election lists")
        )
    tsa = _subject_name(cert)
    problems += _ess_problems(attributes, cert)
    # 5. the signature over the DER SET OF signed attributes (RFC 5652 §5.4)
    algorithm = _algorithm_oid(signature_algorithm, "signatureAlgorithm")
    if algorithm in BARE_KEY_ALGORITHMS:
        named: str | None = hash_name
    elif algorithm in SIGNATURE_HASH:
        named = SIGNATURE_HASH[algorithm] or None
        if named is not None and named != hash_name:
            problems.append("the signature algorithm's hash is not the digest algorithm")
    else:
        return TokenCheck(None, (*problems, f"the signature algorithm {algorithm} cannot be checked offline"))
    signed = bytes([SET]) + attrs.data[attrs.head + 1 : attrs.end]
    if not cert.verifies(algorithm, named, signed, expect(signature, OCTETS, "signature").content):
        problems.append(f"the TSA's signature ({tsa}) does not verify")
    # 6. the certificate's purpose and validity at genTime (spec §3)
    problems += _purpose_problems(cert)
    if not cert.valid_at(gen_time):
        moment = datetime.fromtimestamp(gen_time // 1000, UTC).isoformat()
        problems.append(f"the TSA certificate is not valid at the token's time ({moment})")
    # 7. with roots, a chain to one of them
    if roots and not _chains(cert, embedded, roots, gen_time):
        problems.append(f"the TSA certificate ({tsa}) does not chain to a root of your trust file")
    return TokenCheck(None if problems else gen_time, tuple(problems), tsa)


def _signer(sid: Tlv, listed: Sequence[bytes]) -> Certificate | None:
    for der in listed:
        try:
            cert = parse_certificate(der)
        except ProofError:
            continue
        if sid.tag == SEQUENCE:
            issuer, serial = fields(sid, SEQUENCE, "issuerAndSerialNumber", 2, 2)
            if issuer.raw == cert.issuer and integer(serial) == cert.serial:
                return cert
        elif sid.tag == 0x80 and SUBJECT_KEY_ID in cert.extensions:
            key_id = parse_der(cert.extensions[SUBJECT_KEY_ID][1], OCTETS, "subjectKeyIdentifier")
            if key_id.content == sid.content:
                return cert
    return None


def _ess_problems(attributes: dict[str, list[Tlv]], cert: Certificate) -> list[str]:
    """RFC 5035 / RFC 2634: the first ESSCertID's hash is the hash of the signer certificate."""
    found = []
    for name in (SIGNING_CERTIFICATE_V2, SIGNING_CERTIFICATE):
        for value in attributes.get(name, []):
            certs = fields(fields(value, SEQUENCE, "SigningCertificate", 1, 2)[0], SEQUENCE, "certs", 1)
            first = fields(certs[0], SEQUENCE, "ESSCertID", 1, 3)
            hash_name = "sha1"
            if name == SIGNING_CERTIFICATE_V2:
                hash_name = "sha256"
                if first[0].tag == SEQUENCE:
                    hash_name = HASHES.get(_algorithm_oid(first[0], "ESS hash"), "")
                    first = first[1:]
            matches = bool(hash_name) and (
                expect(first[0], OCTETS, "certHash").content == hashlib.new(hash_name, cert.der).digest()
            )
            found.append(matches)
    if not found:
        return ["the token has no ESS signing-certificate attribute (RFC 3161 §2.4.1)"]
    return [] if all(found) else ["the ESS signing-certificate attribute names another certificate"]


def _chains(cert: Certificate, embedded: Sequence[bytes], roots: Sequence[bytes], at: int) -> bool:
    pool = []
    for der in [*roots, *embedded]:
        try:
            pool.append(parse_certificate(der))
        except ProofError:
            continue
    current = cert
    for _ in range(4):
        if current.der in roots:
            return current.valid_at(at)
        issuer = next((c for c in pool if c.issued(current) and c.valid_at(at)), None)
        if issuer is None:
            return False
        if issuer.der in roots:
            return True
        if not issuer.is_ca:
            return False
        current = issuer
    return False


def _subject_name(cert: Certificate) -> str:
    """The common name (2.5.4.3) of the certificate's subject, for messages."""
    try:
        for rdn in children(parse_der(cert.subject, SEQUENCE, "Name")):
            for pair in children(rdn):
                kind, value = children(pair)
                if oid(kind) == "2.5.4.3":
                    return value.content.decode("utf-8", "replace")
    except (ProofError, ValueError):
        pass
    return "unnamed TSA"
