"""The verification engine: the tamper matrix, clean elections, malformed and hostile input.

Every tampering of the simulator must make each §8 check it lists fail (the engine may
report more, never fewer); a clean election passes every check; malformed records become
findings and the audit goes on.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from auditor.checkids import CHECK_IDS, SEVERITY
from auditor.cli import main
from auditor.crypto.ed25519 import SigningKey, sign_digest
from auditor.errors import InputError
from auditor.harvest import ArchiveSource, harvest
from auditor.model.encoding import b64u_encode, jcs, parse_json
from auditor.model.envelope import record_digest
from auditor.rules import catalog
from auditor.sim.election import SimConfig, simulate
from auditor.sim.tampers import TAMPERS
from auditor.sources import RawRecord
from auditor.store.evidence import EvidenceStore, HarvestStats
from auditor.trust import load_trust
from auditor.verify.engine import SHARED_CHECKS, STEPS, Verification, verify_store

NOT_YET: set[str] = set()  # checks not implemented yet: none


def _store(out: Path) -> Path:
    store = out / "store"
    if not (store / "store.json").exists():
        harvest([ArchiveSource(out / "evidence.car")], store)
    return store


def _verify(out: Path, *, trusted: bool = True) -> Verification:
    trust = load_trust(out / "trust.toml") if trusted else None
    return verify_store(_store(out), trust, workers=1)


def _status(result: Verification) -> dict[str, str]:
    return {o.id: o.status for o in result.outcomes}


def _failed(result: Verification) -> set[str]:
    return {o.id for o in result.outcomes if o.status == "fail"}


# ---------------------------------------------------------------------------- clean elections


def test_clean_election_passes_every_check(clean: Path) -> None:
    result = _verify(clean)
    assert result.internal_errors == []
    assert result.verdict == "verified"
    for outcome in result.outcomes:
        assert outcome.status == "pass", (outcome.id, outcome.note, result.findings[:3])
        assert outcome.checked > 0, outcome.id
    assert {f.check for f in result.findings} <= {"RUN-TRIGGER"}


def test_the_recount_equals_the_simulators_own_tally(clean: Path) -> None:
    expected = json.loads((clean / "manifest.json").read_text())["expected"]["templates"]
    ballots = {b["template"]: b for b in _verify(clean).ballots}
    assert set(ballots) == set(expected)
    for template, truth in expected.items():
        assert ballots[template]["counts"] == truth["counts"]
        assert ballots[template]["voters"] == truth["voters"]


def test_the_runoff_check_passes_and_says_what_fired_for_every_question(clean: Path) -> None:
    result = _verify(clean)
    assert _status(result)["RUN-TRIGGER"] == "pass"
    notes = [f for f in result.findings if f.check == "RUN-TRIGGER"]
    questions = [(b["template"], q["question"], q["runoff"]) for b in result.ballots for q in b["questions"]]
    assert len(notes) == len(questions) > 0
    for note, (template, question, runoff) in zip(notes, questions, strict=True):
        assert (note.subject, note.evidence["question"]) == (template, question)
        assert note.evidence["triggers"] == runoff["triggers"]
        assert ("a runoff is required" in note.message) == runoff["required"]
        assert ("no runoff rule fired" in note.message) != runoff["required"]


@pytest.mark.parametrize("seed", [11, 12])
def test_clean_elections_of_other_seeds_pass(tmp_path: Path, seed: int) -> None:
    out = tmp_path / "e"
    simulate(SimConfig(voters=150, seed=seed, districts=2, workers=1, formats=("car",), secrets=False), out)
    result = _verify(out)
    assert _failed(result) <= {"RUN-TRIGGER"}, result.findings[:3]
    assert result.verdict == "verified"


def test_a_roll_stating_a_district_without_registrants_passes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import auditor.sim.election as sim

    def with_empty_district(record_type: str, body: dict[str, object], *args: object, **kw: object) -> object:
        if record_type == "registration_roll":  # an honest roll may state an empty district
            body = dict(body, districts={**body["districts"], "harbour": 0})  # type: ignore[dict-item]
        return make_record(record_type, body, *args, **kw)

    make_record = sim.make_record
    monkeypatch.setattr(sim, "make_record", with_empty_district)
    out = tmp_path / "e"
    simulate(SimConfig(voters=150, seed=11, districts=2, workers=1, formats=("car",), secrets=False), out)
    result = _verify(out)
    assert _status(result)["REG-ROLL"] == "pass", [
        f.message for f in result.findings if f.check == "REG-ROLL"
    ]


def test_every_check_id_is_run_by_a_step_and_catalogued() -> None:
    run = {c for step in STEPS for c in step.checks} | set(SHARED_CHECKS)
    assert run == set(CHECK_IDS)
    for check, rule in catalog().items():
        assert rule.implemented or check in NOT_YET, f"{check} has no implementation in rules/catalog.toml"


# ---------------------------------------------------------------------------- the tamper matrix

IN_SCOPE = sorted(name for name, t in TAMPERS.items() if set(t.trips) - NOT_YET)


@pytest.mark.parametrize("name", IN_SCOPE)
def test_tampering_fails_its_checks(name: str, sims: Callable[[str | None], Path]) -> None:
    result = _verify(sims(name))
    assert result.internal_errors == []
    expected = set(TAMPERS[name].trips) - NOT_YET
    # RUN-TRIGGER passes once the rules are evaluated: what a tampering trips is its finding
    # saying a runoff is required (D50); every other check trips by failing
    if "RUN-TRIGGER" in expected:
        expected.discard("RUN-TRIGGER")
        assert any(f.check == "RUN-TRIGGER" and f.evidence["triggers"] for f in result.findings)
    assert expected <= _failed(result), (expected - _failed(result), result.findings[:5])
    if any(SEVERITY[c] != "info" for c in expected):
        assert result.verdict != "verified"
    for finding in result.findings:
        assert finding.message and finding.check in CHECK_IDS
        assert isinstance(finding.evidence.get("records"), list)
        parse_json(jcs(finding.to_json()))  # a §2 value: the report body is a record


def test_an_equivocation_finding_carries_both_signed_records(sims: Callable[[str | None], Path]) -> None:
    result = _verify(sims("revision-equivocation"))
    [finding] = [f for f in result.findings if f.check == "ELE-REVISION"]
    envelopes = finding.evidence["envelopes"]
    assert len(envelopes) == 2
    for cid, text in envelopes.items():
        record = json.loads(text)
        assert record["type"] == "election_revision" and record["body"]["revision"] == 2
        assert record["signatures"] and cid in finding.evidence["records"]


def test_without_trust_the_audit_still_runs_and_cannot_see_an_untrusted_anchor(
    sims: Callable[[str | None], Path],
) -> None:
    # auth-untrusted only changes the trust file: alone, the evidence is self-consistent
    result = _verify(sims("auth-untrusted"), trusted=False)
    assert "AUTH-CHAIN" not in _failed(result)
    assert _failed(_verify(sims("auth-untrusted"))) >= {"AUTH-CHAIN"}


# ---------------------------------------------------------------------------- malformed input


def _envelope(record_type: str, body: object, *, signatures: object = (), timestamps: object = ()) -> bytes:
    return jcs(
        {
            "v": 1,
            "type": record_type,
            "body": body,
            "signatures": list(signatures),
            "timestamps": list(timestamps),
        }  # type: ignore[call-overload]
    )


def test_malformed_records_become_findings_and_the_audit_goes_on(tmp_path: Path, clean: Path) -> None:
    evidence = tmp_path / "evidence"
    shutil.copytree(clean / "records", evidence)
    report = json.loads(next((clean / "records" / "accessibility_report").glob("*.json")).read_text())
    bad = {
        "not-json.json": b"{not json",
        "float.json": _envelope("dispute", {"x": 1.5}),
        "unknown-type.json": _envelope("ballot_stuffing", {}),
        "short-key.json": _envelope("accessibility_report", dict(report["body"], key="AAAA")),
        "padded-b64u.json": _envelope(
            "accessibility_report", dict(report["body"], key=report["body"]["key"] + "=")
        ),
        "bad-point.json": _envelope(
            "keyholder",
            {
                "election": report["body"]["election"],
                "name": "x",
                "title": "x",
                "registrantKey": report["body"]["key"],
                "electionKey": b64u_encode(b"\x01" + bytes(31)),  # not on the curve's prime-order subgroup
            },
        ),
        "array.json": b"[1, 2, 3]",
        "huge-int.json": _envelope("dispute", {"n": 10**30}),
    }
    for name, raw in bad.items():
        (evidence / name).write_bytes(raw)
    # a well-formed record whose token is garbage DER: TSA-TOKEN, not a crash
    garbage = dict(report, timestamps=[b64u_encode(b"\x30\x03\x02\x01\x00")])
    (evidence / "garbage-token.json").write_bytes(jcs(garbage))
    store = tmp_path / "store"
    harvest([ArchiveSource(evidence)], store)
    result = verify_store(store, load_trust(clean / "trust.toml"), workers=1)
    assert result.internal_errors == []
    outcomes = {o.id: o for o in result.outcomes}
    assert outcomes["REC-SCHEMA"].failures == len(bad)
    assert outcomes["TSA-TOKEN"].status == "fail"
    # everything else still ran and still passes
    for check in ("AUTH-CHAIN", "REG-ROLL", "BLK-SIG", "TREE-ROOT", "KEY-RELEASE"):
        assert outcomes[check].status == "pass", check
    messages = " ".join(f.message for f in result.findings if f.check == "REC-SCHEMA")
    assert "float" in messages.lower() or "1.5" in messages


def test_wrong_bytes_from_a_node_are_a_node_fault_when_the_record_was_obtained_intact(
    tmp_path: Path, clean: Path
) -> None:
    record = next((clean / "records" / "dispute").glob("*.json"))
    cid = record.stem
    for source, fails in (("http:http://node-a", False), ("car:/usb/evidence.car", True)):
        root = tmp_path / source.split(":")[0]
        shutil.copytree(clean / "records", tmp_path / "records-copy", dirs_exist_ok=True)
        harvest([ArchiveSource(tmp_path / "records-copy")], root)
        store = EvidenceStore(root)
        store.add(RawRecord(b'{"wrong": "bytes"}', cid, "/ipfs/" + cid, None, None), source, HarvestStats())
        store.flush()
        result = verify_store(root, load_trust(clean / "trust.toml"), workers=1)
        outcome = {o.id: o for o in result.outcomes}["REC-CID"]
        assert (outcome.status == "fail") is fails, (source, outcome)
        if not fails:
            assert "obtained intact" in outcome.note


def test_several_elections_need_a_choice(tmp_path: Path) -> None:
    for seed in (21, 22):
        simulate(
            SimConfig(voters=60, seed=seed, districts=1, workers=1, formats=("car",), secrets=False),
            tmp_path / f"e{seed}",
        )
    store = tmp_path / "store"
    harvest(
        [ArchiveSource(tmp_path / "e21" / "evidence.car"), ArchiveSource(tmp_path / "e22" / "evidence.car")],
        store,
    )
    with pytest.raises(InputError, match="--election"):
        verify_store(store, None, workers=1)
    manifest = json.loads((tmp_path / "e22" / "manifest.json").read_text())
    result = verify_store(store, None, workers=1, election=manifest["election"])
    assert result.election == manifest["election"]


def test_empty_evidence_skips_what_needs_an_election(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    harvest([ArchiveSource(tmp_path / "empty")], tmp_path / "store")
    result = verify_store(tmp_path / "store", None, workers=1)
    status = _status(result)
    assert status["ELE-REVISION"] == "skipped" and result.verdict == "not-verified"
    assert all(o.note for o in result.outcomes if o.status == "skipped")


# ---------------------------------------------------------------------------- the command


def test_verify_command_writes_findings_and_exits_1_when_not_verified(
    tmp_path: Path, sims: Callable[[str | None], Path]
) -> None:
    out = sims("double-vote")
    result = CliRunner().invoke(
        main,
        [
            "verify",
            str(out / "evidence.car"),
            "--trust",
            str(out / "trust.toml"),
            "--findings",
            str(tmp_path / "a"),
        ],
    )
    assert result.exit_code == 1, result.output
    assert "BLK-UNIQUE" in result.output and "NOT VERIFIED" in result.output
    findings = pq.read_table(tmp_path / "a" / "findings.parquet").to_pylist()
    unique = [f for f in findings if f["check"] == "BLK-UNIQUE"]
    assert unique and len(unique[0]["records"]) == 2 and json.loads(unique[0]["evidence"])["key"]
    checks = pq.read_table(tmp_path / "a" / "checks.parquet").to_pylist()
    assert [c["id"] for c in checks] == list(CHECK_IDS)


def test_verify_command_without_trust_says_it_is_not_anchored(tmp_path: Path, clean: Path) -> None:
    result = CliRunner().invoke(main, ["verify", str(_store(clean)), "--findings", str(tmp_path / "a")])
    assert "NOT ANCHORED" in result.output
    assert (tmp_path / "a" / "checks.parquet").exists()


def test_verify_command_json_summary(tmp_path: Path, clean: Path) -> None:
    result = CliRunner().invoke(
        main,
        [
            "verify",
            str(_store(clean)),
            "--trust",
            str(clean / "trust.toml"),
            "--json",
            "--findings",
            str(tmp_path),
        ],
    )
    summary = json.loads(result.output)
    assert [c["id"] for c in summary["checks"]] == list(CHECK_IDS)
    assert summary["trust"]["election"] and summary["stages"]
    # each stage's wall time and this process's CPU seconds over it (the bench's accounts)
    stages = {s["name"]: s for s in summary["stages"]}
    assert all(s["seconds"] >= 0 and s["cpu"] >= 0 for s in stages.values())
    assert stages["signatures"]["cpu"] > 0 and stages["recount"]["cpu"] > 0


def test_verify_command_input_errors_exit_2(tmp_path: Path, clean: Path) -> None:
    runner = CliRunner()
    bad_trust = tmp_path / "trust.toml"
    bad_trust.write_text("[authorities]\nelection = 'not a cid'\n")
    result = runner.invoke(main, ["verify", str(_store(clean)), "--trust", str(bad_trust)])
    assert result.exit_code == 2 and "authorities.election" in result.output
    result = runner.invoke(main, ["verify", str(tmp_path / "missing")])
    assert result.exit_code == 2


def test_close_race_fires_the_close_margin_rule_on_the_first_question(
    sims: Callable[[str | None], Path],
) -> None:
    def fired(out: Path) -> set[str]:
        ballots = _verify(out).ballots
        first = min(ballots, key=lambda b: b["district"] != "north")  # the tampered district
        return set(first["questions"][0]["runoff"]["triggers"])

    assert "close-margin" in fired(sims("close-race"))
    assert "close-margin" not in fired(sims(None))


def test_no_recount_skips_decryption_and_cannot_verify(clean: Path) -> None:
    result = verify_store(_store(clean), load_trust(clean / "trust.toml"), workers=1, recount=False)
    status = _status(result)
    for check in ("DEC-ENTRIES", "BAL-VALID", "TALLY-TREE", "RES-MATCH", "RUN-TRIGGER"):
        assert status[check] == "skipped", check
    assert status["TREE-ROOT"] == "pass" and result.verdict == "not-verified"


def test_advisory_turnout_matches_the_counted_voters(clean: Path) -> None:
    result = _verify(clean)
    expected = json.loads((clean / "manifest.json").read_text())["expected"]["templates"]
    turnout = {t["district"]: t["voters"] for t in result.advisory["turnout"]}
    assert turnout == {t["district"]: t["voters"] for t in expected.values()}
    assert sum(int(k) * v for k, v in result.advisory["blockSizes"].items()) == sum(turnout.values())
    for ballot in result.ballots:
        for irv in ballot["instantRunoff"]:
            assert irv["rounds"][-1]["winner"]


# ---------------------------------------------------------------------------- no false alarms


def _with_extra(tmp_path: Path, clean: Path, extra: dict[str, bytes]) -> Verification:
    evidence = tmp_path / "evidence"
    shutil.copytree(clean / "records", evidence)
    for name, raw in extra.items():
        (evidence / name).write_bytes(raw)
    harvest([ArchiveSource(evidence)], tmp_path / "store")
    return verify_store(tmp_path / "store", load_trust(clean / "trust.toml"), workers=1)


def _records(clean: Path, record_type: str) -> list[dict[str, object]]:
    return [json.loads(p.read_text()) for p in sorted((clean / "records" / record_type).glob("*.json"))]


def test_copies_with_other_signature_order_are_one_record_not_an_equivocation(
    tmp_path: Path, clean: Path
) -> None:
    extra = {}
    for record_type in ("election_revision", "result", "receipt", "tally_node", "block_tree"):
        record = next(r for r in _records(clean, record_type) if len(r["signatures"]) >= 1)  # type: ignore[arg-type]
        copy = dict(record, signatures=list(reversed(record["signatures"])) + record["signatures"][:1])  # type: ignore[call-overload, index]
        extra[f"copy-{record_type}.json"] = jcs(copy)
    result = _with_extra(tmp_path, clean, extra)
    assert _failed(result) <= {"RUN-TRIGGER"}, [
        f.message for f in result.findings if f.check != "RUN-TRIGGER"
    ][:3]


def test_a_stray_invalid_key_release_beside_a_valid_one_changes_nothing(tmp_path: Path, clean: Path) -> None:
    release = _records(clean, "key_release")[0]
    untimestamped = dict(release, timestamps=[])
    result = _with_extra(tmp_path, clean, {"stray-release.json": jcs(untimestamped)})
    status = _status(result)
    assert (
        status["KEY-RELEASE"] == "pass" and status["RES-MATCH"] == "pass" and status["DEC-ENTRIES"] == "pass"
    )


def _margins(result: Verification) -> dict[tuple[str, str], int]:
    return {(b["template"], q["question"]): q["errorMargin"] for b in result.ballots for q in b["questions"]}


def test_an_unsigned_error_receipt_for_a_counted_block_does_not_widen_the_error_margin(
    tmp_path: Path, clean: Path
) -> None:
    accepted = next(r for r in _records(clean, "receipt") if r["body"]["result"] == "accepted")  # type: ignore[index]
    forged = dict(accepted, body=dict(accepted["body"], result="error"), signatures=[])  # type: ignore[call-overload]
    result = _with_extra(tmp_path, clean, {"forged-receipt.json": jcs(forged)})
    assert _status(result)["RCP-VALID"] == "fail"  # the forgery is reported ...
    assert _margins(result) == _margins(_verify(clean))  # ... and its block's members stay counted


def _disputed(result: Verification) -> dict[tuple[str, str], int]:
    return {
        (b["template"], q["question"]): q["inputs"]["disputed"]
        for b in result.ballots
        for q in b["questions"]
    }


def test_disputes_from_keys_that_are_no_voters_do_not_count_toward_the_runoff(
    tmp_path: Path, clean: Path
) -> None:
    """Spec §10 counts disputes of registrants: fresh keys claiming receipts nobody can
    see (a CID never published, a vote block's CID) are invalid disputes, not disputed votes."""
    real = _records(clean, "dispute")[0]
    receipt = _records(clean, "receipt")[0]
    extra = {}
    for i, named in enumerate(("bagaaiera" + "q" * 52, receipt["body"]["block"])):  # type: ignore[index]
        outsider = SigningKey.derive(f"someone with no vote {i}".encode())
        body = dict(real["body"], key=outsider.public_b64u, receipt=named)  # type: ignore[call-overload, index]
        extra[f"fake-dispute-{i}.json"] = jcs(
            {
                "v": 1,
                "type": "dispute",
                "body": body,
                "signatures": [sign_digest(outsider, record_digest("dispute", body))],
                "timestamps": [],
            }
        )
    result = _with_extra(tmp_path, clean, extra)
    fakes = [
        f for f in result.findings if f.check == "DSP-RESOLVED" and "is not an eligible voter" in f.message
    ]
    assert len(fakes) == 2 and all(f.evidence["status"] == "invalid" for f in fakes)
    assert _disputed(result) == _disputed(_verify(clean))


def test_a_claim_its_key_did_not_sign_is_an_invalid_claim_not_a_bad_signature_in_use(
    tmp_path: Path, clean: Path
) -> None:
    """D4: a dispute its key did not validly sign is reported by DSP-RESOLVED and left out of
    the runoff; anyone can publish one, so it does not fail SIG-VALID. A valid dispute that
    also carries a bad signature is in use, and that signature fails SIG-VALID."""
    real = _records(clean, "dispute")[0]
    body = real["body"]
    stranger = SigningKey.derive(b"not the disputer")
    # a signature in the disputer's name that does not verify (made by someone else)
    wrong = {"key": body["key"], "sig": sign_digest(stranger, record_digest("dispute", body))["sig"]}  # type: ignore[index, arg-type]
    forged = dict(real, signatures=[wrong])  # type: ignore[arg-type]
    result = _with_extra(tmp_path / "a", clean, {"forged-dispute.json": jcs(forged)})
    assert _status(result)["SIG-VALID"] == "pass"
    assert any(
        f.check == "DSP-RESOLVED" and f.evidence["status"] == "invalid" and "not validly signed" in f.message
        for f in result.findings
    )
    bad_extra = sign_digest(stranger, bytes(32))  # the stranger's, over another digest
    extra_bad = dict(real, signatures=[*real["signatures"], bad_extra])  # type: ignore[list-item, misc]
    result = _with_extra(tmp_path / "b", clean, {"extra-signature.json": jcs(extra_bad)})
    [bad] = [f for f in result.findings if f.check == "SIG-VALID"]
    assert "dispute" in bad.message and stranger.public_b64u in bad.message


def test_a_block_of_strangers_with_an_unsigned_receipt_does_not_widen_the_error_margin(
    tmp_path: Path, clean: Path
) -> None:
    """Anyone can publish a vote block of fresh keys and an unsigned 'error' receipt for it:
    its members are no eligible voters, so the error margin (spec §10) stays as it was."""
    real = _records(clean, "vote_block")[0]
    keys = [SigningKey.derive(f"stranger {i}".encode()) for i in range(len(real["body"]["members"]))]  # type: ignore[index, arg-type]
    body = dict(real["body"], members=sorted(k.public_b64u for k in keys))  # type: ignore[call-overload]
    digest = record_digest("vote_block", body)
    block = {"v": 1, "type": "vote_block", "body": body, "signatures": [sign_digest(k, digest) for k in keys]}
    receipt = next(r for r in _records(clean, "receipt") if r["body"]["result"] == "accepted")  # type: ignore[index]
    from auditor.model.encoding import cid_of

    rbody = dict(receipt["body"], block=cid_of(jcs({**block, "timestamps": []})), result="error")  # type: ignore[call-overload]
    extra = {
        "strangers.json": jcs({**block, "timestamps": []}),
        "their-receipt.json": jcs(
            {"v": 1, "type": "receipt", "body": rbody, "signatures": [], "timestamps": []}
        ),
    }
    result = _with_extra(tmp_path, clean, extra)
    assert _status(result)["RCP-VALID"] == "fail"
    assert _margins(result) == _margins(_verify(clean))


def test_copies_stripped_of_their_tokens_or_given_a_later_one_are_as_proven_as_the_original(
    tmp_path: Path, clean: Path
) -> None:
    """Tokens cover the digest (§3) and copies are one record (D26): anyone can publish a
    record's body and signatures without its tokens, or with a later token added. Every
    copy takes the proven time of the best-proven copy (D16); a review found each stripped
    copy failed its timing checks."""
    from auditor.crypto.rfc3161 import parse_token
    from auditor.model.encoding import b64u_decode
    from auditor.sim.blocks import tsa_seed
    from auditor.sim.tsa import TestTsa
    from tests.conftest import TAMPER_SEED

    extra = {}
    kinds = ("election_revision", "ballot_template", "registration_roll", "result", "receipt", "block_tree")
    tsa = TestTsa(tsa_seed(TAMPER_SEED))
    for record_type in kinds:
        record = next(r for r in _records(clean, record_type) if r["timestamps"])
        extra[f"stripped-{record_type}.json"] = jcs(dict(record, timestamps=[]))  # type: ignore[call-overload]
        # and a copy with one more token, a year later: anyone can buy one for any digest
        when = parse_token(b64u_decode(record["timestamps"][0])).gen_time_ms + 365 * 86_400_000  # type: ignore[index]
        token = tsa.issue(record_digest(record_type, record["body"]), when, 8_000_000 + len(extra))
        later = dict(record, timestamps=[*record["timestamps"], b64u_encode(token)])  # type: ignore[call-overload, misc]
        extra[f"later-{record_type}.json"] = jcs(later)
    result = _with_extra(tmp_path, clean, extra)
    assert result.verdict == "verified", [f.message for f in result.findings if f.severity != "info"][:5]
    assert _failed(result) == _failed(_verify(clean))


def test_bad_signatures_on_another_elections_records_are_not_this_elections_failure(
    tmp_path: Path, clean: Path
) -> None:
    """SIG-VALID covers the records in use (§8): a node serving several elections hands us
    their records too. A bad signature, token or reference on a record naming another
    election is not a failure of this one (D4); the same record naming this election is."""
    other = "bagaaiera" + "a" * 51 + "q"  # a canonical CID of no record here
    receipt = _records(clean, "receipt")[0]
    # its tokens' imprint is now wrong too, and its block is nowhere: that election's business
    foreign = dict(receipt, body=dict(receipt["body"], election=other, block=other))  # type: ignore[call-overload]
    result = _with_extra(tmp_path / "foreign", clean, {"foreign.json": jcs(foreign)})
    for check in ("SIG-VALID", "TSA-TOKEN", "TSA-IMPRINT", "REC-REF"):
        assert check not in _failed(result), [f.message for f in result.findings if f.check == check]
    tampered = dict(receipt, body=dict(receipt["body"], received=receipt["body"]["received"] + 1))  # type: ignore[call-overload, index, operator]
    ours = _with_extra(tmp_path / "ours", clean, {"ours.json": jcs(tampered)})
    assert "SIG-VALID" in _failed(ours)


def test_a_valid_receipt_rejecting_another_elections_block_as_invalid_is_consistent(
    tmp_path: Path, clean: Path
) -> None:
    """§8 RCP-CONSISTENT: invalid ⇒ the block fails a check. A block of another election is
    no valid block of this one; a review found the receipt reported as rejecting a block
    that "is not in the evidence"."""
    from auditor.crypto.rfc3161 import parse_token
    from auditor.model.encoding import b64u_decode, cid_of
    from tests.conftest import TAMPER_SEED

    from auditor.sim.blocks import receipt_key, tsa_seed
    from auditor.sim.tsa import TestTsa

    other = "bagaaiera" + "a" * 51 + "q"
    block = _records(clean, "vote_block")[0]
    foreign = dict(block, body=dict(block["body"], election=other))  # type: ignore[call-overload]
    receipt = _records(clean, "receipt")[0]
    body = dict(receipt["body"], block=cid_of(jcs(foreign)), result="invalid", registrants=[])  # type: ignore[call-overload]
    digest = record_digest("receipt", body)
    when = parse_token(b64u_decode(receipt["timestamps"][0])).gen_time_ms  # type: ignore[index]
    token = TestTsa(tsa_seed(TAMPER_SEED)).issue(digest, when, 9_000_001)
    forged = {
        "v": 1,
        "type": "receipt",
        "body": body,
        "signatures": [sign_digest(receipt_key(TAMPER_SEED), digest)],
        "timestamps": [b64u_encode(token)],
    }
    result = _with_extra(tmp_path, clean, {"foreign-block.json": jcs(foreign), "receipt.json": jcs(forged)})
    assert "RCP-VALID" not in _failed(result)  # the forged receipt is valid: the test means it
    assert "RCP-CONSISTENT" not in _failed(result), [
        f.message for f in result.findings if f.check == "RCP-CONSISTENT"
    ]


def _registrant(clean: Path, key: SigningKey, signer: SigningKey, later_ms: int = 0) -> bytes:
    """A registrant like the election's first, registering ``key``, ``later_ms`` after it,
    signed by ``signer``."""
    registrant = _records(clean, "registrant")[0]
    body = dict(
        registrant["body"],
        key=key.public_b64u,
        registered=registrant["body"]["registered"] + later_ms,
    )  # type: ignore[call-overload, index]
    return jcs(
        {
            "v": 1,
            "type": "registrant",
            "body": body,
            "signatures": [sign_digest(signer, record_digest("registrant", body))],
            "timestamps": [],
        }
    )


def test_registrants_after_registration_ended_belong_to_another_roll(tmp_path: Path, clean: Path) -> None:
    key = SigningKey.derive(b"a voter of next year's election")
    later = _registrant(clean, key, key, later_ms=400 * 86_400_000)
    result = _with_extra(tmp_path, clean, {"next-year.json": later})
    outcome = {o.id: o for o in result.outcomes}["REG-ROLL"]
    assert outcome.status == "pass" and "after RE" in outcome.note


def test_a_registrant_not_signed_by_its_key_fails_the_roll_and_is_not_eligible(
    tmp_path: Path, clean: Path
) -> None:
    from auditor.model.encoding import cid_of

    raw = _registrant(clean, SigningKey.derive(b"a voter"), SigningKey.derive(b"someone else"))
    result = _with_extra(tmp_path, clean, {"unsigned.json": raw})
    roll = [f for f in result.findings if f.check == "REG-ROLL"]
    # the roll's root and counts still hold: the unsigned registrant is not eligible
    assert [(f.subject, f.message) for f in roll] == [
        (cid_of(raw), f"registrant {cid_of(raw)} is not validly signed by the key it registers")
    ]
    assert {o.id: o for o in result.outcomes}["REG-ROLL"].checked == len(_records(clean, "registrant")) + 1


def test_an_unsigned_copy_of_the_election_does_not_stop_the_audit(tmp_path: Path, clean: Path) -> None:
    election = _records(clean, "election")[0]
    impostor = dict(
        election, body=dict(election["body"], title="Someone else's election"), signatures=[], timestamps=[]
    )  # type: ignore[call-overload]
    result = _with_extra(tmp_path, clean, {"impostor.json": jcs(impostor)})
    assert result.election == next((clean / "records" / "election").glob("*.json")).stem
    assert result.verdict == "verified"


@pytest.mark.parametrize("error", ["bug", "memory"])
def test_a_step_that_stops_takes_the_steps_that_read_its_tables_with_it(
    clean: Path, monkeypatch: pytest.MonkeyPatch, error: str
) -> None:
    """The blocks step stopping (a bug, or DuckDB out of memory) leaves no counted set and
    no block tables: the steps that read them are not run on half-made state (a TREE-ROOT
    failure would blame the evidence for the auditor's trouble); the verdict is not
    verified and the errors say what happened and what to do."""
    import dataclasses

    import duckdb

    from auditor.verify import engine

    def stops(_audit: object) -> None:
        if error == "memory":
            raise duckdb.OutOfMemoryException("Out of Memory Error: could not allocate block")
        raise RuntimeError("a bug")

    steps = tuple(dataclasses.replace(s, run=stops) if s.name == "blocks" else s for s in STEPS)
    monkeypatch.setattr(engine, "STEPS", steps)
    result = _verify(clean)
    assert result.verdict == "not-verified"
    advice = "VTAUDIT_DUCKDB_MEMORY" if error == "memory" else "a bug in vtaudit"
    assert len(result.internal_errors) == 1 and advice in result.internal_errors[0]
    outcomes = {o.id: o for o in result.outcomes}
    assert outcomes["BLK-SHAPE"].status == "skipped" and advice in outcomes["BLK-SHAPE"].note
    for check in ("TREE-ROOT", "DEC-ENTRIES", "TALLY-TREE", "DSP-RESOLVED", "RUN-TRIGGER"):
        assert outcomes[check].status == "skipped", check
        assert "reads what the blocks step makes" in outcomes[check].note, check
    assert outcomes["RES-MATCH"].status == "skipped"  # results read the block trees, held back too
    assert outcomes["CERT-MATCH"].status != "fail" and not _failed(result)


def test_a_store_written_before_the_digest_column_verifies_the_same(clean: Path, tmp_path: Path) -> None:
    """Stores harvested before envelopes had a digest column get the digests from the raw
    bytes, slice by slice as the signatures stream (SIG_STREAM made small here)."""
    import pyarrow as pa

    from auditor.verify import context

    store = tmp_path / "store"
    shutil.copytree(_store(clean), store)
    for part in (store / "tables" / "envelopes").glob("*.parquet"):
        table = pq.read_table(part)
        pq.write_table(table.set_column(3, "digest", pa.nulls(table.num_rows, pa.binary())), part)
    before = _verify(clean)
    old, context.SIG_STREAM = context.SIG_STREAM, 100
    try:
        after = verify_store(store, load_trust(clean / "trust.toml"), workers=1)
    finally:
        context.SIG_STREAM = old
    assert [f.to_json() for f in after.findings] == [f.to_json() for f in before.findings]
    assert after.verdict == before.verdict == "verified"


def test_notes_are_findings_that_do_not_fail_their_check() -> None:
    from auditor.verify.findings import MAX_FINDINGS_PER_CHECK, Findings

    f = Findings()
    f.checked("RUN-TRIGGER", 1, "1 question")
    f.note("RUN-TRIGGER", "bagaaiera", "no runoff rule fired")
    f.checked("BAL-VALID", 2)
    f.note("BAL-VALID", None, "a note beside failures")
    for i in range(MAX_FINDINGS_PER_CHECK + 5):
        f.fail("BAL-VALID", None, f"failure {i}")
    f.finish()
    assert f.outcomes["RUN-TRIGGER"].status == "pass" and f.outcomes["RUN-TRIGGER"].failures == 0
    assert [x.message for x in f.items if x.check == "RUN-TRIGGER"] == ["no runoff rule fired"]
    bal = [x for x in f.items if x.check == "BAL-VALID"]
    assert f.outcomes["BAL-VALID"].failures == MAX_FINDINGS_PER_CHECK + 5
    # the note took one of the listed places: 999 failures listed, 6 counted but not listed
    [omitted] = [x.evidence["omitted"] for x in bal if "omitted" in x.evidence]
    assert omitted == 6 and len(bal) == MAX_FINDINGS_PER_CHECK + 1


def test_a_tally_node_with_other_counts_shows_both(sims: Callable[[str | None], Path]) -> None:
    """The counts are compared as digests of their text; the finding still carries the
    published counts and the recount's, in full."""
    result = _verify(sims("tally-node-counts"))
    differing = [f for f in result.findings if f.check == "TALLY-TREE" and "counts differ" in f.message]
    assert differing
    for finding in differing:
        got, expected = finding.evidence["got"], finding.evidence["expected"]
        assert isinstance(got, dict) and isinstance(expected, dict) and got != expected
        assert set(got) == set(expected)  # the same questions, other numbers


def test_a_dispute_is_refuted_by_the_voters_counted_block_whatever_receipt_it_names(
    clean: Path, sims: Callable[[str | None], Path]
) -> None:
    """§8 DSP-RESOLVED: refuted by evidence when the voter's block is counted. A counted
    voter's dispute naming a receipt nobody published is refuted (before session 9 it was
    "unresolved" and counted toward the runoff); a voter whose receipted block is missing
    from the evidence has a confirmed dispute."""
    assert not any(f.check == "DSP-RESOLVED" for f in _verify(clean).findings)
    dangling = _verify(sims("dangling-ref"))
    assert not any(f.check == "DSP-RESOLVED" for f in dangling.findings)
    assert "REC-REF" in _failed(dangling) and _disputed(dangling) == _disputed(_verify(clean))
    confirmed = _verify(sims("dispute-confirmed"))
    [finding] = [f for f in confirmed.findings if f.check == "DSP-RESOLVED"]
    assert finding.evidence["status"] == "confirmed" and "not a block of this election in the evidence" in finding.message
    assert sum(_disputed(confirmed).values()) > sum(_disputed(_verify(clean)).values())


def test_a_registrant_of_a_district_with_a_non_ascii_name_fails_the_roll_in_a_reportable_finding(
    tmp_path: Path, clean: Path
) -> None:
    """A registrant's district is free text; the roll's counts are keyed by ASCII member
    names (§2). The finding must still be a valid record body (a review found its
    evidence keyed by district names, which made the report itself unparseable)."""
    key = SigningKey.derive("a voter of Z\u00fcrich".encode())
    registrant = _records(clean, "registrant")[0]
    body = dict(registrant["body"], key=key.public_b64u, district="Z\u00fcrich")  # type: ignore[call-overload]
    raw = jcs(
        {
            "v": 1,
            "type": "registrant",
            "body": body,
            "signatures": [sign_digest(key, record_digest("registrant", body))],
            "timestamps": [],
        }
    )
    result = _with_extra(tmp_path, clean, {"zurich.json": raw})
    roll = [f for f in result.findings if f.check == "REG-ROLL"]
    counts = [f for f in roll if "district counts" in f.message]
    assert counts and {"district": "Z\u00fcrich", "roll": 0, "harvested": 1} in counts[0].evidence["districts"]
    for f in result.findings:
        parse_json(jcs(f.to_json()))  # every finding is a valid §2 value


def test_a_shared_nonce_is_one_finding_per_copy_after_the_first(sims: Callable[[str | None], Path]) -> None:
    """DEC-NONCE: n votes sharing a nonce are n - 1 findings, in one block as across blocks
    (a review found both votes of a pair in one block reported, but only the later block's
    across blocks)."""
    result = _verify(sims("nonce-reuse"))
    [finding] = [f for f in result.findings if f.check == "DEC-NONCE"]
    assert "again in the same block (votes[" in finding.message
    assert {o.id: o for o in result.outcomes}["DEC-NONCE"].failures == 1
