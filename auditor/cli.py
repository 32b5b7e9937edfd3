"""The ``vtaudit`` command line: thin commands over library calls, one error boundary.

Exit codes (docs/cli.md):

- 0: the command did its job and found nothing wrong;
- 1: the command ran and the evidence has problems (``validate``);
- 2: the command could not run: bad options, unreadable input, a bad trust file;
- 3: an internal error (a bug in vtaudit), reported in one line.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, TypeVar

import click

from auditor import __version__
from auditor.cliutil import boundary as _boundary
from auditor.sim.tampers import TAMPERS

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vtaudit")
def main() -> None:
    """vtaudit: independent auditor for VoteTorrent elections.

    \b
    Try the demo election:
      vtaudit simulate --voters 300 --out demo-out/election
      vtaudit validate demo-out/election/evidence.car --trust demo-out/election/trust.toml
    """


F = TypeVar("F", bound=Callable[..., Any])


def _cache_options(default: str) -> Callable[[F], F]:
    """--cache DIR and --no-cache, shared by verify and audit."""

    def add(command: F) -> F:
        command = click.option(
            "--no-cache", is_flag=True, help="Check everything again; neither read nor write the cache."
        )(command)
        return click.option(
            "--cache",
            "cache_dir",
            type=click.Path(file_okay=False, path_type=Path),
            help="Result cache folder: what an earlier run checked is not checked again "
            f"[default: {default}].",
        )(command)

    return add


_cluster_option = click.option(
    "--cluster",
    metavar="ADDRESS",
    help="Run the per-block work (signatures, tokens, decryption, the recount) on the workers of the "
    "Dask scheduler at ADDRESS (tcp://HOST:8786) instead of on this machine; the findings are the same.",
)


def _list_tampers(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    width = max(len(name) for name in TAMPERS)
    for tamper in TAMPERS.values():
        click.echo(f"{tamper.name:<{width}}  trips {', '.join(tamper.trips)}")
        click.echo(f"{'':<{width}}  {tamper.description}")
    ctx.exit(0)


@main.command()
@click.option(
    "--voters", type=click.IntRange(min=1), default=300, show_default=True, help="Registered voters."
)
@click.option(
    "--seed", type=int, default=1, show_default=True, help="Same seed, same bytes (docs/simulator.md)."
)
@click.option(
    "--districts",
    type=click.IntRange(1, 8),
    default=3,
    show_default=True,
    help="Districts, one ballot template each.",
)
@click.option(
    "--turnout",
    type=click.FloatRange(0.0, 1.0),
    default=0.9,
    show_default=True,
    help="Share of registrants who vote.",
)
@click.option(
    "--tamper",
    type=click.Choice(sorted(TAMPERS)),
    default=None,
    metavar="KIND",
    help="Break one rule on purpose (see --list-tampers).",
)
@click.option(
    "--list-tampers",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_list_tampers,
    help="List every tampering with the check ids it must trip, and exit.",
)
@click.option(
    "--format",
    "formats",
    default="dir,car",
    show_default=True,
    help="Outputs, comma-separated: dir, car, ndjson.",
)
@click.option(
    "--workers", type=click.IntRange(min=0), default=0, help="Worker processes for blocks (0: one per core)."
)
@click.option("--no-secrets", is_flag=True, help="Do not write the voters' secrets (secrets/voters.ndjson).")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    required=True,
    help="Output directory (created; must be empty or new).",
)
@_boundary
def simulate(
    voters: int,
    seed: int,
    districts: int,
    turnout: float,
    tamper: str | None,
    formats: str,
    workers: int,
    no_secrets: bool,
    out: Path,
) -> None:
    """Simulate a complete election and publish its evidence.

    Writes OUT/records/ (one envelope a file), OUT/evidence.car, OUT/trust.toml,
    OUT/tsa-root.pem, OUT/manifest.json (counts, expected tallies) and
    OUT/secrets/voters.ndjson (each voter's key seed and vote nonce: test material).

    \b
    Example:
      vtaudit simulate --voters 10000 --seed 7 --out /tmp/e1
      vtaudit simulate --voters 300 --tamper tree-omit --out /tmp/e2
    """
    from auditor.sim.election import SimConfig
    from auditor.sim.election import simulate as run_simulation

    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} is not empty; choose a new directory so no evidence is mixed")
    chosen = tuple(f.strip() for f in formats.split(",") if f.strip())
    config = SimConfig(
        voters=voters,
        seed=seed,
        districts=districts,
        turnout_ppm=round(turnout * 1_000_000),
        tamper=tamper,
        formats=chosen,
        workers=workers,
        secrets=not no_secrets,
    )
    started = time.perf_counter()
    summary = run_simulation(config, out)
    elapsed = time.perf_counter() - started
    click.echo(f"simulated election {summary.election}")
    click.echo(f"  {summary.records} records in {elapsed:.1f} s ({', '.join(chosen)}) under {out}")
    for record_type, count in summary.by_type.items():
        click.echo(f"  {record_type:<22}{count:>10}")
    if tamper:
        click.echo(f"  tampered: {tamper} (must trip {', '.join(TAMPERS[tamper].trips)})")


@main.command()
@click.argument("sources", nargs=-1, required=True)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Evidence directory (created, or resumed).",
)
@click.option("--quiet", is_flag=True, help="No progress, only the summary.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=30.0,
    show_default=True,
    help="Node URLs: seconds to wait for a node to connect or send the next bytes.",
)
@click.option(
    "--node-concurrency",
    type=click.IntRange(1, 64),
    default=4,
    show_default=True,
    help="Node URLs: requests in flight to one node.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Processes that parse records.",
)
@_boundary
def harvest(
    sources: tuple[str, ...], out: Path, quiet: bool, timeout: float, node_concurrency: int, workers: int
) -> None:
    """Harvest every record of SOURCES into an evidence store (Parquet + DuckDB).

    SOURCES are evidence directories, .car files or .ndjson files (spec §7.2), and
    network node URLs (http://… or https://…, spec §7.1): all the URLs together are one
    source, the union of the nodes' logs, each record fetched once and checked against
    its CID before it is accepted. Every record is checked against the CID it was
    published under; what fails is kept in the quarantine table with the reason (and,
    for nodes, the node that served it). Running again resumes each source after the
    last committed record (a killed harvest loses nothing). docs/evidence-store.md
    describes the tables.

    \b
    Example:
      vtaudit harvest demo-out/election/evidence.car --out demo-out/evidence
      vtaudit harvest http://127.0.0.1:8123 http://127.0.0.1:8124 --out demo-out/evidence
      cd demo-out/evidence && duckdb evidence.duckdb
    """
    from rich.console import Console
    from rich.table import Table

    from auditor.errors import InputError
    from auditor.harvest import ArchiveSource, Source
    from auditor.harvest import harvest as run_harvest
    from auditor.net.client import HttpNodesSource, NetOptions
    from auditor.store.evidence import HarvestStats

    urls = [s for s in sources if s.startswith(("http://", "https://"))]
    chosen: list[Source] = []
    for text in sources:
        if text in urls:
            continue
        if not Path(text).exists():
            raise InputError(
                f"{text}: no such file or directory; give an evidence directory, a .car or .ndjson "
                "file, or a node URL starting http:// or https://"
            )
        chosen.append(ArchiveSource(Path(text)))
    nodes = None
    if urls:
        options = NetOptions(connect_timeout=timeout, read_timeout=timeout, node_concurrency=node_concurrency)
        nodes = HttpNodesSource(urls, options)
        chosen.append(nodes)

    console = Console(stderr=True, quiet=quiet)
    started = time.perf_counter()
    with console.status("harvesting…") as status:
        total = sum(_archive_bytes(Path(t)) for t in sources if t not in urls)

        def progress(stats: HarvestStats) -> None:
            elapsed = max(time.perf_counter() - started, 1e-9)
            rate = stats.read / elapsed
            eta = ""
            if total and not urls and stats.bytes:
                left = max(total - stats.bytes, 0) / (stats.bytes / elapsed)
                eta = f", about {left:,.0f} s left"
            status.update(
                f"harvesting: {stats.read:,} records read, {stats.new:,} new, "
                f"{stats.quarantined:,} quarantined, {stats.bytes / 1e6:,.1f} MB, {rate:,.0f} records/s{eta}"
            )

        _, stats = run_harvest(chosen, out, None if quiet else progress, workers=workers)
    table = Table(title=f"harvest into {out}", show_edge=False)
    for column in ("records read", "new", "duplicates", "quarantined", "MB", "seconds", "records/s"):
        table.add_column(column, justify="right")
    table.add_row(
        f"{stats.read:,}",
        f"{stats.new:,}",
        f"{stats.duplicates:,}",
        f"{stats.quarantined:,}",
        f"{stats.bytes / 1e6:,.1f}",
        f"{stats.seconds:.1f}",
        f"{stats.read / max(stats.seconds, 1e-9):,.0f}",
    )
    Console(width=120).print(table)
    if nodes is not None:
        click.echo("nodes:")
        for line in nodes.report.lines():
            click.echo(f"  {line}")
    if stats.quarantined:
        click.echo(
            f"{stats.quarantined} records quarantined: see the quarantine table ({out}/tables/quarantine)"
        )
    from auditor.store.evidence import connect, contested_slots

    contested = contested_slots(connect(out))
    if contested:
        click.echo(
            f"{len(contested)} slots hold more than one record (all kept; `vtaudit verify` judges them):"
        )
        for slot in contested[:20]:
            click.echo(f"  {slot}")


def _archive_bytes(path: Path) -> int:
    """The size of an archive (a file, or the .json files of a directory), for the ETA."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*.json")) if path.is_dir() else 0


@main.group()
def node() -> None:
    """Run a network node (spec §7.1) that serves evidence over HTTP.

    \b
    Example:
      vtaudit node serve demo-out/election/evidence.car --port 8123
      vtaudit harvest http://127.0.0.1:8123 --out demo-out/evidence
    """


@node.command("serve")
@click.argument("evidence", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; anything but loopback serves other machines.",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8123,
    show_default=True,
    help="Port to listen on; 0 picks a free one (the URL is printed).",
)
@click.option(
    "--fault",
    "faults",
    multiple=True,
    metavar="SPEC",
    help="Misbehave on purpose, e.g. 'error=0.2,wrong=0.01,seed=3' (docs/cli.md lists the keys).",
)
@click.option("--log", "log_requests", is_flag=True, help="Print one line per request on stderr.")
@_boundary
def serve(evidence: Path, host: str, port: int, faults: tuple[str, ...], log_requests: bool) -> None:
    """Serve EVIDENCE (a .car file or an evidence store) as a network node.

    GET /v1/log?after=&limit= lists the records (NDJSON), GET /ipfs/<cid> serves one,
    GET /v1/car?after=&limit= serves a range of the log as a CARv1 (spec §7.1). Runs
    until Ctrl-C. --fault makes the node slow, wrong or malicious, deterministically
    for a given seed, to see what a harvester makes of it.

    \b
    Example:
      vtaudit node serve demo-out/election/evidence.car --port 8123
      vtaudit node serve demo-out/evidence --port 0 --fault 'wrong=0.01,error=0.1,seed=7'
    """
    from auditor.net.faults import parse_faults
    from auditor.net.server import NodeServer, load_content

    fault = parse_faults(",".join(faults)) if faults else None
    content = load_content(evidence)
    log = (lambda line: click.echo(line, err=True)) if log_requests else None
    server = NodeServer(content, host=host, port=port, faults=fault, log=log)
    click.echo(f"serving {len(server.content):,} records of {evidence} at {server.url}")
    if fault is not None and fault.active:
        click.echo(f"  with faults: {', '.join(faults)}")
    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(f"  note: listening on {host}, not loopback: other machines can read this evidence")
    click.echo("  (Ctrl-C to stop)", nl=True)
    sys.stdout.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("stopped")
    finally:
        server.stop()


@main.command()
@click.argument("sources", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--trust", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Trust file (spec §9)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option(
    "--workers", type=click.IntRange(min=1), default=2, show_default=True, help="Threads for signatures."
)
@_boundary
def validate(sources: tuple[Path, ...], trust: Path | None, as_json: bool, workers: int) -> None:
    """Parse every record and verify every signature and timestamp token.

    SOURCES are evidence directories, .car files or .ndjson files. This is the
    record-level layer of the audit (REC-CID, REC-SCHEMA, SIG-VALID, TSA-TOKEN,
    TSA-IMPRINT); exit code 1 when any record fails.

    \b
    Example:
      vtaudit validate demo-out/election/evidence.car --trust demo-out/election/trust.toml
    """
    from itertools import chain

    from auditor.sources import iter_source
    from auditor.trust import load_trust
    from auditor.validate import validate_records

    roots = load_trust(trust).tsa_roots if trust else ()
    summary = validate_records(
        chain.from_iterable(iter_source(s) for s in sources), tsa_roots=roots, workers=workers
    )
    failures = summary.failures()
    if as_json:
        click.echo(
            json.dumps(
                {
                    "records": summary.records,
                    "duplicates": summary.duplicates,
                    "byType": dict(summary.by_type),
                    "signatures": summary.signatures,
                    "tokens": summary.tokens,
                    "failures": dict(failures),
                    "problems": [dataclasses.asdict(p) for p in summary.problems[:1000]],
                    "seconds": round(summary.seconds, 3),
                },
                indent=1,
                ensure_ascii=False,
            )
        )
    else:
        if trust is None:
            click.echo("NOTE: no trust file: TSA certificates are not chained to known roots (spec §9).")
        click.echo(
            f"read {summary.records} records ({summary.duplicates} duplicates) in {summary.seconds:.1f} s: "
            f"{summary.signatures} signatures, {summary.tokens} timestamp tokens"
        )
        for record_type, count in sorted(summary.by_type.items()):
            click.echo(f"  {record_type:<22}{count:>10}")
        for check in ("REC-CID", "REC-SCHEMA", "SIG-VALID", "TSA-TOKEN", "TSA-IMPRINT"):
            status = "FAIL" if failures.get(check) else "pass"
            click.echo(f"  {check:<12} {status:<5} {failures.get(check, 0)} failures")
        for problem in summary.problems[:20]:
            click.echo(f"  - {problem.check} at {problem.location}: {problem.message}")
        if len(summary.problems) > 20:
            click.echo(f"  … and {len(summary.problems) - 20} more (use --json)")
    sys.exit(1 if summary.problems else 0)


@main.command()
@click.argument("evidence", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--trust", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Trust file (spec §9)."
)
@click.option(
    "--findings",
    "findings_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for findings.parquet, checks.parquet and answers.parquet (the recount's valid votes) "
    "[default: EVIDENCE/audit for a store, else ./vtaudit-audit].",
)
@click.option("--election", help="The election record's CID, when the evidence holds several.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--quiet", is_flag=True, help="No progress on stderr.")
@click.option(
    "--no-recount",
    is_flag=True,
    help="Skip decryption, the recount and what needs it (the verdict cannot then be verified).",
)
@_cache_options("cache/ in the findings folder")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Parallel workers for cryptography.",
)
@_cluster_option
@_boundary
def verify(
    evidence: Path,
    trust: Path | None,
    findings_dir: Path | None,
    election: str | None,
    as_json: bool,
    quiet: bool,
    no_recount: bool,
    cache_dir: Path | None,
    no_cache: bool,
    workers: int,
    cluster: str | None,
) -> None:
    """Run every audit check of spec §8 and print one line per check.

    EVIDENCE is an evidence store made by `vtaudit harvest`, or an archive (a .car or
    .ndjson file, a directory of envelopes) that is first harvested into a temporary
    store. The findings (check, severity, subject CID, message, evidence) are written
    as Parquet. Exit code 0: verified (possibly with warnings); 1: not verified; 2: the
    evidence or the trust file could not be read. Without --trust the result only says
    the evidence is self-consistent: it is not anchored to known authorities.

    Signatures, timestamp tokens and decrypted blocks that an earlier run checked are
    taken from the result cache (checked again when the cache is not this user's, or
    was made by another version or with another trust file); the output says how many.
    The findings are the same with or without it.

    \b
    Example:
      vtaudit verify demo-out/election/evidence.car --trust demo-out/election/trust.toml
      vtaudit verify demo-out/evidence --trust demo-out/election/trust.toml --json
      vtaudit verify demo-out/evidence --trust demo-out/election/trust.toml --no-cache
      vtaudit verify demo-out/evidence --trust trust.toml --cluster tcp://10.0.0.5:8786
    """
    import tempfile

    from rich.console import Console

    from auditor.harvest import is_store, store_of
    from auditor.trust import load_trust

    _check_cache_options(cache_dir, no_cache)
    trusted = load_trust(trust) if trust else None
    console = Console(stderr=True, quiet=quiet or as_json)
    with (
        _runner(console, cluster, workers) as runner,
        tempfile.TemporaryDirectory(prefix="vtaudit-store-") as scratch,
    ):
        default_out = evidence / "audit" if is_store(evidence) else Path("vtaudit-audit")
        with console.status(f"reading {evidence}…"):
            store = store_of(evidence, Path(scratch), workers=workers)
        out = findings_dir or default_out
        result, findings_path = _verify_and_write(
            console,
            store,
            trusted,
            out,
            workers,
            election,
            recount=not no_recount,
            cache=None if no_cache else cache_dir or out / "cache",
            runner=runner,
        )
    if as_json:
        summary = result.summary()
        summary["findingsFile"] = str(findings_path)
        summary["sample"] = [f.to_json() for f in result.findings[:50]]
        click.echo(json.dumps(summary, indent=1, ensure_ascii=False))
    else:
        _print_verification(result, trust, findings_path)
    sys.exit(0 if result.verified else 1)


def _check_cache_options(cache_dir: Path | None, no_cache: bool) -> None:
    from auditor.errors import InputError

    if cache_dir is not None and no_cache:
        raise InputError("--cache and --no-cache exclude each other: give one")


def _verify_and_write(
    console: Any,
    store: Path,
    trusted: Any,
    out: Path,
    workers: int,
    election: str | None,
    *,
    recount: bool = True,
    cache: Path | None = None,
    runner: Any = None,
) -> tuple[Any, Path]:
    """Verify ``store`` with a status line, then write the findings Parquet files to ``out``
    (the recount's answers.parquet goes there too): what `verify` and `audit` share.
    ``cache`` is the result cache folder (None: no cache)."""
    from auditor.verify.engine import verify_store
    from auditor.verify.findings import write_findings

    with console.status("verifying…") as status:
        result = verify_store(
            store,
            trusted,
            workers=workers,
            election=election,
            progress=lambda stage: status.update(f"verifying: {stage}…"),
            recount=recount,
            audit_dir=out,
            cache=cache,
            runner=runner,
        )
    findings_path, _ = write_findings(result.outcomes, result.findings, out)
    return result, findings_path


@contextmanager
def _runner(console: Any, cluster: str | None, workers: int) -> Iterator[Any]:
    """Where the per-block work runs: the Dask cluster of --cluster (connected before any
    work, so that a wrong address fails at once), else ``workers`` local processes."""
    from auditor.parallel import open_runner

    with console.status(f"connecting to the cluster at {cluster}…") if cluster else nullcontext():
        runner = open_runner(cluster, workers)
    try:
        yield runner
    finally:
        runner.close()


def _print_advisory(console: Any, result: Any) -> None:
    """The advisory layer: information for a human look, never a check or a verdict."""
    advisory = result.advisory
    if not advisory:
        return
    console.print("advisory (not checks; they do not change the verdict):")
    turnout = ", ".join(
        f"{t['district']} {t['voters']:,}/{t['eligible']:,}"
        + (f" ({t['turnoutPpm'] / 10_000:.1f} %)" if t["turnoutPpm"] is not None else "")
        for t in advisory["turnout"]
    )
    console.print(f"  turnout (counted voters / eligible): {turnout}")
    console.print(
        f"  voters in blocks of fewer than {advisory['smallBlockSize']} members (weak secrecy): "
        f"{advisory['votersInSmallBlocks']:,}"
    )
    console.print(
        f"  blocks whose votes are statistical outliers in their district: {len(advisory['outliers'])}"
    )
    for ballot in result.ballots:
        for irv in ballot.get("instantRunoff", []):
            rounds = irv["rounds"]
            if rounds:
                console.print(
                    f"  instant runoff, {ballot['district']} / {irv['question']}: "
                    f"{rounds[-1].get('winner') or 'no winner'} after {len(rounds)} round(s)"
                )


def _cache_lines(cache: dict[str, Any] | None) -> list[str]:
    """What the result cache gave ("signatures: 20,944 (20,687 reused from the cache, 257
    checked)", …), then every part ignored and why, and what went wrong with the cache."""
    if cache is None:
        return ["result cache: not used (--no-cache)"]
    lines = []
    if cache["used"]:
        lines.append(f"result cache {cache['folder']}:")
        for kind, name, verb in (
            ("signatures", "signatures", "checked"),
            ("tokens", "timestamp tokens", "checked"),
            ("blocks", "recounted blocks", "decrypted"),
        ):
            reused, computed = cache["reused"][kind], cache["checked"][kind]
            lines.append(
                f"  {name}: {reused + computed:,} ({reused:,} reused from the cache, {computed:,} {verb})"
            )
        for reason, parts in cache["ignoredParts"].items():
            lines.append(f"  {parts:,} part(s) ignored: {reason}")
    lines.extend(f"  {note}" for note in cache["notes"])
    return lines


def _short(text: str, limit: int = 90) -> str:
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _print_verification(result: Any, trust: Path | None, findings_path: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    from auditor.rules import catalog

    console = Console(width=120, highlight=False)
    if trust is None:
        console.print(
            "[bold]NOT ANCHORED:[/bold] no trust file was given. The checks below show whether the "
            "evidence is self-consistent; they do not show that it comes from the real election, "
            "registration, certification and ballot authorities (spec §9). Use --trust."
        )
    console.print(f"election {result.election or '(none found)'}: {result.records:,} records")
    rules = catalog()
    table = Table(show_edge=False, pad_edge=False)
    for column, justify in (
        ("check", "left"),
        ("severity", "left"),
        ("status", "left"),
        ("checked", "right"),
        ("failures", "right"),
        ("what it covers", "left"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    styles = {"pass": "green", "fail": "bold red", "skipped": "yellow"}
    for o in result.outcomes:
        table.add_row(
            o.id,
            o.severity,
            f"[{styles[o.status]}]{o.status.upper() if o.status == 'fail' else o.status}[/]",
            f"{o.checked:,}",
            f"{o.failures:,}",
            _short(o.note) if o.status == "skipped" else rules[o.id].title,
        )
    console.print(table)
    shown = [f for f in result.findings][:25]
    if shown:
        console.print(f"findings ({len(result.findings):,}; the first {len(shown)}):")
        for finding in shown:
            console.print(f"  - {finding.check} [{finding.severity}] {finding.message}", soft_wrap=True)
    for error in result.internal_errors:
        console.print(f"[bold red]internal error:[/] {error}")
    stages = ", ".join(f"{s.name} {s.seconds:.1f} s" for s in result.stages)
    console.print(f"stages: {stages}")
    for line in _cache_lines(result.cache):
        console.print(line, soft_wrap=True)
    console.print(f"findings written to {findings_path}")
    _print_advisory(console, result)
    for ballot in result.ballots:
        for q in ballot["questions"]:
            runoff = q["runoff"]
            if runoff["required"]:
                console.print(
                    f"RUNOFF REQUIRED: {ballot['district']} / {q['question']} between "
                    f"{', '.join(runoff['participants'])} ({', '.join(runoff['triggers'])})"
                )
    words = {
        "verified": "VERIFIED: every check passed",
        "verified-with-warnings": "VERIFIED WITH WARNINGS: no critical check failed; see the failures above",
        "not-verified": "NOT VERIFIED: a critical check failed or could not run",
    }
    verdict = words[result.verdict]
    if result.verdict == "verified" and any(o.status == "fail" for o in result.outcomes):
        verdict = "VERIFIED: every check that bears on the outcome passed (information findings above)"
    console.print(f"[bold]{verdict}[/bold] ({result.seconds:.1f} s)")


@main.command()
@click.argument("sources", nargs=-1, required=True)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Audit folder: evidence/ (the store), findings/ (Parquet), report.json, report.html, report.pdf.",
)
@click.option(
    "--trust",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Trust file (spec §9). Without it the report says the evidence is only self-consistent.",
)
@click.option(
    "--keys",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="VTAUDIT_KEYS",
    required=True,
    help="Key folder made by `vtaudit keygen` (or $VTAUDIT_KEYS): signs the JSON and the PDF.",
)
@click.option("--tsa", "tsa_url", help="RFC 3161 time-stamp authority URL for the PDF signature.")
@click.option("--election", help="The election's CID, when the evidence holds several.")
@click.option("--no-pdf", is_flag=True, help="Write the JSON and HTML reports only.")
@click.option("--quiet", is_flag=True, help="No progress, only the result.")
@_cache_options("OUT/findings/cache")
@click.option(
    "--workers", type=click.IntRange(min=1), default=2, show_default=True, help="Processes for the work."
)
@_cluster_option
@click.pass_context
@_boundary
def audit(
    ctx: click.Context,
    sources: tuple[str, ...],
    out: Path,
    trust: Path | None,
    keys: Path,
    tsa_url: str | None,
    election: str | None,
    no_pdf: bool,
    quiet: bool,
    cache_dir: Path | None,
    no_cache: bool,
    workers: int,
    cluster: str | None,
) -> None:
    """Harvest, verify, recount and write the signed reports, in one command.

    SOURCES are what `vtaudit harvest` takes (archives, directories, node URLs); they are
    harvested into OUT/evidence (running again resumes). Then every check of spec §8
    runs, the votes are recounted, and OUT gets report.json (signed with the auditor's
    Ed25519 key), report.html and report.pdf (PAdES-signed). Exit code 0: verified
    (possibly with warnings); 1: not verified; 2: bad input. Running again after new
    records were published checks only what is new (the result cache, as in `vtaudit
    verify`); the report is the same with or without the cache.

    \b
    Example:
      vtaudit keygen --out keys
      vtaudit audit demo-out/election/evidence.car --trust demo-out/election/trust.toml \\
        --keys keys --out demo-out/audit
      vtaudit audit evidence.car --trust trust.toml --keys keys --out audit --cluster tcp://10.0.0.5:8786
    """
    from rich.console import Console

    from auditor.report.keys import load_key_folder
    from auditor.report.publish import publish
    from auditor.trust import load_trust

    _check_cache_options(cache_dir, no_cache)
    trusted = load_trust(trust) if trust else None
    key_folder = load_key_folder(keys)
    store = out / "evidence"
    console = Console(stderr=True, quiet=quiet)
    findings = out / "findings"
    with _runner(console, cluster, workers) as runner:
        ctx.invoke(harvest, sources=sources, out=store, quiet=True, workers=workers)
        result, findings_path = _verify_and_write(
            console,
            store,
            trusted,
            findings,
            workers,
            election,
            cache=None if no_cache else cache_dir or findings / "cache",
            runner=runner,
        )
    if not quiet:
        _print_verification(result, trust, findings_path)
    with console.status("writing the reports…"):
        published = publish(result, store, out, key_folder, pdf=not no_pdf, tsa_url=tsa_url)
    click.echo(f"report: {published.json} (signed by {key_folder.auditor.public_b64u})")
    click.echo(f"        {published.html}")
    if published.pdf:
        signed = " (PAdES-signed)" if published.pdf_signed else " (not signed: no pdf.key)"
        click.echo(f"        {published.pdf}{signed}")
    click.echo(f"report digest, as printed on every page: {published.digest}")
    sys.exit(0 if result.verified else 1)


def _register() -> None:
    from auditor.report.cli import keygen, report

    main.add_command(keygen)
    main.add_command(report)
    from auditor.slice.cli import slice_group

    main.add_command(slice_group)


_register()


if __name__ == "__main__":  # pragma: no cover
    main()
