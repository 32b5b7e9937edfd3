"""Signed validation reports (issue 6): keys, the spec §11 JSON, the PDF and HTML, PAdES,
the printed copy, rendering that fetches nothing, and `vtaudit audit`."""

from __future__ import annotations

import http.server
import json
import shutil
import stat
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, pkcs12

from auditor.checkids import CHECK_IDS
from auditor.cli import main
from auditor.crypto.ed25519 import SigningKey
from auditor.errors import InputError
from auditor.harvest import ArchiveSource, harvest
from auditor.model.encoding import jcs, parse_json
from auditor.report import keys as report_keys
from auditor.report.body import ballot_verdicts, report_body
from auditor.report.pades import sign_pdf, verify_pdf
from auditor.report.render import Fetches, html_report, pdf_report
from auditor.report.signed import format_digest, normalize_printed, report_digest, sign_report, verify_report
from auditor.trust import load_trust
from auditor.verify.engine import Verification, verify_store
from auditor.verify.findings import Finding

NOW = 1_790_000_000_000


def _store(out: Path) -> Path:
    store = out / "store"
    if not (store / "store.json").exists():
        harvest([ArchiveSource(out / "evidence.car")], store)
    return store


def _verify(out: Path, *, workers: int = 1, trusted: bool = True) -> Verification:
    trust = load_trust(out / "trust.toml") if trusted else None
    return verify_store(_store(out), trust, workers=workers)


def _body(out: Path, **kwargs: Any) -> dict[str, Any]:
    return report_body(_verify(out, **kwargs), _store(out), now=NOW)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> report_keys.KeyFolder:
    return report_keys.generate(tmp_path_factory.mktemp("keys") / "k", "Test audit desk")


@pytest.fixture(scope="module")
def clean(sims: Callable[[str | None], Path]) -> Path:
    return sims(None)


@pytest.fixture(scope="module")
def clean_report(clean: Path, keys: report_keys.KeyFolder) -> bytes:
    return sign_report(_body(clean), keys.auditor)


@pytest.fixture(scope="module")
def clean_pdf(clean_report: bytes, keys: report_keys.KeyFolder) -> bytes:
    assert keys.pdf_key and keys.pdf_cert
    return sign_pdf(pdf_report(clean_report), keys.pdf_key, keys.pdf_cert)


# ---------------------------------------------------------------------------- keys


def test_keygen_writes_private_keys_0600_and_refuses_to_overwrite(tmp_path: Path) -> None:
    folder = tmp_path / "keys"
    made = report_keys.generate(folder, "Desk")
    for name in (report_keys.AUDITOR_KEY, report_keys.PDF_KEY):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600
    assert (folder / report_keys.AUDITOR_PUB).read_text().strip() == made.auditor.public_b64u
    with pytest.raises(InputError, match="--force"):
        report_keys.generate(folder, "Desk")
    again = report_keys.generate(folder, "Desk", force=True)
    assert again.auditor.public_b64u != made.auditor.public_b64u
    assert stat.S_IMODE((folder / report_keys.AUDITOR_KEY).stat().st_mode) == 0o600
    assert report_keys.load_key_folder(folder).auditor.public_b64u == again.auditor.public_b64u


def test_keygen_command_imports_a_pkcs12_and_never_prints_a_private_key(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    made = report_keys.generate(tmp_path / "src", "Imported desk")
    assert made.pdf_cert is not None
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(made.pdf_cert.read_bytes())
    # a PKCS#12 whose key does not match the certificate is still a well-formed file;
    # use the generated pair instead, as a CA-issued bundle would be
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    assert made.pdf_key is not None
    pair_key = load_pem_private_key(made.pdf_key.read_bytes(), None)
    assert isinstance(pair_key, ec.EllipticCurvePrivateKey) and isinstance(key, ec.EllipticCurvePrivateKey)
    p12 = tmp_path / "bundle.p12"
    p12.write_bytes(
        pkcs12.serialize_key_and_certificates(b"desk", pair_key, cert, None, BestAvailableEncryption(b"pw"))
    )
    out = tmp_path / "keys"
    result = CliRunner().invoke(
        main, ["keygen", "--out", str(out), "--p12", str(p12)], env={"VTAUDIT_P12_PASSWORD": "pw"}
    )
    assert result.exit_code == 0, result.output
    assert "PRIVATE KEY" not in result.output
    assert (out / "pdf.crt").read_bytes().startswith(b"-----BEGIN CERTIFICATE")
    assert stat.S_IMODE((out / "pdf.key").stat().st_mode) == 0o600
    wrong = CliRunner().invoke(
        main, ["keygen", "--out", str(tmp_path / "k2"), "--p12", str(p12)], env={"VTAUDIT_P12_PASSWORD": "no"}
    )
    assert wrong.exit_code == 2 and "password" in wrong.output


def test_a_bad_key_folder_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="vtaudit keygen"):
        report_keys.load_key_folder(tmp_path / "none")
    (tmp_path / "k").mkdir()
    (tmp_path / "k" / "auditor.key").write_text("not a key")
    with pytest.raises(InputError, match="PEM"):
        report_keys.load_key_folder(tmp_path / "k")
    with pytest.raises(InputError, match="Ed25519 public key"):
        report_keys.load_public_key("abc")


# ---------------------------------------------------------------------------- the JSON report


def test_the_body_has_every_member_of_spec_11(clean: Path, clean_report: bytes) -> None:
    body = parse_json(clean_report)["body"]
    for member in (
        "election",
        "auditor",
        "trust",
        "evidence",
        "checks",
        "ballots",
        "findings",
        "generatedAt",
    ):
        assert member in body
    assert set(body["auditor"]) >= {"name", "version", "rules"}
    assert [c["id"] for c in body["checks"]] == list(CHECK_IDS)
    assert all(
        c["status"] in ("pass", "fail", "skipped") and isinstance(c["failures"], int) for c in body["checks"]
    )
    assert body["evidence"]["records"] > 0 and len(body["evidence"]["root"]) == 43
    assert body["trust"]["election"] == load_trust(clean / "trust.toml").election
    assert body["generatedAt"] == NOW
    assert body["ballots"]
    for ballot in body["ballots"]:
        assert ballot["verdict"] == "verified"
        assert {
            "template",
            "district",
            "voters",
            "counts",
            "spread",
            "errorMargin",
            "robust",
            "runoff",
        } <= set(ballot)
        assert set(ballot["runoff"]) >= {"required", "triggers", "participants", "due"}
        assert ballot["voters"] > 0 and ballot["counts"]


def test_the_report_is_canonical_json_without_floats(clean_report: bytes) -> None:
    def no_float(value: Any) -> bool:
        if isinstance(value, dict):
            return all(no_float(v) for v in value.values())
        if isinstance(value, list):
            return all(no_float(v) for v in value)
        return not isinstance(value, float)

    envelope = parse_json(clean_report)  # strict: rejects floats, duplicates
    assert jcs(envelope) == clean_report
    assert no_float(envelope)


def test_a_signed_report_verifies_and_any_change_is_caught(
    clean_report: bytes, keys: report_keys.KeyFolder
) -> None:
    check = verify_report(clean_report, keys.auditor.public_b64u)
    assert check.ok, check.problems
    assert check.trusted_signer == keys.auditor.public_b64u
    other = SigningKey(b"\x07" * 32).public_b64u
    assert not verify_report(clean_report, other).ok
    envelope = parse_json(clean_report)
    envelope["body"]["ballots"][0]["voters"] += 1  # a changed count
    changed = verify_report(jcs(envelope))
    assert not changed.ok and any("does not verify" in p for p in changed.problems)
    pretty = json.dumps(parse_json(clean_report), indent=1).encode()
    assert any("canonical" in p for p in verify_report(pretty).problems)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"{",
        b"[]",
        b'{"v":1}',
        b"\xff\xfe",
        b'{"v":1.5,"type":"x","body":{},"signatures":[],"timestamps":[]}',
    ],
)
def test_malformed_report_files_are_problems_not_crashes(data: bytes) -> None:
    check = verify_report(data)
    assert not check.ok and check.problems


def test_a_report_missing_a_check_or_a_signature_is_invalid(
    clean_report: bytes, keys: report_keys.KeyFolder
) -> None:
    body = parse_json(clean_report)["body"]
    body["checks"] = body["checks"][1:]
    assert any("every check id" in p for p in verify_report(sign_report(body, keys.auditor)).problems)
    unsigned = jcs({"v": 1, "type": "validation_report", "body": body, "signatures": [], "timestamps": []})
    assert any("not signed" in p for p in verify_report(unsigned).problems)
    signed = parse_json(sign_report(body, keys.auditor))
    boolean = jcs(dict(signed, v=True))  # true == 1 in Python: still not version 1
    assert any("version-1" in p for p in verify_report(boolean).problems)


def test_the_body_is_reproducible_across_runs_worker_counts_and_harvest_orders(
    tmp_path: Path, clean: Path, clean_report: bytes
) -> None:
    first = parse_json(clean_report)["body"]
    second = _body(clean, workers=2)
    assert jcs(second) == jcs(first)
    # the same records harvested from the record files instead of the CAR
    other = tmp_path / "other"
    harvest([ArchiveSource(clean / "records")], other / "store")
    shutil.copy(clean / "trust.toml", other / "trust.toml")
    for pem in clean.glob("*.pem"):
        shutil.copy(pem, other / pem.name)
    third = report_body(
        verify_store(other / "store", load_trust(other / "trust.toml"), workers=1), other / "store", now=NOW
    )
    assert jcs(third) == jcs(first)


# ---------------------------------------------------------------------------- ballot verdicts


def _ballots(sims: Callable[[str | None], Path], tamper: str) -> list[dict[str, Any]]:
    return list(_body(sims(tamper))["ballots"])


def test_a_critical_failure_in_one_ballot_marks_only_that_ballot(sims: Callable[[str | None], Path]) -> None:
    ballots = _ballots(sims, "tally-leaf-miscount")
    verdicts = sorted(b["verdict"] for b in ballots)
    assert verdicts.count("not-verified") == 1, verdicts
    bad = next(b for b in ballots if b["verdict"] == "not-verified")
    assert "TALLY-TREE" in bad["failedChecks"]
    assert all(b["verdict"] == "verified" for b in ballots if b is not bad)


def test_a_warning_gives_verified_with_warnings(sims: Callable[[str | None], Path]) -> None:
    ballots = _ballots(sims, "dispute-unresolved")
    warned = [b for b in ballots if b["verdict"] == "verified-with-warnings"]
    assert len(warned) == 1 and warned[0]["failedChecks"] == ["DSP-RESOLVED"]


def test_an_election_wide_critical_failure_marks_every_ballot(sims: Callable[[str | None], Path]) -> None:
    ballots = _ballots(sims, "key-missing")
    assert ballots and all(b["verdict"] == "not-verified" for b in ballots)
    assert all("KEY-RELEASE" in b["failedChecks"] for b in ballots)


def test_a_close_race_is_verified_and_still_requires_a_runoff(sims: Callable[[str | None], Path]) -> None:
    ballots = _ballots(sims, "close-race")
    close = [b for b in ballots if "close-margin" in b["runoff"]["triggers"]]
    assert close and all(b["verdict"] == "verified" and b["runoff"]["required"] for b in close)
    assert len(close[0]["runoff"]["participants"]) >= 2 and close[0]["runoff"]["due"]


# ---------------------------------------------------------------------------- PDF, HTML, printed copy


def _pdf_text(pdf: bytes, tmp_path: Path, page: int | None = None) -> str:
    path = tmp_path / "r.pdf"
    path.write_bytes(pdf)
    pages = ["-f", str(page), "-l", str(page)] if page else []
    return subprocess.run(
        ["pdftotext", "-layout", *pages, str(path), "-"], check=True, capture_output=True, text=True
    ).stdout


def _page_count(pdf: bytes, tmp_path: Path) -> int:
    path = tmp_path / "n.pdf"
    path.write_bytes(pdf)
    info = subprocess.run(["pdfinfo", str(path)], check=True, capture_output=True, text=True).stdout
    return int(next(line.split()[-1] for line in info.splitlines() if line.startswith("Pages:")))


def test_the_pdf_renders_and_every_page_carries_the_digest_and_fingerprint(
    tmp_path: Path, clean_report: bytes, clean_pdf: bytes
) -> None:
    digest = format_digest(report_digest(parse_json(clean_report)["body"]))
    root = parse_json(clean_report)["body"]["evidence"]["root"]
    pages = _page_count(clean_pdf, tmp_path)
    assert pages >= 5
    for page in range(1, pages + 1):
        text = " ".join(_pdf_text(clean_pdf, tmp_path, page).split())
        assert digest[:39] in text, f"page {page} lacks the report digest"
        assert root in text, f"page {page} lacks the evidence fingerprint"
        assert f"page {page} of {pages}" in text
    first = " ".join(_pdf_text(clean_pdf, tmp_path, 1).split())
    assert "Overall: VERIFIED" in first
    assert "Every check passed: vtaudit decrypted and recounted all" in first
    assert "runoff is required" in first  # "No runoff …" or "A runoff … (trigger)"


def test_the_pdf_pages_turn_into_png_images_with_ink(tmp_path: Path, clean_pdf: bytes) -> None:
    (tmp_path / "r.pdf").write_bytes(clean_pdf)
    subprocess.run(["pdftoppm", "-r", "40", "-png", str(tmp_path / "r.pdf"), str(tmp_path / "p")], check=True)
    images = sorted(tmp_path.glob("p-*.png"))
    assert len(images) == _page_count(clean_pdf, tmp_path)
    from PIL import Image

    for image in images[:3]:
        with Image.open(image) as im:
            gray = im.convert("L")
            dark = sum(gray.histogram()[:128])
            assert dark > 500, f"{image.name} is blank"


def test_the_qr_code_encodes_the_digest(clean_report: bytes) -> None:
    import segno

    digest = report_digest(parse_json(clean_report)["body"]).hex()
    html = html_report(clean_report)
    assert segno.make("sha256:" + digest, error="m").svg_inline(scale=2, border=2, omitsize=False) in html


def test_pades_signature_validates_and_detects_changes(
    tmp_path: Path, clean_pdf: bytes, clean_report: bytes, keys: report_keys.KeyFolder
) -> None:
    assert keys.pdf_cert is not None
    check = verify_pdf(clean_pdf, keys.pdf_cert)
    assert check.ok and check.trusted, check.problems
    assert check.report == clean_report
    assert verify_pdf(clean_pdf).ok and not verify_pdf(clean_pdf).trusted
    stranger = report_keys.generate(tmp_path / "stranger", "Someone else")
    assert stranger.pdf_cert is not None
    assert not verify_pdf(clean_pdf, stranger.pdf_cert).ok
    appended = verify_pdf(clean_pdf + b"\n%%extra\n", keys.pdf_cert)
    assert not appended.ok
    flipped = bytearray(clean_pdf)
    flipped[len(flipped) // 3] ^= 0x01
    assert not verify_pdf(bytes(flipped), keys.pdf_cert).ok
    assert not verify_pdf(b"%PDF-1.7 garbage").ok
    assert not verify_pdf(pdf_report(clean_report)).ok  # unsigned


def test_report_verify_command_on_json_and_pdf(
    tmp_path: Path, clean_report: bytes, clean_pdf: bytes, keys: report_keys.KeyFolder
) -> None:
    (tmp_path / "report.json").write_bytes(clean_report)
    (tmp_path / "report.pdf").write_bytes(clean_pdf)
    runner = CliRunner()
    pub = str(keys.folder / "auditor.pub")
    ok = runner.invoke(main, ["report", "verify", str(tmp_path / "report.json"), "--key", pub])
    assert ok.exit_code == 0 and "VALID" in ok.output, ok.output
    ok_pdf = runner.invoke(
        main, ["report", "verify", str(tmp_path / "report.pdf"), "--key", pub, "--cert", str(keys.pdf_cert)]
    )
    assert ok_pdf.exit_code == 0 and "trusted" in ok_pdf.output, ok_pdf.output
    (tmp_path / "bad.json").write_bytes(clean_report.replace(b'"verified"', b'"not-verified"', 1))
    bad = runner.invoke(main, ["report", "verify", str(tmp_path / "bad.json")])
    assert bad.exit_code == 1 and "NOT VALID" in bad.output
    garbage = runner.invoke(main, ["report", "verify", str(tmp_path / "report.json"), "--key", "nope"])
    assert garbage.exit_code == 2


def test_check_print_recomputes_the_printed_digest(tmp_path: Path, clean_report: bytes) -> None:
    path = tmp_path / "report.json"
    path.write_bytes(clean_report)
    digest = report_digest(parse_json(clean_report)["body"])
    runner = CliRunner()
    shown = runner.invoke(main, ["report", "check-print", str(path)])
    assert shown.exit_code == 0 and format_digest(digest) in shown.output
    typed = format_digest(digest).upper()
    assert runner.invoke(main, ["report", "check-print", str(path), "--printed", typed]).exit_code == 0
    scanned = "sha256:" + digest.hex()
    assert runner.invoke(main, ["report", "check-print", str(path), "--printed", scanned]).exit_code == 0
    wrong = runner.invoke(main, ["report", "check-print", str(path), "--printed", "00" * 32])
    assert wrong.exit_code == 1 and "NO MATCH" in wrong.output
    assert normalize_printed(" SHA256:AB-cd ef ") == "abcdef"


# ---------------------------------------------------------------------------- rendering fetches nothing


class _Counter(http.server.BaseHTTPRequestHandler):
    hits: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        _Counter.hits.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def listener() -> Iterator[str]:
    _Counter.hits = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Counter)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_hostile_text_from_records_renders_as_text_and_nothing_is_fetched(
    tmp_path: Path, clean_report: bytes, keys: report_keys.KeyFolder, listener: str
) -> None:
    img = f'<img src="{listener}/img.png">'
    css = f"<style>body {{ background: url({listener}/css.png) }}</style>"
    md = f"![x]({listener}/md.png) [link]({listener}/link)"
    body = parse_json(clean_report)["body"]
    body["electionInfo"] = {"title": img + css, "date": NOW}
    ballot = body["ballots"][0]
    ballot["district"] = f'<a href="{listener}/a">north</a>'
    text_question = next(q for q in ballot["counts"].values() if q["type"] == "text")
    text_question["values"].append([md + img, 1])
    body["findings"].append(
        {"check": "REC-SCHEMA", "severity": "error", "subject": None, "message": css, "evidence": {"x": img}}
    )
    report = sign_report(body, keys.auditor)
    html = html_report(report)
    assert "<img" not in html and "<style>body" not in html and "<a href" not in html
    assert "&lt;img src=" in html
    fetches = Fetches()
    pdf = pdf_report(report, fetches)
    assert pdf.startswith(b"%PDF")
    assert fetches.refused == []  # escaped text is not markup: nothing even asked
    assert _Counter.hits == []
    text = " ".join(_pdf_text(pdf, tmp_path, 1).split())
    assert "<img src=" in text  # shown to the reader as the text it is


def test_the_url_fetcher_refuses_what_markup_would_load(listener: str) -> None:
    from weasyprint import HTML

    fetches = Fetches()
    html = f'<img src="{listener}/i.png"><div style="background: url({listener}/b.png)">x</div>'
    HTML(string=html, url_fetcher=fetches.fetcher()).write_pdf()
    assert len(fetches.refused) == 2
    assert _Counter.hits == []


def test_the_html_report_loads_nothing(clean_report: bytes) -> None:
    html = html_report(clean_report)
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    assert " src=" not in html and " href=" not in html
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")


# ---------------------------------------------------------------------------- vtaudit audit


def test_audit_command_writes_signed_reports_that_verify(
    tmp_path: Path, clean: Path, keys: report_keys.KeyFolder
) -> None:
    out = tmp_path / "audit"
    runner = CliRunner()
    result = runner.invoke(
        main,
        [
            "audit",
            str(clean / "evidence.car"),
            "--trust",
            str(clean / "trust.toml"),
            "--keys",
            str(keys.folder),
            "--out",
            str(out),
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    for name in ("report.json", "report.html", "report.pdf"):
        assert (out / name).stat().st_size > 0
    assert (out / "findings" / "findings.parquet").exists()
    check = verify_report((out / "report.json").read_bytes(), keys.auditor.public_b64u)
    assert check.ok and check.body and check.body["verdict"] == "verified"
    assert format_digest(check.digest or b"") in result.output
    pdf = verify_pdf((out / "report.pdf").read_bytes(), keys.pdf_cert)
    assert pdf.ok and pdf.report == (out / "report.json").read_bytes()


def test_audit_command_needs_keys_and_says_how_to_make_them(tmp_path: Path, clean: Path) -> None:
    result = CliRunner().invoke(
        main,
        [
            "audit",
            str(clean / "evidence.car"),
            "--keys",
            str(tmp_path / "none"),
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code == 2 and "vtaudit keygen" in result.output


# ---------------------------------------------------------------------------- PDF timestamp (PAdES B-T)


@pytest.fixture
def tsa_url() -> Iterator[str]:
    """An RFC 3161 time-stamp authority on loopback (pyHanko's test stamper behind HTTP)."""
    import datetime as dt

    from asn1crypto import keys as asn1_keys
    from asn1crypto import tsp
    from asn1crypto import x509 as asn1_x509
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    from pyhanko.sign.timestamps import DummyTimeStamper

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)  # pyHanko's stamper is RSA-only
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Loopback TSA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
        .sign(key, hashes.SHA256())
    )
    stamper = DummyTimeStamper(
        asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER)),
        asn1_keys.PrivateKeyInfo.load(
            key.private_bytes(
                serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        ),
    )

    class Tsa(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            request = tsp.TimeStampReq.load(self.rfile.read(int(self.headers["Content-Length"])))
            reply = stamper.request_tsa_response(request).dump()
            self.send_response(200)
            self.send_header("Content-Type", "application/timestamp-reply")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *_args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Tsa)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/tsa"
    server.shutdown()


def test_the_pdf_signature_can_carry_an_rfc3161_timestamp(
    clean_report: bytes, keys: report_keys.KeyFolder, tsa_url: str
) -> None:
    assert keys.pdf_key and keys.pdf_cert
    signed = sign_pdf(pdf_report(clean_report), keys.pdf_key, keys.pdf_cert, tsa_url=tsa_url)
    check = verify_pdf(signed, keys.pdf_cert)
    assert check.ok, check.problems
    assert check.timestamp is not None


def test_an_unreachable_tsa_is_an_input_error(clean_report: bytes, keys: report_keys.KeyFolder) -> None:
    assert keys.pdf_key and keys.pdf_cert
    with pytest.raises(InputError, match="timestamp"):
        sign_pdf(pdf_report(clean_report), keys.pdf_key, keys.pdf_cert, tsa_url="http://127.0.0.1:9/tsa")


def test_a_voters_hostile_text_answer_is_shown_as_text_end_to_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keys: report_keys.KeyFolder, listener: str
) -> None:
    """A voter writes markup into a text answer; it is decrypted, counted, and printed as
    the characters it is, and rendering the report makes no request."""
    from auditor.sim import blocks as sim_blocks
    from auditor.sim.election import SimConfig, simulate

    hostile = f'<img src="{listener}/vote.png"><style>p {{ background: url({listener}/v.css) }}</style>'
    monkeypatch.setattr(sim_blocks, "TEXT_POOL", (hostile,))
    out = tmp_path / "e"
    simulate(SimConfig(voters=60, seed=11, workers=1), out)
    result = CliRunner().invoke(
        main,
        [
            "audit",
            str(out / "evidence.car"),
            "--trust",
            str(out / "trust.toml"),
            "--keys",
            str(keys.folder),
            "--out",
            str(tmp_path / "a"),
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    body = parse_json((tmp_path / "a" / "report.json").read_bytes())["body"]
    texts = [
        v[0]
        for b in body["ballots"]
        for q in b["counts"].values()
        if q["type"] == "text"
        for v in q["values"]
    ]
    assert hostile in texts
    html = (tmp_path / "a" / "report.html").read_text()
    assert "<img" not in html and "&lt;img src=" in html
    assert _Counter.hits == []
    assert "<img src=" in " ".join(_pdf_text((tmp_path / "a" / "report.pdf").read_bytes(), tmp_path).split())


def test_a_critical_failure_about_a_template_of_no_ballot_marks_its_districts_ballot(
    sims: Callable[[str | None], Path],
) -> None:
    """The losing side of a template equivocation is no ballot of the report: its TPL-VALID
    failure counts against the ballot of its district (a review found it counted against
    none, leaving that ballot "verified")."""
    body = _body(sims("template-equivocation"))
    failing = [f for f in body["findings"] if f["check"] == "TPL-VALID"]
    assert failing
    ballots = body["ballots"]
    bad = [b for b in ballots if b["verdict"] == "not-verified"]
    assert bad and all("TPL-VALID" in b["failedChecks"] for b in bad)
    assert len(bad) < len(ballots)  # the other districts' ballots are untouched


def test_ballot_verdicts_send_a_finding_about_an_unknown_template_to_every_ballot(clean: Path) -> None:
    verification = _verify(clean)
    ballots = {b["template"]: b["district"] for b in verification.ballots}
    one = next(iter(ballots))
    outcomes = [replace(o, status="fail", failures=1) if o.id == "TPL-VALID" else o for o in verification.outcomes]
    forged = replace(
        verification, findings=[Finding("TPL-VALID", "critical", one, "synthetic", {})], outcomes=outcomes
    )
    unknown = ballot_verdicts(forged, {one: "bafy-no-such-template"}, ballots, {})
    assert all(verdict == "not-verified" for verdict, _ in unknown.values())
    own = ballot_verdicts(forged, {one: one}, ballots, {})
    assert [t for t, (verdict, _) in own.items() if verdict == "not-verified"] == [one]
    same_district = ballot_verdicts(forged, {one: "bafy-older"}, ballots, {"bafy-older": ballots[one]})
    assert [t for t, (verdict, _) in same_district.items() if verdict == "not-verified"] == [one]


def test_a_ballots_runoff_is_its_deciding_questions_own() -> None:
    """D29: the ballot's runoff names one question; its triggers are that question's, in
    §10's order, beside that question's participants (a review found the union over every
    question, sorted by name)."""
    from auditor.report.body import _ballot

    def question(code: str, spread: int, triggers: list[str], participants: list[str]) -> dict[str, Any]:
        runoff = {"required": bool(triggers), "triggers": triggers, "participants": participants, "due": 9}
        return {"question": code, "spread": spread, "errorMargin": 4, "robust": spread > 4, "runoff": runoff}

    ballot = {
        "template": "t",
        "district": "d",
        "errorMargin": 4,
        "questions": [
            question("mayor", 3, ["dispute-margin", "close-margin"], ["a", "b"]),
            question("council", 10, ["accessibility"], ["x", "y"]),
        ],
    }
    runoff = _ballot(ballot, "verified", [])["runoff"]
    assert runoff["question"] == "mayor" and runoff["participants"] == ["a", "b"]
    assert runoff["triggers"] == ["dispute-margin", "close-margin"]
    plain = _ballot({"template": "t", "district": "d", "errorMargin": 4, "questions": []}, "verified", [])
    assert plain["errorMargin"] == 4 and plain["spread"] is None and plain["runoff"]["required"] is False
