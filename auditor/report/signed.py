"""The signed JSON report: an envelope of type ``validation_report`` (spec §3, §11).

The file is the envelope's canonical bytes (JCS), so its CID is well defined. Its
*digest* (spec §3: sha256 of the JCS of {"v", "type", "body"}) is what the auditor's
signature covers, and what the PDF prints on every page: a reader holding the paper
recomputes it from the published JSON (``vtaudit report check-print``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from auditor.checkids import CHECK_IDS
from auditor.crypto.ed25519 import SigningKey, sign_digest, verify_digest
from auditor.errors import EncodingError
from auditor.limits import MAX_REPORT_BYTES
from auditor.model.encoding import cid_of, jcs, parse_json
from auditor.model.envelope import ENVELOPE_MEMBERS, envelope_json, record_digest
from auditor.report.body import REPORT_TYPE

__all__ = [
    "REQUIRED_BODY",
    "ReportCheck",
    "format_digest",
    "normalize_printed",
    "report_digest",
    "sign_report",
    "verify_report",
]

REQUIRED_BODY = ("election", "auditor", "trust", "evidence", "checks", "ballots", "findings", "generatedAt")


def report_digest(body: dict[str, Any]) -> bytes:
    return record_digest(REPORT_TYPE, body)


def sign_report(body: dict[str, Any], key: SigningKey) -> bytes:
    """The report file: the canonical bytes of the envelope signed by ``key``."""
    return jcs(envelope_json(REPORT_TYPE, body, [sign_digest(key, report_digest(body))], []))


def format_digest(digest: bytes) -> str:
    """The digest as printed: 64 hex digits in 16 groups of 4, easy to read aloud."""
    text = digest.hex()
    return " ".join(text[i : i + 4] for i in range(0, len(text), 4))


def normalize_printed(text: str) -> str:
    """What a person typed from the paper or a QR reader gave: spaces, dashes, case and a
    ``sha256:`` prefix do not matter."""
    text = text.strip().lower()
    text = text.removeprefix("vtaudit-report:").removeprefix("sha256:")
    return re.sub(r"[\s\-:]", "", text)


@dataclass
class ReportCheck:
    """What ``vtaudit report verify`` found in a JSON report."""

    ok: bool = False
    problems: list[str] = field(default_factory=list)
    body: dict[str, Any] | None = None
    digest: bytes | None = None
    cid: str | None = None
    signers: list[str] = field(default_factory=list)  # keys with a valid signature
    trusted_signer: str | None = None


def verify_report(data: bytes, trusted_key: str | None = None) -> ReportCheck:
    """Check a report file: strict canonical JSON envelope of type validation_report, the
    body members of spec §11 with a check entry for every §8 id, and at least one valid
    signature (by ``trusted_key`` when given). Never raises on bad input."""
    check = ReportCheck()
    problems = check.problems
    if len(data) > MAX_REPORT_BYTES:
        problems.append(f"the file has {len(data):,} bytes, more than a report may ({MAX_REPORT_BYTES:,})")
        return check
    try:
        obj = parse_json(data, what="report JSON")
    except EncodingError as e:
        problems.append(f"not a valid JSON report: {e}")
        return check
    if not isinstance(obj, dict) or set(obj) != set(ENVELOPE_MEMBERS):
        problems.append("not a report envelope: expected exactly the members " + ", ".join(ENVELOPE_MEMBERS))
        return check
    # `true == 1` in Python: the version must be the integer 1, not a boolean (spec §3)
    if type(obj["v"]) is not int or obj["v"] != 1 or obj["type"] != REPORT_TYPE:
        problems.append(f"not a version-1 {REPORT_TYPE} envelope (v={obj['v']!r}, type={obj['type']!r})")
        return check
    body = obj["body"]
    if not isinstance(body, dict):
        problems.append("the report body is not a JSON object")
        return check
    try:
        canonical = jcs(obj)
    except EncodingError as e:
        problems.append(f"the report cannot be put in canonical form: {e}")
        return check
    if canonical != data:
        problems.append("the file is not in canonical JSON form (RFC 8785): it was re-formatted or edited")
    check.body = body
    check.digest = report_digest(body)
    check.cid = cid_of(canonical)
    missing = [m for m in REQUIRED_BODY if m not in body]
    if missing:
        problems.append("the body lacks " + ", ".join(missing) + " (spec §11)")
    checks = body.get("checks")
    ids = [c.get("id") for c in checks if isinstance(c, dict)] if isinstance(checks, list) else []
    if sorted(i for i in ids if isinstance(i, str)) != sorted(CHECK_IDS) or len(ids) != len(CHECK_IDS):
        problems.append("the checks list must have exactly one entry for every check id of spec §8")
    signatures = obj["signatures"]
    if not isinstance(signatures, list) or not signatures:
        problems.append("the report is not signed")
        return check
    for entry in signatures:
        if not isinstance(entry, dict) or set(entry) != {"key", "sig"}:
            problems.append("a signature entry is malformed (expected {key, sig})")
            continue
        key, sig = entry["key"], entry["sig"]
        if isinstance(key, str) and isinstance(sig, str) and verify_digest(key, sig, check.digest):
            check.signers.append(key)
        else:
            problems.append(f"the signature by {str(key)[:60]!r} does not verify: the body was changed")
    if trusted_key is not None:
        if trusted_key in check.signers:
            check.trusted_signer = trusted_key
        else:
            problems.append(f"no valid signature by the key you trust ({trusted_key})")
    elif not check.signers:
        problems.append("no signature on the report verifies")
    check.ok = not problems
    return check
