"""Keys and certifications: KEY-RELEASE, KEY-EARLY, CERT-MATCH."""

from __future__ import annotations

from auditor.crypto.ecies import public_of
from auditor.errors import AuditError
from auditor.model.encoding import b64u_decode
from auditor.model.envelope import Envelope
from auditor.verify.authority import check_authority_signature
from auditor.verify.context import Audit, fmt_time

__all__ = ["check_certifications", "check_key_early", "check_key_release"]


def _listed_keyholders(audit: Audit) -> dict[str, Envelope]:
    if audit.revision is None:
        return {}
    found = {}
    for cid in audit.revision.body.keyholders:
        record = audit.records.get(cid)
        if record is not None and record.type == "keyholder":
            found[cid] = record
    return found


def _matches(private_key: str, keyholder: Envelope) -> bool:
    try:
        return public_of(b64u_decode(private_key)) == b64u_decode(keyholder.body.electionKey)
    except (AuditError, ValueError):
        return False


def check_key_release(audit: Audit) -> None:
    """KEY-RELEASE: every listed keyholder released, signed by its registrant key, in
    [RK, TS), a private key that matches its public key; every release is valid."""
    f = audit.findings
    if audit.revision is None:
        f.skip("KEY-RELEASE", "no valid revision lists the keyholders (ELE-REVISION failed)")
        return
    keyholders = _listed_keyholders(audit)
    releases = audit.of_type("key_release")
    f.checked("KEY-RELEASE", len(releases), f"{len(releases)} releases for {len(keyholders)} keyholders")
    attempts: dict[str, list[str]] = {}
    for release in releases:
        body = release.body
        keyholder = keyholders.get(body.keyholder)
        if keyholder is None:
            f.checked("KEY-RELEASE", 0, f"release {release.cid} names keyholder {body.keyholder}, not listed")
            continue
        problems = []
        if not audit.signed_by(release.cid, keyholder.body.registrantKey):
            problems.append(f"it is not validly signed by the keyholder's key {keyholder.body.registrantKey}")
        when = audit.in_window(release.cid, "RK", "TS")
        if when:
            problems.append(f"it must be timestamped in [RK, TS); {when}")
        if not _matches(body.privateKey, keyholder):
            problems.append(
                "the released private key does not match the keyholder's public key "
                f"{keyholder.body.electionKey}"
            )
        if problems:
            attempts.setdefault(keyholder.cid, []).append(f"release {release.cid}: {'; '.join(problems)}")
        else:
            audit.released.setdefault(keyholder.cid, b64u_decode(body.privateKey))
    # spec §8: every keyholder released a valid key; a stray invalid copy beside a valid
    # release changes nothing (it is counted in the note), a keyholder without one fails
    for cid, keyholder in sorted(keyholders.items()):
        tried = attempts.get(cid, [])
        if cid in audit.released:
            if tried:
                f.checked("KEY-RELEASE", 0, f"{len(tried)} invalid release(s) beside a valid one for {cid}")
            continue
        detail = "; ".join(tried) if tried else "it published no key release"
        f.fail(
            "KEY-RELEASE",
            cid,
            f"keyholder {keyholder.body.name} ({cid}) released no valid private key in [RK, TS): {detail}. "
            "Without every key, nobody can decrypt the votes",
            attempts=tried,
        )
    missing = [cid for cid in audit.revision.body.keyholders if cid not in keyholders]
    for cid in missing:
        f.fail(
            "KEY-RELEASE",
            cid,
            f"listed keyholder {cid} is not in the evidence, so its release cannot be checked",
        )


def check_key_early(audit: Audit) -> None:
    """KEY-EARLY: no valid keyholder private key is proven to exist before RK."""
    f = audit.findings
    rk = audit.timeline("RK")
    if rk is None:
        f.skip("KEY-EARLY", "no valid revision, so no RK to compare with (ELE-REVISION failed)")
        return
    keyholders = _listed_keyholders(audit)
    records = audit.of_type("key_disclosure") + audit.of_type("key_release")
    f.checked("KEY-EARLY", len(records), f"{len(records)} disclosures and releases")
    for record in records:
        keyholder = keyholders.get(record.body.keyholder)
        proven = audit.proven.get(record.cid)
        if keyholder is None or proven is None or proven >= rk:
            continue
        if _matches(record.body.privateKey, keyholder):
            f.fail(
                "KEY-EARLY",
                record.cid,
                f"the private key of keyholder {keyholder.body.name} ({keyholder.cid}) was published in "
                f"{record.type} {record.cid}, proven at {fmt_time(proven)}, before key release starts "
                f"(RK {fmt_time(rk)}): anyone holding all keys early could decrypt votes during the election",
                records=[keyholder.cid],
            )


def check_certifications(audit: Audit) -> None:
    """CERT-MATCH: each certification is by the election's certification authority,
    authority-signed, timestamped in [CS, C], and certifies the result the audit verified."""
    f = audit.findings
    election = audit.election
    assert election is not None
    authority = election.body.certificationAuthority
    certifications = audit.of_type("certification")
    f.checked("CERT-MATCH", len(certifications), f"{len(certifications)} certifications")
    for cert in certifications:
        body = cert.body
        name = f"certification {cert.cid}"
        if body.authority != authority:
            f.fail(
                "CERT-MATCH",
                cert.cid,
                f"{name} is by authority {body.authority}; the election's certification authority "
                f"is {authority}",
            )
        good = check_authority_signature(audit, cert, authority)
        if not good:
            f.fail("CERT-MATCH", cert.cid, f"{name} is not validly authority-signed (AUTH-THRESHOLD)")
        when = audit.in_window(cert.cid, "CS", "C", end_inclusive=True)
        if when:
            f.fail("CERT-MATCH", cert.cid, f"{name} must be timestamped in [CS, C]; {when}")
        verified = audit.results.get(body.template)
        if body.verdict != "certified":
            continue
        if not audit.results_recounted:
            f.skip(
                "CERT-MATCH", "the results could not be recounted, so no result is verified to compare with"
            )
            continue
        if verified is None:
            f.fail(
                "CERT-MATCH",
                cert.cid,
                f"{name} certifies result {body.result} for template {body.template}, but the audit "
                "verified no result for that template",
                records=[body.result],
            )
        elif not audit.same_record(body.result, verified):
            f.fail(
                "CERT-MATCH",
                cert.cid,
                f"{name} certifies result {body.result}; the result the audit verified for template "
                f"{body.template} is {verified.cid}",
                records=[body.result, verified.cid],
            )
