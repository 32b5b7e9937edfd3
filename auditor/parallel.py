"""Where the per-batch work runs: a local pool, or a Dask cluster (``--cluster``).

The stages that do the same work for every record (signatures, timestamp tokens, the
recount's decryption) cut it into batches and hand each batch, as a :class:`Task`, to a
:class:`Runner`. A runner maps the task's function over the batches with at most a
window of them in flight and gives the results back **in the order of the batches**, so
the findings do not depend on where or how fast the work ran.

- :class:`LocalRunner` (the default) keeps the work on this machine: threads for work
  that releases the GIL and needs this process's state, worker processes for the rest,
  one process and no pool at all for small inputs or ``workers=1``. Worker processes are
  started by a fork server (:data:`START_METHOD`), never forked from this process: a
  forked worker's RSS would count every page this process holds (at a million voters,
  DuckDB's tables and the signatures' outcomes: ≈ 1.9 GB per worker).
- :class:`auditor.cluster.DaskRunner` sends the batches to the workers of a Dask
  scheduler; :func:`open_runner` picks one.

A task may need per-worker state that is the same for every batch (the recount's
private key and templates, the TSA certificates): ``init(*initargs)`` runs once in each
worker before its first batch, and the arguments travel once per worker, never with
every batch.
"""

from __future__ import annotations

import ctypes
import gc
import multiprocessing
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

__all__ = [
    "START_METHOD",
    "LocalRunner",
    "Runner",
    "Task",
    "bounded_map",
    "no_gc",
    "open_runner",
    "reuse_freed_memory",
]

START_METHOD = "forkserver"
"""How :class:`LocalRunner` starts its worker processes: from a small server process of
its own (started once, with a fresh interpreter), which forks each worker. A worker
holds what it imports and what its task's ``init`` receives, nothing of this process."""

# imported once by the fork server, so that each worker starts with the main module (a
# script runs as ``__mp_main__``: its work must be under ``if __name__ == "__main__"``)
# and the modules its task's functions live in (a missing one is imported by the worker)
PRELOAD = ("__main__", "auditor.verify.context", "auditor.verify.recount")

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Task(Generic[T, R]):
    """A function to map over batches, and what each worker does once before its first batch.

    ``fn``, ``init`` and everything in ``initargs`` must be picklable (functions at module
    level): on a pool or a cluster they run in other processes.
    """

    name: str  # names the stage's tasks on a cluster: signatures, tokens, recount
    fn: Callable[[T], R]
    init: Callable[..., None] | None = None
    initargs: tuple[Any, ...] = ()
    threads: bool = False  # the work releases the GIL: local threads are enough


class Runner(Protocol):
    """Maps a task over batches, in order (``LocalRunner``, ``auditor.cluster.DaskRunner``)."""

    def map(self, task: Task[T, R], batches: Iterable[T], *, small: bool = False) -> Iterator[R]:
        """The results of ``task.fn`` over ``batches``, in order. ``small``: the caller
        judges the input too small to be worth a local pool (a cluster ignores it: the
        user asked for the work to run there)."""
        ...

    def describe(self, *, threads: bool = False, small: bool = False) -> str:
        """Where such a task runs, for a stage's detail ("2 processes", "the cluster at …")."""
        ...

    def close(self) -> None: ...


class LocalRunner:
    """This machine: ``workers`` threads or processes, or the calling thread alone."""

    def __init__(self, workers: int = 2) -> None:
        self.workers = max(1, workers)

    def map(self, task: Task[T, R], batches: Iterable[T], *, small: bool = False) -> Iterator[R]:
        if small or self.workers == 1:
            if task.init is not None:
                task.init(*task.initargs)
            yield from map(task.fn, batches)
            return
        pool: Executor
        if task.threads:
            if task.init is not None:  # threads share this process's state
                task.init(*task.initargs)
            pool = ThreadPoolExecutor(max_workers=self.workers)
        else:
            pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=_worker_context(),
                initializer=task.init,
                initargs=task.initargs,
            )
        with pool:
            yield from bounded_map(pool, task.fn, batches, 4 * self.workers)

    def describe(self, *, threads: bool = False, small: bool = False) -> str:
        workers = 1 if small else self.workers
        return f"{workers} {'threads' if threads else 'processes'}"

    def close(self) -> None:
        pass


def _worker_context() -> multiprocessing.context.BaseContext:
    context = multiprocessing.get_context(START_METHOD)
    context.set_forkserver_preload(list(PRELOAD))  # read when the server starts (once)
    return context


def open_runner(cluster: str | None, workers: int = 2) -> Runner:
    """A Dask runner connected to the scheduler at ``cluster``, or a local one of
    ``workers``. A scheduler that cannot be used is a :class:`~auditor.errors.ClusterError`."""
    if cluster is None:
        return LocalRunner(workers)
    from auditor.cluster import DaskRunner

    return DaskRunner(cluster)


@contextmanager
def no_gc() -> Iterator[None]:
    """The cyclic garbage collector off for a block of work that makes many objects and
    no cycles (parsed JSON, rows): it would otherwise walk them again and again for
    nothing. A fifth of a harvest worker's time. Back as it was after."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_MMAP_THRESHOLD = 32 << 20  # glibc's largest: a 16 MiB chunk's buffers come from the heap
_TRIM_THRESHOLD = 1 << 30
_TOP_PAD = 64 << 20


def reuse_freed_memory() -> None:
    """For a worker process that makes and frees buffers of the same sizes batch after
    batch (a harvest worker: a chunk's bytes, its records, its Arrow columns): freed
    memory is kept for the next batch rather than handed back to the system, which
    would zero each page again when it is touched again. Arrow allocates from the C
    heap (its default, mimalloc, hands pages back on its own), and glibc's heap keeps
    up to 1 GiB of free memory and takes blocks below 32 MiB from the heap rather than
    from mmaps of their own. A harvest worker then faults in less than half the pages
    and spends about a sixth less CPU (decisions.md, D45). Its peak RSS is unchanged:
    what it keeps is what the previous batch used. Without glibc, only Arrow's pool."""
    import pyarrow as pa  # not needed by the other tasks' workers

    pa.set_memory_pool(pa.system_memory_pool())
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        return
    mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
    mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
    mallopt(_M_TOP_PAD, _TOP_PAD)


def bounded_map(pool: Executor, fn: Callable[[T], R], items: Iterable[T], window: int) -> Iterator[R]:
    """``pool.map`` that keeps at most ``window`` tasks in flight, in order.

    ``Executor.map`` submits every item at once, which would read a whole archive into
    memory; this reads ahead only ``window`` items.
    """
    pending: deque[Future[R]] = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()
