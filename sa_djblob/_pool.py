"""The bounded thread pool that runs store requests concurrently."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from ._config import config

__all__ = ["run_all"]

T = TypeVar("T")
R = TypeVar("R")

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


def _run_chunk(fn: Callable[[T], R], chunk: list[T]) -> list[R]:
    _local.worker = True
    return [fn(x) for x in chunk]


def run_all(fn: Callable[[T], R], items: Iterable[T], *, serial: bool = False) -> list[R]:
    """``[fn(x) for x in items]``, run concurrently on the bounded pool.

    Items are handed out in chunks (about two per thread) so that many small calls do
    not pay a thread hand-off each. The first exception is raised after every chunk has
    finished, so nothing is left running behind the caller. ``serial=True``, a single
    item, or a call from inside a worker runs in the calling thread.
    """
    todo = list(items)
    if serial or len(todo) <= 1 or _in_worker():
        return [fn(x) for x in todo]
    pool = _executor()
    n_chunks = min(len(todo), 2 * _size)
    size = -(-len(todo) // n_chunks)
    futures = [pool.submit(_run_chunk, fn, todo[i : i + size]) for i in range(0, len(todo), size)]
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


def call(fn: Callable[..., R], *args: object) -> R:
    """``fn(*args)``: one blocking store request of the write or read path."""
    return fn(*args)
