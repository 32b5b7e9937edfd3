"""Voter slice proofs (issue 7): round trips, negative cases, malformed proofs, hygiene, size, speed.

Good and tampered proofs side by side. Negative cases come two ways: from the
simulator's tamperings (real evidence, re-signed by the simulator), and from editing a
good proof as an attacker could (:class:`Attacker` re-signs with the keys a colluding
election authority, receipt key, tally builder, TSA and fellow block members hold), so
that each case fails for the intended reason and not for a broken signature.
"""

from __future__ import annotations

import copy
import hashlib
import json
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from auditor.crypto import merkle
from auditor.crypto.ecies import decrypt, derive_scalar, encrypt
from auditor.crypto.ed25519 import SigningKey, sign_digest
from auditor.crypto.rfc3161 import parse_token
from auditor.harvest import ArchiveSource, harvest
from auditor.model import ballot, histogram
from auditor.model.encoding import b64u_decode, b64u_encode, cid_of, cid_to_binary, jcs
from auditor.model.entries import VoteEntry
from auditor.model.envelope import record_digest
from auditor.model.records import BallotTemplate
from auditor.sim.blocks import receipt_key, tsa_seed
from auditor.sim.election import SimConfig, simulate
from auditor.sim.tsa import TestTsa
from auditor.slice import core, timestamp
from auditor.slice.cli import slice_group
from auditor.slice.prove import NoVoteError, Prover, write_proof
from auditor.slice.verify import SliceReport, SliceTrust, parse_trust, verify_proof

HOUR = 3_600_000

# ---------------------------------------------------------------------------- elections


class Election:
    """A simulated election, harvested, with its voters' secrets and a prover."""

    def __init__(self, out: Path, seed: int) -> None:
        self.out, self.seed = out, seed
        store = out / "store"
        if not (store / "store.json").exists():
            harvest([ArchiveSource(out / "evidence.car")], store)
        self.prover = Prover(store)
        self.lines = [json.loads(x) for x in (out / "secrets" / "voters.ndjson").read_text().splitlines()]
        self.trust = parse_trust((out / "trust.toml").read_text(), lambda name: (out / name).read_bytes())
        self.manifest = json.loads((out / "manifest.json").read_text())
        self.blocks: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for line in self.lines:
            self.blocks[line["block"]].append(line)

    def proof(self, line: dict[str, Any]) -> dict[str, Any]:
        return self.prover.build(line["key"], line["nonce"]).proof

    def first_district(self) -> str:
        return str(self.manifest["districts"][0])

    def designated(self) -> list[dict[str, Any]]:
        """The members (in pooling order) of the block the simulator's block tampers target:
        the first counted block of the first district with three members or more."""
        return next(
            members
            for members in self.blocks.values()
            if members[0]["receiptResult"] == "accepted"
            and members[0]["district"] == self.first_district()
            and len(members) >= 3
        )

    def accepted(self) -> dict[str, Any]:
        return next(x for x in self.lines if x["receiptResult"] == "accepted")


def _check(report: SliceReport, number: int) -> Any:
    return next(c for c in report.checks if c.number == number)


def _bytes(proof: dict[str, Any]) -> bytes:
    return json.dumps(proof, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()


def _verify(election: Election, proof: dict[str, Any], **kwargs: Any) -> SliceReport:
    return verify_proof(_bytes(proof), election.trust, **kwargs)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Election:
    """90 voters in two districts: the first has the rejected blocks (error, invalid,
    duplicate, inopportune) whose voters re-pool, so every receipt result occurs."""
    out = tmp_path_factory.mktemp("slice-small")
    simulate(SimConfig(voters=90, seed=21, districts=2, workers=1), out)
    return Election(out, 21)


@pytest.fixture(scope="module")
def tampered(sims: Callable[[str | None], Path]) -> Callable[[str], Election]:
    """The conftest's tampered elections (shared with test_verify), harvested once each."""
    cache: dict[str, Election] = {}

    def get(tamper: str) -> Election:
        if tamper not in cache:
            cache[tamper] = Election(sims(tamper), 3)
        return cache[tamper]

    return get


# ---------------------------------------------------------------------------- round trips


def test_every_voter_of_a_small_election_round_trips(small: Election) -> None:
    """Every line of secrets/voters.ndjson: a counted vote is COUNTED AND UNCHANGED with
    every check passing; a vote in a rejected block is NOT COUNTED by its receipt."""
    results = defaultdict(int)
    times = []
    for line in small.lines:
        proof = small.proof(line)
        report = _verify(small, proof, key=line["key"], nonce=line["nonce"], cast=line["vote"]["answers"])
        times.append(report.seconds)
        results[(line["receiptResult"], report.answer)] += 1
        if line["receiptResult"] == "accepted":
            assert report.answer == "counted", report.lines()
            assert [c.status for c in report.checks] == ["pass"] * 7
            assert report.exit_code == 0
        else:
            assert report.answer == "not-counted", report.lines()
            assert _check(report, 4).status == "fail" and line["receiptResult"] in _check(report, 4).message
            assert report.exit_code == 1
        assert [q for q, _ in report.vote] == [
            q["title"] for q in proof["records"][proof["template"]]["body"]["questions"]
        ]
    assert {result for result, _ in results} == {"accepted", "error", "invalid", "duplicate", "inopportune"}
    assert statistics.median(times) < 1.0


def test_the_vote_shown_is_the_vote_cast(small: Election) -> None:
    line = small.accepted()
    report = _verify(small, small.proof(line))
    shown = dict(report.vote)
    template = BallotTemplate.parse(small.proof(line)["records"][line["template"]]["body"])
    for answer in line["vote"]["answers"]:
        question = template.question(answer["question"])
        assert question is not None
        text = shown[question.title]
        if question.type in ("select", "rank"):
            assert all({o.code: o.title for o in question.options}[v] in text for v in answer["values"])
        elif question.type == "text":
            assert answer["values"] in text


def test_proofs_are_deterministic_and_carry_no_secret(small: Election) -> None:
    line = small.accepted()
    first, second = (
        _bytes(small.proof(line)),
        _bytes(Prover(small.out / "store").build(line["key"], line["nonce"]).proof),
    )
    assert first == second
    assert line["seed"] not in first.decode()  # the voter's private key never goes in


def test_cli_prove_from_an_archive_then_verify(small: Election, tmp_path: Path) -> None:
    line = small.accepted()
    out = tmp_path / "proof.json"
    runner = CliRunner()
    args = ["prove", str(small.out / "evidence.car"), "--key", line["key"], "--nonce", line["nonce"]]
    result = runner.invoke(slice_group, [*args, "--out", str(out), "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert out.stat().st_size < 100_000 and "wrote" in result.output
    cast = tmp_path / "cast.json"
    cast.write_text(json.dumps(line["vote"]))
    trust = str(small.out / "trust.toml")
    result = runner.invoke(slice_group, ["verify", str(out), "--trust", trust, "--cast", str(cast)])
    assert result.exit_code == 0, result.output
    first = result.output.splitlines()[0]
    assert first.startswith("COUNTED AND UNCHANGED: ")
    assert "exactly what you cast" in result.output and "✓" in result.output
    result = runner.invoke(slice_group, ["verify", str(out), "--json", "--key", line["key"]])
    assert result.exit_code == 0
    summary = json.loads(result.output)
    assert summary["answer"] == "counted" and summary["anchored"] is False
    result = runner.invoke(slice_group, ["verify", str(out)])
    assert "NOTE: no trust file" in result.output.splitlines()[1]


def test_cli_prove_from_a_store_and_verify_a_rejected_vote(small: Election, tmp_path: Path) -> None:
    line = next(x for x in small.lines if x["receiptResult"] == "error")
    out = tmp_path / "proof.json"
    runner = CliRunner()
    args = [
        "prove",
        str(small.out / "store"),
        "--key",
        line["key"],
        "--nonce",
        line["nonce"],
        "--out",
        str(out),
    ]
    assert runner.invoke(slice_group, args).exit_code == 0
    result = runner.invoke(slice_group, ["verify", str(out), "--trust", str(small.out / "trust.toml")])
    assert result.exit_code == 1
    assert result.output.startswith("NOT COUNTED: ")
    assert "– skipped" in result.output


def test_cli_prove_errors(small: Election, tmp_path: Path) -> None:
    runner = CliRunner()
    store, out = str(small.out / "store"), str(tmp_path / "p.json")
    stranger = SigningKey.derive("nobody").public_b64u
    result = runner.invoke(
        slice_group, ["prove", store, "--key", stranger, "--nonce", "A" * 22, "--out", out]
    )
    assert result.exit_code == 1 and "no vote block" in result.output
    result = runner.invoke(slice_group, ["prove", store, "--key", "short", "--nonce", "A" * 22, "--out", out])
    assert result.exit_code == 2 and "--key" in result.output
    with pytest.raises(NoVoteError):
        small.prover.build(stranger, "A" * 22)


def test_prove_needs_the_released_keys(tampered: Callable[[str], Election]) -> None:
    election = tampered("key-missing")
    with pytest.raises(Exception, match="has not released a valid key"):
        election.proof(election.accepted())


# ---------------------------------------------------------------------------- the attacker


class Attacker:
    """Holds the keys a colluding authority has: the election administration's, the receipt
    key, the tally builder's, the TSA's, and those of the victim's fellow block members."""

    def __init__(self, election: Election) -> None:
        seed = election.seed
        self.admins = [
            SigningKey.derive(f"vtaudit-sim/{seed}", "election", "admin", str(i)) for i in range(2)
        ]
        self.receipt = receipt_key(seed)
        self.builder = SigningKey.derive(f"vtaudit-sim/{seed}", "tally-builder")
        self.tsa = TestTsa(tsa_seed(seed))
        self.voters = {x["key"]: SigningKey(bytes.fromhex(x["seed"])) for x in election.lines}
        self.serial = 7_000_000

    def sign(self, env: dict[str, Any], keys: list[SigningKey]) -> None:
        digest = record_digest(env["type"], env["body"])
        env["signatures"] = [sign_digest(k, digest) for k in keys]

    def stamp(self, env: dict[str, Any], at: int | None = None) -> None:
        when = at if at is not None else parse_token(b64u_decode(env["timestamps"][0])).gen_time_ms
        self.serial += 1
        digest = record_digest(env["type"], env["body"])
        env["timestamps"] = [b64u_encode(self.tsa.issue(digest, when, self.serial))]


def _put(proof: dict[str, Any], env: dict[str, Any]) -> str:
    cid = cid_of(jcs(env))
    proof["records"][cid] = env
    return cid


def reseal(
    proof: dict[str, Any],
    attacker: Attacker,
    *,
    block_signers: list[SigningKey] | None = None,
    recount_leaf: bool = False,
    keep_root: bool = False,
    receipt_signers: list[SigningKey] | None = None,
    receipt_at: int | None = None,
    tree_signers: list[SigningKey] | None = None,
    tree_at: int | None = None,
    result_signers: list[SigningKey] | None = None,
) -> None:
    """Recompute and re-sign everything above the voter's block, as the attacker would:
    the block's CID, the receipt, the tally path (hashes, children, sums; the leaf's counts
    only with ``recount_leaf``), the tree root (unless ``keep_root``) and the result."""
    recs = proof["records"]
    block = recs.pop(proof["block"])
    if block_signers is not None:
        attacker.sign(block, block_signers)
    proof["block"] = _put(proof, block)
    receipt = recs.pop(proof["receipt"])
    receipt["body"]["block"] = proof["block"]
    attacker.sign(receipt, receipt_signers or [attacker.receipt])
    attacker.stamp(receipt, receipt_at)
    proof["receipt"] = _put(proof, receipt)
    old, new = None, None
    path = []
    for k, cid in enumerate(proof["tally"]):
        node = recs.pop(cid)
        body = node["body"]
        if k == 0:
            body["children"] = [proof["block"]]
            body["hash"] = b64u_encode(merkle.leaf_hash(cid_to_binary(proof["block"])))
            if recount_leaf:
                body["counts"], body["voters"] = _recount(proof, block)
        else:
            body["children"][body["children"].index(old)] = new
            left, right = (recs[c]["body"] for c in body["children"])
            body["hash"] = b64u_encode(
                merkle.node_hash(b64u_decode(left["hash"]), b64u_decode(right["hash"]))
            )
            body["voters"] = left["voters"] + right["voters"]
            body["counts"] = histogram.add(left["counts"], right["counts"])
        attacker.sign(node, [attacker.builder])
        old, new = cid, _put(proof, node)
        path.append(new)
    proof["tally"] = path
    tree = recs.pop(proof["blockTree"])
    if not keep_root:
        inclusion = proof["inclusion"]
        got = merkle.root_from_inclusion(
            merkle.leaf_hash(cid_to_binary(proof["block"])),
            inclusion["index"],
            tree["body"]["count"],
            [b64u_decode(h) for h in inclusion["path"]],
        )
        assert got is not None
        tree["body"]["root"] = b64u_encode(got)
    attacker.sign(tree, tree_signers or attacker.admins)
    attacker.stamp(tree, tree_at)
    proof["blockTree"] = _put(proof, tree)
    result = recs.pop(proof["result"])
    root = recs[path[-1]]["body"]
    result["body"].update(
        blockTree=proof["blockTree"], tallyRoot=path[-1], counts=root["counts"], voters=root["voters"]
    )
    attacker.sign(result, result_signers or attacker.admins)
    attacker.stamp(result)
    proof["result"] = _put(proof, result)


def _recount(proof: dict[str, Any], block: dict[str, Any]) -> tuple[Any, int]:
    template = BallotTemplate.parse(proof["records"][proof["template"]]["body"])
    key = b64u_decode(proof["privateKey"])
    counts = histogram.zero(template)
    for text in block["body"]["votes"]:
        vote = VoteEntry.parse(json.loads(decrypt(b64u_decode(text), key, proof["template"])))
        if not ballot.vote_problems(template, vote):
            ballot.count_vote(counts, template, vote)
    return counts, len(block["body"]["members"])


def alter_vote(proof: dict[str, Any], attacker: Attacker) -> None:
    """Replace the voter's vote in the block by another with the same nonce (the attacker
    knows the released key), re-signed by every member but the voter."""
    block = proof["records"][proof["block"]]
    key = b64u_decode(proof["privateKey"])
    election_key = b64u_decode(proof["records"][proof["revision"]]["body"]["electionKey"])
    votes = block["body"]["votes"]
    for i, text in enumerate(votes):
        vote = json.loads(decrypt(b64u_decode(text), key, proof["template"]))
        if vote["nonce"] == proof["voter"]["nonce"]:
            template = proof["records"][proof["template"]]["body"]
            options = [o["code"] for o in template["questions"][0]["options"]]
            first = vote["answers"][0]
            first["values"] = [next(o for o in options if o not in first["values"])]
            ephemeral = derive_scalar(b"attacker ephemeral")
            votes[i] = b64u_encode(encrypt(jcs(vote), election_key, proof["template"], ephemeral))
    votes.sort()
    members = block["body"]["members"]
    others = [attacker.voters[m] for m in members if m != proof["voter"]["key"]]
    reseal(proof, attacker, block_signers=others, recount_leaf=True)


# ---------------------------------------------------------------------------- negative cases


def _expect(report: SliceReport, answer: str, number: int, words: str) -> None:
    assert report.answer == answer, report.lines()
    check = _check(report, number)
    assert check.status == "fail", report.lines()
    assert words in check.message, report.lines()
    first = min(
        (c for c in report.checks if c.status == "fail" and c.meaning == answer), key=lambda c: c.number
    )
    assert report.sentence.lower().startswith(first.message[:30].lower())


def test_vote_dropped_from_the_tree_is_not_counted(tampered: Callable[[str], Election]) -> None:
    election = tampered("tree-omit")
    line = election.designated()[0]
    proof = election.proof(line)
    assert proof["inclusion"] is None and proof["exclusion"] is not None
    report = _verify(election, proof)
    _expect(report, "not-counted", 5, "the committed block tree does not include it")
    assert _check(report, 4).status == "pass" and _check(report, 6).status == "skipped"
    assert report.exit_code == 1


def test_vote_altered_in_its_block(small: Election) -> None:
    line = small.accepted()
    proof = small.proof(line)
    alter_vote(proof, Attacker(small))
    report = _verify(small, proof)
    _expect(report, "altered", 3, "your signature on the block does not verify")
    assert _check(report, 6).status == "pass"  # the attacker recounted: only the signature betrays it
    report = _verify(small, proof, cast=line["vote"]["answers"])
    _expect(report, "altered", 1, "differs from what you cast")
    assert report.vote[0][1] != dict(_verify(small, small.proof(line)).vote)[report.vote[0][0]]


def test_miscounted_leaf_tally_is_altered(tampered: Callable[[str], Election]) -> None:
    election = tampered("tally-leaf-miscount")
    template = next(x["template"] for x in election.lines if x["district"] == election.first_district())
    counted = {
        x["block"] for x in election.lines if x["template"] == template and x["receiptResult"] == "accepted"
    }
    first = min(counted, key=cid_to_binary)  # leaf 0, the one the tampering miscounts
    report = _verify(election, election.proof(election.blocks[first][0]))
    _expect(report, "altered", 6, "it was miscounted")
    assert _check(report, 6).details  # where the counts differ
    other = next(b for b in counted if b != first)
    assert _verify(election, election.proof(election.blocks[other][0])).answer == "counted"


def test_forged_root_is_altered(small: Election) -> None:
    proof = small.proof(small.accepted())
    proof["records"][proof["blockTree"]]["body"]["root"] = b64u_encode(hashlib.sha256(b"forged").digest())
    reseal(proof, Attacker(small), keep_root=True)
    report = _verify(small, proof)
    _expect(report, "altered", 5, "the tree or the tally was forged")


# Proof edits an attacker could make, each re-signed: (name, edit, answer, check, words).
def _late_revision(proof: dict[str, Any], attacker: Attacker) -> None:
    revision = proof["records"].pop(proof["revision"])
    attacker.stamp(revision, revision["body"]["timeline"]["KR"] + HOUR)
    proof["revision"] = _put(proof, revision)


def _drop_founding(proof: dict[str, Any], _: Attacker) -> None:
    founding = proof["records"][proof["election"]]["body"]["authority"]
    del proof["records"][founding]


def _leaf_voters(proof: dict[str, Any], attacker: Attacker) -> None:
    proof["records"][proof["tally"][0]]["body"]["voters"] += 1
    reseal(proof, attacker)


def _sibling_hash(proof: dict[str, Any], attacker: Attacker) -> None:
    parent = proof["records"][proof["tally"][1]]["body"]
    i = 1 - parent["children"].index(proof["tally"][0])
    sibling = proof["records"].pop(parent["children"][i])
    sibling["body"]["hash"] = b64u_encode(hashlib.sha256(b"another subtree").digest())
    attacker.sign(sibling, [attacker.builder])
    parent["children"][i] = _put(proof, sibling)
    reseal(proof, attacker)


def _timeline(proof: dict[str, Any]) -> dict[str, int]:
    timeline: dict[str, int] = proof["records"][proof["revision"]]["body"]["timeline"]
    return timeline


EDITS: list[tuple[str, Callable[[dict[str, Any], Attacker], None], str, int, str]] = [
    ("no key", lambda p, a: p.update(privateKey=None), "cannot-tell", 1, "carries no decryption key"),
    (
        "wrong key",
        lambda p, a: p.update(privateKey=b64u_encode(derive_scalar(b"x"))),
        "cannot-tell",
        1,
        "not the election's released key",
    ),
    (
        "another nonce",
        lambda p, a: p["voter"].update(nonce=b64u_encode(bytes(16))),
        "altered",
        1,
        "carries your nonce",
    ),
    ("late revision", _late_revision, "cannot-tell", 7, "not timestamped before its deadline"),
    ("founding record missing", _drop_founding, "cannot-tell", 7, "not signed by its authority"),
    ("no receipt", lambda p, a: p.update(receipt=None), "cannot-tell", 4, "does not carry the receipt"),
    (
        "forged receipt",
        lambda p, a: reseal(p, a, receipt_signers=[SigningKey.derive("forger")]),
        "cannot-tell",
        4,
        "not signed by the election's receipt key",
    ),
    (
        "receipt after voting closed",
        lambda p, a: reseal(p, a, receipt_at=_timeline(p)["AV"] + HOUR),
        "cannot-tell",
        4,
        "outside [VS",
    ),
    (
        "tree by one administrator",
        lambda p, a: reseal(p, a, tree_signers=a.admins[:1]),
        "cannot-tell",
        5,
        "not signed by the election authority",
    ),
    (
        "tree after key release",
        lambda p, a: reseal(p, a, tree_at=_timeline(p)["RK"] + 1),
        "cannot-tell",
        5,
        "outside [HV",
    ),
    (
        "path altered",
        lambda p, a: p["inclusion"]["path"].__setitem__(0, b64u_encode(bytes(32))),
        "cannot-tell",
        5,
        "the path is wrong",
    ),
    ("no path", lambda p, a: p.update(inclusion=None), "cannot-tell", 5, "carries no path"),
    (
        "bogus exclusion",
        lambda p, a: p.update(inclusion=None, exclusion={"neighbours": []}),
        "cannot-tell",
        5,
        "neighbours do not show",
    ),
    (
        "result by one administrator",
        lambda p, a: reseal(p, a, result_signers=a.admins[:1]),
        "cannot-tell",
        6,
        "not signed by the election authority",
    ),
    ("no tally nodes", lambda p, a: p.update(tally=[]), "cannot-tell", 6, "carries no tally nodes"),
    ("leaf voters", _leaf_voters, "altered", 6, "voters, not"),
    ("sibling hash", _sibling_hash, "altered", 6, "the sibling's hash is not the one on your block's path"),
]


@pytest.mark.parametrize(("name", "edit", "answer", "number", "words"), EDITS, ids=[e[0] for e in EDITS])
def test_edited_proofs_fail_with_the_right_message(
    small: Election,
    name: str,
    edit: Callable[[dict[str, Any], Attacker], None],
    answer: str,
    number: int,
    words: str,
) -> None:
    line = next(
        x for x in small.lines if x["receiptResult"] == "accepted" and len(small.blocks[x["block"]]) > 3
    )
    proof = small.proof(line)
    edit(proof, Attacker(small))
    _expect(_verify(small, proof), answer, number, words)


def _trust(sim: Election, /, **changes: Any) -> SliceTrust:
    base = sim.trust
    values = {"election": base.election, "ballot": base.ballot, "roots": base.roots, **changes}
    return SliceTrust(values["election"], values["ballot"], values["roots"])


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"election": cid_of(b"another authority")}, "not the one your trust file names"),
        ({"election": None}, "names no election authority"),
        ({"ballot": ()}, "not among your trust file's ballot authorities"),
    ],
)
def test_trust_anchors(small: Election, changes: dict[str, Any], words: str) -> None:
    proof = small.proof(small.accepted())
    report = verify_proof(_bytes(proof), _trust(small, **changes))
    _expect(report, "cannot-tell", 7, words)
    assert report.exit_code == 2


def test_tsa_roots_of_the_trust_file(small: Election) -> None:
    proof = small.proof(small.accepted())
    other_root = TestTsa(hashlib.sha256(b"another root").digest()).root_cert_der
    report = verify_proof(_bytes(proof), _trust(small, roots=(other_root,)))
    _expect(report, "cannot-tell", 7, "does not chain to a root of your trust file")


# The simulator's tamperings, each with the voter it hurts: (tamper, pick, answer, check, words).
def _designated(position: int) -> Callable[[Election], dict[str, Any]]:
    return lambda e: e.designated()[position]


def _leaf0(election: Election) -> dict[str, Any]:
    template = next(x["template"] for x in election.lines if x["district"] == election.first_district())
    counted = {
        x["block"] for x in election.lines if x["template"] == template and x["receiptResult"] == "accepted"
    }
    return election.blocks[min(counted, key=cid_to_binary)][0]


def _last_block_of_first_district(election: Election) -> dict[str, Any]:
    return [x for x in election.lines if x["district"] == election.first_district()][-1]


def _unsigned_member(election: Election) -> dict[str, Any]:
    members = election.designated()
    smallest = min(m["key"] for m in members)  # the sorted first signer is the one left out
    return next(m for m in members if m["key"] != smallest)


SIM_CASES: list[tuple[str, Callable[[Election], dict[str, Any]], str, int, str]] = [
    ("auth-untrusted", Election.accepted, "cannot-tell", 7, "not the one your trust file names"),
    (
        "ballot-invalid",
        lambda e: next(x for x in e.lines if not x["validVote"]),
        "not-counted",
        1,
        "not valid",
    ),
    ("nonce-reuse", _designated(0), "altered", 1, "2 votes in your block carry your nonce"),
    ("voter-bad-signature", _designated(0), "altered", 2, "signature does not verify with your key"),
    ("voter-key-mismatch", _designated(0), "altered", 2, "no voter entry in your block carries your key"),
    ("block-missing-signature", _unsigned_member, "altered", 3, "did not sign it validly"),
    ("block-unsorted", _designated(0), "altered", 3, "votes are not sorted"),
    (
        "receipt-forged",
        lambda e: next(x for x in e.lines if x["receiptResult"] == "error"),
        "cannot-tell",
        4,
        "receipt key",
    ),
    ("receipt-late-accepted", _last_block_of_first_district, "cannot-tell", 4, "outside [VS"),
    ("auth-expired", _leaf0, "cannot-tell", 5, "not signed by the election authority"),
    ("tally-node-counts", _leaf0, "altered", 6, "is not the sum of its two halves"),
    ("result-counts", _leaf0, "altered", 6, "the published result is not the tally root's count"),
    ("auth-threshold", _leaf0, "cannot-tell", 6, "not signed by the election authority"),
]


@pytest.mark.parametrize(
    ("tamper", "pick", "answer", "number", "words"), SIM_CASES, ids=[c[0] for c in SIM_CASES]
)
def test_tampered_elections_fail_with_the_right_message(
    tampered: Callable[[str], Election],
    tamper: str,
    pick: Callable[[Election], dict[str, Any]],
    answer: str,
    number: int,
    words: str,
) -> None:
    election = tampered(tamper)
    report = _verify(election, election.proof(pick(election)))
    _expect(report, answer, number, words)


def test_the_block_that_lists_the_key_is_proved_when_the_vote_is_gone(small: Election) -> None:
    line = small.accepted()
    built = small.prover.build(line["key"], b64u_encode(b"not my nonce!!!!"))
    assert any("nonce" in note for note in built.notes)
    _expect(_verify(small, built.proof), "altered", 1, "no vote in the block that lists your key")


def test_a_proof_about_someone_else_cannot_tell(small: Election) -> None:
    line = small.accepted()
    report = _verify(small, small.proof(line), key=SigningKey.derive("me").public_b64u)
    assert report.answer == "cannot-tell" and "another voter" in report.sentence and report.exit_code == 2


# ---------------------------------------------------------------------------- malformed proofs


def _malformed(good: bytes) -> list[tuple[str, bytes]]:
    proof = json.loads(good)
    cases = [
        ("empty", b""),
        ("truncated", good[: len(good) // 2]),
        ("not JSON", b"\x00\xff garbage"),
        ("a list", b"[1, 2]"),
        ("a float", good.replace(b'"format"', b'"x":1.5,"format"', 1)),
        ("deeply nested", b"[" * 100_000 + b"]" * 100_000),
    ]
    edits: list[tuple[str, Callable[[dict[str, Any]], None]]] = [
        ("missing member", lambda p: p.pop("block")),
        ("unknown member", lambda p: p.update(extra=1)),
        ("wrong format", lambda p: p.update(format="other/9")),
        ("records a list", lambda p: p.update(records=[])),
        ("voter key a number", lambda p: p["voter"].update(key=7)),
        ("block not a CID", lambda p: p.update(block="bafy")),
        ("record altered", lambda p: p["records"][p["block"]]["body"]["members"].reverse()),
        ("record of the wrong type", lambda p: p.update(block=p["receipt"])),
        ("signature not base64url", lambda p: p["records"][p["block"]]["signatures"][0].update(sig="=")),
        ("template questions a string", lambda p: _rehash(p, "template", lambda b: b.update(questions="x"))),
        ("timeline short", lambda p: _rehash(p, "revision", lambda b: b["timeline"].pop("AV"))),
        ("tally a string", lambda p: p.update(tally="x")),
        ("inclusion path of numbers", lambda p: p["inclusion"].update(path=[1, 2])),
        ("exclusion neighbours an object", lambda p: p.update(inclusion=None, exclusion={"neighbours": {}})),
    ]
    for name, edit in edits:
        changed = copy.deepcopy(proof)
        edit(changed)
        cases.append((name, _bytes(changed)))
    return cases


def _rehash(proof: dict[str, Any], role: str, change: Callable[[dict[str, Any]], None]) -> None:
    env = proof["records"].pop(proof[role])
    change(env["body"])
    proof[role] = _put(proof, env)


def test_malformed_proofs_never_crash(small: Election, tmp_path: Path) -> None:
    good = _bytes(small.proof(small.accepted()))
    runner = CliRunner()
    for name, data in _malformed(good):
        report = verify_proof(data, small.trust)
        assert report.answer == "cannot-tell", name
        assert report.exit_code == 2, name
        assert report.lines()[0].startswith("CANNOT TELL: "), name
        path = tmp_path / "bad.json"
        path.write_bytes(data)
        result = runner.invoke(slice_group, ["verify", str(path)])
        assert result.exit_code == 2, (name, result.output)
        assert result.exception is None or isinstance(result.exception, SystemExit), name
        assert "CANNOT TELL" in result.output, name


def test_unreadable_trust_file_exits_2(small: Election, tmp_path: Path) -> None:
    proof = tmp_path / "p.json"
    write_proof(small.proof(small.accepted()), proof)
    for text in ("[authorities\n", '[authorities]\nelection = "nope"\n', '[tsa]\nroots = ["missing.pem"]\n'):
        (tmp_path / "t.toml").write_text(text)
        result = CliRunner().invoke(slice_group, ["verify", str(proof), "--trust", str(tmp_path / "t.toml")])
        assert result.exit_code == 2 and "vtaudit: error:" in result.output, result.output


# ---------------------------------------------------------------------------- hygiene


def test_the_verifier_imports_only_the_standard_library_and_pynacl() -> None:
    code = (
        "import json, sys; before = set(sys.modules); import auditor.slice.verify; "
        "print(json.dumps(sorted(set(sys.modules) - before)))"
    )
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, check=True).stdout)
    ours = {m for m in loaded if m == "auditor" or m.startswith("auditor.")}
    assert ours == {
        "auditor",
        "auditor.errors",
        "auditor.slice",
        "auditor.slice.core",
        "auditor.slice.timestamp",
        "auditor.slice.verify",
    }
    third_party = {m.split(".")[0] for m in loaded} - set(sys.stdlib_module_names) - {"auditor"}
    assert third_party <= {"nacl", "_sodium", "_cffi_backend"}, third_party  # PyNaCl's cffi binding
    banned = ("duckdb", "polars", "pyarrow", "weasyprint", "cryptography", "asn1crypto", "click", "rich")
    from auditor.limits import MAX_OPTIONS
    from auditor.slice.core import MAX_RANKS

    assert MAX_RANKS == MAX_OPTIONS  # the bound repeated in core, so as not to import limits
    assert not [m for m in loaded if m.split(".")[0] in banned]


# ---------------------------------------------------------------------------- the stdlib core


def test_core_encodings_agree_with_the_model(small: Election) -> None:
    proof = small.proof(small.accepted())
    for cid, env in proof["records"].items():
        assert core.cid_of(core.jcs(env)) == cid == cid_of(jcs(env))
        assert core.cid_to_binary(cid, "x") == cid_to_binary(cid)
    for bad in ("AA=", "A", "AB", "a+b/", 7):
        with pytest.raises(core.ProofError):
            core.b64u_decode(bad, "x")
    assert core.b64u_decode("AA", "x") == b"\x00"
    for text in (b'{"a":1,"a":2}', b"1.0", b"NaN", b"9007199254740992", b'{"\xc3\xa9":1}'):
        with pytest.raises(core.ProofError):
            core.parse_json(text, "x")


@given(st.integers(min_value=1, max_value=70), st.data())
def test_core_audit_paths_agree_with_rfc9162(size: int, data: st.DataObject) -> None:
    leaves = [hashlib.sha256(bytes([i])).digest() for i in range(size)]
    index = data.draw(st.integers(min_value=0, max_value=size - 1))
    path = merkle.inclusion_proof(leaves, index)
    assert core.root_from_path(leaves[index], index, size, path) == merkle.root(leaves)
    assert core.root_from_path(leaves[index], index, size + 1, path) == merkle.root_from_inclusion(
        merkle.leaf_hash(leaves[index]), index, size + 1, path
    )
    assert core.split(size + 1) == merkle.split(size + 1)


def test_core_ballot_rules_and_histograms_agree_with_the_model(small: Election) -> None:
    proof = small.proof(small.accepted())
    body = proof["records"][proof["template"]]["body"]
    template = BallotTemplate.parse(body)
    questions = core.parse_questions(core.View(body, "template"))
    ours, theirs = core.zero_histogram(questions), histogram.zero(template)
    assert core.jcs(ours) == jcs(theirs)
    votes = [x["vote"] for x in small.lines if x["template"] == proof["template"]]
    broken = copy.deepcopy(votes[0])
    broken["answers"][0]["values"] = []  # a required select with nothing chosen
    for vote in [*votes, broken]:
        entry = VoteEntry.parse(vote)
        assert bool(core.vote_problems(questions, vote["answers"])) == bool(
            ballot.vote_problems(template, entry)
        )
        if not ballot.vote_problems(template, entry):
            core.count_vote(ours, vote["answers"])
            ballot.count_vote(theirs, template, entry)
    assert core.jcs(ours) == jcs(theirs)
    assert core.jcs(core.add_histograms(ours, ours, "h")) == jcs(histogram.add(theirs, theirs))


# ---------------------------------------------------------------------------- timestamps


DIGEST = hashlib.sha256(b"a record").digest()
AT = 1_772_000_000_000


@pytest.fixture(scope="module")
def tsa() -> TestTsa:
    return TestTsa(hashlib.sha256(b"slice tsa").digest())


def test_tokens_verify_offline_and_fail_for_each_rule(tsa: TestTsa) -> None:
    listed, roots = [tsa.tsa_cert_der], [tsa.root_cert_der]
    good = timestamp.verify_token(tsa.issue(DIGEST, AT, 1), DIGEST, listed, roots)
    assert good.gen_time == AT and good.problems == ()
    other = TestTsa(hashlib.sha256(b"other").digest())
    cases = [
        (tsa.issue(DIGEST, AT, 1, corrupt_signature=True), listed, roots, "signature"),
        (tsa.issue(DIGEST, AT, 1), listed, [other.root_cert_der], "does not chain"),
        (tsa.issue(DIGEST, AT, 1), [other.tsa_cert_der], roots, "not signed by a TSA certificate"),
        (tsa.issue(hashlib.sha256(b"else").digest(), AT, 1), listed, roots, "stamps another record"),
        (tsa.issue(DIGEST, AT, 1, hash_algorithm="sha384"), listed, roots, "not a SHA-256"),
        (tsa.issue(DIGEST, AT, 1, signing_certificate="none"), listed, roots, "no ESS"),
        (b"\x30\x03\x02\x01", listed, roots, "cannot be read"),
        (b"", listed, roots, "cannot be read"),
    ]
    for kwargs, words in (
        ({"eku_critical": False}, "extendedKeyUsage"),
        ({"not_after_ms": AT - 1}, "not valid"),
    ):
        odd = TestTsa(hashlib.sha256(b"odd").digest(), **kwargs)  # type: ignore[arg-type]
        cases.append((odd.issue(DIGEST, AT, 1), [odd.tsa_cert_der], [odd.root_cert_der], words))
    for token, certs, trusted, words in cases:
        result = timestamp.verify_token(token, DIGEST, certs, trusted)
        assert result.gen_time is None and any(words in p for p in result.problems), (words, result)


@pytest.mark.parametrize("key_type", ["p256", "p384", "ed25519", "rsa"])
def test_tokens_of_every_supported_key_type(key_type: str) -> None:
    rsa_key = None
    if key_type == "rsa":
        from cryptography.hazmat.primitives.asymmetric import rsa

        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    issuer = TestTsa(hashlib.sha256(key_type.encode()).digest(), key_type=key_type, rsa_key=rsa_key)  # type: ignore[arg-type]
    listed, roots = [issuer.tsa_cert_der], [issuer.root_cert_der]
    assert timestamp.verify_token(issuer.issue(DIGEST, AT, 1), DIGEST, listed, roots).gen_time == AT
    bad = issuer.issue(DIGEST, AT, 1, corrupt_signature=True)
    assert timestamp.verify_token(bad, DIGEST, listed, roots).gen_time is None
    keyed = TestTsa(hashlib.sha256(b"ski").digest(), sid_key_identifier=True)
    assert timestamp.verify_token(keyed.issue(DIGEST, AT, 2), DIGEST, [keyed.tsa_cert_der]).gen_time == AT


def test_ecdsa_agrees_with_cryptography() -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    for curve, oid, hash_ in (
        (ec.SECP256R1(), "1.2.840.10045.3.1.7", hashes.SHA256()),
        (ec.SECP384R1(), "1.3.132.0.34", hashes.SHA384()),
    ):
        key = ec.generate_private_key(curve)
        for form in (PublicFormat.UncompressedPoint, PublicFormat.CompressedPoint):
            point = key.public_key().public_bytes(Encoding.X962, form)
            for i in range(4):
                message = f"message {i}".encode()
                signature = key.sign(message, ec.ECDSA(hash_))
                digest = hashlib.new(hash_.name, message).digest()
                assert timestamp.ecdsa_verify(timestamp.CURVES[oid], point, digest, signature)
                assert not timestamp.ecdsa_verify(timestamp.CURVES[oid], point, digest[::-1], signature)
        assert not timestamp.ecdsa_verify(timestamp.CURVES[oid], b"\x04" + bytes(64), b"x" * 32, b"\x30\x00")


def _certificate_span(token: bytes) -> range:
    """Where the token's embedded certificate set lies (outside the signature: not used
    offline without roots, so a change there changes nothing proven)."""
    signed_data = timestamp.children(timestamp.children(timestamp.parse_der(token, 0x30, "x"))[1])[0]
    certs = next(c for c in timestamp.children(signed_data) if c.tag == 0xA0)
    return range(certs.head, certs.end)


@given(st.data())
def test_a_changed_byte_never_verifies_outside_the_unsigned_certificates(
    tsa: TestTsa, data: st.DataObject
) -> None:
    token = tsa.issue(DIGEST, AT, 3)
    position = data.draw(st.integers(min_value=0, max_value=len(token) - 1))
    value = data.draw(st.integers(min_value=0, max_value=255).filter(lambda v: v != token[position]))
    changed = token[:position] + bytes([value]) + token[position + 1 :]
    result = timestamp.verify_token(changed, DIGEST, [tsa.tsa_cert_der], [tsa.root_cert_der])
    if result.gen_time is not None:
        assert position in _certificate_span(token)


# ---------------------------------------------------------------------------- size and speed


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Election:
    """One district, every voter votes, blocks of 256 members (and the remainder)."""
    out = tmp_path_factory.mktemp("slice-big")
    simulate(
        SimConfig(
            voters=300, seed=22, districts=1, turnout_ppm=1_000_000, block_min=256, block_max=256, workers=1
        ),
        out,
    )
    return Election(out, 22)


def test_proof_size_and_verify_time_for_a_256_member_block(big: Election) -> None:
    """Spec §4.9 puts every member's two ciphertexts and signature in the block, and the
    block's digest and CID cover all of it, so a proof carries the whole block: about
    1.2 KB a member. Beyond the block the proof stays small (docs/slice-proofs.md)."""
    sizes = {}
    for members in big.blocks.values():
        line = members[0]
        if line["receiptResult"] != "accepted":
            continue
        proof = big.proof(line)
        data = _bytes(proof)
        block = len(core.jcs(proof["records"][proof["block"]]))
        started = time.perf_counter()
        report = verify_proof(data, big.trust)
        elapsed = time.perf_counter() - started
        assert report.answer == "counted", report.lines()
        assert elapsed < 1.0
        sizes[len(members)] = (len(data), block)
        assert len(data) - block < 40_000  # everything but the block
        if len(members) <= 48:
            assert len(data) < 100_000
    assert 256 in sizes and sizes[256][1] > 256 * 1_000  # the block alone: over 256 KB


def test_the_verifier_refuses_deep_nesting_before_parsing() -> None:
    """The slice verifier's own JSON reader (stdlib only) bounds depth like the model's."""
    import time

    from auditor.model.encoding import json_shape_problem
    from auditor.slice.core import too_deep
    from auditor.slice.verify import verify_proof

    started = time.perf_counter()
    report = verify_proof(b"[" * 1_000_000)
    assert report.answer == "cannot-tell" and "nested" in report.sentence
    assert time.perf_counter() - started < 1.0
    samples = (b"[" * 64 + b"]" * 64, b"[" * 65 + b"]" * 65, b'["' + b"[" * 100 + b'"]', b'{"a":[[[1]]]}')
    for sample in samples:
        assert too_deep(sample) == (json_shape_problem(sample) is not None), sample[:20]


def test_copies_stripped_of_their_tokens_or_given_a_later_one_do_not_change_a_proof(
    small: Election, tmp_path: Path
) -> None:
    """D16: the audit gives copies the best copy's proven time, and a proof carries one
    copy: the prover must choose the best-proven one. Here every timestamped record the
    voter's proof uses is published again stripped of its tokens, and the receipt once
    more with a later token (from the election's own TSA, as anyone could buy)."""
    line = small.accepted()
    proof = small.proof(line)
    attacker = Attacker(small)
    extra = tmp_path / "extra"
    extra.mkdir()
    for cid, env in proof["records"].items():
        if env["timestamps"]:
            stripped = dict(env, timestamps=[])
            (extra / f"stripped-{cid}").write_bytes(jcs(stripped))
    receipt = dict(proof["records"][proof["receipt"]])
    later = dict(receipt)
    attacker.stamp(later, parse_token(b64u_decode(receipt["timestamps"][0])).gen_time_ms + 400 * 86_400_000)
    later["timestamps"] = receipt["timestamps"] + later["timestamps"]
    (extra / "later-receipt").write_bytes(jcs(later))
    store = tmp_path / "store"
    harvest([ArchiveSource(small.out / "evidence.car"), ArchiveSource(extra)], store)
    again = Prover(store).build(line["key"], line["nonce"]).proof
    report = _verify(small, again, key=line["key"], nonce=line["nonce"], cast=line["vote"]["answers"])
    assert report.answer == "counted", report.lines()
    assert again["receipt"] == proof["receipt"] and again["revision"] == proof["revision"]
