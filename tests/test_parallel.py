"""bounded_map keeps results in order and reads only a window ahead."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

from auditor.parallel import bounded_map


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
