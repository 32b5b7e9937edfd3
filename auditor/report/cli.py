"""``vtaudit keygen`` and ``vtaudit report …``: the auditor's keys and its signed reports."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from auditor.cliutil import boundary
from auditor.errors import InputError

__all__ = ["keygen", "report"]


@click.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Key folder to write (auditor.key, auditor.pub, pdf.key, pdf.crt).",
)
@click.option(
    "--name",
    default="vtaudit auditor",
    show_default=True,
    help="Who signs: the common name of the PDF certificate (e.g. your newsroom's audit desk).",
)
@click.option(
    "--p12",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Import the PDF signing key and certificate from this PKCS#12 file instead of making them. "
    "Its password is read from $VTAUDIT_P12_PASSWORD, or asked for.",
)
@click.option("--force", is_flag=True, help="Replace keys that already exist in the folder.")
@boundary
def keygen(out: Path, name: str, p12: Path | None, force: bool) -> None:
    """Create the auditor's signing keys.

    An Ed25519 key signs the JSON report (spec §11); give auditor.pub to whoever reads
    your reports. An ECDSA P-256 key with a self-signed X.509 certificate signs the PDF
    (PAdES), or import a key and certificate you already have (--p12), for example one
    issued by a certification authority that PDF readers trust. Private keys are written
    with mode 0600 and are never printed.

    \b
    Example:
      vtaudit keygen --out ~/.vtaudit/keys --name "Daily Ledger audit desk"
      vtaudit keygen --out keys --p12 signing.p12
    """
    from auditor.report.keys import AUDITOR_PUB, PDF_CERT, generate, import_pkcs12

    if p12 is None:
        folder = generate(out, name, force=force)
    else:
        password = os.environ.get("VTAUDIT_P12_PASSWORD")
        if password is None:
            password = click.prompt(f"password of {p12} (empty for none)", hide_input=True, default="")
        folder = generate(out, name, force=force, with_pdf=False)
        import_pkcs12(out, p12, password.encode() if password else None, force=force)
    click.echo(f"auditor key (Ed25519): {folder.auditor.public_b64u}")
    click.echo(f"  public key for your readers: {out / AUDITOR_PUB}")
    click.echo(f"  PDF signing certificate: {out / PDF_CERT}")
    click.echo(f"private keys written with mode 0600 in {out}; keep them out of version control")


@click.group()
def report() -> None:
    """Check and render signed validation reports (spec §11).

    \b
    Example:
      vtaudit report verify demo-out/audit/report.json --key demo-out/keys/auditor.pub
      vtaudit report check-print demo-out/audit/report.json
    """


def _key_option(f: Any) -> Any:
    return click.option(
        "--key",
        "key",
        help="The auditor's public key you trust: b64u text or a file holding it (auditor.pub).",
    )(f)


@report.command("verify")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_key_option
@click.option(
    "--cert",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="PDF: the signer's certificate you trust (pdf.crt), PEM or DER.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@boundary
def verify_command(file: Path, key: str | None, cert: Path | None, as_json: bool) -> None:
    """Check a report's signatures: a JSON report or a PDF report.

    JSON: the file must be the canonical bytes of a validation_report envelope with a
    check entry for every spec §8 id, signed by the auditor (by --key, when given).
    PDF: the PAdES signature must be intact and cover the whole file (trusted when it is
    made by --cert), and the JSON report attached to it is checked as above.
    Exit code 0: valid; 1: invalid or altered; 2: unreadable file or bad option.

    \b
    Example:
      vtaudit report verify report.json --key auditor.pub
      vtaudit report verify report.pdf --cert pdf.crt --key auditor.pub
    """
    from auditor.report.keys import load_public_key
    from auditor.report.pades import verify_pdf
    from auditor.report.signed import format_digest, verify_report

    trusted = load_public_key(key) if key else None
    data = file.read_bytes()
    result: dict[str, Any] = {"file": str(file)}
    problems: list[str] = []
    report_bytes: bytes | None = data
    if data.startswith(b"%PDF"):
        pdf = verify_pdf(data, cert)
        result["pdf"] = {
            "signer": pdf.signer,
            "certificateSha256": pdf.signer_sha256,
            "trusted": pdf.trusted,
            "signedAt": pdf.signed_at,
            "timestamp": pdf.timestamp,
            "problems": pdf.problems,
        }
        problems += [f"PDF: {p}" for p in pdf.problems]
        report_bytes = pdf.report
        if report_bytes is None:
            problems.append("PDF: no report.json is attached to it")
    elif cert is not None:
        raise InputError("--cert is for PDF reports; a JSON report is checked with --key")
    if report_bytes is not None:
        check = verify_report(report_bytes, trusted)
        problems += check.problems
        body = check.body or {}
        result["json"] = {
            "cid": check.cid,
            "digest": format_digest(check.digest) if check.digest else None,
            "signers": check.signers,
            "trustedSigner": check.trusted_signer,
            "election": body.get("election"),
            "verdict": body.get("verdict"),
            "ballots": [
                {"district": b.get("district"), "verdict": b.get("verdict")}
                for b in body.get("ballots", [])
                if isinstance(b, dict)
            ],
        }
    result["valid"] = not problems
    result["problems"] = problems
    if as_json:
        click.echo(json.dumps(result, indent=1, ensure_ascii=False))
    else:
        _print_check(result, trusted is not None, cert is not None)
    sys.exit(0 if not problems else 1)


def _print_check(result: dict[str, Any], with_key: bool, with_cert: bool) -> None:
    pdf, js = result.get("pdf"), result.get("json")
    click.echo(f"{result['file']}: {'VALID' if result['valid'] else 'NOT VALID'}")
    if pdf:
        trust = (
            "trusted (it is the certificate you gave)"
            if pdf["trusted"]
            else (
                "not checked against a certificate you trust: pass --cert"
                if not with_cert
                else "NOT the one you trust"
            )
        )
        click.echo(
            f"  PDF signed by {pdf['signer']} (certificate SHA-256 {pdf['certificateSha256']}): {trust}"
        )
        if pdf["timestamp"]:
            click.echo(f"  PDF timestamp: {pdf['timestamp']}")
    if js:
        signer = ", ".join(js["signers"]) or "nobody (no valid signature)"
        note = "" if with_key else " (not checked against a key you trust: pass --key)"
        click.echo(f"  JSON report signed by {signer}{note}")
        click.echo(f"  digest {js['digest']}")
        click.echo(f"  election {js['election']}: {js['verdict']}")
        for b in js["ballots"]:
            click.echo(f"    district {b['district']}: {b['verdict']}")
    for problem in result["problems"]:
        click.echo(f"  problem: {problem}")


@report.command("check-print")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--printed",
    help="The digest printed on the paper (or read from its QR code); spaces and case do not matter.",
)
@_key_option
@boundary
def check_print(file: Path, printed: str | None, key: str | None) -> None:
    """Recompute the digest printed on every page of a report from the JSON report.

    Someone holding the paper copy compares the printed "Report digest" with the one
    shown here, computed from the published JSON; with --printed the comparison is
    done for you. The JSON's signature is checked too. Exit code 0: the JSON is valid
    (and matches --printed); 1: it does not.

    \b
    Example:
      vtaudit report check-print report.json
      vtaudit report check-print report.json --printed "55c8 0a89 79ed ..."
    """
    from auditor.report.keys import load_public_key
    from auditor.report.signed import format_digest, normalize_printed, verify_report

    trusted = load_public_key(key) if key else None
    check = verify_report(file.read_bytes(), trusted)
    if check.digest is None:
        click.echo(f"{file}: not a report: {'; '.join(check.problems)}")
        sys.exit(1)
    body = check.body or {}
    click.echo(f"report digest: {format_digest(check.digest)}")
    evidence = body.get("evidence")
    evidence = evidence if isinstance(evidence, dict) else {}
    click.echo(f"evidence fingerprint: {evidence.get('root')} ({evidence.get('records')} records)")
    click.echo(f"election {body.get('election')}: {body.get('verdict')}")
    ok = check.ok
    for problem in check.problems:
        click.echo(f"problem: {problem}")
    if printed is not None:
        typed = normalize_printed(printed)
        if typed == check.digest.hex():
            click.echo("MATCH: the paper shows this report's digest")
        else:
            ok = False
            click.echo("NO MATCH: the paper's digest is not this report's; the paper or the JSON differs")
    sys.exit(0 if ok else 1)


@report.command("render")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Output folder.")
@click.option(
    "--keys",
    type=click.Path(file_okay=False, path_type=Path),
    help="Key folder of `vtaudit keygen`: the PDF is PAdES-signed with its pdf.key.",
)
@click.option("--tsa", "tsa_url", help="RFC 3161 time-stamp authority URL for the PDF signature.")
@boundary
def render(file: Path, out: Path, keys: Path | None, tsa_url: str | None) -> None:
    """Render the HTML and PDF of a JSON report (after checking its signature).

    \b
    Example:
      vtaudit report render report.json --out printed/ --keys ~/.vtaudit/keys
    """
    from auditor.report.keys import load_key_folder
    from auditor.report.publish import render_files
    from auditor.report.signed import verify_report

    data = file.read_bytes()
    check = verify_report(data)
    if not check.ok:
        raise InputError(f"{file}: not a valid signed report ({'; '.join(check.problems)}); nothing rendered")
    published = render_files(data, out, load_key_folder(keys) if keys else None, tsa_url=tsa_url)
    click.echo(f"wrote {published.html} and {published.pdf}{' (signed)' if published.pdf_signed else ''}")
    click.echo(f"report digest: {published.digest}")
