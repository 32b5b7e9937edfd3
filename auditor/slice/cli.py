"""``vtaudit slice prove`` and ``vtaudit slice verify`` (docs/cli.md, docs/slice-proofs.md).

Thin commands over :func:`auditor.slice.prove.build_proof` and
:func:`auditor.slice.verify.verify_proof`, with the exit codes of the rest of the CLI:

- prove: 0 the proof was written; 1 the evidence holds no block with the key; 2 bad
  input; 3 internal error;
- verify: 0 counted and unchanged; 1 not counted or altered; 2 cannot tell, or the
  proof or trust file cannot be read; 3 internal error.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from auditor.cliutil import boundary as _boundary

__all__ = ["slice_group"]


@click.group("slice")
def slice_group() -> None:
    """Voter slice proofs: a small, self-contained proof that one vote was counted.

    `prove` builds it from the evidence for a voter's key and vote nonce; `verify`
    checks it offline, in under a second, and answers in one line: COUNTED AND
    UNCHANGED, NOT COUNTED, ALTERED or CANNOT TELL (docs/slice-proofs.md).

    \b
    Example:
      vtaudit slice prove demo-out/evidence --key KEY --nonce NONCE --out proof.json
      vtaudit slice verify proof.json --trust demo-out/election/trust.toml
    """


@slice_group.command("prove")
@click.argument("evidence", type=click.Path(exists=True, path_type=Path))
@click.option("--key", required=True, help="The voter's registrant key (public key, base64url).")
@click.option(
    "--nonce", required=True, help="The vote's nonce (base64url, 16 bytes), from the voter's device."
)
@click.option("--template", help="The ballot template CID, when the key voted on several ballots.")
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Where to write proof.json."
)
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True, help="Harvest workers.")
@_boundary
def prove(evidence: Path, key: str, nonce: str, template: str | None, out: Path, workers: int) -> None:
    """Build the slice proof of one vote from EVIDENCE.

    EVIDENCE is an evidence store (`vtaudit harvest`) or an archive (.car, .ndjson, a
    directory of envelopes), harvested first into a temporary store. The proof holds
    the voter's block and receipt, the block tree and the block's path in it, the tally
    nodes from the block to the root with their siblings, the result, the released key
    and the authorities' records: everything `vtaudit slice verify` needs, offline.
    Only the public key is needed, never the private one. The proof reveals the vote:
    keep it private.

    \b
    Example:
      vtaudit slice prove demo-out/election/evidence.car \\
        --key YIgvm5iXnREujipxzFr81gbwq62YF6uVuSQw9S6b7CA --nonce 0_IuX6fvOrhLPeT-qPrDmA --out proof.json
    """
    import tempfile

    from auditor.harvest import store_of
    from auditor.slice.prove import NoVoteError, build_proof, write_proof

    with tempfile.TemporaryDirectory(prefix="vtaudit-slice-") as scratch:
        store = store_of(evidence, Path(scratch), workers=workers)
        try:
            built = build_proof(store, key, nonce, template)
        except NoVoteError as e:
            click.echo(f"vtaudit: {e}", err=True)
            sys.exit(1)
    size = write_proof(built.proof, out)
    click.echo(f"wrote {out}: {size:,} bytes, {len(built.proof['records'])} records ({built.seconds:.2f} s)")
    for note in built.notes:
        click.echo(f"  note: {note}")


@slice_group.command("verify")
@click.argument("proof", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--trust", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Trust file (spec §9)."
)
@click.option("--key", help="Your registrant key: the proof must be about it.")
@click.option("--nonce", help="Your vote nonce: the proof must be about it.")
@click.option(
    "--cast",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Your vote as cast (a JSON vote entry): compared exactly with the one in the block.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@_boundary
def verify(
    proof: Path, trust: Path | None, key: str | None, nonce: str | None, cast: Path | None, as_json: bool
) -> None:
    """Check a slice proof offline and answer in one line.

    The first line is COUNTED AND UNCHANGED, NOT COUNTED, ALTERED or CANNOT TELL with one
    plain sentence; then each check with ✓ or ✗: the vote in the block (shown), the
    voter entry, the block's signatures, the receipt, the block tree, the tally up to
    the result, and the authorities. Exit code 0: counted and unchanged; 1: not counted
    or altered; 2: cannot tell, or a file cannot be read. Without --trust the answer
    only shows that the proof is self-consistent.

    \b
    Example:
      vtaudit slice verify proof.json --trust demo-out/election/trust.toml
      vtaudit slice verify proof.json --trust trust.toml --key KEY --nonce NONCE --json
    """
    from auditor.slice.core import ProofError, parse_json
    from auditor.slice.verify import parse_trust, verify_proof

    anchors = None
    if trust is not None:
        anchors = parse_trust(
            trust.read_text(encoding="utf-8"), lambda name: (trust.parent / name).read_bytes(), str(trust)
        )
    answers = None
    if cast is not None:
        value = parse_json(cast.read_bytes(), str(cast))
        answers = (
            value.get("answers", (value.get("vote") or {}).get("answers"))
            if isinstance(value, dict)
            else None
        )
        if not isinstance(answers, list):
            raise ProofError(f"{cast}: expected a vote entry with its answers (spec §4.8)")
    report = verify_proof(proof.read_bytes(), anchors, key=key, nonce=nonce, cast=answers)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=1, ensure_ascii=False))
    else:
        for line in report.lines():
            click.echo(line)
    sys.exit(report.exit_code)
