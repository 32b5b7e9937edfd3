"""The per-batch work on a Dask cluster: ``vtaudit verify --cluster tcp://HOST:8786``.

:class:`DaskRunner` is the :class:`~auditor.parallel.Runner` for a Dask scheduler. The
driver (the ``vtaudit`` process) still reads the evidence store and keeps every
finding; what goes to the workers is each batch of rows, as the local pool gets it, and
what comes back is each batch's result, taken in the order the batches were sent:

1. connecting checks that the scheduler answers, has workers, and that every worker
   runs the vtaudit version of the driver (another version could judge differently);
2. a task's per-worker state (``Task.init`` and its arguments) travels as one Dask
   task of its own, on which every batch depends: each worker fetches it once and keeps
   it while the stage runs, and Dask recomputes it if the worker holding it dies;
3. each batch is one task, sent whole (Dask does not walk its rows), at most four per
   worker thread in flight; a batch whose worker dies is run again elsewhere by the
   scheduler (``distributed.scheduler.allowed-failures``, 3 by default);
4. a batch that cannot be done (its workers kept dying, the scheduler went away) stops
   the audit with a :class:`~auditor.errors.ClusterError`: no verdict is ever reached
   with a batch missing. An exception raised by the task's own code is re-raised as is,
   as it would be from a local pool.

The workers need vtaudit installed (the same version), nothing else: no shared file
system, no copy of the evidence.
"""

from __future__ import annotations

import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import CancelledError
from contextlib import suppress
from typing import Any, TypeVar

import dask
from dask.utils import parse_timedelta
from distributed import Client, Future, KilledWorker

import auditor
from auditor.errors import ClusterError
from auditor.parallel import Task

__all__ = ["DaskRunner"]

T = TypeVar("T")
R = TypeVar("R")

IN_FLIGHT_PER_THREAD = 4
# what a cluster that lost work raises on the driver (CommClosedError is an OSError)
LOST = (KilledWorker, CancelledError, OSError, TimeoutError)
START_WORKERS = "start workers with `dask worker {address} --nthreads 1` (one per core)"


class DaskRunner:
    """The workers of the Dask scheduler at ``address`` (``tcp://HOST:8786``, ``tls://…``)."""

    def __init__(self, address: str, *, wait: float | None = None) -> None:
        """Connect, and wait up to ``wait`` seconds for a first worker (by default Dask's
        connect timeout, ``distributed.comm.timeouts.connect``: 30 s unless configured)."""
        self.address = address
        if wait is None:
            wait = parse_timedelta(dask.config.get("distributed.comm.timeouts.connect"), default="s")
        try:
            self.client = Client(address, set_as_default=False)
        except Exception as e:  # OSError (refused, timed out), ValueError (a malformed address)…
            raise ClusterError(
                f"--cluster {address}: no Dask scheduler answers there ({type(e).__name__}: {e}); "
                f"start one with `dask scheduler` and give its address (tcp://HOST:8786), "
                f"or leave --cluster out to work on this machine"
            ) from e
        try:
            self._check_workers(wait)
        except BaseException:
            self.client.close()
            raise

    def _check_workers(self, timeout: float | None) -> None:
        try:
            self.client.wait_for_workers(1, timeout=timeout)
        except (TimeoutError, OSError) as e:
            raise ClusterError(
                f"--cluster {self.address}: the scheduler has no workers after {timeout:g} s; "
                + START_WORKERS.format(address=self.address)
            ) from e
        ours = auditor.__version__
        found = self.client.run(_worker_version, on_error="return")
        wrong = {worker: v for worker, v in found.items() if v != ours}
        if wrong:
            listing = ", ".join(
                f"{worker} ({f'cannot run vtaudit: {v}' if isinstance(v, Exception) else f'vtaudit {v}'})"
                for worker, v in sorted(wrong.items())
            )
            raise ClusterError(
                f"--cluster {self.address}: every worker must run vtaudit {ours}, as this auditor "
                f"does; these do not: {listing}"
            )

    def _threads(self) -> int:
        threads: dict[str, int] = self.client.nthreads()
        return max(1, sum(threads.values()))

    def map(self, task: Task[T, R], batches: Iterable[T], *, small: bool = False) -> Iterator[R]:
        run = uuid.uuid4().hex
        state: Future[Any] | None = None
        if task.init is not None:
            state = self.client.submit(_unseal, _Sealed(task.initargs), key=f"vtaudit-{task.name}-init-{run}")
        window = IN_FLIGHT_PER_THREAD * self._threads()
        pending: deque[Future[Any]] = deque()
        sent = 0
        try:
            for batch in batches:
                pending.append(
                    self.client.submit(
                        _run,
                        auditor.__version__,
                        task.fn,
                        task.init,
                        state.key if state is not None else "",
                        state,
                        _Sealed(batch),
                        key=f"vtaudit-{task.name}-{run}-{sent}",
                    )
                )
                sent += 1
                if len(pending) >= window:
                    yield self._result(task, sent - len(pending), pending.popleft())
            while pending:
                yield self._result(task, sent - len(pending), pending.popleft())
        finally:
            if pending:  # stopped early (an error, the caller gave up): leave no work behind
                with suppress(Exception):  # a cluster already gone has nothing left to cancel
                    self.client.cancel(list(pending))
            pending.clear()
            state = None

    def _result(self, task: Task[Any, R], index: int, future: Future[Any]) -> R:
        try:
            result: R = future.result()
        except LOST as e:
            raise ClusterError(
                f"--cluster {self.address}: batch {index} of the {task.name} stage could not be done "
                f"({type(e).__name__}: {e}); the audit stops without a verdict rather than leave it out"
            ) from e
        return result

    def describe(self, *, threads: bool = False, small: bool = False) -> str:
        return f"{self._threads()} worker threads of the cluster at {self.address}"

    def close(self) -> None:
        self.client.close()


class _Sealed:
    """A batch or a task's init arguments, in a box Dask sends whole (with its own
    serialization, as it sends every task) without walking the rows inside for futures."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def _unseal(sealed: _Sealed) -> Any:
    return sealed.value


# ---------------------------------------------------------------------------- on a worker


def _worker_version() -> str:
    return auditor.__version__


_gate = threading.Condition()
_ready: str | None = None  # the token of the task whose init ran last in this process
_running = 0  # batches of that task running now, in this process's threads


def _run(
    version: str,
    fn: Callable[[Any], Any],
    init: Callable[..., None] | None,
    token: str,
    initargs: tuple[Any, ...] | None,
    sealed: _Sealed,
) -> Any:
    """One batch on a worker, after ``init(*initargs)`` if this process has not run it
    for ``token`` yet. Batches of one task share the threads; a batch of another task
    (another audit on the same cluster) waits for them to end before it re-initialises."""
    global _ready, _running
    if auditor.__version__ != version:
        raise ClusterError(f"this worker runs vtaudit {auditor.__version__}, the auditor {version}")
    batch = sealed.value
    if init is None:
        return fn(batch)
    with _gate:
        while _ready != token and _running:
            _gate.wait()
        if _ready != token:
            _ready = None
            init(*(initargs or ()))
            _ready = token
        _running += 1
    try:
        return fn(batch)
    finally:
        with _gate:
            _running -= 1
            _gate.notify_all()
