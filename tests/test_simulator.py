"""The simulator: complete, valid, deterministic elections, and tamperings that do what they say.

Each tampering has an *oracle* here: a small, independent look at the evidence that is
false on the clean election and true on the tampered one. The verification engine's
own tamper matrix (every check failing on its tampering) lives with the checks.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from auditor.checkids import CHECK_IDS
from auditor.crypto import merkle
from auditor.crypto.ecies import combine_private, combine_public, decrypt, public_of
from auditor.crypto.ed25519 import verify_digest
from auditor.crypto.rfc3161 import parse_token
from auditor.model.ballot import vote_problems
from auditor.model.encoding import b64u_decode, cid_to_binary, parse_json
from auditor.model.entries import VoteEntry, VoterEntry
from auditor.model.envelope import Envelope
from auditor.model.histogram import add, zero
from auditor.sim.election import SimConfig, simulate
from auditor.sim.tampers import TAMPERS
from auditor.sources import iter_source
from auditor.trust import load_trust
from auditor.validate import validate_records
from tests.conftest import TAMPER_SEED, TAMPER_VOTERS
from tests.evidence import load

Evidence = dict[str, list[Envelope]]


def _validate(out: Path, source: str = "evidence.car") -> Counter[str]:
    roots = load_trust(out / "trust.toml").tsa_roots
    return validate_records(iter_source(out / source), tsa_roots=roots).failures()


# ---------------------------------------------------------------------------- clean elections


def test_clean_election_has_every_record_type_and_validates(clean: Path) -> None:
    evidence = load(clean / "evidence.car")
    assert set(evidence) >= {
        "administration",
        "election",
        "keyholder",
        "election_revision",
        "ballot_template",
        "registrant",
        "registration_roll",
        "vote_block",
        "receipt",
        "block_tree",
        "key_release",
        "tally_node",
        "result",
        "dispute",
        "accessibility_report",
        "certification",
    }
    assert _validate(clean) == Counter()
    assert _validate(clean, "records") == Counter()


def test_the_three_archive_forms_hold_the_same_records(tmp_path: Path) -> None:
    out = tmp_path / "e"
    simulate(SimConfig(voters=60, seed=9, districts=2, formats=("dir", "car", "ndjson"), workers=1), out)
    forms = [load(out / name) for name in ("records", "evidence.car", "evidence.ndjson")]
    cids = [{e.cid for records in form.values() for e in records} for form in forms]
    assert cids[0] == cids[1] == cids[2]
    assert len(cids[0]) == json.loads((out / "manifest.json").read_text())["records"]


def test_same_seed_gives_the_same_bytes_whatever_the_worker_count(tmp_path: Path) -> None:
    digests = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        simulate(SimConfig(voters=1200, seed=11, workers=workers), out)
        digests.append(
            [
                hashlib.sha256((out / name).read_bytes()).hexdigest()
                for name in ("evidence.car", "trust.toml", "manifest.json")
            ]
        )
    assert digests[0] == digests[1]


def test_another_seed_gives_another_election(tmp_path: Path, clean: Path) -> None:
    out = tmp_path / "other"
    simulate(SimConfig(voters=TAMPER_VOTERS, seed=TAMPER_SEED + 1, workers=1), out)
    assert (out / "evidence.car").read_bytes() != (clean / "evidence.car").read_bytes()


def _accepted_blocks(ev: Evidence) -> list[Envelope]:
    accepted = {r.body.block for r in ev["receipt"] if r.body.result == "accepted"}
    return [b for b in ev["vote_block"] if b.cid in accepted]


def test_clean_results_equal_the_recount_of_decrypted_votes(clean: Path) -> None:
    """Independent recount: decrypt every counted vote with the released keys."""
    ev = load(clean / "evidence.car")
    private = combine_private(b64u_decode(r.body.privateKey) for r in ev["key_release"])
    templates = {t.cid: t.body for t in ev["ballot_template"]}
    totals: dict[str, dict] = {}
    for block in _accepted_blocks(ev):
        template = templates[block.body.template]
        for ct in block.body.votes:
            vote = VoteEntry.parse(parse_json(decrypt(b64u_decode(ct), private, block.body.template)))
            if vote_problems(template, vote):
                continue
            from auditor.model.ballot import count_vote

            count_vote(totals.setdefault(block.body.template, zero(template)), template, vote)
    results = {r.body.template: r.body for r in ev["result"]}
    manifest = json.loads((clean / "manifest.json").read_text())
    assert set(results) == set(totals)
    for template_cid, counts in totals.items():
        assert results[template_cid].counts == counts
        assert manifest["expected"]["templates"][template_cid]["counts"] == counts


def test_clean_election_has_correctly_rejected_blocks(clean: Path) -> None:
    results = Counter(r.body.result for r in load(clean / "evidence.car")["receipt"])
    assert results["accepted"] > 0
    for kind in ("duplicate", "invalid", "inopportune", "error"):
        assert results[kind] >= 1, kind


def test_block_sizes_are_mixed_with_a_few_small_blocks(tmp_path: Path) -> None:
    out = tmp_path / "sizes"
    simulate(SimConfig(voters=2000, seed=4, workers=1, formats=("car",), secrets=False), out)
    sizes = [len(b.body.members) for b in _accepted_blocks(load(out / "evidence.car"))]
    assert min(sizes) <= 3 and max(sizes) >= 20
    assert sum(1 for s in sizes if s <= 3) < len(sizes) * 0.15


def test_voter_secrets_open_each_voters_own_vote(clean: Path) -> None:
    ev = load(clean / "evidence.car")
    private = combine_private(b64u_decode(r.body.privateKey) for r in ev["key_release"])
    blocks = {b.cid: b for b in ev["vote_block"]}
    lines = [json.loads(line) for line in (clean / "secrets" / "voters.ndjson").read_text().splitlines()]
    counted = [s for s in lines if s["receiptResult"] == "accepted"]
    assert counted
    for secret in counted[:25]:
        block = blocks[secret["block"]]
        nonces = {
            VoteEntry.parse(parse_json(decrypt(b64u_decode(ct), private, block.body.template))).nonce
            for ct in block.body.votes
        }
        assert secret["nonce"] in nonces
        assert secret["key"] in block.body.members


# ---------------------------------------------------------------------------- tamperings


def test_tampers_cover_every_check_id() -> None:
    covered = {check for t in TAMPERS.values() for check in t.trips}
    assert covered == set(CHECK_IDS)
    assert all(t.description and t.trips for t in TAMPERS.values())


def _gen_times(env: Envelope) -> list[int]:
    return [parse_token(t).gen_time_ms for t in env.timestamps]


def _timeline(ev: Evidence) -> dict[str, int]:
    best = max(ev["election_revision"], key=lambda r: r.body.revision)
    return best.body.timeline.to_json()


def _decrypted(ev: Evidence) -> list[tuple[Envelope, list[VoteEntry | None], list[VoterEntry | None]]]:
    private = combine_private(b64u_decode(r.body.privateKey) for r in ev["key_release"])
    out = []
    for block in _accepted_blocks(ev):
        votes: list[VoteEntry | None] = []
        voters: list[VoterEntry | None] = []
        for cts, cls, into in ((block.body.votes, VoteEntry, votes), (block.body.voters, VoterEntry, voters)):
            for ct in cts:
                try:
                    into.append(cls.parse(parse_json(decrypt(b64u_decode(ct), private, block.body.template))))
                except Exception:
                    into.append(None)
        out.append((block, votes, voters))
    return out


def _template0(ev: Evidence) -> str:
    by_district = {t.body.district: t for t in ev["ballot_template"]}
    return (
        max(
            (t for t in ev["ballot_template"] if t.body.district == "north"), key=lambda t: t.body.revision
        ).cid
        if by_district
        else ""
    )


def _recount_block(ev: Evidence, block: Envelope, votes: list[VoteEntry | None]) -> dict:
    from auditor.model.ballot import count_vote

    template = next(t.body for t in ev["ballot_template"] if t.cid == block.body.template)
    h = zero(template)
    for v in votes:
        if v is not None and not vote_problems(template, v):
            count_vote(h, template, v)
    return h


def _member_blocks(ev: Evidence) -> Counter[str]:
    return Counter(k for b in _accepted_blocks(ev) for k in b.body.members)


def _roll_keys(ev: Evidence) -> dict[str, str]:
    return {r.body.key: r.body.district for r in ev["registrant"]}


def _tally_sum_mismatch(ev: Evidence) -> bool:
    nodes = {n.cid: n.body for n in ev["tally_node"]}
    for node in nodes.values():
        pair = [nodes.get(c) for c in node.children]
        if len(pair) == 2 and pair[0] and pair[1] and add(pair[0].counts, pair[1].counts) != node.counts:
            return True
    return False


def _leaf_miscount(ev: Evidence) -> bool:
    recounts = {block.cid: _recount_block(ev, block, votes) for block, votes, _ in _decrypted(ev)}
    return any(
        n.body.counts != recounts.get(n.body.children[0], n.body.counts)
        for n in ev["tally_node"]
        if n.body.end == n.body.start + 1
    )


def _tree_vs_accepted(ev: Evidence) -> tuple[int, int]:
    t0 = _template0(ev)
    accepted = sum(1 for b in _accepted_blocks(ev) if b.body.template == t0)
    tree = next(t for t in ev["block_tree"] if t.body.template == t0)
    return tree.body.count, accepted


def _spread_small(ev: Evidence) -> bool:
    result = next(r for r in ev["result"] if r.body.template == _template0(ev))
    entry = result.body.counts["mayor"]
    top = sorted(entry["options"].values(), reverse=True)
    rev = max(ev["election_revision"], key=lambda r: r.body.revision)
    return (top[0] - top[1]) * 10**6 < rev.body.runoff.closeMarginPpm * entry["ballots"]


ORACLES: dict[str, Callable[[Evidence, Path], bool]] = {
    "dangling-ref": lambda ev, _: any(
        d.body.receipt not in {r.cid for r in ev["receipt"]} for d in ev["dispute"]
    ),
    "auth-fork": lambda ev, _: any(
        n > 1 for n in Counter(a.body.previous for a in ev["administration"] if a.body.previous).values()
    ),
    "auth-untrusted": lambda ev, out: (
        tomllib.loads((out / "trust.toml").read_text())["authorities"]["election"]
        not in {a.cid for a in ev["administration"]}
    ),
    "auth-threshold": lambda ev, _: any(len(r.signatures) < 2 for r in ev["result"]),
    "auth-expired": lambda ev, _: any(
        a.body.expires < _gen_times(t)[0]
        for t in ev["block_tree"]
        for a in ev["administration"]
        if a.cid == t.body.administration
    ),
    "revision-late": lambda ev, _: any(
        max(_gen_times(r)) > ev["election"][0].body.revisionDeadline for r in ev["election_revision"]
    ),
    "revision-equivocation": lambda ev, _: Counter(r.body.revision for r in ev["election_revision"])[2] > 1,
    "timeline-order": lambda ev, _: bool(
        max(ev["election_revision"], key=lambda r: r.body.revision).body.timeline.order_problems()
    ),
    "election-key-sum": lambda ev, _: (
        combine_public(b64u_decode(k.body.electionKey) for k in ev["keyholder"])
        != b64u_decode(ev["election_revision"][0].body.electionKey)
    ),
    "keyholder-late": lambda ev, _: any(_gen_times(k)[0] >= _timeline(ev)["KA"] for k in ev["keyholder"]),
    "template-late": lambda ev, _: any(
        max(_gen_times(t)) > _timeline(ev)["BF"] for t in ev["ballot_template"]
    ),
    "template-equivocation": lambda ev, _: (
        max(Counter((t.body.district, t.body.revision) for t in ev["ballot_template"]).values()) > 1
    ),
    "roll-root": lambda ev, _: (
        b64u_decode(ev["registration_roll"][0].body.root)
        != merkle.root(sorted(cid_to_binary(r.cid) for r in ev["registrant"]))
    ),
    "roll-duplicate-key": lambda ev, _: len({r.body.key for r in ev["registrant"]}) < len(ev["registrant"]),
    "block-unsorted": lambda ev, _: any(
        list(b.body.votes) != sorted(b.body.votes) for b in _accepted_blocks(ev)
    ),
    "block-missing-signature": lambda ev, _: any(
        {s.key for s in b.signatures if verify_digest(s.key, s.sig, b.digest)} != set(b.body.members)
        for b in _accepted_blocks(ev)
    ),
    "block-ineligible": lambda ev, _: any(k not in _roll_keys(ev) for k in _member_blocks(ev)),
    "block-wrong-district": lambda ev, _: any(
        _roll_keys(ev).get(k) not in (None, t.body.district)
        for b in _accepted_blocks(ev)
        for t in ev["ballot_template"]
        if t.cid == b.body.template
        for k in b.body.members
    ),
    "double-vote": lambda ev, _: max(_member_blocks(ev).values()) > 1,
    "receipt-forged": lambda ev, _: any(
        r.signatures[0].key != ev["election_revision"][0].body.receiptKey for r in ev["receipt"]
    ),
    "receipt-twice": lambda ev, _: max(Counter(r.body.block for r in ev["receipt"]).values()) > 1,
    "receipt-accepted-names": lambda ev, _: any(
        r.body.registrants for r in ev["receipt"] if r.body.result == "accepted"
    ),
    "receipt-false-duplicate": lambda ev, _: any(
        k not in _member_blocks(ev)
        for r in ev["receipt"]
        if r.body.result == "duplicate"
        for k in r.body.registrants
    ),
    "receipt-late-accepted": lambda ev, _: any(
        r.body.received >= _timeline(ev)["AV"] for r in ev["receipt"] if r.body.result == "accepted"
    ),
    "tree-omit": lambda ev, _: _tree_vs_accepted(ev)[0] < _tree_vs_accepted(ev)[1],
    "tree-extra": lambda ev, _: _tree_vs_accepted(ev)[0] > _tree_vs_accepted(ev)[1],
    "key-missing": lambda ev, _: len(ev["key_release"]) < len(ev["keyholder"]),
    "key-late": lambda ev, _: any(_gen_times(r)[0] >= _timeline(ev)["TS"] for r in ev["key_release"]),
    "key-wrong": lambda ev, _: any(
        b64u_encode_point(r.body.privateKey) not in {k.body.electionKey for k in ev["keyholder"]}
        for r in ev["key_release"]
    ),
    "key-early": lambda ev, _: bool(ev.get("key_disclosure")),
    "vote-undecryptable": lambda ev, _: any(None in votes for _, votes, _ in _decrypted(ev)),
    "voter-bad-signature": lambda ev, _: any(
        v is not None and not verify_digest(v.key, v.signature, v.digest)
        for _, _, vs in _decrypted(ev)
        for v in vs
    ),
    "voter-key-mismatch": lambda ev, _: any(
        {v.key for v in vs if v is not None} != set(b.body.members) for b, _, vs in _decrypted(ev)
    ),
    "nonce-reuse": lambda ev, _: (
        max(Counter(v.nonce for _, votes, _ in _decrypted(ev) for v in votes if v is not None).values()) > 1
    ),
    "ballot-invalid": lambda ev, _: any(
        vote_problems(next(t.body for t in ev["ballot_template"] if t.cid == b.body.template), v)
        for b, votes, _ in _decrypted(ev)
        for v in votes
        if v is not None
    ),
    "tally-node-counts": lambda ev, _: _tally_sum_mismatch(ev),
    "tally-leaf-miscount": lambda ev, _: _leaf_miscount(ev),
    "result-counts": lambda ev, _: any(
        r.body.counts != n.body.counts
        for r in ev["result"]
        for n in ev["tally_node"]
        if n.cid == r.body.tallyRoot
    ),
    "result-equivocation": lambda ev, _: max(Counter(r.body.template for r in ev["result"]).values()) > 1,
    "dispute-unresolved": lambda ev, _: any(d.body.key not in _member_blocks(ev) for d in ev["dispute"]),
    "dispute-confirmed": lambda ev, _: (
        any(
            r.body.result == "accepted" and r.body.block not in {b.cid for b in ev["vote_block"]}
            for r in ev["receipt"]
        )
        and len(ev["dispute"]) > 2
    ),
    "accessibility-ineligible": lambda ev, _: any(
        a.body.key not in _roll_keys(ev) for a in ev["accessibility_report"]
    ),
    "cert-wrong-result": lambda ev, _: any(
        c.body.result not in {r.cid for r in ev["result"]} for c in ev["certification"]
    ),
    "cert-late": lambda ev, _: any(_gen_times(c)[0] > _timeline(ev)["C"] for c in ev["certification"]),
    "close-race": lambda ev, _: _spread_small(ev),
}

RECORD_LEVEL = {
    "cid-mismatch": "REC-CID",
    "schema-unknown-member": "REC-SCHEMA",
    "schema-float": "REC-SCHEMA",
    "bad-signature": "SIG-VALID",
    "tsa-bad-signature": "TSA-TOKEN",
    "tsa-unlisted": "TSA-TOKEN",
    "tsa-no-eku": "TSA-TOKEN",
    "tsa-imprint": "TSA-IMPRINT",
}


def b64u_encode_point(private_b64u: str) -> str:
    from auditor.model.encoding import b64u_encode

    return b64u_encode(public_of(b64u_decode(private_b64u)))


def test_every_tamper_has_an_oracle_here() -> None:
    assert set(ORACLES) | set(RECORD_LEVEL) == set(TAMPERS)


@pytest.mark.parametrize("name", sorted(RECORD_LEVEL))
def test_record_level_tampering_fails_its_check(name: str, sims: Callable[[str | None], Path]) -> None:
    failures = _validate(sims(name))
    assert failures[RECORD_LEVEL[name]] >= 1
    assert set(failures) == {RECORD_LEVEL[name]}, failures


@pytest.mark.parametrize("name", sorted(ORACLES))
def test_tampering_does_what_it_says(name: str, sims: Callable[[str | None], Path], clean: Path) -> None:
    oracle = ORACLES[name]
    assert not oracle(load(clean / "evidence.car"), clean), (
        f"the oracle for {name} fires on the clean election"
    )
    tampered = sims(name)
    assert oracle(load(tampered / "evidence.car"), tampered)
    manifest = json.loads((tampered / "manifest.json").read_text())
    assert manifest["tamper"] == name and manifest["trips"] == list(TAMPERS[name].trips)


def test_unknown_tamper_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="--list-tampers"):
        simulate(SimConfig(voters=50, tamper="no-such-tamper"), tmp_path / "x")


@pytest.mark.parametrize(
    "private, fixed_base",
    [
        ((7).to_bytes(32, "little"), True),  # k·B is the election key: fixed-base encryption
        ((8).to_bytes(32, "little"), False),  # another key's scalar: encrypt to the key itself
        (bytes(32), False),  # zero, no scalar at all
        (None, False),
    ],
)
def test_a_worker_encrypts_with_the_private_key_only_when_it_is_the_election_keys(
    private: bytes | None, fixed_base: bool
) -> None:
    """D47: a worker given k encrypts with S = (r·k)·B only when k·B is its election key;
    either way the entries open with the election's private key."""
    from auditor.crypto.ecies import encrypt_knowing_private
    from auditor.sim import blocks

    key = (7).to_bytes(32, "little")
    ctx = blocks.WorkerContext(1, "e", public_of(key), (), (), election_private=private)
    blocks.init_worker(ctx)
    assert blocks._ENCRYPT is not None
    assert (blocks._ENCRYPT.func is encrypt_knowing_private) is fixed_base  # type: ignore[attr-defined]
    ciphertext = blocks._ENCRYPT(plaintext=b"entry", template_cid="t", ephemeral=(3).to_bytes(32, "little"))
    assert decrypt(ciphertext, key, "t") == b"entry"
