"""Where the tests find the shared spec and its vectors.

The spec sits beside the project (``/work/main/tests`` -> ``/work/shared/spec``); a
checkout elsewhere names it with ``VTAUDIT_SPEC_DIR``."""

from __future__ import annotations

import os
from pathlib import Path

SPEC_DIR = Path(os.environ.get("VTAUDIT_SPEC_DIR") or Path(__file__).resolve().parents[2] / "shared" / "spec")
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
