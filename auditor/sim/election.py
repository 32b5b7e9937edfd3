"""The election simulator: a complete VoteTorrent election, published as evidence.

It plays every role of spec §1 in timeline order (authorities, keyholders, revisions,
templates, registration, pooled voting with receipts, block trees, key release, tally
trees, results, disputes, accessibility reports, certifications) and writes each
record as it is made (:class:`~auditor.sim.sink.EvidenceSink`). It holds per voter
only an index and a registrant CID, and per counted block a CID and a small
histogram, so a million voters fit easily; blocks are built in worker processes.

``SimConfig.tamper`` names one entry of :mod:`auditor.sim.tampers`; the hooks that
apply it are marked ``# tamper:`` below.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from auditor import __version__
from auditor.crypto import merkle
from auditor.crypto.ecies import combine_private, combine_public, derive_scalar, public_of
from auditor.crypto.ed25519 import SigningKey, sign_digest
from auditor.model.encoding import b64u_encode, cid_from_binary, cid_of, cid_to_binary, jcs
from auditor.model.envelope import envelope_json
from auditor.model.histogram import Histogram, add_into, zero
from auditor.model.records import BallotTemplate
from auditor.parallel import bounded_map
from auditor.sim.blocks import (
    BlockBuilt,
    BlockSpec,
    RegistrantContext,
    WorkerContext,
    build_blocks,
    build_registrants,
    district_of,
    histogram_of,
    init_worker,
    make_record,
    receipt_key,
    registrant_body,
    tsa_seed,
    voter_key,
)
from auditor.sim.sink import EvidenceSink
from auditor.sim.tampers import tamper_by_name
from auditor.sim.tsa import TestTsa

__all__ = ["SimConfig", "SimSummary", "simulate"]

DAY = 86_400_000
HOUR = 3_600_000
MINUTE = 60_000
T0 = int(datetime(2026, 3, 1, tzinfo=UTC).timestamp() * 1000)

DISTRICTS = ("north", "south", "east", "west", "central", "harbor", "hills", "valley")


@dataclass(frozen=True)
class SimConfig:
    voters: int = 200
    seed: int = 1
    districts: int = 3
    turnout_ppm: int = 900_000
    block_min: int = 6
    block_max: int = 24
    tamper: str | None = None
    formats: tuple[str, ...] = ("dir", "car")
    workers: int = 0  # 0: one per core
    secrets: bool = True


@dataclass
class SimSummary:
    out: Path
    records: int
    by_type: dict[str, int]
    election: str
    templates: list[str]
    tamper: str | None
    expected: dict[str, Any] = field(default_factory=dict)


@dataclass
class Authority:
    label: str
    name: str
    founding: str
    administration: str
    admins: list[SigningKey]
    threshold: int
    chain: list[tuple[str, list[SigningKey], int]]  # (cid, keys, threshold) oldest first


class Simulation:
    def __init__(self, config: SimConfig, out: Path) -> None:
        if config.tamper is not None:
            tamper_by_name(config.tamper)
        if not 1 <= config.districts <= len(DISTRICTS):
            raise ValueError(f"districts must be 1..{len(DISTRICTS)}")
        if config.voters < 1:
            raise ValueError("voters must be at least 1")
        self.c = config
        self.t = config.tamper
        self.out = out
        self.sink = EvidenceSink(out, config.formats)
        self.tsa = TestTsa(tsa_seed(config.seed))
        self.serial = 0
        self.rng = random.Random(f"vtaudit-sim/{config.seed}/main")
        self.timeline = {
            "KI": T0,
            "KA": T0 + DAY,
            "KR": T0 + 2 * DAY,
            "RE": T0 + 5 * DAY,
            "BF": T0 + 6 * DAY,
            "VS": T0 + 7 * DAY,
            "AV": T0 + 8 * DAY,
            "HV": T0 + 8 * DAY + HOUR,
            "RK": T0 + 8 * DAY + 2 * HOUR,
            "TS": T0 + 8 * DAY + 4 * HOUR,
            "V": T0 + 9 * DAY,
            "CS": T0 + 9 * DAY + HOUR,
            "C": T0 + 10 * DAY,
        }
        self.secrets_file: TextIO | None = None
        self.expected: dict[str, Any] = {"templates": {}}

    # ------------------------------------------------------------------ helpers

    def key(self, *labels: str) -> SigningKey:
        return SigningKey.derive(f"vtaudit-sim/{self.c.seed}", *labels)

    def publish(
        self,
        record_type: str,
        body: dict[str, Any],
        signers: list[SigningKey],
        at: int | list[int] | None = None,
    ) -> str:
        """Sign, timestamp (at ``at``), write; return the CID."""
        self.serial += 1
        times = [at] if isinstance(at, int) else (at or [])
        cid, raw, _ = make_record(record_type, body, signers, self.tsa if times else None, times, self.serial)
        self.sink.add(record_type, cid, raw)
        return cid

    def publish_raw(self, record_type: str, raw: bytes) -> str:
        cid = cid_of(raw)
        self.sink.add(record_type, cid, raw)
        return cid

    def authority_signers(self, authority: Authority, count: int | None = None) -> list[SigningKey]:
        return authority.admins[: count if count is not None else authority.threshold]

    # ------------------------------------------------------------------ phases

    def run(self) -> SimSummary:
        if self.c.secrets:
            (self.out / "secrets").mkdir(parents=True, exist_ok=True)
            self.secrets_file = open(self.out / "secrets" / "voters.ndjson", "w", encoding="utf-8")  # noqa: SIM115
        try:
            self.authorities()
            self.election_record()
            self.keyholders()
            self.revisions()
            self.templates()
            self.registration()
            self.voting()
            self.block_trees()
            self.key_release()
            self.tally_and_results()
            self.disputes_and_reports()
            self.certifications()
        finally:
            if self.secrets_file is not None:
                self.secrets_file.close()
        self.sink.close()
        self.write_side_files()
        return SimSummary(
            out=self.out,
            records=self.sink.count,
            by_type=dict(self.sink.by_type),
            election=self.election,
            templates=[cid for cid, _ in self.template_bodies],
            tamper=self.t,
            expected=self.expected,
        )

    def make_authority(
        self, label: str, name: str, sizes: tuple[int, int], created: int, expires: int
    ) -> Authority:
        n, threshold = sizes
        admins = [self.key(label, "admin", str(i)) for i in range(n)]
        body = {
            "authority": None,
            "name": name,
            "domain": f"{label}.example.org",
            "administrators": [
                {"name": f"{name} administrator {i + 1}", "role": "administrator", "key": k.public_b64u}
                for i, k in enumerate(admins)
            ],
            "threshold": threshold,
            "expires": expires,
            "previous": None,
        }
        cid = self.publish("administration", body, admins[:threshold], created)
        return Authority(label, name, cid, cid, admins, threshold, [(cid, admins, threshold)])

    def rotate(self, authority: Authority, keep: int, add: int, threshold: int, at: int, expires: int) -> str:
        """A successor administration signed by the predecessor's threshold (spec §4.1)."""
        new_keys = authority.admins[:keep] + [
            self.key(authority.label, "admin", f"r{len(authority.chain)}-{i}") for i in range(add)
        ]
        body = {
            "authority": authority.founding,
            "name": authority.name,
            "domain": f"{authority.label}.example.org",
            "administrators": [
                {
                    "name": f"{authority.name} administrator {i + 1}",
                    "role": "administrator",
                    "key": k.public_b64u,
                }
                for i, k in enumerate(new_keys)
            ],
            "threshold": threshold,
            "expires": expires,
            "previous": authority.administration,
        }
        cid = self.publish("administration", body, self.authority_signers(authority), at)
        authority.chain.append((cid, new_keys, threshold))
        authority.administration, authority.admins, authority.threshold = cid, new_keys, threshold
        return cid

    def authorities(self) -> None:
        far = T0 + 400 * DAY
        self.ea = self.make_authority(
            "election", "Riverton Election Commission", (3, 2), T0 - 60 * DAY, T0 - 10 * DAY
        )
        self.rotate(self.ea, keep=2, add=1, threshold=2, at=T0 - 30 * DAY, expires=far)
        if self.t == "auth-fork":  # tamper: a second successor of the founding record
            founding_keys = self.ea.chain[0][1]
            body = {
                "authority": self.ea.founding,
                "name": self.ea.name,
                "domain": "election.example.org",
                "administrators": [
                    {"name": "usurper", "role": "administrator", "key": self.key("usurper").public_b64u}
                ],
                "threshold": 1,
                "expires": far,
                "previous": self.ea.founding,
            }
            self.publish("administration", body, founding_keys[:2], T0 - 29 * DAY)
        self.ra = self.make_authority("registration", "Riverton Registrar", (2, 1), T0 - 60 * DAY, far)
        self.ca = self.make_authority(
            "certification", "State Certification Board", (3, 2), T0 - 60 * DAY, far
        )
        self.districts = list(DISTRICTS[: self.c.districts])
        self.ba = [
            self.make_authority(
                f"ballot-{d}", f"{d.title()} District Ballot Office", (2, 1), T0 - 60 * DAY, far
            )
            for d in self.districts
        ]

    def election_record(self) -> None:
        body = {
            "authority": self.ea.founding,
            "administration": self.ea.administration,
            "title": "Riverton Municipal Election 2026",
            "date": self.timeline["VS"],
            "revisionDeadline": self.timeline["KR"],
            "registrationAuthority": self.ra.founding,
            "certificationAuthority": self.ca.founding,
            "timestampAuthorities": [
                {"name": "VoteTorrent Test TSA", "certificate": b64u_encode(self.tsa.tsa_cert_der)}
            ],
        }
        if self.t == "tsa-no-eku":  # tamper: the election also lists a TSA certificate lacking the EKU
            self.no_eku_tsa = TestTsa(hashlib.sha256(b"no-eku tsa").digest(), eku_critical=False)
            body["timestampAuthorities"].append(  # type: ignore[attr-defined]
                {"name": "Second TSA", "certificate": b64u_encode(self.no_eku_tsa.tsa_cert_der)}
            )
        self.election = self.publish("election", body, self.authority_signers(self.ea), T0 - DAY)

    def keyholders(self) -> None:
        self.keyholder_scalars = [
            derive_scalar(f"vtaudit-sim/{self.c.seed}/keyholder/{i}".encode()) for i in range(3)
        ]
        self.keyholder_keys = [self.key("keyholder", str(i)) for i in range(3)]
        names = ("Ada Lovelace", "Alan Turing", "Grace Hopper")
        self.keyholder_cids = []
        for i, (scalar, key) in enumerate(zip(self.keyholder_scalars, self.keyholder_keys, strict=True)):
            at = self.timeline["KI"] + (i + 1) * HOUR
            if self.t == "keyholder-late" and i == 2:  # tamper: accepted after KA
                at = self.timeline["KA"] + HOUR
            body = {
                "election": self.election,
                "name": names[i],
                "title": "Keyholder",
                "registrantKey": key.public_b64u,
                "electionKey": b64u_encode(public_of(scalar)),
            }
            self.keyholder_cids.append(self.publish("keyholder", body, [key], at))
        scalars = list(self.keyholder_scalars)
        if self.t == "election-key-sum":  # tamper: an unlisted key mixed into the election key
            scalars.append(derive_scalar(b"attacker key"))
        self.election_key = combine_public([public_of(s) for s in scalars])
        self.election_private = combine_private(scalars)  # the blocks' encryption uses it

    def revision_body(self, number: int, instructions: str, timeline: dict[str, int]) -> dict[str, Any]:
        return {
            "election": self.election,
            "administration": self.ea.administration,
            "revision": number,
            "tags": ["municipal", "2026"],
            "instructions": instructions,
            "keyholders": sorted(self.keyholder_cids),
            "electionKey": b64u_encode(self.election_key),
            "receiptKey": receipt_key(self.c.seed).public_b64u,
            "timeline": timeline,
            "runoff": {
                "disputeMargin": True,
                "accessibilityPpm": 5000,
                "closeMarginPpm": 5000,
                "intervalDays": 14,
                "participants": 2,
            },
        }

    def revisions(self) -> None:
        timeline = dict(self.timeline)
        if self.t == "timeline-order":  # tamper: KR before KA
            timeline["KR"] = timeline["KA"] - HOUR
        signers = self.authority_signers(self.ea)
        first = self.revision_body(1, "# Welcome\n\nVote for the mayor and council.", timeline)
        self.publish("election_revision", first, signers, self.timeline["KA"] + HOUR)
        second = self.revision_body(
            2, "# Welcome\n\nVote for the mayor and council. Polls close at 18:00.", timeline
        )
        self.publish("election_revision", second, signers, self.timeline["KA"] + 5 * HOUR)
        if self.t == "revision-equivocation":  # tamper: another valid revision 2
            other = self.revision_body(2, "# Welcome\n\nPolls close at 20:00.", timeline)
            self.publish("election_revision", other, signers, self.timeline["KA"] + 6 * HOUR)
        if self.t == "revision-late":  # tamper: revision after the deadline
            late = self.revision_body(3, "# Late change", timeline)
            self.publish("election_revision", late, signers, self.timeline["KR"] + HOUR)

    def template_body(self, d: int, revision: int) -> dict[str, Any]:
        district = self.districts[d]
        rng = random.Random(f"vtaudit-sim/{self.c.seed}/template/{district}")
        surnames = [
            "Alvarez",
            "Brown",
            "Chen",
            "Dubois",
            "Eze",
            "Fischer",
            "García",
            "Haddad",
            "Ito",
            "Jensen",
        ]
        rng.shuffle(surnames)
        mayors = surnames[: 3 + d % 2]
        council = surnames[4:9]

        def opts(names: list[str]) -> list[dict[str, str]]:
            return [{"code": n.lower().replace("í", "i"), "title": n} for n in names]

        questions = [
            {
                "code": "mayor",
                "title": "Mayor",
                "type": "select",
                "options": opts(mayors),
                "min": 1,
                "max": 1,
                "score": None,
                "required": True,
                "dependsOn": None,
            },
            {
                "code": "council",
                "title": f"{district.title()} council seats (up to two)",
                "type": "select",
                "options": opts(council),
                "min": 0,
                "max": 2,
                "score": None,
                "required": False,
                "dependsOn": None,
            },
            {
                "code": "transit",
                "title": "Measure T: build the light-rail line?",
                "type": "select",
                "options": [{"code": "yes", "title": "Yes"}, {"code": "no", "title": "No"}],
                "min": 1,
                "max": 1,
                "score": None,
                "required": False,
                "dependsOn": None,
            },
            {
                "code": "route",
                "title": "Rank the proposed light-rail routes",
                "type": "rank",
                "options": [
                    {"code": "river", "title": "River route"},
                    {"code": "market", "title": "Market Street"},
                    {"code": "airport", "title": "Airport link"},
                ],
                "min": 1,
                "max": 3,
                "score": None,
                "required": False,
                "dependsOn": {"question": "transit", "values": ["yes"]},
            },
            {
                "code": "budget",
                "title": "Score each budget priority from 0 to 5",
                "type": "score",
                "options": [
                    {"code": "parks", "title": "Parks"},
                    {"code": "roads", "title": "Roads"},
                    {"code": "schools", "title": "Schools"},
                ],
                "min": 0,
                "max": 0,
                "score": {"min": 0, "max": 5, "step": 1},
                "required": False,
                "dependsOn": None,
            },
            {
                "code": "comment",
                "title": "Anything else the council should hear?",
                "type": "text",
                "options": [],
                "min": 1,
                "max": 140,
                "score": None,
                "required": False,
                "dependsOn": None,
            },
        ]
        if revision > 1:
            questions[0]["title"] = "Mayor of Riverton"
        return {
            "election": self.election,
            "authority": self.ba[d].founding,
            "administration": self.ba[d].administration,
            "district": district,
            "revision": revision,
            "questions": questions,
        }

    def templates(self) -> None:
        self.template_bodies: list[tuple[str, dict[str, Any]]] = []
        for d in range(len(self.districts)):
            signers = self.authority_signers(self.ba[d])
            body = self.template_body(d, 1)
            cid = self.publish("ballot_template", body, signers, T0 + 3 * DAY + d * HOUR)
            if d == 0:  # the first district revises its template: votes use revision 2
                body = self.template_body(d, 2)
                cid = self.publish("ballot_template", body, signers, T0 + 4 * DAY)
                if self.t == "template-equivocation":  # tamper: another revision 2
                    other = self.template_body(d, 2)
                    other["questions"][0]["title"] = "Mayor (amended)"
                    self.publish("ballot_template", other, signers, T0 + 4 * DAY + HOUR)
                if self.t == "template-late":  # tamper: revision 3 after ballots were final
                    late = self.template_body(d, 3)
                    self.publish("ballot_template", late, signers, self.timeline["BF"] + HOUR)
            self.template_bodies.append((cid, body))
        self.template_objs = [BallotTemplate.parse(b) for _, b in self.template_bodies]

    # ------------------------------------------------------------------ registration

    def district_of(self, index: int) -> int:
        return district_of(index, len(self.districts))

    def registrant_context(self) -> RegistrantContext:
        return RegistrantContext(self.c.seed, self.ra.founding, tuple(self.districts), T0)

    def registration(self) -> None:
        n = self.c.voters
        self.registrant_cids: list[str] = []
        leaves: list[bytes] = []
        districts: dict[str, int] = {d: 0 for d in self.districts}
        for cid, raw, d in self._registrants(n):
            self.sink.add("registrant", cid, raw)
            self.registrant_cids.append(cid)
            leaves.append(cid_to_binary(cid))
            districts[self.districts[d]] += 1
        if self.t == "roll-duplicate-key":  # tamper: a second registrant record for voter 0's key
            key = voter_key(self.c.seed, 0)
            body = registrant_body(self.registrant_context(), 0, key, self.district_of(0))
            body["registered"] += 1
            cid, raw, _ = make_record("registrant", body, [key])
            self.sink.add("registrant", cid, raw)
            leaves.append(cid_to_binary(cid))
            districts[self.districts[self.district_of(0)]] += 1
        leaves.sort()
        root = merkle.root(leaves)
        if self.t == "roll-root":  # tamper: a root that is not the registrants'
            root = merkle.root(leaves[1:])
        body = {
            "election": self.election,
            "registrationAuthority": self.ra.founding,
            "administration": self.ra.administration,
            "count": len(leaves),
            "root": b64u_encode(root),
            "districts": districts,
        }
        at: list[int] = [self.timeline["RE"] + HOUR]
        self.serial += 1
        cid, raw, digest = make_record(
            "registration_roll", body, self.authority_signers(self.ra), self.tsa, at, self.serial
        )
        if self.t in ("tsa-bad-signature", "tsa-unlisted", "tsa-no-eku", "tsa-imprint"):
            raw = self._second_token(body, digest, at[0])
            cid = cid_of(raw)
        self.sink.add("registration_roll", cid, raw)

    def _second_token(self, body: dict[str, Any], digest: bytes, at: int) -> bytes:
        """tamper: the roll carries its good token and a bad second one (spec §3)."""
        good = self.tsa.issue(digest, at, 900_001)
        if self.t == "tsa-bad-signature":
            bad = self.tsa.issue(digest, at, 900_002, corrupt_signature=True)
        elif self.t == "tsa-imprint":
            bad = self.tsa.issue(hashlib.sha256(b"another record").digest(), at, 900_002)
        elif self.t == "tsa-unlisted":
            bad = TestTsa(hashlib.sha256(b"rogue tsa").digest()).issue(digest, at, 900_002)
        else:
            bad = self.no_eku_tsa.issue(digest, at, 900_002)
        signatures = [sign_digest(k, digest) for k in self.authority_signers(self.ra)]
        return jcs(
            envelope_json("registration_roll", body, signatures, [b64u_encode(good), b64u_encode(bad)])
        )

    def _registrants(self, n: int) -> Iterator[tuple[str, bytes, int]]:
        ctx = self.registrant_context()
        chunk = 2048
        ranges = [(ctx, start, min(start + chunk, n)) for start in range(0, n, chunk)]
        workers = self.c.workers or (os.cpu_count() or 1)
        if workers <= 1 or n < 4 * chunk:
            for r in ranges:
                yield from build_registrants(r)
            return
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for built in bounded_map(pool, build_registrants, ranges, 4 * workers):
                yield from built

    # ------------------------------------------------------------------ voting

    def voting(self) -> None:
        """Pool the voters of each district into blocks; the authority answers each."""
        tl = self.timeline
        specs: list[BlockSpec] = []
        self.late_voters: dict[int, list[int]] = {}
        self.non_voters: dict[int, list[int]] = {}
        seq = 0
        by_district: dict[int, list[int]] = {d: [] for d in range(len(self.districts))}
        for index in range(self.c.voters):
            by_district[self.district_of(index)].append(index)
        window = tl["AV"] - tl["VS"]
        for d, members in by_district.items():
            rng = random.Random(f"vtaudit-sim/{self.c.seed}/pool/{d}")
            voting = [i for i in members if rng.randrange(1_000_000) < self.c.turnout_ppm]
            voting_set = set(voting)
            self.non_voters[d] = [i for i in members if i not in voting_set][:16]
            rng.shuffle(voting)
            special = len(voting) >= 40
            late = voting[-3:] if special else []
            counted = voting[: len(voting) - len(late)]
            self.late_voters[d] = late
            blocks: list[tuple[list[int], str, dict[str, Any]]] = []
            if special:  # correctly handled rejections (spec §4.9): error, invalid ×2
                blocks.append((counted[0:5], "error", {}))
                blocks.append((counted[5:10], "invalid", {"outsider": d}))
                blocks.append((counted[10:15], "invalid", {"bad_signature_member": 0}))
            position = 0
            normal: list[list[int]] = []
            while position < len(counted):
                size = (
                    rng.randint(1, 3)
                    if rng.random() < 0.04
                    else rng.randint(self.c.block_min, self.c.block_max)
                )
                normal.append(counted[position : position + size])
                position += size
            for group in normal:
                blocks.append((group, "accepted", {}))
            if special:
                # a re-submission by voters already counted, and a late block
                blocks.append(([normal[0][0], normal[-1][0]], "duplicate", {"offending": "all"}))
                blocks.append((late, "inopportune", {}))
            for k, (group, result, extra) in enumerate(blocks):
                seq += 1
                if result == "inopportune":
                    received = tl["AV"] + HOUR
                else:
                    received = tl["VS"] + (k + 1) * window // (len(blocks) + 2)
                spec = BlockSpec(
                    seq=seq,
                    template=d,
                    members=group,
                    registrants=[self.registrant_cids[i] for i in group],
                    result=result,
                    received=received,
                    offending=list(group) if extra.pop("offending", None) == "all" else [],
                    extra=extra,
                )
                specs.append(spec)
        self.designated = next(
            (s for s in specs if s.template == 0 and s.result == "accepted" and len(s.members) >= 3), None
        )
        self._apply_block_tampers(specs)
        self.block_results: dict[int, list[BlockBuilt]] = {d: [] for d in range(len(self.districts))}
        self.accepted: dict[int, list[tuple[bytes, int, bytes, str]]] = {
            d: [] for d in range(len(self.districts))
        }
        self.rejected: dict[int, list[BlockBuilt]] = {d: [] for d in range(len(self.districts))}
        self.designated_cid = b""
        self._first_member_of: dict[str, int] = {}  # receipt CID -> voter index
        for built in self._build(specs):
            if self.designated is not None and built.seq == self.designated.seq:
                self.designated_cid = cid_to_binary(built.block_cid)
            self._first_member_of[built.receipts[0][0]] = built.first_member
            withheld = self.t == "dispute-confirmed" and self.designated_cid == cid_to_binary(built.block_cid)
            if not withheld:  # tamper dispute-confirmed: a receipted block is missing (§8)
                self.sink.add("vote_block", built.block_cid, built.block_raw)
            for cid, raw in built.receipts:
                self.sink.add("receipt", cid, raw)
            if built.result == "accepted":
                self.accepted[built.template].append(
                    (cid_to_binary(built.block_cid), built.voters, built.histogram, built.receipts[0][0])
                )
            else:
                # keep what disputes and tamperings need, not the block's bytes
                light = dataclasses.replace(built, block_raw=b"", histogram=b"", secret_lines="")
                self.rejected[built.template].append(light)
            if self.secrets_file is not None:
                self.secrets_file.write(built.secret_lines)

    def _apply_block_tampers(self, specs: list[BlockSpec]) -> None:
        t = self.t
        block_level = {
            "block-unsorted",
            "block-missing-signature",
            "block-ineligible",
            "vote-undecryptable",
            "voter-bad-signature",
            "voter-key-mismatch",
            "nonce-reuse",
            "ballot-invalid",
            "receipt-twice",
            "receipt-accepted-names",
        }
        target = self.designated
        if t is None:
            return
        if target is None:
            raise ValueError(
                f"the election is too small for tamper {t}: no counted block of 3 or more voters"
            )
        if t in block_level:
            target.tamper = t
        elif t == "receipt-forged":
            for spec in specs:
                if spec.result == "error":
                    spec.tamper = t
                    break
            else:
                raise ValueError("the election is too small for tamper receipt-forged (no error block)")
        elif t == "block-wrong-district":  # a non-voter of another district joins a district-0 block
            other = next((i for d, ids in self.non_voters.items() if d != 0 for i in ids), None)
            if other is None:
                raise ValueError("block-wrong-district needs two districts and a non-voter outside the first")
            target.members.append(other)
            target.registrants.append(self.registrant_cids[other])
        elif t == "double-vote":  # a member of the target also votes in another counted block
            again = next(s for s in specs if s is not target and s.template == 0 and s.result == "accepted")
            again.members.append(target.members[0])
            again.registrants.append(target.registrants[0])
        elif t == "receipt-false-duplicate":
            late = next((s for s in specs if s.result == "inopportune"), None)
            if late is None:
                raise ValueError("the election is too small for tamper receipt-false-duplicate")
            late.result, late.received, late.offending = "duplicate", target.received, list(late.members)
        elif t == "receipt-late-accepted":
            late = next((s for s in specs if s.result == "inopportune"), None)
            if late is None:
                raise ValueError("the election is too small for tamper receipt-late-accepted")
            late.result = "accepted"
        elif t == "close-race":  # the first question's top two tie exactly among counted voters
            counted = [s for s in specs if s.template == 0 and s.result == "accepted"]
            total = sum(len(s.members) for s in counted)
            position = 0
            for spec in counted:
                choices = []
                for _ in spec.members:
                    choices.append(2 if total % 2 and position == total - 1 else position % 2)
                    position += 1
                spec.extra["first_choice"] = choices

    def _build(self, specs: list[BlockSpec]) -> Iterator[BlockBuilt]:
        ctx = WorkerContext(
            seed=self.c.seed,
            election=self.election,
            election_key=self.election_key,
            templates=tuple(self.template_bodies),
            district_of_template=tuple(self.districts),
            election_private=self.election_private,
        )
        chunk = 32
        batches = [specs[i : i + chunk] for i in range(0, len(specs), chunk)]
        workers = self.c.workers or (os.cpu_count() or 1)
        if workers <= 1 or len(specs) < 64:
            init_worker(ctx)
            for batch in batches:
                yield from build_blocks(batch)
            return
        with ProcessPoolExecutor(max_workers=workers, initializer=init_worker, initargs=(ctx,)) as pool:
            for built in bounded_map(pool, build_blocks, batches, 4 * workers):
                yield from built

    # ------------------------------------------------------------------ trees, keys, tally

    def tree_leaves(self, d: int) -> list[tuple[bytes, int, bytes]]:
        leaves = [(c, v, h) for c, v, h, _ in self.accepted[d]]
        if d == 0 and self.t in ("tree-omit", "dispute-confirmed") and self.designated is not None:
            omitted = self._designated_cid()
            leaves = [leaf for leaf in leaves if leaf[0] != omitted]
        if d == 0 and self.t == "tree-extra":  # tamper: the late block joins the tree
            late = next(b for b in self.rejected[0] if b.result == "inopportune")
            leaves.append((cid_to_binary(late.block_cid), 0, jcs(zero(self.template_objs[0]))))
        leaves.sort(key=lambda leaf: leaf[0])
        return leaves

    def _designated_cid(self) -> bytes:
        if not self.designated_cid:
            raise ValueError(f"the election is too small for tamper {self.t}")
        return self.designated_cid

    def block_trees(self) -> None:
        for d, district in enumerate(self.districts):
            if not self.accepted[d]:
                raise ValueError(
                    f"district {district} has no counted block: simulate more voters or fewer districts"
                )
        self.tree_cids: dict[int, str] = {}
        at = self.timeline["HV"] + 10 * MINUTE
        for d, (template_cid, _) in enumerate(self.template_bodies):
            leaves = self.tree_leaves(d)
            authority, signers = self.ea, self.authority_signers(self.ea)
            administration = authority.administration
            if self.t == "auth-expired" and d == 0:  # tamper: signed by the expired founding administration
                administration, signers = self.ea.chain[0][0], self.ea.chain[0][1][:2]
            body = {
                "election": self.election,
                "template": template_cid,
                "administration": administration,
                "count": len(leaves),
                "root": b64u_encode(merkle.root([c for c, _, _ in leaves])),
            }
            self.tree_cids[d] = self.publish("block_tree", body, signers, at + d * MINUTE)

    def key_release(self) -> None:
        for i, (scalar, key, keyholder) in enumerate(
            zip(self.keyholder_scalars, self.keyholder_keys, self.keyholder_cids, strict=True)
        ):
            at = self.timeline["RK"] + (i + 1) * 10 * MINUTE
            if i == 0 and self.t == "key-missing":
                continue
            if i == 0 and self.t == "key-late":
                at = self.timeline["TS"] + HOUR
            value = scalar
            if i == 0 and self.t == "key-wrong":
                value = derive_scalar(b"not the keyholder's key")
            body = {"election": self.election, "keyholder": keyholder, "privateKey": b64u_encode(value)}
            self.publish("key_release", body, [key], at)
        if self.t == "key-early":  # tamper: someone found keyholder 1's key before RK
            finder = self.key("finder")
            body = {
                "election": self.election,
                "keyholder": self.keyholder_cids[1],
                "privateKey": b64u_encode(self.keyholder_scalars[1]),
                "discoverer": finder.public_b64u,
            }
            self.publish("key_disclosure", body, [finder], self.timeline["VS"] + HOUR)

    def tally_and_results(self) -> None:
        self.result_cids: dict[int, str] = {}
        builder = self.key("tally-builder")
        for d, (template_cid, _) in enumerate(self.template_bodies):
            leaves = self.tree_leaves(d)
            self._node_count = 0
            root_cid, _, counts, voters = self._tally(d, template_cid, leaves, 0, len(leaves), builder)
            recount = zero(self.template_objs[d])
            counted_voters = 0
            for _, v, h, _ in self.accepted[d]:
                add_into(recount, histogram_of(h))
                counted_voters += v
            self.expected["templates"][template_cid] = {
                "district": self.districts[d],
                "voters": counted_voters,
                "counts": recount,
                "blocks": len(self.accepted[d]),
                "tallyRoot": root_cid,
                "blockTree": self.tree_cids[d],
            }
            if d == 0 and self.t == "result-counts":  # tamper: the result moves a vote
                counts = json.loads(jcs(counts))
                _shift_vote(counts)
            body = {
                "election": self.election,
                "template": template_cid,
                "administration": self.ea.administration,
                "blockTree": self.tree_cids[d],
                "tallyRoot": root_cid,
                "voters": voters,
                "counts": counts,
            }
            signers = self.authority_signers(self.ea, 1 if (d == 0 and self.t == "auth-threshold") else None)
            at = self.timeline["TS"] + HOUR + d * MINUTE
            self.result_cids[d] = self.publish("result", body, signers, at)
            if d == 0 and self.t == "result-equivocation":  # tamper: a second, different result
                other = json.loads(jcs(body))
                _shift_vote(other["counts"])
                self.publish("result", other, signers, at + MINUTE)

    def _tally(
        self,
        d: int,
        template_cid: str,
        leaves: list[tuple[bytes, int, bytes]],
        start: int,
        end: int,
        builder: SigningKey,
    ) -> tuple[str, bytes, Histogram, int]:
        """Publish the tally nodes of [start, end) in post-order (spec §4.13)."""
        if end == start + 1:
            cid_bin, voters, hist_raw = leaves[start]
            counts = histogram_of(hist_raw)
            node_hash = merkle.leaf_hash(cid_bin)
            children = [cid_from_binary(cid_bin)]
            if d == 0 and start == 0 and self.t == "tally-leaf-miscount":  # tamper: one vote too many
                _add_vote(counts)
        else:
            mid = start + merkle.split(end - start)
            left = self._tally(d, template_cid, leaves, start, mid, builder)
            right = self._tally(d, template_cid, leaves, mid, end, builder)
            counts = add_into(json.loads(jcs(left[2])), right[2])
            voters = left[3] + right[3]
            node_hash = merkle.node_hash(left[1], right[1])
            children = [left[0], right[0]]
        published = counts
        if d == 0 and self.t == "tally-node-counts" and end - start > 1 and start == 0 and end < len(leaves):
            published = json.loads(jcs(counts))  # tamper: this inner node lies; its parent adds the truth
            _add_vote(published)
        body = {
            "election": self.election,
            "template": template_cid,
            "start": start,
            "end": end,
            "hash": b64u_encode(node_hash),
            "voters": voters,
            "counts": published,
            "children": children,
        }
        self._node_count += 1
        if d == 0 and self.t == "bad-signature" and self._node_count == 1:  # tamper: a signature that fails
            _, raw, _ = make_record("tally_node", body, [builder])
            env = json.loads(raw)
            env["signatures"][0]["sig"] = b64u_encode(builder.sign(b"something else"))
            cid = self.publish_raw("tally_node", jcs(env))
        else:
            cid = self.publish("tally_node", body, [builder])
        return cid, node_hash, counts, voters

    # ------------------------------------------------------------------ after the count

    def disputes_and_reports(self) -> None:
        tl = self.timeline
        # disputes: voters whose blocks are counted claim they are missing (refutable)
        n_disputes = max(2, self.c.voters // 1000)
        disputes = 0
        for d in range(len(self.districts)):
            for cid_bin, _, _, receipt in self.accepted[d][: n_disputes + 1]:
                if disputes >= n_disputes:
                    break
                if cid_bin == self.designated_cid:
                    continue  # a tampering may single this block out; keep refutable disputes elsewhere
                member = self._first_member(receipt)
                if member is None:
                    continue
                key = voter_key(self.c.seed, member)
                body: dict[str, Any] = {
                    "election": self.election,
                    "template": self.template_bodies[d][0],
                    "receipt": receipt,
                    "key": key.public_b64u,
                    "claim": "missing",
                }
                if self.t == "dangling-ref" and disputes == 0:  # tamper: a receipt nobody published
                    body["receipt"] = cid_of(b"no such receipt")
                cid = self.publish("dispute", body, [key])
                if self.t == "cid-mismatch" and disputes == 0:
                    self._serve_altered(cid, body, key)
                disputes += 1
        if self.t in ("dispute-unresolved", "dispute-confirmed"):
            self._tampered_dispute()
        # accessibility reports: some from voters who later voted (negated), some not
        reports = 0
        for d in range(len(self.districts)):
            template = self.template_bodies[d][0]
            candidates = self.non_voters[d][:2] + self._some_voters(d, 2)
            for index in candidates:
                key = voter_key(self.c.seed, index)
                body = {
                    "election": self.election,
                    "template": template,
                    "registrant": self.registrant_cids[index],
                    "key": key.public_b64u,
                    "kind": ("unreachable", "timeout", "rejected", "other")[reports % 4],
                    "at": tl["VS"] + (reports + 1) * HOUR,
                    "detail": "Could not reach a pooling peer from my phone.",
                }
                if self.t == "schema-unknown-member" and reports == 0:
                    body["device"] = "phone"
                if self.t == "schema-float" and reports == 0:
                    record = {
                        "v": 1,
                        "type": "accessibility_report",
                        "body": body,
                        "signatures": [],
                        "timestamps": [],
                    }
                    text = json.dumps(record, sort_keys=True, separators=(",", ":")).replace(
                        f'"at":{body["at"]}', f'"at":{body["at"]}.5'
                    )
                    self.publish_raw("accessibility_report", text.encode())
                    reports += 1
                    continue
                self.publish("accessibility_report", body, [key])
                reports += 1
        if self.t == "accessibility-ineligible":
            stranger = self.key("not-registered")
            body = {
                "election": self.election,
                "template": self.template_bodies[0][0],
                "registrant": self.registrant_cids[0],
                "key": stranger.public_b64u,
                "kind": "other",
                "at": tl["VS"] + HOUR,
                "detail": "I was not allowed to vote.",
            }
            self.publish("accessibility_report", body, [stranger])

    def _serve_altered(self, cid: str, body: dict[str, Any], key: SigningKey) -> None:
        """tamper cid-mismatch: the CAR block and the named file hold other bytes under ``cid``."""
        altered = dict(body, claim="missing")
        env = json.loads(make_record("dispute", altered, [key])[1])
        env["body"]["key"] = self.key("someone-else").public_b64u
        raw = jcs(env)
        if "car" in self.sink.formats:
            self.sink.add_raw_car_block(cid, raw)
        if "dir" in self.sink.formats:
            (self.out / "records" / "dispute" / f"{cid}.json").write_bytes(raw)
        if "ndjson" in self.sink.formats:
            pass  # NDJSON carries no CIDs, so the mismatch cannot be expressed there

    def _tampered_dispute(self) -> None:
        if self.t == "dispute-unresolved":
            late = next((b for b in self.rejected[0] if b.result == "inopportune"), None)
            if late is None:
                raise ValueError("the election is too small for tamper dispute-unresolved")
            member, receipt = {"index": late.first_member}, late.receipts[0][0]
        else:
            omitted = self._designated_cid()
            receipt = next(r for c, _, _, r in self.accepted[0] if c == omitted)
            member_index = self._first_member(receipt)
            assert member_index is not None
            member = {"index": member_index}
        key = voter_key(self.c.seed, member["index"])
        body = {
            "election": self.election,
            "template": self.template_bodies[0][0],
            "receipt": receipt,
            "key": key.public_b64u,
            "claim": "missing",
        }
        self.publish("dispute", body, [key])

    def _first_member(self, receipt: str) -> int | None:
        return self._first_member_of.get(receipt)

    def _some_voters(self, d: int, count: int) -> list[int]:
        found = []
        for _, _, _, receipt in self.accepted[d]:
            member = self._first_member(receipt)
            if member is not None:
                found.append(member)
            if len(found) >= count:
                break
        return found

    def certifications(self) -> None:
        for d, (template_cid, _) in enumerate(self.template_bodies):
            result = self.result_cids[d]
            at = self.timeline["CS"] + HOUR + d * MINUTE
            if d == 0 and self.t == "cert-wrong-result":
                result = cid_of(b"a result the auditor never verified")
            if d == 0 and self.t == "cert-late":
                at = self.timeline["C"] + HOUR
            body = {
                "election": self.election,
                "template": template_cid,
                "authority": self.ca.founding,
                "administration": self.ca.administration,
                "result": result,
                "verdict": "certified",
                "reason": "The recount matches the published result.",
            }
            self.publish("certification", body, self.authority_signers(self.ca), at)

    # ------------------------------------------------------------------ side files

    def write_side_files(self) -> None:
        (self.out / "tsa-root.pem").write_bytes(self.tsa.root_pem)
        election_anchor = self.ea.founding
        if self.t == "auth-untrusted":  # tamper: the trust file anchors another authority
            election_anchor = cid_of(b"the genuine election commission's founding record")
        ballot = ", ".join(f'"{b.founding}"' for b in self.ba)
        (self.out / "trust.toml").write_text(
            "# Trust anchors for the simulated election (spec §9). In a real audit these come\n"
            "# from the authorities out of band, never from the evidence itself.\n"
            "[authorities]\n"
            f'election = "{election_anchor}"\n'
            f'registration = "{self.ra.founding}"\n'
            f'certification = "{self.ca.founding}"\n'
            f"ballot = [{ballot}]\n\n"
            "[tsa]\n"
            'roots = ["tsa-root.pem"]\n',
            encoding="utf-8",
        )
        manifest = {
            "generator": f"vtaudit {__version__}",
            "seed": self.c.seed,
            "voters": self.c.voters,
            "districts": self.districts,
            "tamper": self.t,
            "trips": list(tamper_by_name(self.t).trips) if self.t else [],
            "election": self.election,
            "records": self.sink.count,
            "byType": self.sink.by_type,
            "timeline": self.timeline,
            "expected": self.expected,
            "keyholderSecrets": [b64u_encode(s) for s in self.keyholder_scalars],
        }
        (self.out / "manifest.json").write_text(
            json.dumps(manifest, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
        )


def _first_select(counts: Histogram) -> tuple[str, dict[str, Any]] | None:
    for code, entry in counts.items():
        if entry["type"] == "select" and entry["options"]:
            return code, entry
    return None


def _add_vote(counts: Histogram) -> None:
    found = _first_select(counts)
    if found is not None:
        _, entry = found
        first = sorted(entry["options"])[0]
        entry["options"][first] += 1
        entry["ballots"] += 1


def _shift_vote(counts: Histogram) -> None:
    found = _first_select(counts)
    if found is not None:
        _, entry = found
        names = sorted(entry["options"])
        entry["options"][names[0]] += 1
        if entry["options"][names[-1]] > 0:
            entry["options"][names[-1]] -= 1
        else:
            entry["ballots"] += 1


def simulate(config: SimConfig, out: Path) -> SimSummary:
    """Simulate one election into ``out`` (see the module docstring)."""
    return Simulation(config, out).run()
