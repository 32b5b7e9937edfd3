"""Test helpers: load a simulated election's records into memory, grouped by type."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from auditor.model.envelope import Envelope, parse_envelope
from auditor.sources import iter_source


def load(path: Path) -> dict[str, list[Envelope]]:
    """Every parseable record under ``path`` (dir, CAR or NDJSON) by type; CID-checked."""
    by_type: dict[str, list[Envelope]] = defaultdict(list)
    seen: set[str] = set()
    for raw in iter_source(path):
        try:
            env = parse_envelope(raw.raw, cid=raw.claimed_cid)
        except Exception:
            continue
        if env.cid not in seen:
            seen.add(env.cid)
            by_type[env.type].append(env)
    return by_type
