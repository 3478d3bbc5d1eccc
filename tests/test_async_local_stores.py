"""Store I/O of a *local* (not remote) store under asyncio."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import PurePosixPath
from typing import Any, ClassVar

import numpy as np
import sqlalchemy as sa
from helpers.aio import Heartbeat
from sqlalchemy.ext.asyncio import create_async_engine

import sa_djblob as djb

ASYNC = {
    "sqlite": "sqlite+aiosqlite",
    "mysql": "mysql+asyncmy",
    "postgresql": "postgresql+psycopg_async",
}


class SlowLocalStore(djb.MemoryStore):
    """A local store (is_remote False, like a file store on a slow NFS mount)."""

    protocol = "slow-local-memory"
    delay = 0.3
    loop_thread_calls: ClassVar[list[str]] = []

    def _slow(self, what: str) -> None:
        try:
            asyncio.get_running_loop()
            SlowLocalStore.loop_thread_calls.append(what)
        except RuntimeError:
            pass
        time.sleep(SlowLocalStore.delay)

    def get(self, path: PurePosixPath) -> bytes:
        self._slow("get")
        return super().get(path)


def test_local_store_reads_leave_the_event_loop_free(database: Any) -> None:
    djb.config["stores"] = {
        "slow": {"protocol": "slow-local-memory", "location": "sl-" + uuid.uuid4().hex[:8]}
    }
    SlowLocalStore.loop_thread_calls = []
    md = sa.MetaData()
    t = sa.Table(
        "item",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("b", djb.Blob(store="slow")),
    )

    async def scenario() -> float:
        engine = create_async_engine(database.url.set(drivername=ASYNC[database.backend]))
        djb.install(engine)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(md.create_all)
                await conn.execute(sa.insert(t), [{"id": i, "b": np.full(4, i)} for i in range(3)])
            async with Heartbeat() as beat, engine.connect() as conn:
                rows = (await conn.execute(sa.select(t).order_by(t.c.id))).all()
            assert [int(r.b[0]) for r in rows] == [0, 1, 2]
            return beat.gap
        finally:
            djb.uninstall(engine)
            await engine.dispose()

    gap = asyncio.run(scenario())
    assert SlowLocalStore.loop_thread_calls == [], SlowLocalStore.loop_thread_calls
    assert gap < 0.25, gap
