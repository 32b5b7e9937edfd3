"""Write the reports of one audit: the signed JSON, the HTML page and the signed PDF."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from auditor.crypto.ed25519 import SigningKey
from auditor.report.body import report_body
from auditor.report.keys import KeyFolder
from auditor.report.pades import sign_pdf
from auditor.report.render import Fetches, html_report, pdf_report
from auditor.report.signed import format_digest, report_digest, sign_report
from auditor.verify.engine import Verification

__all__ = ["Published", "publish", "render_files", "write_atomic"]


@dataclass(frozen=True)
class Published:
    json: Path
    html: Path
    pdf: Path | None
    digest: str  # as printed on the paper
    pdf_signed: bool


def write_atomic(path: Path, data: bytes) -> None:
    """Write through a temporary file and rename: a reader never sees half a report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a killed run
        stale.unlink(missing_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def render_files(
    report: bytes, out: Path, keys: KeyFolder | None, *, pdf: bool = True, tsa_url: str | None = None
) -> Published:
    """HTML and PDF renderings of a report file's bytes, the PDF PAdES-signed when the key
    folder has a PDF key. Rendering fetches nothing (``render.Fetches`` refuses all)."""
    from auditor.model.encoding import parse_json

    body = parse_json(report, what="report JSON")["body"]
    html_path = out / "report.html"
    write_atomic(html_path, html_report(report).encode("utf-8"))
    pdf_path = None
    signed = False
    if pdf:
        document = pdf_report(report, Fetches())
        if keys is not None and keys.pdf_key is not None and keys.pdf_cert is not None:
            document = sign_pdf(document, keys.pdf_key, keys.pdf_cert, tsa_url=tsa_url)
            signed = True
        pdf_path = out / "report.pdf"
        write_atomic(pdf_path, document)
    return Published(out / "report.json", html_path, pdf_path, format_digest(report_digest(body)), signed)


def publish(
    verification: Verification,
    store: Path,
    out: Path,
    keys: KeyFolder,
    *,
    pdf: bool = True,
    tsa_url: str | None = None,
) -> Published:
    """report.json (signed with the auditor key), report.html and report.pdf in ``out``."""
    report = signed_report(verification, store, keys.auditor)
    write_atomic(out / "report.json", report)
    return render_files(report, out, keys, pdf=pdf, tsa_url=tsa_url)


def signed_report(verification: Verification, store: Path, key: SigningKey) -> bytes:
    return sign_report(report_body(verification, store), key)
