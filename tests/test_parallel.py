"""bounded_map keeps results in order and reads only a window ahead; LocalRunner keeps the
order and runs each task's init where its batches run."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

from auditor.parallel import LocalRunner, Task, bounded_map


def test_in_order_and_lazy() -> None:
    consumed = []

    def source() -> Iterator[int]:
        for i in range(100):
            consumed.append(i)
            yield i

    with ThreadPoolExecutor(2) as pool:
        results = bounded_map(pool, lambda x: x * x, source(), window=4)
        first = next(results)
        assert first == 0 and len(consumed) <= 5  # read ahead at most the window
        assert [first, *results] == [i * i for i in range(100)]


_state: list[int] = []


def _init(factor: int) -> None:
    _state.append(factor)


def _times(batch: list[int]) -> list[int]:
    return [x * _state[-1] for x in batch]


def test_local_runner_keeps_the_order_and_initialises_where_the_work_runs() -> None:
    batches = [list(range(i, i + 3)) for i in range(0, 60, 3)]
    expected = [[7 * x for x in batch] for batch in batches]
    task = Task("toy", _times, _init, (7,))
    _state.clear()
    assert list(LocalRunner(2).map(task, batches)) == expected  # worker processes
    assert _state == []  # initialised there, not here
    assert list(LocalRunner(2).map(task, batches, small=True)) == expected  # this process alone
    assert _state == [7]
    threads = Task("toy", _times, _init, (7,), threads=True)
    assert list(LocalRunner(2).map(threads, batches)) == expected  # threads share this process
    assert _state == [7, 7]
    assert LocalRunner(2).describe(threads=True) == "2 threads"
    assert LocalRunner(2).describe(small=True) == "1 processes"


def test_no_gc_turns_the_collector_off_and_back_as_it_was() -> None:
    import gc

    import pytest

    from auditor.parallel import no_gc

    assert gc.isenabled()
    with no_gc():
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with no_gc():
            assert not gc.isenabled()
        assert not gc.isenabled()  # it was off: it stays off
    finally:
        gc.enable()
    with pytest.raises(ValueError), no_gc():
        raise ValueError
    assert gc.isenabled()


def _pool_after_reuse() -> str:
    import pyarrow as pa

    from auditor.parallel import reuse_freed_memory

    reuse_freed_memory()
    return str(pa.default_memory_pool().backend_name)


def test_harvest_workers_allocate_from_the_c_heap() -> None:
    """reuse_freed_memory (a harvest worker's initializer) switches Arrow to the system
    allocator in the worker only: the calling process keeps its own."""
    from concurrent.futures import ProcessPoolExecutor

    import pyarrow as pa

    before = pa.default_memory_pool().backend_name
    with ProcessPoolExecutor(max_workers=1) as pool:
        assert pool.submit(_pool_after_reuse).result() == "system"
    assert pa.default_memory_pool().backend_name == before
