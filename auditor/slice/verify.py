"""Check a voter's slice proof offline: the checks of docs/slice-proofs.md, in order.

Pure: no files, no network, no clock; the proof's bytes and the trust anchors are
parameters. Imports only the standard library, PyNaCl and the other stdlib-only modules
of this package (a test holds this), so that it can be packaged for a phone or a browser.

:func:`verify_proof` never raises on any input: a proof that cannot be read gives the
answer CANNOT TELL with the reason. The checks, in the order they are reported:

1. my vote entry is in my block and decrypts (with the released key) to what I cast;
2. my voter entry is in the same block and is signed by my key;
3. the block is unaltered and signed by its members, me among them;
4. the election's receipt accepted it, proven in the voting window [VS, AV);
5. the block is in the committed block tree (RFC 9162 path to the signed root), or
   provably absent from it (its two neighbours in the sorted tree);
6. my block's leaf tally equals the recount of its votes (mine included), and the tally
   nodes on the path add up to the published result;
7. the election, its revision and the ballot are signed by their authorities, anchored
   in the trust file when one is given (evaluated first: the keys and windows of checks
   1-6 come from these records).

Each failure says what it means for the voter: not counted, altered, or cannot tell. The
answer is the gravest: CANNOT TELL (the proof does not establish the facts), then NOT
COUNTED (signed evidence excludes the vote), then ALTERED (signed evidence contradicts
itself or the vote), else COUNTED AND UNCHANGED.
"""

from __future__ import annotations

import itertools
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt,
    crypto_core_ed25519_is_valid_point,
    crypto_scalarmult_ed25519_base_noclamp,
    crypto_scalarmult_ed25519_noclamp,
)
from nacl.exceptions import CryptoError as NaclCryptoError

from auditor.slice.core import (
    ProofError,
    Question,
    View,
    add_histograms,
    b64u_decode,
    cid_of,
    cid_to_binary,
    count_vote,
    jcs,
    leaf_hash,
    node_hash,
    parse_json,
    parse_questions,
    root_from_path,
    sha256,
    split,
    vote_problems,
    zero_histogram,
)
from auditor.slice.timestamp import TokenCheck, ed25519_verify, pem_certificates, verify_token

__all__ = ["FORMAT", "Check", "SliceReport", "SliceTrust", "parse_trust", "verify_proof"]

FORMAT = "vtaudit-slice-proof/1"
TOP_MEMBERS = (
    "format",
    "voter",
    "election",
    "revision",
    "template",
    "block",
    "receipt",
    "blockTree",
    "result",
    "tally",
    "inclusion",
    "exclusion",
    "privateKey",
    "records",
)
ANSWERS = {
    "counted": "COUNTED AND UNCHANGED",
    "not-counted": "NOT COUNTED",
    "altered": "ALTERED",
    "cannot-tell": "CANNOT TELL",
}
EXIT_CODES = {"counted": 0, "not-counted": 1, "altered": 1, "cannot-tell": 2}
GRAVITY = ("cannot-tell", "not-counted", "altered")
TITLES = {
    1: "my vote is in my block and decrypts to what I cast",
    2: "my voter entry is in the same block, signed by my key",
    3: "the block is unaltered and signed by its members",
    4: "the receipt accepted the block in time",
    5: "the block is in the committed block tree",
    6: "the tally adds up to the published result, my vote included",
    7: "the election's records are signed by its authorities",
}
ELL = 2**252 + 27742317777372353535851937790883648493
SIGNING_PREFIX = b"votetorrent/1:"
ECIES_LABEL = b"votetorrent/1:ecies"
TIMELINE = ("KI", "KA", "KR", "RE", "BF", "VS", "AV", "HV", "RK", "TS", "V", "CS", "C")


# ---------------------------------------------------------------------------- results


@dataclass
class Check:
    number: int
    status: str  # pass | fail | skipped
    message: str
    meaning: str | None = None  # a failure's meaning: not-counted | altered | cannot-tell
    details: list[str] = field(default_factory=list)

    @property
    def title(self) -> str:
        return TITLES[self.number]

    def to_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "title": self.title,
            "status": self.status,
            "meaning": self.meaning,
            "message": self.message,
            "details": self.details,
        }


@dataclass(frozen=True)
class SliceTrust:
    """The anchors of a trust file (spec §9) a slice verifier uses."""

    election: str | None
    ballot: tuple[str, ...]
    roots: tuple[bytes, ...]  # DER TSA roots
    source: str = ""


@dataclass
class SliceReport:
    answer: str  # counted | not-counted | altered | cannot-tell
    sentence: str
    checks: list[Check]
    anchored: bool
    vote: list[tuple[str, str]] = field(default_factory=list)  # (question, answer) as decrypted
    election: str | None = None
    title: str = ""
    district: str = ""
    seconds: float = 0.0

    @property
    def headline(self) -> str:
        return ANSWERS[self.answer]

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.answer]

    def lines(self) -> list[str]:
        """The report as text: the plain answer first, then each check."""
        out = [f"{self.headline}: {self.sentence}"]
        if not self.anchored:
            out.append(
                "NOTE: no trust file: this shows that the proof is self-consistent, not that it comes "
                "from the real election authority (spec §9). Use --trust."
            )
        marks = {"pass": "✓", "fail": "✗", "skipped": "–"}
        for check in sorted(self.checks, key=lambda c: c.number):
            out.append(f"  {check.number} {marks[check.status]} {check.message}")
            if check.number == 1 and self.vote:
                out.extend(f"        {question}: {answer}" for question, answer in self.vote)
            out.extend(f"      {detail}" for detail in check.details)
        if self.election:
            out.append(f"election: {self.title} ({self.election}), ballot {self.district!r}")
        out.append(f"checked in {self.seconds:.2f} s, offline")
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "answer": self.answer,
            "headline": self.headline,
            "sentence": self.sentence,
            "exitCode": self.exit_code,
            "anchored": self.anchored,
            "vote": [{"question": q, "answer": a} for q, a in self.vote],
            "checks": [c.to_json() for c in sorted(self.checks, key=lambda c: c.number)],
            "election": self.election,
            "title": self.title,
            "district": self.district,
            "seconds": round(self.seconds, 4),
        }


def parse_trust(text: str, read: Callable[[str], bytes], source: str = "trust file") -> SliceTrust:
    """The anchors of a TOML trust file (spec §9); ``read`` gives the bytes of a root file
    named in it (relative to the trust file: the caller's business)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ProofError(f"{source}: not a TOML trust file ({e})") from e
    authorities = data.get("authorities", {})
    tsa = data.get("tsa", {})
    if not isinstance(authorities, dict) or not isinstance(tsa, dict):
        raise ProofError(f"{source}: [authorities] and [tsa] must be tables")
    election = authorities.get("election")
    ballot = authorities.get("ballot", [])
    ballot = [ballot] if isinstance(ballot, str) else ballot
    for value in [election, *ballot] if isinstance(ballot, list) else [None, None]:
        if value is not None:
            cid_to_binary(value, f"{source}: an authority")
    if not isinstance(ballot, list):
        raise ProofError(f"{source}: authorities.ballot must be a CID or a list of CIDs")
    roots: list[bytes] = []
    for name in tsa.get("roots", []):
        try:
            roots += pem_certificates(read(str(name)).decode("ascii", "replace"))
        except OSError as e:
            raise ProofError(f"{source}: the TSA root {name!r} cannot be read ({e.strerror})") from e
    return SliceTrust(election, tuple(ballot), tuple(roots), source)


# ---------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Record:
    """One envelope of the proof (spec §3), its CID recomputed, its signatures checked."""

    cid: str
    type: str
    body: View
    signers: frozenset[str]  # b64u keys with a valid signature
    tokens: tuple[bytes, ...]
    digest: bytes


def _record(cid: str, value: object) -> Record:
    env = View(value, f"records[{cid[:16]}…]").exact("v", "type", "body", "signatures", "timestamps")
    if env.get("v") != 1 or isinstance(env.get("v"), bool):
        raise ProofError(f"{env.path}.v: expected 1")
    actual = cid_of(jcs(env.value))
    if actual != cid:
        raise ProofError(f"the record listed as {cid} hashes to {actual}: the proof was altered")
    kind = env.text("type")
    body = env.obj("body")
    digest = sha256(jcs({"v": 1, "type": kind, "body": body.value}))
    signers = set()
    for i, item in enumerate(env.array("signatures")):
        entry = View(item, f"{env.path}.signatures[{i}]").exact("key", "sig")
        key = entry.binary("key", 32)
        if ed25519_verify(key, SIGNING_PREFIX + digest, entry.binary("sig", 64)):
            signers.add(entry.text("key"))
    tokens = tuple(
        b64u_decode(t, f"{env.path}.timestamps[{i}]") for i, t in enumerate(env.array("timestamps"))
    )
    return Record(cid, kind, body, frozenset(signers), tokens, digest)


def _fmt(ms: int) -> str:
    """A Unix-millisecond time as ISO 8601 UTC (or as a number when no calendar holds it)."""
    try:
        moment = datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    except (ValueError, OverflowError, OSError):
        return f"{ms} ms"
    return f"{moment}Z" if ms % 1000 == 0 else f"{moment}.{ms % 1000:03d}Z"


class _Failed(Exception):
    """A check failed: its message and what it means for the voter."""

    def __init__(self, message: str, meaning: str, details: list[str] | None = None) -> None:
        super().__init__(message)
        self.message, self.meaning, self.details = message, meaning, details or []


# ---------------------------------------------------------------------------- the verifier


class _Verifier:
    def __init__(self, data: bytes, trust: SliceTrust | None) -> None:
        self.trust = trust
        self.proof = View(parse_json(data, "the proof"), "proof").exact(*TOP_MEMBERS, optional=("generator",))
        if self.proof.get("format") != FORMAT:
            raise ProofError(f"proof.format: got {self.proof.get('format')!r}, expected {FORMAT!r}")
        records = self.proof.obj("records")
        self.records = {cid: _record(cid, value) for cid, value in records.value.items()}
        voter = self.proof.obj("voter").exact("key", "nonce")
        self.key, self.nonce = voter.text("key"), voter.text("nonce")
        self.key_bytes = voter.binary("key", 32)
        voter.binary("nonce", 16)
        self.token_cache: dict[str, list[TokenCheck]] = {}
        self.authority_cache: dict[tuple[str, str], str] = {}
        self.scalar: bytes | None = None  # the combined private key, once check 1 accepted it
        self.my_vote_valid = False
        self.recount: dict[str, Any] | None = None  # the histogram of the block's valid votes
        self.recount_note = ""
        self.index: int | None = None  # my block's leaf index, once check 5 proved it
        self.path: list[bytes] = []
        self.shown: list[tuple[str, str]] = []
        self._context()

    # ------------------------------------------------------------------ helpers

    def record(self, cid: str | None, kind: str, what: str) -> Record:
        if cid is None or cid not in self.records:
            raise ProofError(f"the proof does not carry the {what} ({cid or 'none named'})")
        record = self.records[cid]
        if record.type != kind:
            raise ProofError(f"the {what} {cid} is a {record.type}, expected a {kind}")
        return record

    def tokens(self, record: Record) -> list[TokenCheck]:
        if record.cid not in self.token_cache:
            roots = self.trust.roots if self.trust else ()
            self.token_cache[record.cid] = [
                verify_token(t, record.digest, self.tsa_certs, roots) for t in record.tokens
            ]
        return self.token_cache[record.cid]

    def proven(self, record: Record) -> tuple[int | None, list[str]]:
        """The record's proven time (latest valid genTime, spec §3, D16) and token problems."""
        checks = self.tokens(record)
        times = [c.gen_time for c in checks if c.gen_time is not None]
        return (max(times) if times else None), [p for c in checks for p in c.problems]

    def proven_in(
        self, record: Record, what: str, start: str | None, end: str, *, inclusive: bool = False
    ) -> int:
        """The record's proven time, required in the timeline window [start, end) (or [start, end])."""
        when, problems = self.proven(record)
        if when is None:
            why = "; ".join(problems[:2]) or "it carries no timestamp"
            raise _Failed(f"the {what} has no valid timestamp: {why}", "cannot-tell")
        low = self.timeline[start] if start else None
        high = self.timeline[end]
        if (low is not None and when < low) or (when > high if inclusive else when >= high):
            window = (
                f"[{start or '…'} {_fmt(low) if low else ''}, {end} {_fmt(high)}{']' if inclusive else ')'}"
            )
            raise _Failed(f"the {what} was timestamped {_fmt(when)}, outside {window}", "cannot-tell")
        return when

    def authority(self, record: Record, founding: str, fallback: int | None) -> str:
        """'' when ``record`` carries the authority signature of spec §3 for the authority
        founded by ``founding``, else why not."""
        key = (record.cid, founding)
        if key not in self.authority_cache:
            try:
                self.authority_cache[key] = self._authority(record, founding, fallback)
            except ProofError as e:
                self.authority_cache[key] = str(e)
        return self.authority_cache[key]

    def _admin(self, cid: str) -> tuple[Record, set[str], int, int]:
        admin = self.record(cid, "administration", "administration")
        body = admin.body.exact(
            "authority", "name", "domain", "administrators", "threshold", "expires", "previous"
        )
        keys = set()
        for i, item in enumerate(body.array("administrators")):
            keys.add(View(item, f"{body.path}.administrators[{i}]").exact("name", "role", "key").text("key"))
        return admin, keys, body.integer("threshold", 1), body.integer("expires")

    def _authority(self, record: Record, founding: str, fallback: int | None) -> str:
        chain: list[str] = []
        cid: str | None = record.body.cid("administration")
        while cid is not None and cid not in chain and len(chain) < 64:
            chain.append(cid)
            cid = self._admin(cid)[0].body.opt_cid("previous")
        chain.reverse()  # founding record first
        first, keys, threshold, _ = self._admin(chain[0])
        if chain[0] != founding or first.body.get("authority") is not None:
            return f"its administrations do not go back to the authority's founding record {founding}"
        if len(first.signers & keys) < threshold:
            return f"the founding administration {founding} lacks {threshold} of its own signatures"
        for previous, current in itertools.pairwise(chain):
            admin = self._admin(current)[0]
            _, before, need, expires = self._admin(previous)
            if admin.body.get("authority") != founding or admin.body.get("previous") != previous:
                return f"the administration {current} does not name {founding} and its predecessor"
            if len(admin.signers & before) < need:
                return (
                    f"the administration {current} is not signed by {need} administrators of its predecessor"
                )
            when = self.proven(admin)[0]
            if when is not None and when >= expires:
                return f"the administration {current} was appointed after its predecessor expired"
        _, keys, threshold, expires = self._admin(chain[-1])
        got = len(record.signers & keys)
        if got < threshold:
            return f"it carries {got} valid administrator signatures, {threshold} needed"
        when, problems = self.proven(record)
        when = fallback if when is None else when
        if when is None:
            why = f" ({problems[0]})" if problems else ""
            return f"it has no valid timestamp{why} to show its administration was in office"
        if when >= expires:
            return f"its administration {chain[-1]} had expired when it was signed"
        return ""

    def blocked(self, number: int, done: dict[int, Check]) -> str:
        """Why check ``number`` cannot run (a check it needs did not get far enough), or ''."""
        if number == 2 and self.scalar is None:
            return "skipped: without the election's decryption key your voter entry cannot be read"
        if number in (5, 6) and done[4].meaning == "not-counted":
            return "skipped: the receipt rejected your block, so it belongs in no tree or tally"
        if number in (5, 6) and done[4].status != "pass":
            return "skipped: no valid receipt accepting your block"
        if number == 6 and done[5].status != "pass":
            return "skipped: your block is not shown to be in the committed tree"
        if number == 6 and self.recount is None:
            return "skipped: your block's votes could not be decrypted"
        return ""

    # ------------------------------------------------------------------ check 7 (the context)

    def _context(self) -> None:
        """Read the election, the revision and the ballot (their checks are check 7)."""
        p = self.proof
        self.election = self.record(p.cid("election"), "election", "election record")
        e = self.election.body.exact(
            "authority",
            "administration",
            "title",
            "date",
            "revisionDeadline",
            "registrationAuthority",
            "certificationAuthority",
            "timestampAuthorities",
        )
        self.title = e.text("title")
        self.ea = e.cid("authority")  # the election authority's founding record
        self.tsa_certs = [
            View(item, f"{e.path}.timestampAuthorities[{i}]")
            .exact("name", "certificate")
            .binary("certificate")
            for i, item in enumerate(e.array("timestampAuthorities"))
        ]
        self.revision = self.record(p.cid("revision"), "election_revision", "election revision")
        r = self.revision.body
        if r.cid("election") != self.election.cid:
            raise ProofError("the revision belongs to another election")
        timeline = r.obj("timeline").exact(*TIMELINE)
        self.timeline = {name: timeline.integer(name) for name in TIMELINE}
        self.election_key = r.binary("electionKey", 32)
        self.receipt_key = r.text("receiptKey")
        self.template = self.record(p.cid("template"), "ballot_template", "ballot template")
        t = self.template.body
        if t.cid("election") != self.election.cid:
            raise ProofError("the ballot template belongs to another election")
        self.questions = parse_questions(t)
        self.district = t.text("district")
        self.block = self.record(p.cid("block"), "vote_block", "vote block")
        b = self.block.body.exact("election", "template", "members", "votes", "voters")
        self.members = b.texts("members")
        self.votes = [b64u_decode(c, f"{b.path}.votes[{i}]") for i, c in enumerate(b.texts("votes"))]
        self.voters = [b64u_decode(c, f"{b.path}.voters[{i}]") for i, c in enumerate(b.texts("voters"))]

    def check_authorities(self) -> Check:
        e, t = self.election.body, self.template.body
        founding = self.ea
        if self.trust is not None:
            if self.trust.election is None:
                raise _Failed("your trust file names no election authority", "cannot-tell")
            if self.trust.election != founding:
                raise _Failed(
                    f"the proof's election authority {founding} is not the one your trust file names "
                    f"({self.trust.election}): this is not the election you trust",
                    "cannot-tell",
                )
            if t.cid("authority") not in self.trust.ballot:
                raise _Failed(
                    f"the ballot's authority {t.cid('authority')} is not among your trust file's "
                    "ballot authorities",
                    "cannot-tell",
                )
        for record, what, owner, fallback in (
            (self.election, "election record", founding, e.integer("date")),
            (self.revision, "election revision", founding, None),
            (self.template, "ballot template", t.cid("authority"), self.timeline["BF"]),
        ):
            problem = self.authority(record, owner, fallback)
            if problem:
                raise _Failed(f"the {what} is not signed by its authority: {problem}", "cannot-tell")
        # spec §4.4: at least one valid token no later than the revision deadline (D16)
        deadline = e.integer("revisionDeadline")
        checks = self.tokens(self.revision)
        if not any(c.gen_time is not None and c.gen_time <= deadline for c in checks):
            why = "; ".join(p for c in checks for p in c.problems[:1]) or "no token is before the deadline"
            raise _Failed(
                f"the election revision is not timestamped before its deadline: {why}", "cannot-tell"
            )
        self.proven_in(self.template, "ballot template", None, "BF", inclusive=True)  # spec §4.5
        anchor = "anchored in your trust file" if self.trust else "not anchored (no trust file)"
        notes = [f"revision {self.revision.body.integer('revision', 1)}, keys and timeline from it"]
        return Check(
            7,
            "pass",
            f"the election, its revision and the ballot {self.district!r} are signed by their authorities, "
            f"{anchor}",
            details=notes,
        )

    # ------------------------------------------------------------------ check 1

    def _decrypt(self, ciphertext: bytes, private_key: bytes) -> bytes | None:
        if len(ciphertext) < 48 or not crypto_core_ed25519_is_valid_point(ciphertext[:32]):
            return None
        try:
            shared = crypto_scalarmult_ed25519_noclamp(private_key, ciphertext[:32])
            key = sha256(ECIES_LABEL + ciphertext[:32] + shared)
            return bytes(
                crypto_aead_xchacha20poly1305_ietf_decrypt(
                    ciphertext[32:], self.template.cid.encode("utf-8"), bytes(24), key
                )
            )
        except (NaclCryptoError, ValueError, TypeError):
            return None

    def _private_key(self) -> bytes:
        value = self.proof.get("privateKey")
        if value is None:
            raise _Failed("the proof carries no decryption key (were the keys released?)", "cannot-tell")
        scalar = b64u_decode(value, "proof.privateKey", 32)
        number = int.from_bytes(scalar, "little")
        if not 0 < number < ELL or crypto_scalarmult_ed25519_base_noclamp(scalar) != self.election_key:
            raise _Failed(
                "the proof's decryption key is not the election's released key (k·B differs from the "
                "revision's election key)",
                "cannot-tell",
            )
        return scalar

    def check_vote(self, cast: list[Any] | None) -> Check:
        scalar = self.scalar = self._private_key()
        mine, recount, undecryptable, invalid = [], zero_histogram(self.questions), 0, 0
        for ciphertext in self.votes:
            plain = self._decrypt(ciphertext, scalar)
            if plain is None:
                undecryptable += 1
                continue
            vote = self._vote(plain)
            if vote is None:
                invalid += 1
                continue
            if vote["nonce"] == self.nonce:
                mine.append(vote)
            if vote_problems(self.questions, vote["answers"]):
                invalid += 1
            else:
                count_vote(recount, vote["answers"])
        self.recount = recount
        self.recount_note = (
            f"{len(self.votes)} votes, {undecryptable} do not decrypt, {invalid} not valid for the ballot"
        )
        if not mine:
            meaning = "altered" if self.key in self.members else "cannot-tell"
            where = "the block that lists your key" if self.key in self.members else "this block"
            raise _Failed(f"no vote in {where} carries your nonce: the vote you cast is not there", meaning)
        if len(mine) > 1:
            raise _Failed(f"{len(mine)} votes in your block carry your nonce: yours was copied", "altered")
        vote = mine[0]
        self.shown = self._show(vote["answers"])
        problems = vote_problems(self.questions, vote["answers"])
        if cast is not None and jcs(cast) != jcs(vote["answers"]):
            raise _Failed("your vote in the block differs from what you cast (shown below)", "altered")
        if problems:
            raise _Failed(
                f"your vote is there but not valid for the ballot, so it is counted nowhere: {problems[0]}",
                "not-counted",
                problems[1:],
            )
        self.my_vote_valid = True
        said = "exactly what you cast" if cast is not None else "(compare it with what you cast)"
        return Check(1, "pass", f"your vote is in your block and decrypts to {said}:")

    def _vote(self, plain: bytes) -> dict[str, Any] | None:
        """A decrypted vote entry (spec §4.8) of this ballot, or None when it is not one (D28)."""
        try:
            entry = View(parse_json(plain, "vote entry"), "vote entry").exact("template", "nonce", "answers")
            entry.binary("nonce", 16)
            entry.array("answers")
            if entry.cid("template") != self.template.cid:
                return None
        except ProofError:
            return None
        return entry.value

    def _show(self, answers: list[Any]) -> list[tuple[str, str]]:
        given = {a.get("question"): a.get("values") for a in answers if isinstance(a, dict)}
        shown = []
        for q in self.questions:
            values = given.get(q.code)
            shown.append((q.title, _answer_text(q, values)))
        return shown

    # ------------------------------------------------------------------ check 2

    def check_voter(self) -> Check:
        assert self.scalar is not None  # the prerequisite: check 1 accepted the key
        found = []
        for ciphertext in self.voters:
            plain = self._decrypt(ciphertext, self.scalar)
            if plain is None:
                continue
            try:
                entry = View(parse_json(plain, "voter entry"), "voter entry")
                if entry.get("key") == self.key:
                    found.append(entry.exact("template", "registrant", "key", "signature"))
            except ProofError:
                continue
        if not found:
            raise _Failed("no voter entry in your block carries your key", "altered")
        if len(found) > 1:
            raise _Failed(f"{len(found)} voter entries in your block carry your key", "altered")
        entry = found[0]
        body = {"key": self.key, "registrant": entry.cid("registrant"), "template": entry.cid("template")}
        digest = sha256(jcs({"v": 1, "type": "voter_entry", "body": body}))
        if body["template"] != self.template.cid:
            raise _Failed("your voter entry names another ballot", "altered")
        if not ed25519_verify(self.key_bytes, SIGNING_PREFIX + digest, entry.binary("signature", 64)):
            raise _Failed("your voter entry's signature does not verify with your key", "altered")
        return Check(
            2,
            "pass",
            f"your voter entry is in the same block, signed by your key (registrant {body['registrant']})",
        )

    # ------------------------------------------------------------------ check 3

    def check_block(self) -> Check:
        b = self.block.body
        n = len(self.members)
        if b.cid("election") != self.election.cid or b.cid("template") != self.template.cid:
            raise _Failed("the block belongs to another election or ballot", "altered")
        shape = []
        if not (n == len(self.votes) == len(self.voters)):
            shape.append(f"{n} members but {len(self.votes)} votes and {len(self.voters)} voter entries")
        for name in ("members", "votes", "voters"):
            items = b.texts(name)
            if items != sorted(set(items)):
                shape.append(f"its {name} are not sorted and distinct")
        if self.key not in self.members:
            raise _Failed("your key is not a member of the block that holds your vote", "altered")
        if self.key not in self.block.signers:
            raise _Failed(
                "your signature on the block does not verify: the block was changed after you signed it",
                "altered",
            )
        unsigned = [m for m in self.members if m not in self.block.signers]
        if unsigned:
            shape.append(f"{len(unsigned)} members did not sign it validly (first: {unsigned[0]})")
        if shape:
            raise _Failed(f"the block is not as its members signed it: {shape[0]}", "altered", shape[1:])
        return Check(3, "pass", f"the block is unaltered: all {n} members signed it, you among them")

    # ------------------------------------------------------------------ check 4

    def check_receipt(self) -> Check:
        receipt = self.record(self.proof.opt_cid("receipt"), "receipt", "receipt")
        r = receipt.body.exact("election", "block", "result", "registrants", "received")
        if r.cid("election") != self.election.cid or r.cid("block") != self.block.cid:
            raise _Failed("the receipt in the proof is for another block", "cannot-tell")
        if self.receipt_key not in receipt.signers:
            raise _Failed("the receipt is not signed by the election's receipt key", "cannot-tell")
        result = r.text("result")
        if result != "accepted":
            named = ", ".join(r.texts("registrants")) or "none"
            raise _Failed(
                f"the election's receipt says your block was {result!r}, not accepted: it is not counted",
                "not-counted",
                [f"members it names: {named}"],
            )
        when = self.proven_in(receipt, "receipt", "VS", "AV")
        return Check(4, "pass", f"the receipt accepted the block, timestamped {_fmt(when)} (voting was open)")

    # ------------------------------------------------------------------ check 5

    def check_tree(self) -> Check:
        tree = self.record(self.proof.opt_cid("blockTree"), "block_tree", "block tree")
        t = tree.body.exact("election", "template", "administration", "count", "root")
        if t.cid("election") != self.election.cid or t.cid("template") != self.template.cid:
            raise _Failed("the block tree in the proof is for another ballot", "cannot-tell")
        problem = self.authority(tree, self.ea, self.timeline["HV"])
        if problem:
            raise _Failed(f"the block tree is not signed by the election authority: {problem}", "cannot-tell")
        when = self.proven_in(tree, "block tree", "HV", "RK")
        count, root = t.integer("count"), t.binary("root", 32)
        self.tree, self.count, self.root = tree, count, root
        leaf = cid_to_binary(self.block.cid, "block")
        inclusion = self.proof.opt_obj("inclusion")
        if inclusion is not None:
            inclusion.exact("index", "path")
            index = inclusion.integer("index")
            path = [
                b64u_decode(h, f"{inclusion.path}.path[{i}]", 32)
                for i, h in enumerate(inclusion.array("path"))
            ]
            got = root_from_path(leaf, index, count, path)
            if got != root:
                meaning = "altered" if got is not None and self._tally_root_hash() == got else "cannot-tell"
                raise _Failed(
                    "your block's path leads to another root than the one the signed block tree commits to: "
                    + ("the tree or the tally was forged" if meaning == "altered" else "the path is wrong"),
                    meaning,
                )
            self.index, self.path = index, path
            return Check(
                5,
                "pass",
                f"the block is leaf {index + 1} of {count} in the block tree committed {_fmt(when)}",
            )
        exclusion = self.proof.opt_obj("exclusion")
        if exclusion is None:
            raise _Failed("the proof carries no path for your block in the block tree", "cannot-tell")
        self._excluded(exclusion.exact("neighbours"), leaf, count, root)
        raise _Failed(
            "the receipt accepted your block, but the committed block tree does not include it: "
            "it is not counted",
            "not-counted",
            [f"the tree's {count} blocks are sorted; your block's neighbours there are in the proof"],
        )

    def _excluded(self, exclusion: View, leaf: bytes, count: int, root: bytes) -> None:
        """Raise unless the neighbours prove ``leaf`` is not among the tree's sorted leaves."""
        neighbours = []
        for i, item in enumerate(exclusion.array("neighbours")):
            n = View(item, f"{exclusion.path}.neighbours[{i}]").exact("index", "block", "path")
            bin_ = cid_to_binary(n.cid("block"), f"{n.path}.block")
            path = [b64u_decode(h, f"{n.path}.path[{j}]", 32) for j, h in enumerate(n.array("path"))]
            if root_from_path(bin_, n.integer("index"), count, path) != root:
                raise _Failed(
                    "the proof's neighbours of your block are not in the signed block tree", "cannot-tell"
                )
            neighbours.append((n.integer("index"), bin_))
        neighbours.sort()
        if not neighbours:  # an empty tree (spec §5.3: MTH({}) = sha256(""))
            ok = count == 0 and root == sha256(b"")
        elif len(neighbours) == 1:  # before the first leaf, or after the last
            ((index, other),) = neighbours
            ok = (index == 0 and leaf < other) or (index == count - 1 and leaf > other)
        else:  # between two adjacent leaves
            (i, low), (j, high) = neighbours[0], neighbours[-1]
            ok = len(neighbours) == 2 and j == i + 1 and low < leaf < high
        if not ok:
            raise _Failed(
                "the proof's neighbours do not show where your block would be in the tree", "cannot-tell"
            )

    def _tally_root_hash(self) -> bytes | None:
        """The hash of the tally root an authority-signed result names, if the proof has one."""
        try:
            result = self.record(self.proof.opt_cid("result"), "result", "result")
            if self.authority(result, self.ea, self.timeline["TS"]):
                return None
            root = self.record(result.body.cid("tallyRoot"), "tally_node", "tally root")
            return root.body.binary("hash", 32)
        except ProofError:
            return None

    # ------------------------------------------------------------------ check 6

    def check_tally(self) -> Check:
        result = self.record(self.proof.opt_cid("result"), "result", "result")
        res = result.body.exact(
            "election", "template", "administration", "blockTree", "tallyRoot", "voters", "counts"
        )
        if res.cid("election") != self.election.cid or res.cid("template") != self.template.cid:
            raise _Failed("the result in the proof is for another ballot", "cannot-tell")
        problem = self.authority(result, self.ea, self.timeline["TS"])
        if problem:
            raise _Failed(f"the result is not signed by the election authority: {problem}", "cannot-tell")
        self.proven_in(result, "result", "TS", "V")
        path = self.proof.texts("tally")
        if not path:
            raise _Failed("the proof carries no tally nodes", "cannot-tell")
        nodes = [self._node(cid, "tally node") for cid in path]
        if len(nodes) != len(self.path) + 1 or self.recount is None:
            raise _Failed(
                "the proof's tally nodes do not follow your block's path up the tree", "cannot-tell"
            )
        # 1. the leaf: my block, at my index, counted as its votes recount
        leaf = nodes[0].body
        size = len(self.members)
        if leaf.texts("children") != [self.block.cid]:
            raise _Failed("the first tally node of the proof is not your block's leaf", "cannot-tell")
        if (leaf.integer("start"), leaf.integer("end")) != (self.index, (self.index or 0) + 1):
            raise _Failed("your block's leaf tally node is not at your block's place in the tree", "altered")
        if leaf.binary("hash", 32) != leaf_hash(cid_to_binary(self.block.cid, "block")):
            raise _Failed("your block's leaf tally node has the wrong hash", "altered")
        if leaf.integer("voters") != size:
            raise _Failed(
                f"the published tally of your block counts {leaf.integer('voters')} voters, not {size}",
                "altered",
            )
        if jcs(leaf.get("counts")) != jcs(self.recount):
            raise _Failed(
                "the published tally of your block is not the count of its votes: it was miscounted",
                "altered",
                _differences(leaf.get("counts"), self.recount),
            )
        # 2. every node above: its two children, ranges, hash, voters and counts add up
        for k in range(1, len(nodes)):
            self._parent(nodes[k], nodes[k - 1], k)
        # 3. the root is the tree's, and the result publishes it
        root = nodes[-1]
        top = root.body
        if (top.integer("start"), top.integer("end")) != (0, self.count) or top.binary(
            "hash", 32
        ) != self.root:
            raise _Failed("the top tally node of the proof is not the root of the committed tree", "altered")
        if res.cid("tallyRoot") != root.cid or res.cid("blockTree") != self.tree.cid:
            raise _Failed("the published result names another tally root or block tree", "altered")
        if jcs(res.get("counts")) != jcs(top.get("counts")) or res.integer("voters") != top.integer("voters"):
            raise _Failed(
                "the published result is not the tally root's count",
                "altered",
                _differences(res.get("counts"), top.get("counts")),
            )
        mine = "your vote included" if self.my_vote_valid else "your vote not included"
        return Check(
            6,
            "pass",
            f"your block's tally ({size} voters, {mine}) and the {len(nodes) - 1} nodes above it add up "
            f"to the published result ({res.integer('voters')} voters)",
            details=[self.recount_note],
        )

    def _node(self, cid: str, what: str) -> Record:
        node = self.record(cid, "tally_node", what)
        body = node.body.exact("election", "template", "start", "end", "hash", "voters", "counts", "children")
        if body.cid("election") != self.election.cid or body.cid("template") != self.template.cid:
            raise _Failed(f"the {what} {cid} belongs to another ballot", "altered")
        return node

    def _parent(self, parent: Record, child: Record, level: int) -> None:
        body = parent.body
        kids = body.texts("children")
        if len(kids) != 2 or kids.count(child.cid) != 1:
            raise _Failed(
                f"tally node {parent.cid} does not have the node below it as a child", "cannot-tell"
            )
        sibling = self._node(kids[1 - kids.index(child.cid)], "sibling tally node")
        left, right = (child, sibling) if kids[0] == child.cid else (sibling, child)
        start, end = body.integer("start"), body.integer("end")
        where = f"the tally node over blocks [{start}, {end})"
        if end - start < 2 or (left.body.integer("start"), left.body.integer("end")) != (
            start,
            start + split(end - start),
        ):
            raise _Failed(f"{where} does not split its range as spec §5.3 does", "altered")
        if (right.body.integer("start"), right.body.integer("end")) != (start + split(end - start), end):
            raise _Failed(f"{where} does not split its range as spec §5.3 does", "altered")
        if body.binary("hash", 32) != node_hash(left.body.binary("hash", 32), right.body.binary("hash", 32)):
            raise _Failed(f"{where} has the wrong hash", "altered")
        if sibling.body.binary("hash", 32) != self.path[level - 1]:
            raise _Failed(f"{where}: the sibling's hash is not the one on your block's path", "altered")
        if body.integer("voters") != left.body.integer("voters") + right.body.integer("voters"):
            raise _Failed(f"{where} does not count the voters of its two halves", "altered")
        total = add_histograms(left.body.get("counts"), right.body.get("counts"), f"{where} children")
        if jcs(body.get("counts")) != jcs(total):
            raise _Failed(
                f"{where} is not the sum of its two halves",
                "altered",
                _differences(body.get("counts"), total),
            )


def _answer_text(q: Question, values: Any) -> str:
    if values is None:
        return "(not answered)"
    if q.type == "text":
        return repr(values) if isinstance(values, str) else "(malformed)"
    if q.type == "score" and isinstance(values, dict):
        return ", ".join(f"{q.option_title(c)} {s}" for c, s in values.items())
    if isinstance(values, list):
        titles = [q.option_title(str(v)) for v in values]
        if q.type == "rank":
            return ", ".join(f"{i}. {t}" for i, t in enumerate(titles, 1)) or "(none ranked)"
        return ", ".join(titles) or "(none chosen)"
    return "(malformed)"


def _differences(published: Any, expected: Any) -> list[str]:
    """Where two histograms differ, question by question (at most 5 lines)."""
    out = []
    a = published if isinstance(published, dict) else {}
    b = expected if isinstance(expected, dict) else {}
    for code in sorted(set(a) | set(b)):
        if jcs(a.get(code)) != jcs(b.get(code)):
            got, want = jcs(a.get(code)).decode()[:150], jcs(b.get(code)).decode()[:150]
            out.append(f"{code}: published {got}, expected {want}")
    return out[:5]


# ---------------------------------------------------------------------------- entry point


def verify_proof(
    data: bytes,
    trust: SliceTrust | None = None,
    *,
    key: str | None = None,
    nonce: str | None = None,
    cast: list[Any] | None = None,
) -> SliceReport:
    """Check a slice proof (the bytes of proof.json); never raises.

    ``key`` and ``nonce`` are the voter's own (from their device): when given, the proof
    must be about them. ``cast`` is the list of answers as cast, compared exactly.
    """
    started = time.perf_counter()
    try:
        verifier = _Verifier(data, trust)
    except ProofError as e:
        return SliceReport(
            "cannot-tell",
            f"this proof file cannot be used: {e}",
            [],
            trust is not None,
            seconds=time.perf_counter() - started,
        )
    except Exception as e:  # never raise: a bug must not crash a voter's app
        return SliceReport(
            "cannot-tell",
            f"this proof file cannot be used ({type(e).__name__}: {e})",
            [],
            trust is not None,
            seconds=time.perf_counter() - started,
        )
    if (key is not None and key != verifier.key) or (nonce is not None and nonce != verifier.nonce):
        return SliceReport(
            "cannot-tell",
            "this proof is about another voter or another vote than the key and nonce you gave",
            [],
            trust is not None,
            seconds=time.perf_counter() - started,
        )
    v = verifier
    steps: list[tuple[int, Callable[[], Check]]] = [
        (7, v.check_authorities),
        (1, lambda: v.check_vote(cast)),
        (2, v.check_voter),
        (3, v.check_block),
        (4, v.check_receipt),
        (5, v.check_tree),
        (6, v.check_tally),
    ]
    checks: list[Check] = []
    done: dict[int, Check] = {}
    for number, step in steps:
        reason = v.blocked(number, done)
        if reason:
            done[number] = Check(number, "skipped", reason)
        else:
            done[number] = _run(number, step)
        checks.append(done[number])
    failures = [c for c in checks if c.status == "fail"]
    answer, sentence = "counted", "your vote is in the published result, exactly as it was cast."
    for meaning in GRAVITY:
        first = next((c for c in sorted(failures, key=lambda c: c.number) if c.meaning == meaning), None)
        if first is not None:
            answer, sentence = meaning, first.message[:1].upper() + first.message[1:] + "."
            break
    if answer == "counted" and any(c.status != "pass" for c in checks):
        answer, sentence = "cannot-tell", "some checks could not run (see below)."
    return SliceReport(
        answer,
        sentence,
        checks,
        trust is not None,
        vote=v.shown,
        election=v.election.cid,
        title=v.title,
        district=v.district,
        seconds=time.perf_counter() - started,
    )


def _run(number: int, step: Callable[[], Check]) -> Check:
    try:
        return step()
    except _Failed as e:
        return Check(number, "fail", e.message, e.meaning, e.details)
    except ProofError as e:
        return Check(number, "fail", f"the proof is incomplete or malformed here: {e}", "cannot-tell")
    except Exception as e:  # never raise (see verify_proof)
        return Check(number, "fail", f"this check could not run ({type(e).__name__}: {e})", "cannot-tell")
