"""The cryptographic floor of bench/run.py does the work it claims (issue 8, D46)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "bench" / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_run"] = module
    spec.loader.exec_module(module)
    return module


def test_both_floors_run_the_calls_they_time() -> None:
    bench = _bench()
    assert bench._floor_part((40, 40)) > 0
    assert bench._former_floor_part((40, 40)) > 0


def test_the_floor_fails_rather_than_time_failing_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    from nacl._sodium import lib

    bench = _bench()

    class Refusing:  # libsodium whose AEAD refuses every ciphertext
        def __getattr__(self, name: str) -> object:
            if name == "crypto_aead_xchacha20poly1305_ietf_decrypt":
                return lambda *args: -1
            return getattr(lib, name)

    monkeypatch.setattr("nacl._sodium.lib", Refusing())
    with pytest.raises(AssertionError, match="must open"):
        bench._floor_part((0, 3))


def test_a_fraction_of_the_floor_is_scaled_up_and_its_start_is_paid_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bench = _bench()

    class FakePool:  # the spawned pool's work, in this process: each part's loop takes 2 s
        def __init__(self, workers: int) -> None:
            self.parts: list[tuple[int, int]] = []

        def __enter__(self) -> FakePool:
            return self

        def __exit__(self, *_: object) -> None:
            pass

        def map(self, f: object, parts: list[tuple[int, int]]) -> list[float]:
            self.parts = parts
            seen.append(parts)
            return [2.0 for _ in parts]

    class Context:
        Pool = FakePool

    seen: list[list[tuple[int, int]]] = []
    monkeypatch.setattr(bench.multiprocessing, "get_context", lambda _: Context())
    # a tenth of the operations is timed; the loops' 2 s count ten times, the rest once
    assert bench.floor(900, 200, 100, 2, fraction=0.1) >= 2.0 * 9
    assert seen[-1] == [(50, 10), (50, 10)]
    assert bench.floor(900, 200, 100, 2) < 1.0  # all of them: the wall time, unscaled
    assert seen[-1] == [(500, 100), (500, 100)]
