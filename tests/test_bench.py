"""The cryptographic floor of bench/run.py does the work it claims (issue 8, D46)."""

from __future__ import annotations

import importlib.util
import sys
import time
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
    assert bench._floor_part((40, 40, bench.DISTINCT_SIGNATURES)) > 0
    assert bench._floor_part((40, 40, 1)) > 0
    assert bench._former_floor_part((40, 40, 1)) > 0


def test_the_floor_verifies_distinct_signatures_by_distinct_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ed25519 verification is variable-time: one signature verified again and again is
    no fair sample of an election's (D52)."""
    from nacl._sodium import lib

    bench = _bench()
    inputs = bench._floor_inputs()
    keys = {public for public, _ in inputs.signatures}
    messages = {signed[64:] for _, signed in inputs.signatures}
    assert len(keys) == len(messages) == len(inputs.signatures) == bench.DISTINCT_SIGNATURES
    verified: list[bytes] = []

    class Recording:  # libsodium that notes each key it verifies with
        def __getattr__(self, name: str) -> object:
            if name == "crypto_sign_open":

                def sign_open(out: object, length: object, signed: bytes, n: int, public: bytes) -> int:
                    verified.append(public)
                    return int(lib.crypto_sign_open(out, length, signed, n, public))

                return sign_open
            return getattr(lib, name)

    monkeypatch.setattr("nacl._sodium.lib", Recording())
    bench._floor_part((2 * bench.DISTINCT_SIGNATURES, 0, bench.DISTINCT_SIGNATURES))
    assert len(set(verified)) == bench.DISTINCT_SIGNATURES and len(verified) == 2 * bench.DISTINCT_SIGNATURES
    verified.clear()
    bench._floor_part((10, 0, 1))  # as in sessions 7 to 9
    assert len(verified) == 10 and set(verified) == {inputs.signatures[0][0]}


def test_the_sampler_reads_the_kernels_peak_of_each_descendant() -> None:
    import subprocess

    bench = _bench()
    # a child that touches 64 MB, frees it, and waits: its peak stays, its RSS falls
    child = subprocess.Popen(
        [sys.executable, "-c", "b = bytearray(64 << 20); b[::4096] = b'x' * len(b[::4096]); del b; "
         "import sys; sys.stdout.write('ok\\n'); sys.stdout.flush(); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert child.stdout is not None and child.stdout.readline() == b"ok\n"
        import psutil

        high = bench._high_water(psutil.Process(child.pid))
        assert high >= 64 << 20
        assert high > psutil.Process(child.pid).memory_info().rss
    finally:
        child.kill()
        child.wait()
    assert bench._high_water(psutil.Process()) > 0


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
        bench._floor_part((0, 3, 1))


def test_a_fraction_of_the_floor_is_scaled_up_and_its_start_is_paid_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bench = _bench()

    class FakePool:  # the spawned pool's work, in this process: each part's loop takes 2 s
        def __init__(self, workers: int) -> None:
            self.parts: list[tuple[int, int, int]] = []

        def __enter__(self) -> FakePool:
            return self

        def __exit__(self, *_: object) -> None:
            pass

        def map(self, f: object, parts: list[tuple[int, int, int]]) -> list[float]:
            self.parts = parts
            seen.append(parts)
            return [2.0 for _ in parts]

    class Context:
        Pool = FakePool

    seen: list[list[tuple[int, int, int]]] = []
    monkeypatch.setattr(bench.multiprocessing, "get_context", lambda _: Context())
    # a tenth of the operations is timed; the loops' 2 s count ten times, the rest once
    assert bench.floor(900, 200, 100, 2, fraction=0.1) >= 2.0 * 9
    assert seen[-1] == [(50, 10, bench.DISTINCT_SIGNATURES)] * 2
    assert bench.floor(900, 200, 100, 2) < 1.0  # all of them: the wall time, unscaled
    assert seen[-1] == [(500, 100, bench.DISTINCT_SIGNATURES)] * 2
    bench.floor(900, 200, 100, 2, distinct=1)
    assert seen[-1] == [(500, 100, 1)] * 2


def test_the_sampler_sums_the_cpu_of_its_descendants(monkeypatch: pytest.MonkeyPatch) -> None:
    """The verify's workers' CPU seconds: each descendant's, as last read, summed."""
    import subprocess

    bench = _bench()
    monkeypatch.setattr(bench._Descendants, "PERIOD", 0.05)
    sampler = bench._Descendants()
    sampler.start()
    # a child that spins for 0.6 s of CPU, says so, and waits (alive at the next reading)
    child = subprocess.Popen(
        [sys.executable, "-c", "import time, sys\nt = time.process_time()\n"
         "while time.process_time() - t < 0.6: pass\n"
         "sys.stdout.write('ok\\n'); sys.stdout.flush(); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert child.stdout is not None and child.stdout.readline() == b"ok\n"
        deadline = time.monotonic() + 10  # a reading after the spin (a loaded machine is slow)
        while sampler.cpu.get(child.pid, 0) < 0.5 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert 0.5 <= sampler.cpu[child.pid] < 5
        assert sum(sampler.cpu.values()) >= 0.5
    finally:
        sampler.done.set()
        child.kill()
        child.wait()


def test_the_host_probe_times_a_fixed_share_of_the_floor_and_warns_of_drift(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bench = _bench()
    asked: list[tuple[object, ...]] = []
    monkeypatch.setattr(bench, "floor", lambda *args, **kwargs: asked.append((*args, kwargs)) or 3.0)
    assert bench.host_probe(2) == 3.0
    assert asked == [(bench.PROBE_OPERATIONS, bench.PROBE_OPERATIONS, 0, 2, {})]  # the same work each time
    kept, lines = bench.probe_report(3.0, 3.06)
    assert kept == {"before": 3.0, "after": 3.06, "drift": 0.02} and len(lines) == 1
    kept, lines = bench.probe_report(3.0, 3.3)
    assert kept["drift"] == 0.1 and "moved by +10.0%" in lines[1]
    assert "moved by -10.0%" in bench.probe_report(3.0, 2.7)[1][1]


def _parts() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_parts", ROOT / "bench" / "parts.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_parts_bench_times_both_ways_and_finds_them_equal(
    clean: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from auditor.harvest import store_of
    from auditor.verify import recount

    parts = _parts()
    store = store_of(clean / "evidence.car", tmp_path)
    for part in ("tally", "recount"):
        monkeypatch.setattr(sys, "argv", ["parts.py", part, str(store), "--trust", str(clean / "trust.toml")])
        parts.main()
    assert recount.check_tally is parts._CHECK_TALLY  # the hook is taken off again
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("template ")]
    assert lines and all(line.endswith("same: True") for line in lines)
    assert "µs a vote (best of 5)" in out
