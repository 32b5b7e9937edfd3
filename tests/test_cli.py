"""The vtaudit CLI: every command has help with an example and documentation; exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from auditor.cli import main
from auditor.sim.tampers import TAMPERS

ROOT = Path(__file__).resolve().parent.parent


def _commands() -> list[str]:
    assert isinstance(main, click.Group)
    return sorted(main.commands)


@pytest.mark.parametrize("name", _commands())
def test_every_command_has_help_with_an_example_and_docs(name: str) -> None:
    result = CliRunner().invoke(main, [name, "--help"])
    assert result.exit_code == 0
    assert "Example" in result.output
    assert f"`vtaudit {name}`" in (ROOT / "docs" / "cli.md").read_text()


def test_list_tampers_names_every_tamper_with_its_checks() -> None:
    result = CliRunner().invoke(main, ["simulate", "--list-tampers"])
    assert result.exit_code == 0
    for tamper in TAMPERS.values():
        assert tamper.name in result.output
        assert ", ".join(tamper.trips) in result.output


def test_every_tamper_is_documented() -> None:
    text = (ROOT / "docs" / "simulator.md").read_text()
    for tamper in TAMPERS.values():
        assert f"| `{tamper.name}` | {', '.join(tamper.trips)} |" in text


def test_simulate_then_validate_clean_exits_0(tmp_path: Path) -> None:
    out = tmp_path / "e"
    runner = CliRunner()
    result = runner.invoke(
        main, ["simulate", "--voters", "80", "--districts", "2", "--workers", "1", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "registrant" in result.output
    result = runner.invoke(
        main, ["validate", str(out / "evidence.car"), "--trust", str(out / "trust.toml"), "--json"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["failures"] == {} and summary["records"] > 80


def test_validate_tampered_exits_1_and_names_the_record(tmp_path: Path) -> None:
    out = tmp_path / "e"
    runner = CliRunner()
    runner.invoke(
        main, ["simulate", "--voters", "80", "--districts", "2", "--tamper", "tsa-imprint", "--out", str(out)]
    )
    result = runner.invoke(main, ["validate", str(out / "evidence.car"), "--trust", str(out / "trust.toml")])
    assert result.exit_code == 1
    assert "TSA-IMPRINT  FAIL" in result.output and "registration_roll" in result.output


def test_validate_without_trust_says_so(tmp_path: Path) -> None:
    out = tmp_path / "e"
    runner = CliRunner()
    runner.invoke(main, ["simulate", "--voters", "60", "--districts", "1", "--out", str(out)])
    result = runner.invoke(main, ["validate", str(out / "records")])
    assert result.exit_code == 0
    assert "no trust file" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["validate", "/no/such/path"], "does not exist"),
        (["simulate", "--voters", "0", "--out", "x"], "x>=1"),
        (["simulate", "--tamper", "nonsense", "--out", "x"], "nonsense"),
        (["simulate", "--format", "zip", "--out", "{tmp}/z"], "unknown output formats"),
    ],
)
def test_usage_errors_exit_2_with_a_clear_message(args: list[str], message: str, tmp_path: Path) -> None:
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert message in result.output


def test_bad_trust_file_exits_2(tmp_path: Path) -> None:
    out = tmp_path / "e"
    CliRunner().invoke(main, ["simulate", "--voters", "60", "--districts", "1", "--out", str(out)])
    bad = tmp_path / "trust.toml"
    bad.write_text('[authorities]\nelection = "not a cid"\n')
    result = CliRunner().invoke(main, ["validate", str(out / "records"), "--trust", str(bad)])
    assert result.exit_code == 2
    assert "founding-record CID" in result.output


def test_simulate_refuses_a_non_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    result = CliRunner().invoke(main, ["simulate", "--voters", "10", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "not empty" in result.output


def test_garbage_car_exits_2_not_a_traceback(tmp_path: Path) -> None:
    bogus = tmp_path / "x.car"
    bogus.write_bytes(b"\x05hello world")
    result = CliRunner().invoke(main, ["validate", str(bogus)])
    assert result.exit_code == 2 and "not a readable CARv1 file" in result.output


def test_malformed_records_become_problems_and_the_run_goes_on(tmp_path: Path) -> None:
    lines = [
        b'{"v":1.5}',
        b"not json",
        b'{"v":1,"type":"nope","body":{},"signatures":[],"timestamps":[]}',
        b"[]",
    ]
    (tmp_path / "bad.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    result = CliRunner().invoke(main, ["validate", str(tmp_path / "bad.ndjson"), "--json"])
    assert result.exit_code == 1
    summary = json.loads(result.output)
    assert summary["failures"] == {"REC-SCHEMA": 4}
    assert all("bad.ndjson@" in p["location"] for p in summary["problems"])


def test_module_entry_point_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "auditor.cli", "--version"], capture_output=True, text=True, check=True
    )
    assert "vtaudit" in out.stdout


def test_fixtures_are_current() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "fixtures" / "build.py"), "--check"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
