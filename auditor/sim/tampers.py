"""The catalogue of deliberate tamperings (``vtaudit simulate --tamper KIND``).

Each tampering breaks one rule the way an attacker would: whatever the attacker could
re-sign (an authority colluding, a block's members, a tally builder) is re-signed, and
every record computed downstream (trees, tallies, results) is recomputed over the
tampered data, so that the checks listed in ``trips`` are the ones that catch it.
``trips`` lists every §8 check id the tampering must make fail; a verifier may report
more (a tampered authority record can also break what depends on it), never fewer.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TAMPERS", "Tamper", "tamper_by_name"]


@dataclass(frozen=True)
class Tamper:
    name: str
    trips: tuple[str, ...]
    description: str


_ALL = [
    # records and encodings
    Tamper(
        "cid-mismatch",
        ("REC-CID",),
        "a dispute is served (CAR block, named file) with bytes that do not hash to its CID",
    ),
    Tamper(
        "schema-unknown-member",
        ("REC-SCHEMA",),
        "an accessibility report, signed by its voter, carries a member the spec does not define",
    ),
    Tamper("schema-float", ("REC-SCHEMA",), "a record contains a floating-point number"),
    Tamper(
        "dangling-ref",
        ("REC-REF",),
        "a dispute names a receipt CID that was never published (its voter's block is counted: refuted)",
    ),
    Tamper("bad-signature", ("SIG-VALID",), "one tally node carries a signature that does not verify"),
    # authorities
    Tamper(
        "auth-fork", ("AUTH-CHAIN",), "the founding election administration has two successors (equivocation)"
    ),
    Tamper(
        "auth-untrusted",
        ("AUTH-CHAIN",),
        "the trust file anchors the election authority to another founding record",
    ),
    Tamper(
        "auth-threshold",
        ("AUTH-THRESHOLD", "RES-MATCH"),
        "a result is signed by one administrator where the threshold is two",
    ),
    Tamper(
        "auth-expired",
        ("AUTH-THRESHOLD",),
        "a block tree is signed by the founding administration after it expired",
    ),
    # timestamps
    Tamper(
        "tsa-bad-signature", ("TSA-TOKEN",), "the roll carries a second token whose CMS signature is broken"
    ),
    Tamper(
        "tsa-unlisted",
        ("TSA-TOKEN",),
        "the roll carries a second token from a TSA the election does not list",
    ),
    Tamper(
        "tsa-no-eku",
        ("TSA-TOKEN",),
        "a second token from a listed-looking TSA certificate without the critical timeStamping EKU",
    ),
    Tamper("tsa-imprint", ("TSA-IMPRINT",), "the roll carries a second token over another record's digest"),
    # election, keyholders, templates, roll
    Tamper("revision-late", ("ELE-REVISION",), "a third revision is timestamped after the revision deadline"),
    Tamper("revision-equivocation", ("ELE-REVISION",), "two different valid revisions carry number 2"),
    Tamper(
        "timeline-order",
        ("ELE-TIMELINE",),
        "the effective timeline closes keyholder revision (KR) before acceptance (KA)",
    ),
    Tamper(
        "election-key-sum",
        ("ELE-KEY", "DEC-ENTRIES"),
        "the election key is not the sum of the keyholders' keys (an extra key is mixed in)",
    ),
    Tamper(
        "keyholder-late", ("ELE-KEY",), "a keyholder record is timestamped after keyholder acceptance closed"
    ),
    Tamper(
        "template-late", ("TPL-VALID",), "a ballot template revision is timestamped after ballots were final"
    ),
    Tamper(
        "template-equivocation",
        ("TPL-VALID",),
        "two different templates carry the same revision for one district",
    ),
    Tamper("roll-root", ("REG-ROLL",), "the roll's Merkle root is not the root of the registrants"),
    Tamper("roll-duplicate-key", ("REG-ROLL",), "two registrant records on the roll share one key"),
    # blocks and receipts
    Tamper("block-unsorted", ("BLK-SHAPE", "RCP-CONSISTENT"), "a counted block's votes are not sorted"),
    Tamper(
        "block-missing-signature",
        ("BLK-SIG", "RCP-CONSISTENT"),
        "a member of a counted block did not sign it",
    ),
    Tamper(
        "block-ineligible",
        ("BLK-ELIGIBLE", "RCP-CONSISTENT"),
        "a counted block has a member who is not on the roll",
    ),
    Tamper(
        "block-wrong-district",
        ("BLK-ELIGIBLE", "RCP-CONSISTENT"),
        "a counted block has a member registered in another district",
    ),
    Tamper("double-vote", ("BLK-UNIQUE", "RCP-CONSISTENT"), "a registrant is a member of two counted blocks"),
    Tamper(
        "receipt-forged", ("RCP-VALID",), "a block's receipt is signed by a key other than the receipt key"
    ),
    Tamper("receipt-twice", ("RCP-VALID",), "a counted block has two receipts"),
    Tamper(
        "receipt-accepted-names",
        ("RCP-CONSISTENT",),
        "a receipt accepts a block and names one of its members, as only duplicate and invalid receipts do",
    ),
    Tamper(
        "receipt-false-duplicate",
        ("RCP-CONSISTENT",),
        "a block is rejected as duplicate though its members voted nowhere else",
    ),
    Tamper(
        "receipt-late-accepted",
        ("RCP-CONSISTENT",),
        "a block received after voting closed is accepted and counted",
    ),
    Tamper(
        "tree-omit",
        ("TREE-ROOT", "RES-MATCH"),
        "the block tree (and tally) leave out a block with an accepted receipt",
    ),
    Tamper("tree-extra", ("TREE-ROOT",), "the block tree includes a block that has no accepted receipt"),
    # keys
    Tamper("key-missing", ("KEY-RELEASE",), "one keyholder never releases a key"),
    Tamper("key-late", ("KEY-RELEASE",), "one keyholder releases after tallying started"),
    Tamper("key-wrong", ("KEY-RELEASE",), "one keyholder releases a key that does not match its public key"),
    Tamper("key-early", ("KEY-EARLY",), "a keyholder's valid private key is disclosed before key release"),
    # decryption and ballots
    Tamper(
        "vote-undecryptable",
        ("DEC-ENTRIES",),
        "a counted block holds a vote ciphertext that does not decrypt",
    ),
    Tamper("voter-bad-signature", ("DEC-VOTER",), "a voter entry's signature does not verify"),
    Tamper("voter-key-mismatch", ("DEC-VOTER",), "a voter entry names a key that is not the block member's"),
    Tamper("nonce-reuse", ("DEC-NONCE",), "two votes of one template share a nonce"),
    Tamper("ballot-invalid", ("BAL-VALID",), "a vote selects two candidates where one is allowed"),
    # tally, result, disputes, reports, certification, runoff
    Tamper(
        "tally-node-counts", ("TALLY-TREE",), "an inner tally node's counts are not the sum of its children"
    ),
    Tamper(
        "tally-leaf-miscount",
        ("TALLY-TREE", "RES-MATCH"),
        "a leaf tally node adds a vote, carried up to the result",
    ),
    Tamper("result-counts", ("RES-MATCH",), "the result's counts differ from the tally root"),
    Tamper(
        "result-equivocation", ("RES-MATCH",), "two different valid results are published for one template"
    ),
    Tamper(
        "dispute-unresolved",
        ("DSP-RESOLVED",),
        "a voter of a late (inopportune) block disputes; no counted block holds the voter",
    ),
    Tamper(
        "dispute-confirmed",
        ("DSP-RESOLVED", "TREE-ROOT", "REC-REF"),
        "an accepted block is withheld from the evidence and left out of the tree; its member disputes",
    ),
    Tamper(
        "accessibility-ineligible",
        ("ACC-REPORTS",),
        "an accessibility report comes from a key that is not on the roll",
    ),
    Tamper(
        "cert-wrong-result", ("CERT-MATCH",), "a certification certifies a result other than the verified one"
    ),
    Tamper("cert-late", ("CERT-MATCH",), "a certification is timestamped after the election closed"),
    Tamper(
        "close-race",
        ("RUN-TRIGGER",),
        "the first question's top two candidates finish within the close-margin",
    ),
]

TAMPERS: dict[str, Tamper] = {t.name: t for t in _ALL}


def tamper_by_name(name: str) -> Tamper:
    try:
        return TAMPERS[name]
    except KeyError:
        raise KeyError(f"unknown tamper {name!r}; `vtaudit simulate --list-tampers` lists them") from None
