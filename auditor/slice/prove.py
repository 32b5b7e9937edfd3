"""Build a voter's slice proof from an evidence store (docs/slice-proofs.md).

The prover gathers; the verifier (:mod:`auditor.slice.verify`) judges. The prover may
use anything (the store's DuckDB views, the model, libsodium), and it never decides
that an election is right: where the evidence offers several candidates (two receipts,
two results) it prefers the validly signed one and lets the verifier say what holds.

What it puts in the proof, for the voter's registrant key and vote nonce:

1. the block that lists the key and holds a vote with the nonce (decrypted with the
   released keys), else the counted block that lists the key (the verifier will say the
   vote is not there);
2. the election record, the effective revision (the highest validly signed one), the
   ballot template, and every administration from each authority's founding record to
   the one that signed;
3. the block's receipt; if it is accepted, the result of the ballot, the block tree it
   names, and the tally nodes from the block's leaf to the result's tally root with
   their siblings;
4. the block's RFC 9162 path in the tree (the leaves are the tally tree's, or else the
   blocks of accepted receipts: whichever gives the signed root), or, when the block is
   not among the leaves, its neighbours in the sorted tree with their paths;
5. the combined private key (the sum of the released keys, public after release).
"""

from __future__ import annotations

import bisect
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from auditor import __version__
from auditor.crypto import merkle
from auditor.crypto.ecies import combine_private, decrypt, public_of
from auditor.crypto.ed25519 import verify_digest
from auditor.crypto.rfc3161 import verify_token
from auditor.errors import AuditError, CryptoError, EncodingError, InputError
from auditor.model.encoding import b64u_decode, b64u_encode, cid_from_binary, cid_to_binary, parse_json
from auditor.model.envelope import Envelope, parse_envelope
from auditor.slice.verify import FORMAT
from auditor.store.evidence import connect

__all__ = ["Built", "NoVoteError", "Prover", "build_proof", "write_proof"]


class NoVoteError(AuditError):
    """The evidence holds no block with the voter's key: there is nothing to prove."""


@dataclass
class Built:
    proof: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


def write_proof(proof: dict[str, Any], out: Path) -> int:
    """Write the proof as compact, deterministic JSON; returns its size in bytes."""
    data = json.dumps(proof, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8")
    out.write_bytes(data + b"\n")
    return len(data) + 1


class _Store:
    """The few queries the prover needs over one evidence store."""

    def __init__(self, root: Path) -> None:
        self.con: duckdb.DuckDBPyConnection = connect(root)
        self.cache: dict[str, Envelope] = {}
        self.tsa: list[bytes] = []  # the election's TSA certificates, once the election is known
        self.token_times: dict[str, list[int]] = {}  # CID -> genTimes of its valid tokens

    def get(self, cid: str) -> Envelope | None:
        if cid not in self.cache:
            rows = self.con.execute("SELECT raw FROM envelopes WHERE cid = ? LIMIT 1", [cid]).fetchall()
            if not rows:
                return None
            self.cache[cid] = parse_envelope(bytes(rows[0][0]), cid=cid)
        return self.cache[cid]

    def fetch(self, cids: list[str]) -> None:
        """Read and parse the records not yet cached, in one query (each query scans)."""
        missing = sorted({cid for cid in cids if cid not in self.cache})
        if missing:
            sql = "SELECT cid, raw FROM envelopes WHERE list_contains(?, cid)"
            for cid, raw in self.con.execute(sql, [missing]).fetchall():
                self.cache.setdefault(str(cid), parse_envelope(bytes(raw), cid=str(cid)))

    def cids(self, sql: str, params: list[Any]) -> list[str]:
        return [str(row[0]) for row in self.con.execute(sql, params).fetchall()]

    def all(self, sql: str, params: list[Any]) -> list[Envelope]:
        cids = self.cids(sql, params)
        self.fetch(cids)
        return [self.cache[cid] for cid in cids if cid in self.cache]


def _token_times(store: _Store, record: Envelope) -> list[int]:
    """The genTimes of the record's valid tokens (spec §3), sorted."""
    if record.cid not in store.token_times:
        times = []
        for der in record.timestamps:
            checked = verify_token(der, record.digest, store.tsa)
            if checked.gen_time_ms is not None and not checked.token_problems and not checked.imprint_problems:
                times.append(checked.gen_time_ms)
        store.token_times[record.cid] = sorted(times)
    return store.token_times[record.cid]


def _proof_order(store: _Store, record: Envelope) -> tuple[bool, int]:
    """Sorts copies of a content best-proven first: with a valid token, then the earliest
    proven time (each copy's latest valid genTime). The audit gives every copy the best
    copy's time (D16); a proof carries one copy, so it must carry that one, not a copy
    whose tokens were stripped or that carries a later token."""
    times = _token_times(store, record)
    return (not times, times[-1] if times else 0)


def _signed_by(record: Envelope, key: str) -> bool:
    return any(s.key == key and verify_digest(s.key, s.sig, record.digest) for s in record.signatures)


def _well_signed(record: Envelope) -> bool:
    """Every signature verifies and there is at least one (the verifier checks who signed)."""
    return bool(record.signatures) and all(
        verify_digest(s.key, s.sig, record.digest) for s in record.signatures
    )


@dataclass
class _Ballot:
    result: Envelope | None
    tree: Envelope | None
    tally_leaves: list[bytes] = field(default_factory=list)  # in the tally tree's order
    paths: dict[str, list[str]] = field(default_factory=dict)  # block CID -> tally nodes, leaf to root
    children: dict[str, list[str]] = field(default_factory=dict)  # tally node CID -> its children
    leaves: list[bytes] | None = None  # the leaves that give the tree's signed root, if found
    positions: dict[bytes, int] = field(default_factory=dict)
    note: str = ""


class Prover:
    """Builds proofs over one evidence store, reusing what every voter of a ballot shares
    (the revision, the combined key, the tally tree's walk, the accepted blocks)."""

    def __init__(self, store_root: Path) -> None:
        self.store = _Store(store_root)
        self.revisions: dict[str, tuple[Envelope, bytes]] = {}
        self.ballots: dict[tuple[str, str], _Ballot] = {}

    def build(self, key: str, nonce: str, template: str | None = None) -> Built:
        """The slice proof of the vote with ``nonce`` by the registrant ``key`` (see the module doc)."""
        started = time.perf_counter()
        try:
            key_bytes = b64u_decode(key, length=32, what="--key")
            b64u_decode(nonce, length=16, what="--nonce")
            if template is not None:
                cid_to_binary(template, what="--template")
        except EncodingError as e:
            raise InputError(str(e)) from e
        store = self.store
        built = Built({})
        sql = "SELECT cid FROM vote_block WHERE list_contains(members, ?)"
        sql += " AND template = ?" if template else ""
        blocks = store.all(sql + " ORDER BY cid", [key_bytes, *([template] if template else [])])
        if not blocks:
            raise NoVoteError(
                f"no vote block in the evidence lists the key {key} as a member"
                + (f" under template {template}" if template else "")
                + ": the evidence holds no vote by this key, so there is nothing to prove. If you voted, "
                "your block was never published (spec §4.15: you may file a dispute)."
            )
        election = store.get(blocks[0].body.election)
        if election is None or election.type != "election":
            raise InputError(
                f"the election {blocks[0].body.election} named by the block is not in the evidence"
            )
        store.tsa = [b64u_decode(a.certificate) for a in election.body.timestampAuthorities]
        if election.cid not in self.revisions:
            revision = _effective_revision(store, election.cid)
            self.revisions[election.cid] = (revision, _private_key(store, election.cid, revision))
        revision, private_key = self.revisions[election.cid]
        block, receipt = _choose_block(store, blocks, nonce, private_key, revision, built.notes)
        template_record = store.get(block.body.template)
        if template_record is None or template_record.type != "ballot_template":
            raise InputError(f"the ballot template {block.body.template} of the block is not in the evidence")
        records = {r.cid: r for r in (election, revision, template_record, block, receipt) if r is not None}
        proof: dict[str, Any] = {
            "format": FORMAT,
            "generator": f"vtaudit {__version__}",
            "voter": {"key": key, "nonce": nonce},
            "election": election.cid,
            "revision": revision.cid,
            "template": template_record.cid,
            "block": block.cid,
            "receipt": receipt.cid if receipt is not None else None,
            "blockTree": None,
            "result": None,
            "tally": [],
            "inclusion": None,
            "exclusion": None,
            "privateKey": b64u_encode(private_key),
        }
        if receipt is not None and receipt.body.result == "accepted":
            self._place(proof, records, block, revision, built.notes)
        for record in list(records.values()):
            if hasattr(record.body, "administration"):
                for admin in _chain(store, record.body.administration):
                    records[admin.cid] = admin
        proof["records"] = {cid: json.loads(record.raw) for cid, record in sorted(records.items())}
        built.proof = proof
        built.seconds = time.perf_counter() - started
        return built

    def _ballot(self, election: str, template: str, revision: Envelope) -> _Ballot:
        """What every voter of one ballot shares: its result, tree and the tree's leaves."""
        key = (election, template)
        if key in self.ballots:
            return self.ballots[key]
        store = self.store
        sql = "SELECT cid FROM {} WHERE election = ? AND template = ? ORDER BY cid"
        result = _first_signed(store, sql.format("result"), [election, template])
        tree = store.get(result.body.blockTree) if result is not None else None
        if tree is None or tree.type != "block_tree":
            tree = _first_signed(store, sql.format("block_tree"), [election, template])
        ballot = _Ballot(result, tree)
        if tree is not None:
            if result is not None:
                walk = _walk_tally(store, election, template, result.body.tallyRoot)
                ballot.tally_leaves, ballot.paths, ballot.children = walk
            accepted = _receipt_leaves(store, election, template, revision.body.receiptKey)
            root, count = b64u_decode(tree.body.root), tree.body.count
            for candidate in (ballot.tally_leaves, accepted):
                if len(candidate) == count and merkle.root(candidate) == root:
                    ballot.leaves = candidate
                    break
            else:
                ballot.note = "no set of leaves in the evidence gives the block tree's signed root"
            placed = ballot.leaves if ballot.leaves is not None else ballot.tally_leaves
            ballot.positions = {leaf: i for i, leaf in enumerate(placed)}
        self.ballots[key] = ballot
        return ballot

    def _place(
        self,
        proof: dict[str, Any],
        records: dict[str, Envelope],
        block: Envelope,
        revision: Envelope,
        notes: list[str],
    ) -> None:
        """The result, block tree, tally path and the block's place (or absence) in the tree."""
        store = self.store
        ballot = self._ballot(block.body.election, block.body.template, revision)
        result, tree = ballot.result, ballot.tree
        if tree is None:
            notes.append("the evidence holds no block tree for the ballot")
            return
        records[tree.cid] = tree
        proof["blockTree"] = tree.cid
        if result is not None:
            records[result.cid] = result
            proof["result"] = result.cid
        if ballot.note:
            notes.append(ballot.note)
        mine = cid_to_binary(block.cid)
        # without leaves that give the signed root, the tally tree's (a forged root shows as such)
        leaves = ballot.leaves if ballot.leaves is not None else ballot.tally_leaves
        if mine in ballot.positions:
            index = ballot.positions[mine]
            path = merkle.inclusion_proof(leaves, index)
            proof["inclusion"] = {"index": index, "path": [b64u_encode(h) for h in path]}
            if leaves is ballot.tally_leaves and block.cid in ballot.paths:
                proof["tally"] = ballot.paths[block.cid]
                store.fetch([c for cid in proof["tally"] for c in (cid, *ballot.children.get(cid, ()))])
                for cid in proof["tally"]:
                    node = store.get(cid)
                    assert node is not None  # _walk_tally listed it
                    records[cid] = node
                    for child in node.body.children if node.body.end - node.body.start > 1 else ():
                        sibling = store.get(child)
                        if sibling is not None:
                            records[child] = sibling
        elif ballot.leaves is not None:
            notes.append("your block is not in the committed block tree")
            at = bisect.bisect_left(leaves, mine)
            proof["exclusion"] = {
                "neighbours": [
                    {
                        "index": i,
                        "block": cid_from_binary(leaves[i]),
                        "path": [b64u_encode(h) for h in merkle.inclusion_proof(leaves, i)],
                    }
                    for i in (at - 1, at)
                    if 0 <= i < len(leaves)
                ]
            }


def build_proof(store_root: Path, key: str, nonce: str, template: str | None = None) -> Built:
    """The slice proof of one vote (a :class:`Prover` used once)."""
    return Prover(store_root).build(key, nonce, template)


def _first_signed(store: _Store, sql: str, params: list[Any]) -> Envelope | None:
    """The first record the query lists whose signatures all verify, else the first."""
    found = store.all(sql, params)
    found.sort(key=lambda r: (not _well_signed(r), *_proof_order(store, r)))  # stable: then the query's order
    return found[0] if found else None


def _effective_revision(store: _Store, election: str) -> Envelope:
    revisions = store.all("SELECT cid FROM election_revision WHERE election = ? ORDER BY cid", [election])
    valid = [r for r in revisions if _well_signed(r)]
    if not valid:
        raise InputError(f"the evidence holds no validly signed revision of election {election}")
    top = max(r.body.revision for r in valid)
    # the lowest CID of the highest number, among its copies the one with the earliest valid
    # token (the revision needs one no later than its deadline, §4.4, on any copy: D16)
    def earliest(r: Envelope) -> tuple[bool, int, str]:
        times = _token_times(store, r)
        return (not times, times[0] if times else 0, r.cid)

    return min((r for r in valid if r.body.revision == top), key=earliest)


def _private_key(store: _Store, election: str, revision: Envelope) -> bytes:
    """k = Σ k_i over the revision's keyholders, each a valid release (spec §4.12, §5.1)."""
    scalars = []
    for keyholder_cid in revision.body.keyholders:
        keyholder = store.get(keyholder_cid)
        if keyholder is None or keyholder.type != "keyholder":
            raise InputError(f"the keyholder {keyholder_cid} of the revision is not in the evidence")
        point = b64u_decode(keyholder.body.electionKey)
        sql = "SELECT cid FROM key_release WHERE election = ? AND keyholder = ? ORDER BY cid"
        good = [
            b64u_decode(r.body.privateKey)
            for r in store.all(sql, [election, keyholder_cid])
            if _signed_by(r, keyholder.body.registrantKey)
            and public_of(b64u_decode(r.body.privateKey)) == point
        ]
        if not good:
            raise InputError(
                f"keyholder {keyholder_cid} ({keyholder.body.name}) has not released a valid key: a slice "
                "proof needs the released keys to read the votes (spec §4.12)"
            )
        scalars.append(good[0])
    combined = combine_private(scalars)
    if public_of(combined) != b64u_decode(revision.body.electionKey):
        raise InputError("the released keys do not add up to the revision's election key (spec §5.1)")
    return combined


def _holds_nonce(block: Envelope, nonce: str, private_key: bytes) -> bool:
    for text in block.body.votes:
        try:
            entry = parse_json(decrypt(b64u_decode(text), private_key, block.body.template))
        except (CryptoError, EncodingError):
            continue
        if isinstance(entry, dict) and entry.get("nonce") == nonce:
            return True
    return False


def _choose_block(
    store: _Store,
    blocks: list[Envelope],
    nonce: str,
    private_key: bytes,
    revision: Envelope,
    notes: list[str],
) -> tuple[Envelope, Envelope | None]:
    """The block holding the vote (else the counted block with the key) and its receipt."""
    receipt_key = revision.body.receiptKey
    options = []
    for block in blocks:
        receipts = store.all("SELECT cid FROM receipt WHERE block = ? ORDER BY cid", [block.cid])
        receipts.sort(
            key=lambda r: (not _signed_by(r, receipt_key), r.body.result != "accepted", *_proof_order(store, r), r.cid)
        )
        receipt = receipts[0] if receipts else None
        accepted = receipt is not None and receipt.body.result == "accepted"
        options.append((not _holds_nonce(block, nonce, private_key), not accepted, block.cid, block, receipt))
    options.sort(key=lambda o: o[:3])
    missing, _, _, block, receipt = options[0]
    if len(blocks) > 1:
        notes.append(f"{len(blocks)} blocks list your key; the proof is about {block.cid}")
    if missing:
        notes.append(
            "no block that lists your key holds a vote with your nonce; the proof shows the block that does"
        )
    if receipt is None:
        notes.append("the evidence holds no receipt for the block")
    return block, receipt


def _chain(store: _Store, administration: str) -> list[Envelope]:
    """The administrations from ``administration`` back to its founding record."""
    chain: list[Envelope] = []
    cid: str | None = administration
    while cid is not None and len(chain) < 64 and cid not in {a.cid for a in chain}:
        admin = store.get(cid)
        if admin is None or admin.type != "administration":
            break
        chain.append(admin)
        cid = admin.body.previous
    return chain


def _walk_tally(
    store: _Store, election: str, template: str, root: str
) -> tuple[list[bytes], dict[str, list[str]], dict[str, list[str]]]:
    """The tally tree under ``root``: its leaves in order, for each block the node CIDs from
    the block's leaf up to the root, and each node's children."""
    rows = store.con.execute(
        'SELECT cid, start, "end", children FROM tally_node WHERE election = ? AND template = ?',
        [election, template],
    ).fetchall()
    nodes = {
        str(cid): (int(start), int(end), [str(c) for c in children]) for cid, start, end, children in rows
    }
    leaves: list[bytes] = []
    paths: dict[str, list[str]] = {}
    stack: list[tuple[str, tuple[str, ...]]] = [(root, ())]
    seen: set[str] = set()
    while stack:
        cid, above = stack.pop()
        if cid not in nodes or cid in seen:
            continue
        seen.add(cid)
        start, end, children = nodes[cid]
        if end - start == 1:
            try:
                leaves.append(cid_to_binary(children[0]))
            except (EncodingError, IndexError):
                continue
            paths.setdefault(children[0], [cid, *reversed(above)])
            continue
        stack.extend((child, (*above, cid)) for child in reversed(children))
    return leaves, paths, {cid: children for cid, (_, _, children) in nodes.items()}


def _receipt_leaves(store: _Store, election: str, template: str, receipt_key: str) -> list[bytes]:
    """The sorted blocks of this ballot that a receipt signed with the receipt key accepted."""
    rows = store.cids(
        "SELECT DISTINCT r.block FROM receipt r JOIN vote_block b ON b.cid = r.block "
        "JOIN signatures s ON s.cid = r.cid AND s.key = ? "
        "WHERE r.result = 'accepted' AND r.election = ? AND b.template = ?",
        [b64u_decode(receipt_key), election, template],
    )
    return sorted(cid_to_binary(cid) for cid in rows)
