"""The tests find the shared spec beside the checkout, or beside the one it was cloned from."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests import specdir


def _git(*args: str) -> None:
    subprocess.run(["git", *args], check=True, capture_output=True)


def test_a_clone_made_elsewhere_finds_the_spec_beside_its_origin(tmp_path: Path) -> None:
    origin = tmp_path / "work" / "main"
    (tmp_path / "work" / "shared" / "spec").mkdir(parents=True)
    origin.mkdir()
    _git("init", "-q", str(origin))
    _git(
        "-C",
        str(origin),
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@t",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "x",
    )
    clone = tmp_path / "elsewhere" / "x"
    _git("clone", "-q", str(origin), str(clone))
    assert specdir._cloned_from(clone) == origin.resolve()
    # a remote that is no folder of this machine is not looked beside
    _git("-C", str(clone), "remote", "set-url", "origin", "https://example.org/vtaudit.git")
    assert specdir._cloned_from(clone) is None
    assert specdir._cloned_from(tmp_path / "not-a-checkout") is None


def test_the_spec_is_found_from_this_checkout() -> None:
    assert (specdir.SPEC_DIR / "evidence-format.md").is_file()
    assert specdir.missing_spec_message() is None
