"""PDF and HTML renderings of a signed JSON report (templates in ``reports/``).

Both are rendered from the report file alone, so what the paper says is what the signed
JSON says. Safety rules (issue 6, ``docs/reports.md``):

- every text that comes from a record (titles, district names, option codes, finding
  messages, evidence) is escaped by Jinja2's autoescape; nothing from a record is
  Markdown-rendered, it is shown as plain text;
- WeasyPrint is given a URL fetcher that refuses every URL, so rendering makes no request
  whatever the input: charts and QR codes are inline SVG, the styles inline CSS, fonts
  the system's;
- the HTML carries a Content-Security-Policy that forbids any load as well.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import segno
from markupsafe import Markup

from auditor.model.encoding import cid_of, parse_json
from auditor.report.signed import format_digest, report_digest
from auditor.rules import Rule, catalog, rules_hash

__all__ = ["TEMPLATES", "Fetches", "html_report", "pdf_report", "render_context"]

TEMPLATES = Path(__file__).resolve().parent.parent.parent / "reports"
FINDINGS_SHOWN = 25  # per check in the PDF; the JSON report and findings.parquet keep all
EVIDENCE_CHARS = 900

VERDICT_WORDS = {
    "verified": "VERIFIED",
    "verified-with-warnings": "VERIFIED WITH WARNINGS",
    "not-verified": "NOT VERIFIED",
}

# The order in which the PDF explains the checks: the life of an election (spec §1).
PHASES: list[tuple[str, tuple[str, ...]]] = [
    ("The records themselves", ("REC-CID", "REC-SCHEMA", "REC-REF", "SIG-VALID", "TSA-TOKEN", "TSA-IMPRINT")),
    ("Who may act for the authorities", ("AUTH-CHAIN", "AUTH-THRESHOLD")),
    ("The election's rules and key", ("ELE-REVISION", "ELE-TIMELINE", "ELE-KEY", "TPL-VALID", "REG-ROLL")),
    (
        "Voting: blocks and receipts",
        ("BLK-SHAPE", "BLK-SIG", "BLK-ELIGIBLE", "BLK-UNIQUE", "RCP-VALID", "RCP-CONSISTENT", "TREE-ROOT"),
    ),
    (
        "Unlocking and counting",
        (
            "KEY-RELEASE",
            "KEY-EARLY",
            "DEC-ENTRIES",
            "DEC-VOTER",
            "DEC-NONCE",
            "BAL-VALID",
            "TALLY-TREE",
            "RES-MATCH",
        ),
    ),
    ("After the count", ("DSP-RESOLVED", "ACC-REPORTS", "CERT-MATCH", "RUN-TRIGGER")),
]

NOT_PROVEN = [
    "That the people on the registration roll are real, eligible and each registered once: the "
    "registration authority vouches for that, and this audit only checks the roll is used faithfully.",
    "That no voter was coerced or paid, or voted on someone else's device.",
    "That votes stay secret: the audit decrypts only what every keyholder chose to make public after "
    "voting closed.",
    "That nobody was kept from voting: it counts the accessibility reports and disputes that were "
    "published, not problems that were never reported.",
    "That the authorities are who the trust file says they are: the trust anchors were obtained by the "
    "person running the audit, outside the evidence.",
]

log = logging.getLogger(__name__)


@dataclass
class Fetches:
    """Every URL a rendering asked for; each was refused."""

    refused: list[str] = field(default_factory=list)

    def fetcher(self) -> Any:
        """A WeasyPrint URL fetcher that opens nothing: no network, no file, no data URL
        (it allows no protocol, and its ``fetch`` refuses before anything is opened)."""
        from weasyprint.urls import URLFetcher

        refused = self.refused

        class Refusing(URLFetcher):  # type: ignore[misc]
            def fetch(self, url: str, headers: Any = None) -> Any:
                refused.append(url)
                raise ValueError(f"vtaudit reports fetch nothing (refused {url[:200]!r})")

        return Refusing(allowed_protocols=(), allow_redirects=False, timeout=0.1)


def _time(ms: Any) -> str:
    if not isinstance(ms, int):
        return "—"
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _num(n: Any) -> str:
    return f"{n:,}" if isinstance(n, int) else "—"


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f} %" if whole else "—"


def _short(cid: Any) -> str:
    return f"{cid[:14]}…{cid[-6:]}" if isinstance(cid, str) and len(cid) > 24 else str(cid or "—")


def _qr(text: str) -> Markup:
    # segno writes the SVG from the digest only (hex and fixed words): nothing from a record.
    return Markup(segno.make(text, error="m").svg_inline(scale=2, border=2, omitsize=False))


@dataclass(frozen=True)
class Bar:
    label: str
    value: int
    width: float  # 0..1 of the widest bar
    note: str


def _bars(pairs: list[tuple[str, int]], whole: int) -> list[Bar]:
    top = max((v for _, v in pairs), default=0) or 1
    return [Bar(label, value, value / top, _pct(value, whole)) for label, value in pairs]


def _question_view(code: str, entry: dict[str, Any]) -> dict[str, Any]:
    kind, ballots = entry.get("type"), int(entry.get("ballots", 0))
    view: dict[str, Any] = {"code": code, "type": kind, "ballots": ballots, "bars": [], "table": []}
    options = entry.get("options", {})
    if kind == "select":
        view["bars"] = _bars(sorted(options.items(), key=lambda kv: (-kv[1], kv[0])), ballots)
        view["caption"] = "votes per option"
    elif kind == "rank":
        firsts = sorted(
            ((c, ranks[0] if ranks else 0) for c, ranks in options.items()), key=lambda kv: (-kv[1], kv[0])
        )
        view["bars"] = _bars(firsts, ballots)
        view["caption"] = "first preferences; the table gives every rank"
        view["table"] = [[c, *options[c]] for c, _ in firsts]
        view["ranks"] = max((len(r) for r in options.values()), default=0)
    elif kind == "score":
        rows = sorted(options.items(), key=lambda kv: (-kv[1].get("sum", 0), kv[0]))
        view["bars"] = _bars([(c, v.get("sum", 0)) for c, v in rows], sum(v.get("sum", 0) for _, v in rows))
        view["caption"] = "total score per option"
        view["table"] = [[c, v.get("count", 0), v.get("sum", 0)] for c, v in rows]
    elif kind == "text":
        values = entry.get("values", [])
        view["table"] = sorted(values, key=lambda v: (-v[1], v[0]))[:40]
        view["caption"] = f"{len(values):,} distinct answers" + (
            ", the 40 most frequent shown" if len(values) > 40 else ""
        )
    return view


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _ballot_sentence(ballot: dict[str, Any], failing: list[str], severity: dict[str, str]) -> str:
    verdict, voters = ballot["verdict"], ballot.get("voters")
    critical = [c for c in failing if severity.get(c) == "critical"]
    lesser = [c for c in failing if severity.get(c) != "critical"]
    if verdict == "verified" and isinstance(voters, int):
        return (
            f"Every check passed: vtaudit decrypted and recounted all {voters:,} votes itself, "
            "and the published result matches its recount exactly."
        )
    if verdict == "verified-with-warnings" and isinstance(voters, int):
        return (
            f"The published result matches vtaudit's own recount of {voters:,} votes, but "
            f"{_plural(len(lesser), 'check')} of lesser severity reported problems "
            f"({', '.join(lesser)}); see the findings."
        )
    text = (
        f"{_plural(len(critical), 'critical check')} failed ({', '.join(critical)})"
        if critical
        else ("The audit could not establish this ballot's count")
    )
    if lesser:
        text += f", and {_plural(len(lesser), 'other check')} reported problems ({', '.join(lesser)})"
    return text + ": the published result cannot be relied on as it stands; see the findings."


def _contest_sentences(ballot: dict[str, Any]) -> list[str]:
    out = []
    for q in ballot.get("questions", []):
        entry = ballot.get("counts", {}).get(q["question"], {})
        ranked = sorted(entry.get("options", {}).items(), key=lambda kv: (-kv[1], kv[0]))
        if not ranked:
            continue
        lead, votes = ranked[0]
        total, margin, spread = q["total"], q["errorMargin"], q["spread"]
        share = f"{votes:,} of {total:,} ballots ({_pct(votes, total)})"
        if spread == 0 and len(ranked) > 1:
            tied = [f"“{code}”" for code, n in ranked if n == votes]
            text = f"“{q['question']}”: {' and '.join(tied)} are tied at {share}. "
        else:
            text = f"“{q['question']}”: “{lead}” leads with {share}, ahead by {spread:,}. "
        if q["robust"]:
            text += f"The outcome is robust: the error margin ({margin:,}) is smaller than the lead. "
        else:
            text += f"The outcome is NOT robust: the error margin ({margin:,}) is not smaller than the lead. "
        run = q["runoff"]
        if run["required"]:
            due = f", due {_time(run['due'])}" if run.get("due") else ""
            text += f"A runoff is required ({', '.join(run['triggers'])}) between "
            text += f"{', '.join(run['participants'])}{due}."
        else:
            text += "No runoff is required."
        out.append(text)
    return out


def render_context(report_bytes: bytes) -> dict[str, Any]:
    """Everything the templates show, from the report file's bytes (already verified by
    the caller or not: the rendering states what the file says)."""
    envelope = parse_json(report_bytes, what="report JSON")
    body: dict[str, Any] = envelope["body"]
    digest = report_digest(body)
    rules: dict[str, Rule] = catalog()
    checks = {c["id"]: c for c in body["checks"]}
    findings_by_check: dict[str, list[dict[str, Any]]] = {}
    for f in body["findings"]:
        findings_by_check.setdefault(f["check"], []).append(f)
    severity = {c["id"]: c["severity"] for c in body["checks"]}
    ballots = []
    for b in body["ballots"]:
        failing = list(b.get("failedChecks", []))
        ballots.append(
            {
                **b,
                "verdictWords": VERDICT_WORDS.get(b["verdict"], "UNKNOWN VERDICT"),
                "sentence": _ballot_sentence(b, failing, severity),
                "contests": _contest_sentences(b),
                "views": [_question_view(code, entry) for code, entry in sorted(b.get("counts", {}).items())],
            }
        )
    phases = [
        (name, [{"rule": rules[i], "check": checks.get(i, {})} for i in ids if i in rules])
        for name, ids in PHASES
    ]
    shown = []
    for check_id, items in findings_by_check.items():
        rows = [{**f, "evidenceText": _evidence_text(f.get("evidence"))} for f in items[:FINDINGS_SHOWN]]
        shown.append(
            {"check": check_id, "rule": rules.get(check_id), "items": rows, "more": len(items) - len(rows)}
        )
    signers = [s.get("key") for s in envelope.get("signatures", []) if isinstance(s, dict)]
    return {
        "body": body,
        "election": body.get("electionInfo") or {},
        "verdictWords": VERDICT_WORDS.get(body.get("verdict", ""), "UNKNOWN VERDICT"),  # also in CSS
        "ballots": ballots,
        "phases": phases,
        "findings": shown,
        "findingsTotal": len(body["findings"]),
        "digest": format_digest(digest),
        "digestHex": digest.hex(),
        "qr": _qr("sha256:" + digest.hex()),
        "reportCid": cid_of(report_bytes),
        "signers": signers,
        "notProven": NOT_PROVEN,
        "rulesMatch": body["auditor"].get("rules") == rules_hash(),
        "time": _time,
        "num": _num,
        "pct": _pct,
        "short": _short,
    }


def _evidence_text(evidence: Any) -> str:
    text = json.dumps(evidence, ensure_ascii=False, sort_keys=True, separators=(", ", ": "))
    return (
        text
        if len(text) <= EVIDENCE_CHARS
        else text[:EVIDENCE_CHARS] + f"\n… ({len(text):,} characters in all)"
    )


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def html_report(report_bytes: bytes, *, media: str = "screen") -> str:
    """The report as one self-contained HTML page (``media="print"`` for the PDF)."""
    context = render_context(report_bytes)
    css = (TEMPLATES / "report.css").read_text(encoding="utf-8")
    return _environment().get_template("report.html.j2").render(**context, css=Markup(css), media=media)


def pdf_report(report_bytes: bytes, fetches: Fetches | None = None) -> bytes:
    """The PDF, with the JSON report attached to it (``report.json``); nothing is fetched."""
    from weasyprint import HTML, Attachment  # imported here: WeasyPrint takes a second to load

    fetches = fetches or Fetches()
    html = html_report(report_bytes, media="print")
    attachment = Attachment(
        string=report_bytes,
        name="report.json",
        description="The signed JSON validation report this PDF was rendered from",
        url_fetcher=fetches.fetcher(),
    )
    out = io.BytesIO()
    HTML(string=html, base_url=None, url_fetcher=fetches.fetcher()).write_pdf(out, attachments=[attachment])
    return out.getvalue()
