"""Where the tests find the shared spec and its vectors.

``VTAUDIT_SPEC_DIR`` if set; else the spec beside the project (``/work/main/tests`` ->
``/work/shared/spec``); else, for a clone made elsewhere (``git clone /work/main
/tmp/x``), the spec beside the checkout it was cloned from."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]


def _cloned_from(project: Path) -> Path | None:
    """The local checkout ``project`` was cloned from (its ``origin``), if it is a folder."""
    try:
        url = subprocess.run(
            ["git", "-C", str(project), "config", "--get", "remote.origin.url"],
            capture_output=True, text=True, timeout=10, check=False,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    url = url.removeprefix("file://")
    if not url or "://" in url or not Path(url).is_dir():
        return None
    return Path(url).resolve()


def _spec_dir() -> Path:
    named = os.environ.get("VTAUDIT_SPEC_DIR")
    if named:
        return Path(named)
    beside = PROJECT.parent / "shared" / "spec"
    if (beside / "evidence-format.md").is_file():
        return beside
    origin = _cloned_from(PROJECT)
    if origin is not None and (origin.parent / "shared" / "spec" / "evidence-format.md").is_file():
        return origin.parent / "shared" / "spec"
    return beside


SPEC_DIR = _spec_dir()
SPEC_TEXT = SPEC_DIR / "evidence-format.md"
VECTORS_PATH = SPEC_DIR / "vectors" / "vectors.json"
RFC3161_VECTORS = SPEC_DIR / "vectors" / "rfc3161"


def missing_spec_message() -> str | None:
    """Why the tests cannot run, or None if the spec and its vectors are there."""
    if VECTORS_PATH.is_file() and SPEC_TEXT.is_file():
        return None
    return (
        f"the shared spec was not found at {SPEC_DIR} (the tests read its vectors, "
        f"{VECTORS_PATH.relative_to(SPEC_DIR)}, and its check table): place this checkout beside "
        "the spec's `shared/` folder, or set VTAUDIT_SPEC_DIR to the folder that holds "
        "evidence-format.md and vectors/"
    )
