"""The bounded thread pool that runs store requests concurrently.

Under SQLAlchemy's asyncio layer (``AsyncSession``, ``AsyncConnection``) sa_djblob's
write and read paths run as sync code inside SQLAlchemy's greenlet, on the event
loop's thread. There :func:`run_all` and :func:`call` hand the work to the pool and
wait for it with SQLAlchemy's ``await_only``: the event loop keeps serving other tasks
while store requests, packing and hashing run. The rule inside the greenlet is
simple: everything goes to the pool (a thread hand-off costs tens of microseconds, a
database round trip through an async driver more); ``serial=True`` then only means
"one item after the other, in one worker thread". Plain sync code runs as before.

If the awaiting task is cancelled, no further item starts (a chunk checks before each
of its items), the calls already running (the requests on the wire) are awaited, and
``CancelledError`` propagates; SQLAlchemy rolls the connection back. That wait is not
cut short by a second ``cancel()``: nothing a task started runs on after it ended, so
no upload of a cancelled statement can land after a later statement stored, and
committed, the same object. Payloads already uploaded stay in the store as orphans,
which the protocol tolerates (uploads are idempotent, sweeps remove orphans).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from ._config import config

__all__ = ["call", "check_cancelled", "in_async_greenlet", "run_all", "serial_for"]

T = TypeVar("T")
R = TypeVar("R")

#: below this many bytes in all, local store I/O runs in the caller (see ``serial_for``)
PARALLEL_BYTES = 4 << 20

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_size = 0
_local = threading.local()


def _executor() -> ThreadPoolExecutor:
    global _pool, _size
    want = int(config["threads"])
    with _lock:
        if _pool is None or _size != want:
            old = _pool
            _pool, _size = ThreadPoolExecutor(want, thread_name_prefix="sa_djblob"), want
            if old is not None:
                old.shutdown(wait=False)
        return _pool


def _in_worker() -> bool:
    return bool(getattr(_local, "worker", False))


def in_async_greenlet() -> bool:
    """Whether the caller runs inside SQLAlchemy's asyncio greenlet (``await_only`` works).

    SQLAlchemy has no public predicate for this. Later 2.0 releases (2.0.58 checked)
    and 2.1 have ``sqlalchemy.util.concurrency.in_greenlet()`` (it tests the
    ``__sqlalchemy_greenlet_provider__`` marker of its greenlet class); SQLAlchemy
    2.0.0 has neither, only its ``_AsyncIoGreenlet`` class. All of that knowledge lives here;
    ``tests/test_async.py::test_in_async_greenlet_detection`` fails loudly if SQLAlchemy
    changes it.
    """
    try:
        import greenlet  # type: ignore[import-untyped]
    except ImportError:  # no greenlet: no SQLAlchemy asyncio either
        return False
    current = greenlet.getcurrent()
    if current.parent is None:  # a thread's main greenlet: the plain sync case, fast
        return False
    try:
        from sqlalchemy.util.concurrency import in_greenlet
    except ImportError:  # SQLAlchemy 2.0.0 - 2.0.x without it
        return type(current).__name__ == "_AsyncIoGreenlet"
    return bool(in_greenlet())


def _await_only() -> Callable[[Any], Any]:
    """SQLAlchemy's public ``await_`` (2.1+) or ``await_only`` (2.0; deprecated in 2.2)."""
    import sqlalchemy.util as sa_util

    fn = getattr(sa_util, "await_", None) or sa_util.await_only
    return fn


class _Stopped(Exception):
    """A chunk's remaining items were not run: its caller was cancelled."""


def check_cancelled() -> None:
    """Give up if the caller this pool thread works for was cancelled. Long loops of
    local work (hashing a large file) call it between chunks; elsewhere it does nothing."""
    stop: threading.Event | None = getattr(_local, "stop", None)
    if stop is not None and stop.is_set():
        raise _Stopped


def _each(fn: Callable[[T], R], items: list[T], stop: threading.Event | None) -> list[R]:
    results = []
    for x in items:
        if stop is not None and stop.is_set():
            raise _Stopped
        results.append(fn(x))
    return results


def _run_chunk(fn: Callable[[T], R], chunk: list[T], stop: threading.Event) -> list[R]:
    _local.worker = True
    _local.stop = stop  # calls nested in this chunk's items stop with it
    try:
        return _each(fn, chunk, stop)
    finally:
        _local.stop = None


def _run_one(fn: Callable[..., R], stop: threading.Event, *args: Any) -> R:
    if stop.is_set():
        raise _Stopped
    _local.worker = True
    _local.stop = stop
    try:
        return fn(*args)
    finally:
        _local.stop = None


def _submit(pool: ThreadPoolExecutor, fn: Callable[..., R], *args: Any) -> Future[R]:
    # The worker sees the caller's context variables.
    return pool.submit(contextvars.copy_context().run, fn, *args)


def _retrieve(f: asyncio.Future[Any]) -> None:
    # the outcome is read from the concurrent future; mark the asyncio one's as seen
    if not f.cancelled():
        f.exception()


async def _wait(futures: list[Future[Any]]) -> None:
    wrapped = [asyncio.wrap_future(f) for f in futures]
    for w in wrapped:
        w.add_done_callback(_retrieve)
    await asyncio.wait(wrapped)


def _wait_in_greenlet(futures: list[Future[Any]], stop: threading.Event) -> None:
    """Wait for *futures* with ``await_only``; on cancellation, start nothing more (set
    *stop*, cancel what has not started), wait for what runs, then let
    ``CancelledError`` propagate."""
    await_only = _await_only()
    try:
        await_only(_wait(futures))
    except BaseException:
        stop.set()
        running = [f for f in futures if not f.cancel()]
        # Nothing may keep running behind the caller, however often it is cancelled: a
        # further cancel() during this wait is absorbed (the first one is on its way).
        while running:
            with contextlib.suppress(asyncio.CancelledError):
                await_only(_wait(running))
            running = [f for f in running if not f.done()]
        raise


def _collect(futures: list[Future[list[R]]]) -> list[R]:
    results: list[R] = []
    error: BaseException | None = None
    for fut in futures:
        try:
            results.extend(fut.result())
        except BaseException as exc:  # collected; the first one is raised below
            if error is None:
                error = exc
    if error is not None:
        raise error
    return results


def serial_for(remote: bool, nbytes: int) -> bool:
    """Whether store requests moving *nbytes* in all are best run one after another in the
    caller: local stores answer in microseconds, so threads only pay off for large payloads
    (a thread hand-off per small file tripled the time of reads and verify)."""
    return not remote and nbytes < PARALLEL_BYTES


def run_all(fn: Callable[[T], R], items: Iterable[T], *, serial: bool = False) -> list[R]:
    """``[fn(x) for x in items]``, run concurrently on the bounded pool.

    Items are handed out in chunks (about two per thread) so that many small calls do
    not pay a thread hand-off each. The first exception is raised after every chunk has
    finished, so nothing is left running behind the caller. In sync code,
    ``serial=True``, a single item, or a call from inside a worker runs in the calling
    thread. Inside SQLAlchemy's asyncio greenlet every call runs on the pool and the
    event loop is free meanwhile (``serial=True``: one worker, one item at a time).
    """
    todo = list(items)
    if not todo or _in_worker():
        return _each(fn, todo, getattr(_local, "stop", None))
    in_greenlet = in_async_greenlet()
    if not in_greenlet and (serial or len(todo) <= 1):
        return [fn(x) for x in todo]
    pool = _executor()
    one_chunk = serial or len(todo) <= 1
    size = len(todo) if one_chunk else -(-len(todo) // min(len(todo), 2 * _size))
    stop = threading.Event()
    futures = [
        _submit(pool, _run_chunk, fn, todo[i : i + size], stop) for i in range(0, len(todo), size)
    ]
    if in_greenlet:
        _wait_in_greenlet(futures, stop)
    return _collect(futures)


def call(fn: Callable[..., R], *args: Any) -> R:
    """``fn(*args)``: one blocking call (a store request). Inside SQLAlchemy's asyncio
    greenlet it runs on the pool while the event loop serves other tasks; elsewhere it
    runs in the calling thread."""
    if _in_worker() or not in_async_greenlet():
        return fn(*args)
    stop = threading.Event()
    future: Future[R] = _submit(_executor(), _run_one, fn, stop, *args)
    _wait_in_greenlet([future], stop)
    return future.result()
