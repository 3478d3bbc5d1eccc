"""The bounded thread pool that runs store requests concurrently."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from .config import config

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


def _mark(fn: Callable[[T], R]) -> Callable[[T], R]:
    def run(item: T) -> R:
        _local.worker = True
        return fn(item)

    return run


def run_all(fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """``[fn(x) for x in items]``, run concurrently; the first exception is raised
    after every call has finished (so nothing is left running behind the caller)."""
    todo = list(items)
    if len(todo) <= 1 or _in_worker():
        return [fn(x) for x in todo]
    futures = [_executor().submit(_mark(fn), x) for x in todo]
    results: list[R] = []
    error: BaseException | None = None
    for fut in futures:
        try:
            results.append(fut.result())
        except BaseException as exc:  # collected; the first one is raised below
            if error is None:
                error = exc
    if error is not None:
        raise error
    return results
