"""PAdES signatures on the PDF report (pyHanko), optionally with an RFC 3161 timestamp.

Signing: PAdES baseline B-B with the key and certificate of ``vtaudit keygen``
(``pdf.key``, ``pdf.crt``), B-T when a TSA URL is given (the TSA's token over the
signature value). Validation: the signature must be intact and cover the whole file
(no content added after signing); the signer is *trusted* only when its certificate
chains to a certificate the reader passes (``--cert``), since a self-signed
certificate proves nothing by itself. The JSON report attached to the PDF is returned
so that its own Ed25519 signature can be checked too.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auditor.errors import InputError

__all__ = ["PdfCheck", "attached_report", "sign_pdf", "verify_pdf"]

FIELD = "vtaudit-report"


@contextmanager
def _pyhanko_imports() -> Iterator[None]:
    """pyHanko imports cryptography's DSA types, which cryptography 51 marks deprecated
    with a warning printed at import: nothing a reader of vtaudit's output can act on
    (vtaudit signs with ECDSA P-256 and accepts what pyHanko validates)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="DSA is deprecated")
        yield


def sign_pdf(pdf: bytes, key: Path, cert: Path, *, tsa_url: str | None = None) -> bytes:
    with _pyhanko_imports():
        from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
        from pyhanko.sign import fields, signers, timestamps

    try:
        signer = signers.SimpleSigner.load(  # type: ignore[no-untyped-call]
            str(key), str(cert), key_passphrase=None
        )
    except Exception as e:
        raise InputError(f"cannot load the PDF signing key {key} and certificate {cert}: {e}") from e
    if signer is None:
        raise InputError(f"cannot load the PDF signing key {key} and certificate {cert}")
    metadata = signers.PdfSignatureMetadata(
        field_name=FIELD,
        md_algorithm="sha256",
        subfilter=fields.SigSeedSubFilter.PADES,
        reason="vtaudit validation report",
        use_pades_lta=False,
    )
    timestamper = timestamps.HTTPTimeStamper(tsa_url, timeout=30) if tsa_url else None
    out = io.BytesIO()
    writer = IncrementalPdfFileWriter(io.BytesIO(pdf))
    try:
        signers.PdfSigner(metadata, signer=signer, timestamper=timestamper).sign_pdf(writer, output=out)
    except Exception as e:
        if tsa_url:
            raise InputError(f"signing the PDF with a timestamp from {tsa_url} failed: {e}") from e
        raise
    return out.getvalue()


@dataclass
class PdfCheck:
    ok: bool = False
    problems: list[str] = field(default_factory=list)
    signer: str | None = None  # the certificate's subject
    signer_sha256: str | None = None  # of the certificate's DER
    trusted: bool = False
    signed_at: str | None = None  # the signer's claimed time
    timestamp: str | None = None  # the TSA's time, when there is a valid timestamp
    report: bytes | None = None  # the attached JSON report


def _certificate_der(path: Path) -> list[bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    try:
        data = path.read_bytes()
    except OSError as e:
        raise InputError(f"{path}: cannot read the certificate ({e.strerror})") from e
    try:
        certs = (
            x509.load_pem_x509_certificates(data)
            if b"-----BEGIN" in data
            else [x509.load_der_x509_certificate(data)]
        )
    except Exception as e:  # ValueError, and cryptography's InvalidVersion, which is not one
        raise InputError(f"{path}: not a PEM or DER certificate ({e})") from e
    return [c.public_bytes(Encoding.DER) for c in certs]


def verify_pdf(data: bytes, trusted_cert: Path | None = None) -> PdfCheck:
    """Validate the PAdES signature of a report PDF; never raises on a bad PDF."""
    import hashlib

    from asn1crypto import x509 as asn1_x509

    with _pyhanko_imports():
        from pyhanko.pdf_utils.reader import PdfFileReader
        from pyhanko.sign.validation import validate_pdf_signature
        from pyhanko_certvalidator import ValidationContext

    for name in ("pyhanko", "pyhanko_certvalidator"):  # their tracebacks would drown our message
        logging.getLogger(name).setLevel(logging.CRITICAL)
    check = PdfCheck()
    roots = (
        [asn1_x509.Certificate.load(der) for der in _certificate_der(trusted_cert)] if trusted_cert else []
    )
    try:
        reader = PdfFileReader(io.BytesIO(data), strict=False)
        signatures = reader.embedded_signatures
    except Exception as e:
        check.problems.append(f"not a readable PDF ({type(e).__name__}: {e})")
        return check
    if not signatures:
        check.problems.append("the PDF carries no signature")
        return check
    if len(signatures) > 1:
        check.problems.append(f"the PDF carries {len(signatures)} signatures; a vtaudit report has one")
    sig = signatures[-1]
    try:
        context = ValidationContext(trust_roots=roots, allow_fetching=False)
        status = validate_pdf_signature(sig, context)
    except Exception as e:
        check.problems.append(f"the signature cannot be validated ({type(e).__name__}: {e})")
        return check
    cert = status.signing_cert
    check.signer = cert.subject.human_friendly
    check.signer_sha256 = hashlib.sha256(cert.dump()).hexdigest()
    check.signed_at = status.signer_reported_dt.isoformat() if status.signer_reported_dt else None
    if status.timestamp_validity is not None:
        ts = status.timestamp_validity
        check.timestamp = ts.timestamp.isoformat()
        if not ts.intact or not ts.valid:
            check.problems.append("the signature's timestamp does not verify")
    if not status.intact or not status.valid:
        check.problems.append("the signature does not verify: the PDF was changed after it was signed")
    if status.coverage is None or status.coverage.name != "ENTIRE_FILE":
        check.problems.append(
            "the signature does not cover the whole file: something was added after signing "
            f"({status.coverage.name if status.coverage else 'unknown coverage'})"
        )
    check.trusted = bool(roots) and bool(status.trusted)
    if roots and not status.trusted and status.intact:
        check.problems.append(
            f"the signer ({check.signer}) is not the certificate you trust ({trusted_cert})"
        )
    check.report = attached_report(reader)
    check.ok = not check.problems
    return check


def attached_report(reader: Any) -> bytes | None:
    """The bytes of the ``report.json`` embedded file, if any."""
    try:
        names = reader.root["/Names"]["/EmbeddedFiles"]["/Names"]
        for i in range(0, len(names), 2):
            if str(names[i]) == "report.json":
                return bytes(names[i + 1]["/EF"]["/F"].data)
    except (KeyError, TypeError, IndexError, AttributeError):
        return None
    return None
