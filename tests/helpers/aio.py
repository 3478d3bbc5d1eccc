"""Helpers of the asyncio tests: the async driver URL of a test database, and a heartbeat
task that measures how long the event loop was blocked."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import sqlalchemy as sa

ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    # aiomysql 0.3.2 cannot send bytes with PyMySQL >= 1.2.3 (aio-libs/aiomysql#1080):
    # asyncmy is the MySQL driver here; aiomysql runs where it works (test at the end).
    "mysql": "mysql+asyncmy",
    "postgresql": "postgresql+psycopg_async",
}


def async_url(database: Any, drivername: str | None = None) -> sa.URL:
    """The database fixture's URL with the async driver (the query, e.g. PostgreSQL's
    ``options=-csearch_path=...``, is kept)."""
    url: sa.URL = database.url
    return url.set(drivername=drivername or ASYNC_DRIVERS[database.backend])


class Heartbeat:
    """A task ticking every 5 ms; ``gap`` is the longest time between two ticks."""

    def __init__(self) -> None:
        self.gap = 0.0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        last = time.perf_counter()
        while not self._stop.is_set():
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            self.gap = max(self.gap, now - last)
            last = now

    async def __aenter__(self) -> Heartbeat:
        self._task = asyncio.create_task(self._run())
        await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task
