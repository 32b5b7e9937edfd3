"""RFC 3161 time-stamp tokens: parse and verify the ``timestamps`` of an envelope (spec §3).

A token is the DER ``ContentInfo`` of a CMS ``SignedData`` (RFC 5652 §3, §5) whose
encapsulated content is a ``TSTInfo`` (RFC 3161 §2.4.2), without the ``TimeStampResp``
status wrapper. This module is pure: no file system, no network, no clock. The time at
which certificates must be valid is the token's own ``genTime``; the trust inputs (the
TSA certificates the election lists, spec §4.2, and optional roots) are parameters.

:func:`verify_token` never raises: it returns a :class:`TokenVerification` whose two
problem lists feed the check ids TSA-TOKEN (the CMS signature and the certificate) and
TSA-IMPRINT (the messageImprint). :func:`parse_token` reads a token without verifying
it and raises :class:`~auditor.errors.TimestampError` on anything malformed.

Parsing uses asn1crypto; the signature and certificate mathematics use ``cryptography``.
The decisions where spec §3 and RFC 3161 leave room are in ``docs/rfc3161.md``.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from asn1crypto import algos, cms, core, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import ExtendedKeyUsageOID

from auditor.errors import TimestampError
from auditor.limits import MAX_CERT_CHAIN, MAX_DER_DEPTH, MAX_TOKEN_BYTES

__all__ = ["TokenInfo", "TokenVerification", "parse_token", "verify_token"]

# ---------------------------------------------------------------------------- OIDs

_OID_SIGNED_DATA = "1.2.840.113549.1.7.2"  # RFC 5652 §5.1
_OID_TST_INFO = "1.2.840.113549.1.9.16.1.4"  # RFC 3161 §2.4.2, id-ct-TSTInfo
_OID_CONTENT_TYPE = "1.2.840.113549.1.9.3"  # RFC 5652 §11.1
_OID_MESSAGE_DIGEST = "1.2.840.113549.1.9.4"  # RFC 5652 §11.2
_OID_SIGNING_CERTIFICATE = "1.2.840.113549.1.9.16.2.12"  # RFC 2634 §5.4
_OID_SIGNING_CERTIFICATE_V2 = "1.2.840.113549.1.9.16.2.47"  # RFC 5035 §3
_OID_SHA256 = "2.16.840.1.101.3.4.2.1"
_ESS_OIDS = (_OID_SIGNING_CERTIFICATE_V2, _OID_SIGNING_CERTIFICATE)
_SIGNED_DATA_OID_DER = bytes.fromhex("06092a864886f70d010702")
_TST_INFO_OID_DER = bytes.fromhex("060b2a864886f70d0109100104")
_OID_KP_TIME_STAMPING = ExtendedKeyUsageOID.TIME_STAMPING.dotted_string  # 1.3.6.1.5.5.7.3.8

# Digest algorithms accepted for the CMS message digest and the signature (RFC 5754 §2).
# SHA-1 and SHA-224 are not accepted there: a version 1 verifier has no reason to.
_SIGNATURE_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "2.16.840.1.101.3.4.2.1": hashes.SHA256,
    "2.16.840.1.101.3.4.2.2": hashes.SHA384,
    "2.16.840.1.101.3.4.2.3": hashes.SHA512,
}
# Any hash hashlib knows may identify the signer certificate in ESS (spec §3 is silent;
# RFC 2634 fixes SHA-1 for v1, RFC 5035 allows any for v2).
_HASHLIB_NAMES: dict[str, str] = {
    "1.3.14.3.2.26": "sha1",
    "2.16.840.1.101.3.4.2.4": "sha224",
    "2.16.840.1.101.3.4.2.1": "sha256",
    "2.16.840.1.101.3.4.2.2": "sha384",
    "2.16.840.1.101.3.4.2.3": "sha512",
    "2.16.840.1.101.3.4.2.5": "sha512_224",
    "2.16.840.1.101.3.4.2.6": "sha512_256",
    "2.16.840.1.101.3.4.2.7": "sha3_224",
    "2.16.840.1.101.3.4.2.8": "sha3_256",
    "2.16.840.1.101.3.4.2.9": "sha3_384",
    "2.16.840.1.101.3.4.2.10": "sha3_512",
}
# signatureAlgorithm of the SignerInfo -> (scheme, implied hash OID or None).
_SIGNATURE_ALGORITHMS: dict[str, tuple[str, str | None]] = {
    "1.2.840.10045.4.3.2": ("ecdsa", "2.16.840.1.101.3.4.2.1"),  # RFC 5758 §3.2
    "1.2.840.10045.4.3.3": ("ecdsa", "2.16.840.1.101.3.4.2.2"),
    "1.2.840.10045.4.3.4": ("ecdsa", "2.16.840.1.101.3.4.2.3"),
    "1.2.840.10045.2.1": ("ecdsa", None),  # id-ecPublicKey: hash from digestAlgorithm
    "1.2.840.113549.1.1.11": ("rsa", "2.16.840.1.101.3.4.2.1"),  # RFC 4055 §5
    "1.2.840.113549.1.1.12": ("rsa", "2.16.840.1.101.3.4.2.2"),
    "1.2.840.113549.1.1.13": ("rsa", "2.16.840.1.101.3.4.2.3"),
    "1.2.840.113549.1.1.1": ("rsa", None),  # rsaEncryption: hash from digestAlgorithm
    "1.2.840.113549.1.1.10": ("pss", None),  # RSASSA-PSS, hash from its parameters
    "1.3.101.112": ("ed25519", None),  # RFC 8419 §3.1
}
_EC_CURVES = frozenset({"secp256r1", "secp384r1", "secp521r1"})
_MIN_RSA_BITS = 2048
_MAX_DEPTH = MAX_DER_DEPTH  # ASN.1 nesting; a token nests about 15 deep
_MAX_CHAIN = MAX_CERT_CHAIN  # certificates above the TSA certificate

# RFC 3161 §2.4.2: "YYYYMMDDhhmmss[.s...]Z", no trailing zeros in the fraction.
_GEN_TIME = re.compile(rb"(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(?:\.(\d*[1-9]))?Z")


# ---------------------------------------------------------------------------- results


@dataclass(frozen=True)
class TokenInfo:
    """What a token says, read by :func:`parse_token` (not verified)."""

    gen_time_ms: int
    """genTime as integer Unix milliseconds UTC, sub-millisecond digits dropped (floor)."""
    hash_algorithm: str
    """The messageImprint hash, e.g. ``"sha256"`` (a dotted OID when unknown)."""
    hashed_message: bytes
    serial_number: int
    policy: str
    """The TSA policy, a dotted OID."""
    certificates: tuple[bytes, ...]
    """DER of the certificates embedded in the token, in token order."""


@dataclass(frozen=True)
class TokenVerification:
    """The outcome of :func:`verify_token`: data, not an exception.

    ``token_problems`` (check id TSA-TOKEN) and ``imprint_problems`` (TSA-IMPRINT) each
    read "checked X: got A, expected B"; empty means that part holds. When no TSTInfo
    can be read at all, both lists are non-empty: an unreadable imprint is not a good one.
    """

    gen_time_ms: int | None
    token_problems: tuple[str, ...]
    imprint_problems: tuple[str, ...]
    tsa_certificate: bytes | None
    """DER of the listed certificate that signed the token, when it was found."""

    @property
    def ok(self) -> bool:
        """True when the token and its imprint both verify."""
        return not self.token_problems and not self.imprint_problems


def _problem(what: str, got: object, expected: object) -> str:
    return f"checked {what}: got {got}, expected {expected}"


# ---------------------------------------------------------------------------- strict DER


class _DerError(ValueError):
    pass


def _der_check(data: bytes) -> None:
    """Raise :class:`_DerError` unless ``data`` is exactly one TLV in strict DER (X.690 §10).

    asn1crypto also reads BER (indefinite lengths, constructed strings, long-form short
    lengths); a verifier that accepted those would accept several encodings of one token.
    Large constructed elements (the embedded certificates) are checked once and cached.
    """
    if len(data) < 2:
        raise _DerError(f"{len(data)} bytes, too short for a TLV")
    header, length = _der_header(data, 0, len(data))
    if header + length != len(data):
        raise _DerError(f"{len(data)} bytes holding an element of {header + length} bytes")
    _der_walk(data, 0, len(data), 0)


def _der_walk(data: bytes, pos: int, end: int, depth: int) -> None:
    stack = [(pos, end, depth)]
    while stack:
        pos, end, depth = stack.pop()
        if depth > _MAX_DEPTH:
            raise _DerError(f"nesting deeper than {_MAX_DEPTH} at byte {pos}")
        while pos < end:
            tag = data[pos]
            if tag & 0x1F == 0x1F:
                raise _DerError(f"high-tag-number form at byte {pos}")
            header, length = _der_header(data, pos, end)
            start, stop = pos + header, pos + header + length
            if stop > end:
                raise _DerError(f"length {length} past the end at byte {pos}")
            constructed = bool(tag & 0x20)
            if tag & 0xC0 == 0:  # universal class: X.690 §8, §10.2
                _der_universal(data, tag & 0x1F, constructed, start, stop)
            if constructed:
                if 64 <= length <= 65_536:  # certificates, sid, ESS repeat from token to token
                    _der_cached(data[pos:stop], depth + 1)
                else:
                    stack.append((start, stop, depth + 1))
            pos = stop


def _der_header(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """(header size, contents length) of the TLV at ``pos``: definite, minimal (X.690 §10.1)."""
    if pos + 2 > end:
        raise _DerError(f"truncated header at byte {pos}")
    first = data[pos + 1]
    if first < 0x80:
        return 2, first
    if first == 0x80:
        raise _DerError(f"indefinite length at byte {pos}")
    n = first & 0x7F
    if n > 4 or pos + 2 + n > end:
        raise _DerError(f"bad length of length at byte {pos}")
    length = int.from_bytes(data[pos + 2 : pos + 2 + n], "big")
    if data[pos + 2] == 0 or length < 0x80:
        raise _DerError(f"non-minimal length at byte {pos}")
    return 2 + n, length


@functools.lru_cache(maxsize=256)
def _der_cached(element: bytes, depth: int) -> None:
    _der_walk(element, _der_header(element, 0, len(element))[0], len(element), depth)


def _der_universal(data: bytes, number: int, constructed: bool, start: int, stop: int) -> None:
    length = stop - start
    if number in (16, 17):  # SEQUENCE, SET
        if not constructed:
            raise _DerError(f"primitive SEQUENCE/SET at byte {start}")
        return
    if constructed:
        raise _DerError(f"constructed form of universal type {number} at byte {start}")
    if number == 0:
        raise _DerError(f"end-of-contents octets at byte {start}")
    if number == 1 and (length != 1 or data[start] not in (0x00, 0xFF)):
        raise _DerError(f"BOOLEAN not 00 or FF at byte {start}")
    if number in (2, 10):  # INTEGER, ENUMERATED: X.690 §8.3.2
        if length == 0:
            raise _DerError(f"empty INTEGER at byte {start}")
        if length > 1 and (
            (data[start] == 0 and data[start + 1] < 0x80) or (data[start] == 0xFF and data[start + 1] >= 0x80)
        ):
            raise _DerError(f"non-minimal INTEGER at byte {start}")
    if number == 5 and length != 0:
        raise _DerError(f"NULL with contents at byte {start}")
    if number == 6:  # OBJECT IDENTIFIER: X.690 §8.19.2
        if length == 0 or data[stop - 1] & 0x80:
            raise _DerError(f"truncated OBJECT IDENTIFIER at byte {start}")
        if not _oid_minimal(data[start:stop]):
            raise _DerError(f"non-minimal OBJECT IDENTIFIER at byte {start}")
    if number == 3 and (length == 0 or data[start] > 7 or (length == 1 and data[start])):
        raise _DerError(f"bad BIT STRING unused-bits octet at byte {start}")


def _oid_minimal(body: bytes) -> bool:
    """No subidentifier may start with the padding octet 0x80 (X.690 §8.19.2)."""
    previous = 0
    for byte in body:
        if byte == 0x80 and not previous & 0x80:
            return False
        previous = byte
    return True


def _set_of_sorted(elements: Sequence[bytes]) -> bool:
    """DER order of a SET OF (X.690 §11.6): ascending, shorter padded with zeros."""
    width = max((len(e) for e in elements), default=0)
    keys = [e.ljust(width, b"\x00") for e in elements]
    return all(a <= b for a, b in itertools.pairwise(keys))


# ---------------------------------------------------------------------------- parsing


class _GenTime(NamedTuple):
    seconds: int  # Unix seconds of the whole-second part
    fraction: str  # decimal digits after the point, no trailing zeros ("" for none)

    @property
    def ms(self) -> int:
        return self.seconds * 1000 + int((self.fraction + "000")[:3])

    def text(self) -> str:
        day = datetime.fromtimestamp(self.seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{day}{'.' + self.fraction if self.fraction else ''}Z"


class _Tlv(NamedTuple):
    tag: int
    start: int  # first byte of the header
    body: int  # first byte of the contents
    end: int


def _tlvs(data: bytes, start: int, end: int) -> list[_Tlv]:
    """The TLVs in ``data[start:end]``, which has already passed a DER check."""
    out = []
    while start < end:
        first = data[start + 1]
        n = first & 0x7F if first & 0x80 else 0
        length = int.from_bytes(data[start + 2 : start + 2 + n], "big") if n else first
        body = start + 2 + n
        if body + length > end:
            raise _DerError(f"element at byte {start} runs past its parent")
        out.append(_Tlv(data[start], start, body, body + length))
        start = body + length
    return out


def _child(data: bytes, parent: _Tlv, index: int) -> _Tlv:
    return _tlvs(data, parent.body, parent.end)[index]


@dataclass(frozen=True)
class _RawParts:
    """Exact received bytes of what is hashed, signed or compared byte for byte.

    asn1crypto's ``dump()`` may re-encode a value (it takes a header whose last byte is
    0x80, e.g. a length of 128, for an indefinite length), so these spans are cut from
    the input by our own walk of the already DER-checked token.
    """

    econtent: bytes  # the eContent octets: what the message-digest attribute hashes
    digest_algorithms: bytes  # the SignedData digestAlgorithms SET
    certificates: tuple[bytes, ...]
    crls: tuple[bytes, ...] | None  # RevocationInfoChoices (None: field absent)
    signed_data_version: bytes  # the INTEGER element
    signer_count: int
    # Of the one SignerInfo, when there is exactly one (else None / empty):
    signer: tuple[bytes, bytes, bytes, bytes] | None  # version, sid, digestAlg, signatureAlg
    signature: bytes  # the signature octets
    sid_issuer: bytes | None  # the Name in an issuerAndSerialNumber sid
    signed_attrs: bytes | None  # the [0] IMPLICIT SignedAttributes element
    attributes: tuple[tuple[bytes, bytes], ...]  # (type OID element, whole Attribute) each


class _Layout(NamedTuple):
    """The tags a structure's elements must carry: a regular expression, and in words."""

    pattern: re.Pattern[bytes]
    words: str


_LAYOUT_CONTENT_INFO = _Layout(re.compile(rb"\x06\xa0"), "OID, [0] (RFC 5652 §3)")
_LAYOUT_SIGNED_DATA = _Layout(
    re.compile(rb"\x02\x31\x30\xa0?\xa1?\x31"),
    "INTEGER, SET, SEQUENCE, optional [0] and [1], SET (RFC 5652 §5.1)",
)
_LAYOUT_ENCAP = _Layout(re.compile(rb"\x06\xa0"), "OID, [0] eContent (RFC 5652 §5.2, RFC 3161 §2.4.2)")
_LAYOUT_ATTRIBUTE = _Layout(re.compile(rb"\x06\x31"), "OID, SET (RFC 5652 §5.3)")
_LAYOUT_SIGNER_INFO = _Layout(
    re.compile(rb"\x02[\x30\x80]\x30\xa0?\x30\x04\xa1?"),
    "INTEGER, SEQUENCE or [0], SEQUENCE, optional [0], SEQUENCE, OCTET STRING, optional [1] (RFC 5652 §5.3)",
)


def _fields(der: bytes, parent: _Tlv, layout: _Layout, what: str) -> list[_Tlv]:
    """The elements of ``parent``, whose tags must match ``layout`` exactly."""
    fields = _tlvs(der, parent.body, parent.end)
    tags = bytes(t.tag for t in fields)
    if layout.pattern.fullmatch(tags) is None:
        got = f"tags {tags.hex(' ')}" if tags else "no elements"
        raise TimestampError(_problem(f"{what} elements", got, layout.words))
    return fields


def _raw_parts(der: bytes) -> _RawParts:
    """Check the tag layout of the token's CMS frame and cut its exact spans.

    asn1crypto is lenient about some tags it has not been asked to read yet; this walk
    is not: every element of ContentInfo, SignedData, EncapsulatedContentInfo and the
    SignerInfo must carry exactly the tag RFC 5652 gives it.
    """
    top = _tlvs(der, 0, len(der))[0]
    if top.tag != 0x30:
        raise TimestampError(_problem("ContentInfo", f"tag {top.tag:#04x}", "a SEQUENCE"))
    content_type, content = _fields(der, top, _LAYOUT_CONTENT_INFO, "ContentInfo")
    if der[content_type.start : content_type.end] != _SIGNED_DATA_OID_DER:  # RFC 3161 §2.4.2
        got = _oid_text(der[content_type.start : content_type.end])
        raise TimestampError(_problem("ContentInfo contentType", got, f"signedData {_OID_SIGNED_DATA}"))
    signed_data = _tlvs(der, content.body, content.end)
    if len(signed_data) != 1 or signed_data[0].tag != 0x30:
        raise TimestampError(_problem("ContentInfo content", "not one SEQUENCE", "SignedData"))
    fields = _fields(der, signed_data[0], _LAYOUT_SIGNED_DATA, "SignedData")
    if fields[2].tag != 0x30:
        raise TimestampError(_problem("encapContentInfo", f"tag {fields[2].tag:#04x}", "a SEQUENCE"))
    econtent_type, explicit = _fields(der, fields[2], _LAYOUT_ENCAP, "encapContentInfo")
    if der[econtent_type.start : econtent_type.end] != _TST_INFO_OID_DER:  # RFC 3161 §2.4.2
        got = _oid_text(der[econtent_type.start : econtent_type.end])
        raise TimestampError(_problem("eContentType", got, f"id-ct-TSTInfo {_OID_TST_INFO}"))
    econtent = _tlvs(der, explicit.body, explicit.end)
    if len(econtent) != 1 or econtent[0].tag != 0x04:
        raise TimestampError(_problem("eContent", "not one OCTET STRING", "a DER TSTInfo"))
    certificates: tuple[bytes, ...] = ()
    crls: tuple[bytes, ...] | None = None
    for field in fields[3:-1]:
        elements = tuple(der[t.start : t.end] for t in _tlvs(der, field.body, field.end))
        if field.tag == 0xA0:
            certificates = elements
        else:
            crls = elements
    for index, cert in enumerate(certificates):
        if cert[0] != 0x30:  # RFC 5652 §10.2.2: only plain X.509 certificates
            raise TimestampError(
                _problem(
                    f"token certificate #{index}",
                    f"CertificateChoices tag {cert[0]:#04x}",
                    "an X.509 certificate (tag 0x30)",
                )
            )
    signers = _tlvs(der, fields[-1].body, fields[-1].end)
    signer = sid_issuer = signed_attrs = None
    signature = b""
    attributes: list[tuple[bytes, bytes]] = []
    if len(signers) == 1:
        if signers[0].tag != 0x30:
            raise TimestampError(_problem("SignerInfo", f"tag {signers[0].tag:#04x}", "a SEQUENCE"))
        signer_fields = _fields(der, signers[0], _LAYOUT_SIGNER_INFO, "SignerInfo")
        version, sid, digest_algorithm = (der[t.start : t.end] for t in signer_fields[:3])
        rest = signer_fields[3:]
        if rest[0].tag == 0xA0:  # RFC 5652 §5.3: [0] IMPLICIT SignedAttributes
            signed_attrs = der[rest[0].start : rest[0].end]
            for attr in _tlvs(der, rest[0].body, rest[0].end):
                if attr.tag != 0x30:
                    raise TimestampError(_problem("signed attribute", f"tag {attr.tag:#04x}", "0x30"))
                oid = _fields(der, attr, _LAYOUT_ATTRIBUTE, "signed attribute")[0]
                attributes.append((der[oid.start : oid.end], der[attr.start : attr.end]))
            rest = rest[1:]
        for attr in _tlvs(der, rest[2].body, rest[2].end) if len(rest) > 2 else ():
            if attr.tag != 0x30:  # [1] IMPLICIT UnsignedAttributes: read, not used
                raise TimestampError(_problem("unsigned attribute", f"tag {attr.tag:#04x}", "0x30"))
            _fields(der, attr, _LAYOUT_ATTRIBUTE, "unsigned attribute")
        signer = (version, sid, digest_algorithm, der[rest[0].start : rest[0].end])
        signature = der[rest[1].body : rest[1].end]
        if signer_fields[1].tag == 0x30:
            issuer = _child(der, signer_fields[1], 0)
            sid_issuer = der[issuer.start : issuer.end]
    return _RawParts(
        econtent=der[econtent[0].body : econtent[0].end],
        digest_algorithms=der[fields[1].start : fields[1].end],
        certificates=certificates,
        crls=crls,
        signed_data_version=der[fields[0].start : fields[0].end],
        signer_count=len(signers),
        signer=signer,
        signature=signature,
        sid_issuer=sid_issuer,
        signed_attrs=signed_attrs,
        attributes=tuple(attributes),
    )


@dataclass(frozen=True)
class _Parsed:
    tst_info: Any  # asn1crypto tsp.TSTInfo
    gen_time: _GenTime
    info: TokenInfo
    raw: _RawParts


def _parse_gen_time(raw: bytes) -> _GenTime:
    match = _GEN_TIME.fullmatch(raw)
    if match is None:
        raise TimestampError(
            _problem(
                "TSTInfo genTime",
                repr(raw.decode("ascii", "replace")),
                "YYYYMMDDhhmmss[.s...]Z without trailing zeros (RFC 3161 §2.4.2)",
            )
        )
    y, mo, d, h, mi, s = (int(g) for g in match.groups()[:6])
    try:
        seconds = int(datetime(y, mo, d, h, mi, s, tzinfo=UTC).timestamp())
    except ValueError as e:
        raise TimestampError(_problem("TSTInfo genTime", raw.decode(), "a valid date")) from e
    return _GenTime(seconds, match.group(7).decode() if match.group(7) else "")


def _parse(der: bytes) -> _Parsed:
    """Read the token's structure; raise TimestampError on anything malformed."""
    if not isinstance(der, bytes | bytearray | memoryview):
        raise TimestampError(_problem("token", type(der).__name__, "DER bytes"))
    der = bytes(der)
    if len(der) > MAX_TOKEN_BYTES:
        raise TimestampError(_problem("token size", f"{len(der):,} bytes", f"at most {MAX_TOKEN_BYTES:,}"))
    try:
        _der_check(der)
    except _DerError as e:
        raise TimestampError(_problem("token encoding", e, "strict DER (X.690 §10)")) from e
    try:
        return _parse_der(der)
    except TimestampError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError) as e:
        got = " ".join(str(e).split())  # asn1crypto messages span lines
        raise TimestampError(_problem("token structure", got, "an RFC 3161 TimeStampToken")) from e


def _parse_der(der: bytes) -> _Parsed:
    raw = _raw_parts(der)
    try:
        _der_check(raw.econtent)
    except _DerError as e:
        raise TimestampError(_problem("TSTInfo encoding", e, "strict DER")) from e
    tst_info = tsp.TSTInfo.load(raw.econtent, strict=True)
    version = int(tst_info["version"])
    if version != 1:  # RFC 3161 §2.4.2
        raise TimestampError(_problem("TSTInfo version", version, 1))
    gen_time = _parse_gen_time(bytes(tst_info["gen_time"].contents))
    # Parse the optional fields now (asn1crypto reads lazily): a malformed one is malformed.
    _ = [tst_info[name].native for name in ("accuracy", "ordering", "nonce", "tsa", "extensions")]
    imprint = tst_info["message_imprint"]
    info = TokenInfo(
        gen_time_ms=gen_time.ms,
        hash_algorithm=str(imprint["hash_algorithm"]["algorithm"].native),
        hashed_message=bytes(imprint["hashed_message"].native),
        serial_number=int(tst_info["serial_number"].native),
        policy=str(tst_info["policy"].dotted),
        certificates=raw.certificates,
    )
    return _Parsed(tst_info, gen_time, info, raw)


def parse_token(der: bytes) -> TokenInfo:
    """Read a bare TimeStampToken without verifying it (spec §3).

    Raises :class:`~auditor.errors.TimestampError` when ``der`` is not a strict-DER
    ContentInfo of a SignedData carrying a version 1 TSTInfo with a well-formed genTime.
    """
    return _parse(der).info


# ---------------------------------------------------------------------------- certificates


@dataclass(frozen=True)
class _Cert:
    """A certificate parsed once, with what verification asks of it every time."""

    der: bytes
    cert: x509.Certificate
    asn1: Any  # asn1crypto x509.Certificate, for raw names and GeneralName matching
    issuer_der: bytes
    serial: int
    key_id: bytes | None  # subjectKeyIdentifier extension value
    spki: bytes  # DER SubjectPublicKeyInfo
    not_before: int  # Unix seconds, RFC 5280 §4.1.2.5 (inclusive)
    not_after: int
    public_key: Any
    eku_problem: str | None
    key_usage_problem: str | None
    is_ca: bool

    def label(self) -> str:
        return f"certificate {self.cert.subject.rfc4514_string()!r} serial {self.serial:#x}"

    def valid_at(self, t: _GenTime) -> bool:
        after_start = t.seconds >= self.not_before
        before_end = t.seconds < self.not_after or (t.seconds == self.not_after and not t.fraction)
        return after_start and before_end


@functools.lru_cache(maxsize=128)
def _cert(der: bytes) -> _Cert:
    """Parse a certificate (cached by DER: one TSA certificate verifies many tokens).

    Raises ValueError when ``der`` is not a certificate cryptography reads in full.
    """
    with warnings.catch_warnings():  # cryptography warns on some RFC 5280 breaches: refuse
        warnings.simplefilter("error", CryptographyDeprecationWarning)
        try:
            cert = x509.load_der_x509_certificate(der)
            serial = cert.serial_number
            extensions = cert.extensions  # parses every extension; malformed ones raise
            public_key = cert.public_key()  # an invalid point or modulus raises here
        except CryptographyDeprecationWarning as e:
            raise ValueError(str(e)) from e
    asn1 = asn1_x509.Certificate.load(der, strict=True)
    # TBSCertificate ::= SEQ { [0] version OPT, serial, signature, issuer, ... } (RFC 5280)
    tbs = _child(der, _tlvs(der, 0, len(der))[0], 0)
    tbs_fields = _tlvs(der, tbs.body, tbs.end)
    issuer = tbs_fields[3 if tbs_fields[0].tag == 0xA0 else 2]
    try:
        key_id: bytes | None = extensions.get_extension_for_class(
            x509.SubjectKeyIdentifier
        ).value.key_identifier
    except x509.ExtensionNotFound:
        key_id = None
    try:
        is_ca = extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    return _Cert(
        der=der,
        cert=cert,
        asn1=asn1,
        issuer_der=der[issuer.start : issuer.end],
        serial=serial,
        key_id=key_id,
        not_before=int(cert.not_valid_before_utc.timestamp()),
        not_after=int(cert.not_valid_after_utc.timestamp()),
        public_key=public_key,
        spki=public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo),
        eku_problem=_eku_problem(cert),
        key_usage_problem=_key_usage_problem(cert),
        is_ca=is_ca,
    )


# What reading a hostile certificate can raise: cryptography's InvalidVersion (a version
# field other than v1-v3) is not a ValueError (found by bench/fuzz.py).
_CERT_ERRORS = (
    ValueError,
    TypeError,
    IndexError,
    KeyError,
    OverflowError,
    UnsupportedAlgorithm,
    x509.InvalidVersion,
)


def _try_cert(der: bytes) -> _Cert | None:
    try:
        return _cert(bytes(der))
    except _CERT_ERRORS:
        return None


def _eku_problem(cert: x509.Certificate) -> str | None:
    """Spec §3 and RFC 3161 §2.3: extendedKeyUsage critical, id-kp-timeStamping only.

    RFC 3161 §2.3 says the extension MUST contain only one KeyPurposeID; we hold to that
    (as OpenSSL's ``ts -verify`` does), so a multi-purpose certificate is a problem.
    """
    what = "extendedKeyUsage of the TSA certificate"
    try:
        extension = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    except x509.ExtensionNotFound:
        return _problem(what, "no such extension", "a critical extension (spec §3)")
    purposes = [oid.dotted_string for oid in extension.value]
    if not extension.critical:
        return _problem(what, "a non-critical extension", "critical (spec §3, RFC 3161 §2.3)")
    if purposes != [_OID_KP_TIME_STAMPING]:
        return _problem(
            what,
            "purposes " + ", ".join(purposes),
            f"id-kp-timeStamping {_OID_KP_TIME_STAMPING} only (RFC 3161 §2.3)",
        )
    return None


def _key_usage_problem(cert: x509.Certificate) -> str | None:
    """RFC 5280 §4.2.1.3: if keyUsage is present it must allow signing."""
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None
    if usage.digital_signature or usage.content_commitment:
        return None
    return _problem(
        "keyUsage of the TSA certificate",
        "neither digitalSignature nor nonRepudiation",
        "one of them (RFC 5280 §4.2.1.3)",
    )


@functools.lru_cache(maxsize=256)
def _issued_by(child_der: bytes, parent_der: bytes) -> bool:
    """Whether ``parent`` signed ``child`` (names and signature; time-independent)."""
    try:
        _cert(child_der).cert.verify_directly_issued_by(_cert(parent_der).cert)
    except (*_CERT_ERRORS, InvalidSignature):
        return False
    return True


@functools.lru_cache(maxsize=256)
def _cert_hash(der: bytes, hash_name: str) -> bytes:
    return hashlib.new(hash_name, der).digest()


# ---------------------------------------------------------------------------- verification


def verify_token(
    der: bytes,
    digest: bytes,
    tsa_certificates: Sequence[bytes],
    roots: Sequence[bytes] = (),
) -> TokenVerification:
    """Verify a bare RFC 3161 TimeStampToken over the record ``digest`` (spec §3).

    ``tsa_certificates`` are the DER certificates the election lists (spec §4.2): the
    signer must be one of them, byte for byte. With ``roots`` (DER), the signer must
    also chain to one of them through the token's embedded certificates. Certificates
    are checked at the token's genTime. Never raises: every failure is a problem string.
    """
    try:
        return _verify(der, digest, tsa_certificates, roots)
    except Exception as e:  # the never-raise boundary: a bug here is still a failed token
        got = f"an unexpected {type(e).__name__} ({e})"
        return TokenVerification(
            None,
            (_problem("token", got, "a token the verifier can read"),),
            (_problem("messageImprint", "no readable TSTInfo", "a SHA-256 imprint"),),
            None,
        )


def _verify(
    der: bytes, digest: bytes, listed_ders: Sequence[bytes], root_ders: Sequence[bytes]
) -> TokenVerification:
    # Checklist (each block below is tagged with its number):
    #  1. strict DER; ContentInfo of signedData; eContentType id-ct-TSTInfo; TSTInfo v1
    #  2. messageImprint: SHA-256 over the record digest                  (TSA-IMPRINT)
    #  3. SignedData version 3; TSTInfo carries no unknown critical extension
    #  4. exactly one SignerInfo; its version matches its sid; digest algorithm known
    #  5. signed attributes: present, DER-ordered, content-type, message-digest
    #  6. signer certificate: found by sid, one of the listed certificates
    #  7. ESS signing-certificate (v1 or v2) names that certificate
    #  8. signature over the DER SET OF signed attributes
    #  9. extendedKeyUsage critical, id-kp-timeStamping only; keyUsage allows signing
    # 10. certificate valid at genTime
    # 11. the TSTInfo tsa name, if any, is one of the certificate's names
    # 12. with roots: a chain to one of them, each link valid at genTime
    # 1.
    try:
        parsed = _parse(der)
    except TimestampError as e:
        return TokenVerification(
            None,
            (str(e),),
            (_problem("messageImprint", "no readable TSTInfo", "a SHA-256 imprint"),),
            None,
        )
    info = parsed.info
    imprint = _imprint_problems(parsed.tst_info, info, digest)  # 2.
    problems: list[str] = []
    try:
        signer = _check_token(parsed, listed_ders, root_ders, problems)  # 3. - 12.
    except (ValueError, TypeError, KeyError, IndexError) as e:  # asn1crypto reads lazily
        got = " ".join(str(e).split())
        problems.append(_problem("token structure", got, "an RFC 3161 TimeStampToken"))
        signer = None
    return TokenVerification(info.gen_time_ms, tuple(problems), imprint, signer.der if signer else None)


def _imprint_problems(tst_info: Any, info: TokenInfo, digest: bytes) -> tuple[str, ...]:
    # 2. spec §3: the messageImprint is (SHA-256, digest).
    problems = []
    oid = tst_info["message_imprint"]["hash_algorithm"]["algorithm"].dotted
    if oid != _OID_SHA256:
        problems.append(
            _problem(
                "messageImprint hashAlgorithm",
                f"{info.hash_algorithm} ({oid})",
                f"sha256 ({_OID_SHA256}) (spec §3)",
            )
        )
    if info.hashed_message != digest:
        problems.append(
            _problem(
                "messageImprint hashedMessage",
                info.hashed_message.hex(),
                f"the record digest {bytes(digest).hex()}",
            )
        )
    return tuple(problems)


def _check_token(
    parsed: _Parsed, listed_ders: Sequence[bytes], root_ders: Sequence[bytes], problems: list[str]
) -> _Cert | None:
    raw = parsed.raw
    # 3. RFC 5652 §5.1: version 3 since eContentType is not id-data and only X.509
    #    certificates are carried. RFC 5280 §4.2 semantics for critical extensions.
    if raw.signed_data_version != b"\x02\x01\x03":
        version = int(core.Integer.load(raw.signed_data_version).native)
        problems.append(_problem("SignedData version", version, "3 (RFC 5652 §5.1)"))
    extensions = parsed.tst_info["extensions"]
    if not isinstance(extensions, core.Void):
        for extension in extensions:
            if extension["critical"].native:
                problems.append(
                    _problem(
                        "TSTInfo extensions",
                        f"critical {extension['extn_id'].dotted}",
                        "no critical extension this verifier does not know",
                    )
                )
    # 4. RFC 3161 §2.4.1: the token carries the TSA's signature and no other.
    if raw.signer is None:
        problems.append(_problem("SignerInfos", f"{raw.signer_count} signers", "exactly 1"))
        return None
    try:
        profile = _signer_profile(*raw.signer)
    except (ValueError, TypeError, KeyError) as e:
        got = " ".join(str(e).split())
        problems.append(_problem("SignerInfo", got, "version, sid and algorithms of RFC 5652 §5.3"))
        return None
    if profile.version != profile.expected_version:  # RFC 5652 §5.3
        problems.append(
            _problem(
                "SignerInfo version",
                profile.version,
                f"{profile.expected_version} for a {profile.sid_kind} sid",
            )
        )
    digest_oid = profile.digest_oid
    hash_cls = _SIGNATURE_HASHES.get(digest_oid)
    if hash_cls is None:
        problems.append(_problem("SignerInfo digestAlgorithm", digest_oid, "SHA-256, SHA-384 or SHA-512"))
        return None
    listed_digests = _digest_oids(raw.digest_algorithms)
    if digest_oid not in listed_digests:
        problems.append(
            _problem(
                "SignedData digestAlgorithms",
                sorted(listed_digests),
                f"a set that includes the signer's {digest_oid} (RFC 5652 §5.1)",
            )
        )
    # 5. RFC 3161 §2.4.1 and RFC 5652 §5.3, §11: signed attributes are required here.
    if raw.signed_attrs is None:
        problems.append(_problem("signed attributes", "none", "present (RFC 3161 §2.4.1)"))
        return None
    by_type: dict[str, list[bytes]] = {}
    for oid_der, attr_der in raw.attributes:
        by_type.setdefault(_oid_text(oid_der), []).append(attr_der)
    if not _set_of_sorted([attr_der for _, attr_der in raw.attributes]):
        problems.append(
            _problem("signed attributes", "a SET OF out of DER order", "ascending order (X.690 §11.6)")
        )
    for oid, attr_list in by_type.items():
        if len(attr_list) > 1:  # RFC 5652 §11.1, §11.2; RFC 2634 §5.4; RFC 5035 §3
            problems.append(_problem("signed attributes", f"{len(attr_list)} of {oid}", "one"))
    content_type = _single_value("content-type attribute", by_type, _OID_CONTENT_TYPE, problems)
    if content_type is not None and content_type.dotted != _OID_TST_INFO:
        problems.append(
            _problem(
                "content-type attribute",
                content_type.dotted,
                f"id-ct-TSTInfo {_OID_TST_INFO} (RFC 5652 §11.1)",
            )
        )
    expected = _hash(hash_cls, raw.econtent)
    # Fast path: in strict DER the attribute has exactly one encoding; parse it only to
    # say what is wrong with it.
    if by_type.get(_OID_MESSAGE_DIGEST) != [_message_digest_attribute(expected)]:
        value = _single_value("message-digest attribute", by_type, _OID_MESSAGE_DIGEST, problems)
        if value is not None and bytes(value.native) != expected:
            problems.append(
                _problem(
                    "message-digest attribute",
                    bytes(value.native).hex(),
                    f"{expected.hex()}, the {hash_cls().name} of the eContent (RFC 5652 §11.2)",
                )
            )
    # 6. spec §3: the signer is found by its sid and MUST be a listed certificate.
    embedded = [_try_cert(d) for d in parsed.info.certificates]
    for index, cert in enumerate(embedded):
        if cert is None:
            problems.append(
                _problem(f"embedded certificate #{index}", "unparseable DER", "an X.509 certificate")
            )
    listed = {c.der: c for c in map(_try_cert, listed_ders) if c is not None}
    roots = [c for c in map(_try_cert, root_ders) if c is not None]
    known = {c.spki: c.der for c in [*listed.values(), *roots]}
    for index, cert in enumerate(embedded):
        if cert is not None and cert.spki in known and cert.der != known[cert.spki]:
            # The certificate set is not signed (RFC 5652 §5.1), but a certificate with a
            # trusted key that differs from the trusted certificate is corrupt or forged.
            problems.append(
                _problem(
                    f"embedded certificate #{index}",
                    f"{cert.label()} with the key of a listed or root certificate but other bytes",
                    "that certificate itself",
                )
            )
    if parsed.raw.crls is not None:  # spec §3: revocation is out of scope for version 1
        problems.append(
            _problem(
                "SignedData crls",
                f"{len(parsed.raw.crls)} revocation entries",
                "none: version 1 does not check revocation (spec §3)",
            )
        )
    signer = _find_signer(profile, raw.sid_issuer, [c for c in embedded if c is not None], listed, problems)
    if signer is None:
        return None
    # 7. RFC 3161 §2.4.1 (as updated by RFC 5816): ESS signing-certificate attribute.
    ess = tuple((oid, tuple(by_type[oid])) for oid in _ESS_OIDS if oid in by_type)
    problems.extend(_ess_problems(ess, signer.der))
    # 8. RFC 5652 §5.4: the signature is over the DER of the SET OF signed attributes,
    #    i.e. the [0] IMPLICIT field re-tagged as a universal SET (0x31).
    signed_bytes = b"\x31" + (parsed.raw.signed_attrs or b"")[1:]
    _check_signature(profile, raw.signature, signed_bytes, signer, problems)
    # 9. spec §3, RFC 3161 §2.3.
    if signer.eku_problem:
        problems.append(signer.eku_problem)
    if signer.key_usage_problem:
        problems.append(signer.key_usage_problem)
    # 10. spec §3: valid at genTime (revocation is out of scope for version 1).
    gen = parsed.gen_time
    if not signer.valid_at(gen):
        problems.append(
            _problem(
                f"validity of {signer.label()} at genTime",
                gen.text(),
                f"a time in [{_iso(signer.not_before)}, {_iso(signer.not_after)}]",
            )
        )
    # 11. RFC 3161 §2.4.2: tsa, when present, names the certificate's subject.
    _check_tsa_name(parsed.tst_info["tsa"], signer, problems)
    # 12. optional chain to the given roots (spec §3 leaves the trust model to §4.2).
    if root_ders:
        pool = [c for c in embedded if c is not None]
        chain_problem = _chain_problem(signer, pool, roots, gen)
        if chain_problem:
            problems.append(chain_problem)
    return signer


def _hash(hash_cls: type[hashes.HashAlgorithm], data: bytes) -> bytes:
    return hashlib.new(hash_cls().name, data).digest()


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@functools.lru_cache(maxsize=256)
def _oid_text(oid_der: bytes) -> str:
    """Dotted text of a DER OBJECT IDENTIFIER element."""
    return str(core.ObjectIdentifier.load(oid_der, strict=True).dotted)


_MESSAGE_DIGEST_OID_DER = bytes.fromhex("06092a864886f70d010904")


def _message_digest_attribute(digest: bytes) -> bytes:
    """The one DER encoding of a message-digest attribute with ``digest`` (RFC 5652 §11.2)."""
    value_set = _encode_tlv(0x31, _encode_tlv(0x04, digest))
    return _encode_tlv(0x30, _MESSAGE_DIGEST_OID_DER + value_set)


def _encode_tlv(tag: int, contents: bytes) -> bytes:
    n = len(contents)
    if n < 0x80:
        return bytes([tag, n]) + contents
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + contents


@functools.lru_cache(maxsize=1024)
def _attribute(attr_der: bytes) -> tuple[str, Any]:
    """(type OID, asn1crypto values) of one raw Attribute (RFC 5652 §5.3).

    Cached by bytes: all but the message-digest attribute repeat in every token of a TSA.
    """
    attribute = cms.CMSAttribute.load(attr_der, strict=True)
    return str(attribute["type"].dotted), attribute["values"]


@functools.lru_cache(maxsize=64)
def _digest_oids(digest_algorithms_der: bytes) -> frozenset[str]:
    return frozenset(str(a["algorithm"].dotted) for a in cms.DigestAlgorithms.load(digest_algorithms_der))


def _single_value(what: str, by_type: dict[str, list[bytes]], oid: str, problems: list[str]) -> Any:
    """The one value of a required single-valued attribute (RFC 5652 §11), else None."""
    attr_list = by_type.get(oid)
    if not attr_list:
        problems.append(_problem(what, "none", f"one {oid} attribute (RFC 5652 §5.3)"))
        return None
    values = _attribute(attr_list[0])[1]
    if len(values) != 1:
        problems.append(_problem(what, f"{len(values)} values", "exactly 1 (RFC 5652 §11)"))
        return None
    return values[0]


def _find_signer(
    profile: _SignerProfile,
    sid_issuer: bytes | None,
    embedded: list[_Cert],
    listed: dict[bytes, _Cert],
    problems: list[str],
) -> _Cert | None:
    """Step 6: match the sid (RFC 5652 §5.3) against the embedded and listed certificates.

    issuerAndSerialNumber is matched on the issuer's exact DER bytes and the serial;
    subjectKeyIdentifier on the certificate's SKI extension. Every match must be a
    listed certificate: an embedded certificate with the signer's sid that differs from
    the listed one is a problem, not something to look past.
    """
    serial, key_id = profile.sid_serial, profile.sid_key_id
    if serial is not None:
        shown = f"issuer and serial {serial:#x}"

        def matches(c: _Cert) -> bool:
            return c.serial == serial and c.issuer_der == sid_issuer
    else:
        shown = f"subjectKeyIdentifier {(key_id or b'').hex()}"

        def matches(c: _Cert) -> bool:
            return c.key_id == key_id

    found = {c.der: c for c in [*embedded, *listed.values()] if matches(c)}
    if not found:
        problems.append(
            _problem(
                "signer certificate",
                f"none with the sid's {shown} in the token or among {len(listed)} listed",
                "the TSA certificate (spec §3)",
            )
        )
        return None
    unlisted = [c for der, c in found.items() if der not in listed]
    if unlisted:
        problems.append(
            _problem(
                "signer certificate",
                f"{unlisted[0].label()}, which is not listed",
                "one of the election's TSA certificates, byte for byte (spec §3, §4.2)",
            )
        )
        return None
    if len(found) > 1:
        problems.append(_problem("signer certificate", f"{len(found)} listed matches", "one"))
        return None
    return next(iter(found.values()))


@functools.lru_cache(maxsize=256)
def _ess_problems(
    attributes: tuple[tuple[str, tuple[bytes, ...]], ...], signer_der: bytes
) -> tuple[str, ...]:
    """Step 7, cached: the ESS attributes repeat byte for byte in every token of a TSA."""
    problems: list[str] = []
    _check_ess({oid: list(ders) for oid, ders in attributes}, _cert(signer_der), problems)
    return tuple(problems)


def _check_ess(by_type: dict[str, list[bytes]], signer: _Cert, problems: list[str]) -> None:
    """Step 7: the first ESSCertID(v2) identifies the signer (RFC 2634 §5.4, RFC 5035 §3)."""
    present = [
        (oid, name)
        for oid, name in (
            (_OID_SIGNING_CERTIFICATE_V2, "signingCertificateV2"),
            (_OID_SIGNING_CERTIFICATE, "signingCertificate"),
        )
        if oid in by_type
    ]
    if not present:
        problems.append(
            _problem(
                "ESS signing-certificate attribute",
                "none",
                "signingCertificate or signingCertificateV2 (RFC 3161 §2.4.1, RFC 5816)",
            )
        )
        return
    for oid, name in present:
        value = _single_value(f"{name} attribute", by_type, oid, problems)
        if value is None:
            continue
        certs = value["certs"]
        if len(certs) == 0:
            problems.append(_problem(f"{name} certs", "an empty list", "the signer first"))
            continue
        cert_id = certs[0]
        hash_oid = (
            cert_id["hash_algorithm"]["algorithm"].dotted
            if oid == _OID_SIGNING_CERTIFICATE_V2
            else "1.3.14.3.2.26"  # ESSCertID v1 is SHA-1 (RFC 2634 §5.4.1)
        )
        hash_name = _HASHLIB_NAMES.get(hash_oid)
        if hash_name is None:
            problems.append(_problem(f"{name} hashAlgorithm", hash_oid, "a known hash"))
            continue
        got = bytes(cert_id["cert_hash"].native)
        want = _cert_hash(signer.der, hash_name)
        if got != want:
            problems.append(
                _problem(
                    f"{name} certHash",
                    got.hex(),
                    f"{want.hex()}, the {hash_name} of {signer.label()}",
                )
            )
        issuer_serial = cert_id["issuer_serial"]
        if not isinstance(issuer_serial, core.Void):
            _check_issuer_serial(name, issuer_serial, signer, problems)


def _check_issuer_serial(name: str, issuer_serial: Any, signer: _Cert, problems: list[str]) -> None:
    serial = int(issuer_serial["serial_number"].native)
    if serial != signer.serial:
        problems.append(_problem(f"{name} serialNumber", f"{serial:#x}", f"{signer.serial:#x}"))
    names = issuer_serial["issuer"]
    if not (len(names) == 1 and names[0].name == "directory_name" and _same_name(names[0], signer)):
        problems.append(
            _problem(
                f"{name} issuer",
                f"{len(names)} names",
                f"one directoryName equal to the issuer of {signer.label()} (RFC 5035 §4)",
            )
        )


def _same_name(general_name: Any, signer: _Cert) -> bool:
    """directoryName equal to the signer's issuer (RFC 5280 §7.1 comparison).

    Fast path: byte equality with ``[4] EXPLICIT issuer``, as most TSAs copy the bytes.
    """
    if bytes(general_name.dump()) == _explicit4(signer.issuer_der):
        return True
    return bool(general_name.chosen == signer.asn1["tbs_certificate"]["issuer"])


@functools.lru_cache(maxsize=128)
def _explicit4(name_der: bytes) -> bytes:
    return _encode_tlv(0xA4, name_der)


@dataclass(frozen=True)
class _SignerProfile:
    """The part of a SignerInfo that repeats in every token of a TSA, read once.

    Everything but the signed attributes and the signature value: version, sid,
    digestAlgorithm and signatureAlgorithm (RFC 5652 §5.3), with what step 8 needs to
    know about the signature scheme.
    """

    version: int
    expected_version: int  # 1 for issuerAndSerialNumber, 3 for subjectKeyIdentifier
    sid_kind: str
    sid_serial: int | None
    sid_key_id: bytes | None
    digest_oid: str
    scheme: str  # "ecdsa", "rsa", "pss" or "ed25519"
    hash_oid: str  # the hash under the signature
    salt_length: int  # RSA-PSS only
    algorithm_problem: str | None


@functools.lru_cache(maxsize=64)
def _signer_profile(
    version: bytes, sid: bytes, digest_algorithm: bytes, signature_algorithm: bytes
) -> _SignerProfile:
    """Parse the invariant SignerInfo fields (cached by their exact bytes)."""
    sid_choice = cms.SignerIdentifier.load(sid, strict=True)
    if sid_choice.name == "issuer_and_serial_number":
        serial, key_id, expected = int(sid_choice.chosen["serial_number"].native), None, 1
    else:
        serial, key_id, expected = None, bytes(sid_choice.chosen.native), 3
    digest_oid = str(algos.DigestAlgorithm.load(digest_algorithm, strict=True)["algorithm"].dotted)
    algorithm = algos.SignedDigestAlgorithm.load(signature_algorithm, strict=True)
    header, _ = _der_header(signature_algorithm, 0, len(signature_algorithm))
    oid = _tlvs(signature_algorithm, header, len(signature_algorithm))[0]
    params = signature_algorithm[oid.end :]  # b"" when absent
    scheme, hash_oid, salt_length, problem = _signature_scheme(algorithm, params, digest_oid)
    return _SignerProfile(
        version=int(core.Integer.load(version, strict=True).native),
        expected_version=expected,
        sid_kind=str(sid_choice.name),
        sid_serial=serial,
        sid_key_id=key_id,
        digest_oid=digest_oid,
        scheme=scheme,
        hash_oid=hash_oid,
        salt_length=salt_length,
        algorithm_problem=problem,
    )


def _signature_scheme(algorithm: Any, params: bytes, digest_oid: str) -> tuple[str, str, int, str | None]:
    """(scheme, hash OID, PSS salt length, problem) of a SignerInfo signatureAlgorithm.

    The hash the algorithm names must be the SignerInfo digestAlgorithm (RFC 5754 §3);
    parameters are absent for ECDSA (RFC 5758 §3.2) and Ed25519 (RFC 8410 §3), absent
    or NULL for RSA PKCS#1 v1.5 (RFC 4055 §5), explicit for RSA-PSS (RFC 4055 §3.1).
    """
    what = "SignerInfo signatureAlgorithm"
    oid = str(algorithm["algorithm"].dotted)
    scheme, implied = _SIGNATURE_ALGORITHMS.get(oid, ("", None))
    if not scheme:
        return "", "", 0, _problem(what, oid, "RSA, RSA-PSS, ECDSA or Ed25519")
    hash_oid, salt_length = implied or digest_oid, 0
    if scheme == "pss":
        pss = _pss_parameters(algorithm["parameters"])
        if isinstance(pss, str):
            return scheme, "", 0, _problem(f"{what} RSASSA-PSS parameters", pss, "RFC 4055 §3.1")
        hash_oid, salt_length = pss
    elif params not in ((b"", b"\x05\x00") if scheme == "rsa" else (b"",)):
        return scheme, "", 0, _problem(f"{what} parameters", params.hex(), "none")
    if scheme == "ed25519" and digest_oid != "2.16.840.1.101.3.4.2.3":  # RFC 8419 §3.1
        return scheme, "", 0, _problem("Ed25519 SignerInfo digestAlgorithm", digest_oid, "sha512")
    if hash_oid != digest_oid:
        return scheme, "", 0, _problem(f"{what} hash", hash_oid, f"the digestAlgorithm {digest_oid}")
    if hash_oid not in _SIGNATURE_HASHES:
        return scheme, "", 0, _problem(f"{what} hash", hash_oid, "SHA-256, SHA-384 or SHA-512")
    return scheme, hash_oid, salt_length, None


def _check_signature(
    profile: _SignerProfile, signature: bytes, signed_bytes: bytes, signer: _Cert, problems: list[str]
) -> None:
    """Step 8: RSA PKCS#1 v1.5, RSA-PSS, ECDSA P-256/384/521 or Ed25519."""
    if profile.algorithm_problem:
        problems.append(profile.algorithm_problem)
        return
    scheme, key = profile.scheme, signer.public_key
    key_problem = _key_problem(scheme, key)
    if key_problem:
        problems.append(_problem(f"signature key of {signer.label()}", key_problem, f"a key for {scheme}"))
        return
    hash_cls = _SIGNATURE_HASHES[profile.hash_oid]
    try:
        if scheme == "ecdsa":
            key.verify(signature, signed_bytes, ec.ECDSA(hash_cls()))
        elif scheme == "rsa":
            key.verify(signature, signed_bytes, padding.PKCS1v15(), hash_cls())
        elif scheme == "pss":
            pss_padding = padding.PSS(mgf=padding.MGF1(hash_cls()), salt_length=profile.salt_length)
            key.verify(signature, signed_bytes, pss_padding, hash_cls())
        else:
            key.verify(signature, signed_bytes)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        problems.append(
            _problem(
                "SignerInfo signature",
                "a signature that does not verify",
                f"a valid {scheme} signature by {signer.label()} (RFC 5652 §5.4)",
            )
        )


def _key_problem(scheme: str, key: Any) -> str | None:
    if scheme == "ecdsa":
        if not isinstance(key, ec.EllipticCurvePublicKey):
            return type(key).__name__
        if key.curve.name not in _EC_CURVES:
            return f"curve {key.curve.name}"
    elif scheme in ("rsa", "pss"):
        if not isinstance(key, rsa.RSAPublicKey):
            return type(key).__name__
        if key.key_size < _MIN_RSA_BITS:
            return f"a {key.key_size}-bit RSA key (at least {_MIN_RSA_BITS} expected)"
    elif not isinstance(key, ed25519.Ed25519PublicKey):
        return type(key).__name__
    return None


def _pss_parameters(params: Any) -> tuple[str, int] | str:
    """(hash OID, salt length) of RSASSA-PSS-params, or what is wrong with them."""
    if isinstance(params, core.Void) or params.native is None:
        return "absent (SHA-1 defaults)"
    hash_oid = params["hash_algorithm"]["algorithm"].dotted
    mgf = params["mask_gen_algorithm"]
    if mgf["algorithm"].native != "mgf1":
        return f"mask generation {mgf['algorithm'].dotted}"
    if mgf["parameters"]["algorithm"].dotted != hash_oid:
        return "an MGF1 hash that differs from the message hash"
    if params["trailer_field"].native not in ("trailer_field_bc", 1):
        return "a trailer field other than 1"
    return hash_oid, int(params["salt_length"].native)


def _check_tsa_name(tsa: Any, signer: _Cert, problems: list[str]) -> None:
    """Step 11: the optional TSTInfo tsa field names the signer (RFC 3161 §2.4.2)."""
    if isinstance(tsa, core.Void):
        return
    tbs = signer.asn1["tbs_certificate"]
    names = list(signer.asn1.subject_alt_name_value or [])
    if tsa.name == "directory_name" and tsa.chosen == tbs["subject"]:
        return
    if any(n.name == tsa.name and n.chosen == tsa.chosen for n in names):
        return
    problems.append(
        _problem(
            "TSTInfo tsa",
            f"{tsa.name} {tsa.native}",
            f"the subject or a subjectAltName of {signer.label()}",
        )
    )


def _chain_problem(tsa: _Cert, pool: list[_Cert], roots: list[_Cert], at: _GenTime) -> str | None:
    """Step 12: walk issuers from the TSA certificate to a root, all valid at genTime.

    Issuers are looked up by name among the roots and the token's certificates; each
    link is checked with ``verify_directly_issued_by``; intermediates must be CAs
    (RFC 5280 §4.2.1.9). A listed certificate that is itself a root ends the walk.
    """
    root_ders = {r.der for r in roots}
    candidates = {c.der: c for c in [*roots, *pool]}
    dead_ends: list[str] = []

    def walk(cert: _Cert, seen: frozenset[bytes]) -> bool:
        if cert.der in root_ders:
            return True
        if len(seen) > _MAX_CHAIN:
            dead_ends.append(f"a chain longer than {_MAX_CHAIN}")
            return False
        issuers = [c for d, c in candidates.items() if d not in seen and c.cert.subject == cert.cert.issuer]
        if not issuers:
            dead_ends.append(f"no issuer of {cert.label()}")
        for parent in issuers:
            if not _issued_by(cert.der, parent.der):
                dead_ends.append(f"a bad signature on {cert.label()} by {parent.label()}")
            elif not parent.valid_at(at):
                dead_ends.append(f"{parent.label()} not valid at {at.text()}")
            elif parent.der not in root_ders and not parent.is_ca:
                dead_ends.append(f"{parent.label()} without basicConstraints cA")
            elif walk(parent, seen | {parent.der}):
                return True
        return False

    if walk(tsa, frozenset({tsa.der})):
        return None
    return _problem(
        f"certificate chain of {tsa.label()}",
        "; ".join(dead_ends) or "no path",
        f"a path to one of {len(roots)} roots, valid at genTime",
    )
