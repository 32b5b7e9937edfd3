"""Shared fixtures: the spec's test vectors and one small simulated election per session."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from auditor.sim.election import SimConfig, simulate
from tests.specdir import VECTORS_PATH, missing_spec_message


def pytest_configure(config: pytest.Config) -> None:
    """Stop at once, saying what to do, if the shared spec cannot be found."""
    message = missing_spec_message()
    if message is not None:
        raise pytest.UsageError(message)


# The machine is shared; keep property tests modest and free of wall-clock deadlines.
settings.register_profile(
    "vtaudit", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("vtaudit")


@pytest.fixture(scope="session", autouse=True)
def _cache_key_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """`vtaudit verify` and `audit` keep a per-user cache key in $XDG_CACHE_HOME/vtaudit:
    the tests' goes to a temporary folder, never the tester's home."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
        yield


def load_vectors() -> dict[str, Any]:
    """The shared test vectors (also usable at import time, for parametrize)."""
    return json.loads(VECTORS_PATH.read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def vectors() -> dict[str, Any]:
    return load_vectors()


@pytest.fixture(scope="session")
def sim_election(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small, untampered simulated election; ``records/<type>/<cid>.json`` are canonical."""
    out = tmp_path_factory.mktemp("election")
    simulate(SimConfig(voters=120, seed=5, workers=1), out)
    return out


TAMPER_VOTERS, TAMPER_SEED = 240, 3


def _simulate_once(root: Path, tamper: str | None) -> Path:
    out = root / (tamper or "clean")
    if not out.exists():
        simulate(SimConfig(voters=TAMPER_VOTERS, seed=TAMPER_SEED, tamper=tamper, workers=1), out)
    return out


@pytest.fixture(scope="session")
def sims(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str | None], Path]:
    """The election of each tampering (None: clean), simulated once per test session and
    shared by the simulator's oracles and the verification engine's tamper matrix."""
    root = tmp_path_factory.mktemp("sims")
    return lambda tamper: _simulate_once(root, tamper)


@pytest.fixture(scope="session")
def clean(sims: Callable[[str | None], Path]) -> Path:
    return sims(None)
