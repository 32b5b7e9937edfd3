"""The auditor's keys: Ed25519 for the JSON report (spec §11), ECDSA P-256 with an X.509
certificate for the PDF's PAdES signature.

A key folder made by ``vtaudit keygen`` holds:

| file | what | mode |
|---|---|---|
| ``auditor.key`` | Ed25519 private key, PKCS#8 PEM | 0600 |
| ``auditor.pub`` | its public key, b64u (spec §2 ``key``): give this to readers of the report | 0644 |
| ``pdf.key`` | the PDF signing key, PKCS#8 PEM (ECDSA P-256, or the imported key) | 0600 |
| ``pdf.crt`` | its certificate, PEM, then any chain certificates from an imported PKCS#12 | 0644 |

Private keys are created with mode 0600 from the first byte (``os.open`` with the mode,
never a chmod after writing) and are never printed or logged.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from auditor.crypto.ed25519 import SigningKey
from auditor.errors import InputError
from auditor.model.encoding import b64u_decode

__all__ = [
    "AUDITOR_KEY",
    "AUDITOR_PUB",
    "PDF_CERT",
    "PDF_KEY",
    "KeyFolder",
    "generate",
    "import_pkcs12",
    "load_auditor_key",
    "load_key_folder",
    "load_public_key",
]

AUDITOR_KEY, AUDITOR_PUB, PDF_KEY, PDF_CERT = "auditor.key", "auditor.pub", "pdf.key", "pdf.crt"
CERT_YEARS = 5


@dataclass(frozen=True)
class KeyFolder:
    folder: Path
    auditor: SigningKey
    pdf_key: Path | None
    pdf_cert: Path | None


def _write_private(path: Path, data: bytes, force: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError as e:
        raise InputError(
            f"{path} exists; keep it, or pass --force to replace the keys in {path.parent}"
        ) from e
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)  # an existing file kept its old mode through O_TRUNC


def _write_public(path: Path, data: bytes, force: bool) -> None:
    if path.exists() and not force:
        raise InputError(f"{path} exists; keep it, or pass --force to replace the keys in {path.parent}")
    path.write_bytes(data)
    path.chmod(0o644)


def _pem(key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _self_signed(key: ec.EllipticCurvePrivateKey, name: str) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365 * CERT_YEARS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def generate(folder: Path, name: str, *, force: bool = False, with_pdf: bool = True) -> KeyFolder:
    """New keys in ``folder``: Ed25519 for reports, and (``with_pdf``) ECDSA P-256 with a
    self-signed certificate naming ``name`` for PDF signatures."""
    folder.mkdir(parents=True, exist_ok=True)
    signing = ed25519.Ed25519PrivateKey.generate()
    _write_private(folder / AUDITOR_KEY, _pem(signing), force)
    auditor = SigningKey(signing.private_bytes_raw())
    _write_public(folder / AUDITOR_PUB, (auditor.public_b64u + "\n").encode(), force)
    if with_pdf:
        pdf_key = ec.generate_private_key(ec.SECP256R1())
        _write_private(folder / PDF_KEY, _pem(pdf_key), force)
        cert = _self_signed(pdf_key, name)
        _write_public(folder / PDF_CERT, cert.public_bytes(serialization.Encoding.PEM), force)
    return load_key_folder(folder)


def import_pkcs12(folder: Path, p12: Path, password: bytes | None, *, force: bool = False) -> None:
    """Take the PDF signing key and certificate (and chain) from a PKCS#12 file."""
    try:
        key, cert, chain = pkcs12.load_key_and_certificates(p12.read_bytes(), password)
    except FileNotFoundError as e:
        raise InputError(f"{p12}: file not found") from e
    except ValueError as e:
        raise InputError(f"{p12}: not a PKCS#12 file, or the password is wrong ({e})") from e
    if cert is None or not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise InputError(f"{p12}: needs an ECDSA or RSA private key with its certificate")
    folder.mkdir(parents=True, exist_ok=True)
    _write_private(folder / PDF_KEY, _pem(key), force)
    pems = [c.public_bytes(serialization.Encoding.PEM) for c in (cert, *chain)]
    _write_public(folder / PDF_CERT, b"".join(pems), force)


def load_auditor_key(path: Path) -> SigningKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError as e:
        raise InputError(f"{path}: no auditor key here; create one with `vtaudit keygen --out DIR`") from e
    except (ValueError, TypeError) as e:
        raise InputError(f"{path}: not an unencrypted PEM private key ({e})") from e
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise InputError(f"{path}: the auditor key must be Ed25519 (spec §3), got {type(key).__name__}")
    return SigningKey(key.private_bytes_raw())


def load_key_folder(folder: Path) -> KeyFolder:
    """The keys in a folder made by ``vtaudit keygen``; the PDF key is optional."""
    if not folder.is_dir():
        raise InputError(f"{folder}: no such key folder; create one with `vtaudit keygen --out {folder}`")
    auditor = load_auditor_key(folder / AUDITOR_KEY)
    pdf_key, pdf_cert = folder / PDF_KEY, folder / PDF_CERT
    has_pdf = pdf_key.is_file() and pdf_cert.is_file()
    return KeyFolder(folder, auditor, pdf_key if has_pdf else None, pdf_cert if has_pdf else None)


def load_public_key(value: str) -> str:
    """A report reader's trusted key: b64u text, or a file holding it (``auditor.pub``)."""
    text = value.strip()
    path = Path(value)
    if path.is_file():
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    try:
        b64u_decode(text, length=32, what="Ed25519 public key")
    except Exception as e:
        raise InputError(
            f"--key {value!r}: not an Ed25519 public key (b64u, 32 bytes) nor a file holding one"
        ) from e
    return text
