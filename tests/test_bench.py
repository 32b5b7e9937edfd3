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
