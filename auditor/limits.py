"""Every bound vtaudit puts on what it reads, in one place (docs/limits.md).

The evidence is hostile: a record, an archive or a node's answer may be built to exhaust
memory, time or the stack. Each limit below is checked *before* the work it bounds (a
record's size before it is parsed, its nesting before ``json.loads`` recurses, a CAR
section's length before it is read, a list's length before its items are validated) and
an input over a limit is refused with a message that names the limit, never a crash.

The values are generous: far above anything a real election produces (the reasons are
beside each one and in docs/decisions.md, D35-D37), so that a limit never turns a sound
election into a finding. An over-limit record is a REC-SCHEMA finding, kept in quarantine
like any other invalid record; the audit goes on with the rest.

Pure constants, no imports: the model, the store, the network client and the CLI read them.
"""

from __future__ import annotations

__all__ = [
    "DUCKDB_MEMORY",
    "HTTP_CONNECT_TIMEOUT",
    "HTTP_DEADLINE",
    "HTTP_READ_TIMEOUT",
    "MAX_BLOCK_MEMBERS",
    "MAX_CAR_ANSWER_BYTES",
    "MAX_CAR_HEADER_BYTES",
    "MAX_CAR_SECTION_BYTES",
    "MAX_CERTIFICATE_BYTES",
    "MAX_CERT_CHAIN",
    "MAX_DER_DEPTH",
    "MAX_ENVELOPE_BYTES",
    "MAX_JSON_CONTAINERS",
    "MAX_JSON_DEPTH",
    "MAX_LOG_LINE_BYTES",
    "MAX_LOG_PAGES",
    "MAX_NDJSON_LINE_BYTES",
    "MAX_OPTIONS",
    "MAX_QUESTIONS",
    "MAX_REPORT_BYTES",
    "MAX_SIGNATURES",
    "MAX_TEXT_CHARS",
    "MAX_TIMESTAMPS",
    "MAX_TIMESTAMP_AUTHORITIES",
    "MAX_TOKEN_BYTES",
    "MAX_TRUST_FILE_BYTES",
    "MAX_TRUST_ROOTS",
    "MAX_VARINT_BYTES",
    "WHERE",
]

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

WHERE = "docs/limits.md"
"""Where every limit is explained; error messages point there."""

# ---------------------------------------------------------------------------- records (spec §2-§4)

MAX_ENVELOPE_BYTES = 8 * MiB
"""A serialized envelope (spec §3: "at most 8 MiB"). Checked before anything is parsed."""

MAX_JSON_DEPTH = 64
"""Arrays and objects nested in one JSON document. The deepest record of spec §4 is a
tally node or result (envelope, body, counts, question, options, option, score cell: 7);
a signed report with an equivocation's envelopes in a finding reaches about 14. Checked on
the bytes before ``json.loads`` recurses, so ``[[[[…`` a million deep costs a scan."""

MAX_JSON_CONTAINERS = 1 << 20
"""Arrays and objects in one JSON document (1,048,576). A template at the limits below
(256 questions of 1,024 options) has about 263,000; each container is a Python object of
about 60 bytes, so this bounds the memory one 8 MiB record can take (8 MiB of ``[],``
would be 2.8 million lists)."""

MAX_TEXT_CHARS = 1 << 20
"""Characters in one free-text string (titles, names, instructions, district, reasons,
accessibility details, text answers): 1,048,576. Codes (64), keys, CIDs, digests and
signatures have the exact lengths of spec §2 and are checked as such."""

MAX_SIGNATURES = 8192
"""Signatures on one record. A vote block is signed by every member (at most
MAX_BLOCK_MEMBERS); D10 lets one key sign twice, hence twice that. Each costs an Ed25519
verification."""

MAX_TIMESTAMPS = 16
"""Timestamp tokens on one record. One per TSA is usual, two or three for redundancy;
each token costs a CMS verification in pure Python (about a millisecond)."""

MAX_TOKEN_BYTES = 64 * KiB
"""One RFC 3161 token (DER). A token with its TSA certificate is 1-3 KiB; one carrying
a chain of MAX_CERT_CHAIN RSA-4096 certificates stays under 24 KiB."""

MAX_CERTIFICATE_BYTES = 64 * KiB
"""One TSA certificate listed in an election record (DER); real ones are 1-2 KiB."""

MAX_TIMESTAMP_AUTHORITIES = 64
"""TSAs listed in one election record (spec §4.2); elections list one to three."""

MAX_BLOCK_MEMBERS = 4096
"""Members of one vote block, and its votes and voters (one each per member), and the
registrants a receipt names. VoteTorrent pools a few dozen voters per block; a block of
thousands would already defeat its purpose (spec §4.9: scrambling who voted what)."""

MAX_QUESTIONS = 256
"""Questions on one ballot template, answers in one vote entry, questions in one
histogram. The longest real ballots (US general elections with many measures) have
well under 100."""

MAX_OPTIONS = 1024
"""Options of one question, and so: values in one answer, options in a histogram entry,
counters by rank, the option codes a dependsOn lists. The longest real candidate lists
(the 2003 California recall: 135) are far below."""

# ---------------------------------------------------------------------------- archives (spec §7.2)

MAX_CAR_HEADER_BYTES = 1 * MiB
"""A CARv1 header (about 25,000 root CIDs); its length is refused before it is read."""

MAX_CAR_SECTION_BYTES = MAX_ENVELOPE_BYTES + 1 * KiB
"""A CARv1 section: an 8 MiB envelope and its CID. The length is refused before the
section is read or any memory is set aside for it."""

MAX_VARINT_BYTES = 9
"""A CAR length varint (multiformats unsigned-varint: at most 9 bytes, 63 bits); a varint
whose continuation bit never ends is refused at its tenth byte."""

MAX_NDJSON_LINE_BYTES = MAX_ENVELOPE_BYTES
"""One line of an NDJSON archive (one envelope); a longer line is skipped unread and
reported."""

# ---------------------------------------------------------------------------- network nodes (spec §7.1)

HTTP_CONNECT_TIMEOUT = 5.0
"""Seconds to connect to a node."""

HTTP_READ_TIMEOUT = 30.0
"""Seconds between two reads of one answer (a stalled node)."""

HTTP_DEADLINE = 300.0
"""Seconds for one whole answer, body included (a node that drips bytes)."""

MAX_LOG_LINE_BYTES = 2 * KiB
"""One line of ``/v1/log`` ({seq, cid, type} is about 100 bytes); a page of ``n``
entries may take ``n`` times this plus 64 KiB."""

MAX_LOG_PAGES = 100_000
"""Log pages read from one node in one run (200 million entries at 2,000 a page)."""

MAX_CAR_ANSWER_BYTES = 1 * GiB
"""One ``/v1/car`` answer (a log page's records); a node that sends more is cut off and
its records are fetched one by one (``/ipfs/<cid>`` answers are capped at
MAX_ENVELOPE_BYTES)."""

# ---------------------------------------------------------------------------- the auditor's own inputs

MAX_TRUST_FILE_BYTES = 1 * MiB
"""The trust file (spec §9): a few CIDs and file names."""

MAX_TRUST_ROOTS = 64
"""PEM files of TSA roots named in the trust file, and certificates in each."""

MAX_REPORT_BYTES = 256 * MiB
"""A JSON report read back by ``vtaudit report`` (``auditor.report.signed`` holds the
same value); findings are capped at 1,000 per check, so real reports are a few MiB."""

# ---------------------------------------------------------------------------- DER (RFC 3161, X.509)

MAX_DER_DEPTH = 48
"""ASN.1 nesting in a timestamp token; a token nests about 15 deep."""

MAX_CERT_CHAIN = 8
"""Certificates above the TSA certificate when chaining to the trust file's roots."""

# ---------------------------------------------------------------------------- memory

DUCKDB_MEMORY: str | None = None
"""DuckDB's working memory in `vtaudit verify`: by default DuckDB's own (80 % of the
machine's RAM). Past it, sorts, joins and group-bys spill to ``spill/`` in the audit
folder (removed when the audit closes). ``VTAUDIT_DUCKDB_MEMORY`` sets a budget (DuckDB's
syntax: ``2GB``); a budget too small for some query is reported as such, never turned
into a verdict. A fixed 1 GB budget was tried and is too small for the block checks of
a million voters (an operator that cannot spill ran out of it: docs/performance.md)."""
