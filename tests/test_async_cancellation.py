"""Cancelling an asyncio task that writes external values: the cancellation takes effect
at once (after at most the store requests already on the wire), nothing the task started
runs on after it ended, however often it is cancelled, and no upload of a cancelled
statement overwrites what a later statement committed."""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from pathlib import Path, PurePosixPath
from typing import ClassVar

import numpy as np
import pytest
import sqlalchemy as sa
from conftest import Database
from helpers.aio import async_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

import sa_djblob as djb
from sa_djblob._fetch import filepath_object

DELAY = 0.3  # one upload


class SlowUploads(djb.MemoryStore):
    """A local store whose uploads take DELAY seconds each (blocking, like a slow disk or
    a network mount); it counts the uploads started and those in flight. Uploads of
    bytes starting with ``b"fast"`` take no time."""

    protocol = "slow-upload-memory"
    lock = threading.Lock()
    #: the running test's store location: only its uploads are counted
    location = ""
    started: ClassVar[list[str]] = []
    in_flight = 0

    def put(self, path: PurePosixPath, data: bytes | memoryview) -> None:
        if bytes(data[:4]) == b"fast" or not str(path).startswith(SlowUploads.location):
            super().put(path, data)
            return
        with SlowUploads.lock:
            SlowUploads.started.append(str(path))
            SlowUploads.in_flight += 1
        try:
            time.sleep(DELAY)
            super().put(path, data)
        finally:
            with SlowUploads.lock:
                SlowUploads.in_flight -= 1


class SlowRemoteUploads(SlowUploads):
    """The same, as a remote store: its uploads run concurrently on the thread pool."""

    protocol = "slow-upload-remote-memory"

    @property
    def is_remote(self) -> bool:
        return True


@pytest.fixture
def location() -> str:
    """A fresh store location; the uploads into it are counted."""
    SlowUploads.location = "su-" + uuid.uuid4().hex[:8] + "/"
    SlowUploads.started = []
    SlowUploads.in_flight = 0
    return SlowUploads.location.rstrip("/")


def _engine(database: Database) -> AsyncEngine:
    engine = create_async_engine(async_url(database))
    djb.install(engine)
    return engine


async def _until_uploading() -> None:
    deadline = time.monotonic() + 10
    while not SlowUploads.started:
        assert time.monotonic() < deadline, "no upload started"
        await asyncio.sleep(0.005)


async def _cancel(task: asyncio.Task[None], times: int) -> float:
    """Cancel *task* (again and again while it winds down); the seconds until it ended."""
    t0 = time.perf_counter()
    for i in range(times):
        if i:
            await asyncio.sleep(0.02)  # the earlier cancel() has reached the task
        task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return time.perf_counter() - t0


def _blob_table() -> tuple[sa.MetaData, sa.Table]:
    md = sa.MetaData()
    t = sa.Table(
        "item",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("b", djb.Blob(store="slow"), nullable=True),
    )
    return md, t


def test_cancel_takes_effect_after_the_upload_on_the_wire_not_after_every_upload(
    database: Database, location: str
) -> None:
    """12 small uploads to a local store, one after the other: a cancel() waits for the
    one in flight, and starts no other."""
    djb.config["stores"] = {"slow": {"protocol": "slow-upload-memory", "location": location}}
    md, t = _blob_table()

    async def scenario() -> None:
        engine = _engine(database)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(md.create_all)

            async def insert() -> None:
                async with engine.begin() as conn:
                    await conn.execute(
                        sa.insert(t), [{"id": i, "b": np.full(3, i)} for i in range(12)]
                    )

            task = asyncio.create_task(insert())
            await _until_uploading()
            took = await _cancel(task, 1)
            # Waiting for all twelve would take 12 * DELAY; the count below is the proof,
            # the clock only a loose second witness (a loaded CI machine stalls threads).
            assert took < 4 * DELAY, took
            assert SlowUploads.in_flight == 0
            assert len(SlowUploads.started) == 1, SlowUploads.started
            async with engine.connect() as conn:
                assert await conn.scalar(sa.select(sa.func.count()).select_from(t)) == 0
        finally:
            djb.uninstall(engine)
            await engine.dispose()

    asyncio.run(scenario())


def test_a_second_cancel_neither_abandons_running_uploads_nor_starts_new_ones(
    database: Database, location: str
) -> None:
    djb.config["stores"] = {"slow": {"protocol": "slow-upload-remote-memory", "location": location}}
    djb.config["threads"] = 2
    md, t = _blob_table()

    async def scenario() -> None:
        engine = _engine(database)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(md.create_all)

            async def insert() -> None:
                async with engine.begin() as conn:
                    await conn.execute(
                        sa.insert(t), [{"id": i, "b": np.full(3, i)} for i in range(12)]
                    )

            task = asyncio.create_task(insert())
            await _until_uploading()
            took = await _cancel(task, 2)
            assert SlowUploads.in_flight == 0  # nothing runs on behind the ended task
            started = len(SlowUploads.started)
            assert started <= 2, SlowUploads.started  # the two threads' requests on the wire
            await asyncio.sleep(3 * DELAY)
            assert len(SlowUploads.started) == started  # and nothing starts later
            assert took < 4 * DELAY, took  # not 12 * DELAY (see above)
        finally:
            djb.uninstall(engine)
            await engine.dispose()

    asyncio.run(scenario())


def test_a_cancelled_filepath_write_never_overwrites_a_later_committed_version(
    database: Database, tmp_path: Path, location: str
) -> None:
    """The cancelled task's uploads of version 1 must not land after a later transaction
    placed and committed version 2 of the same files."""
    stage = tmp_path / "stage"
    stage.mkdir()
    djb.config["stores"] = {
        "fp": {"protocol": "slow-upload-remote-memory", "location": location, "stage": str(stage)}
    }
    djb.config["threads"] = 2
    md = sa.MetaData()
    t = sa.Table(
        "doc",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("f", djb.Filepath(store="fp"), nullable=True),
    )
    files = [stage / f"f{i:02d}.dat" for i in range(12)]
    for i, f in enumerate(files):
        f.write_bytes(b"slow version 1 of file %d" % i)

    async def scenario() -> None:
        engine = _engine(database)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(md.create_all)

            async def insert() -> None:
                async with engine.begin() as conn:
                    await conn.execute(
                        sa.insert(t), [{"id": i, "f": f} for i, f in enumerate(files)]
                    )

            task = asyncio.create_task(insert())
            await _until_uploading()
            await _cancel(task, 2)
        finally:
            djb.uninstall(engine)
            await engine.dispose()

    asyncio.run(scenario())

    # Right after the cancelled task ended, version 2 of every file is placed and
    # committed, one file per transaction (each uploaded at once, in this thread).
    sync = database.create_engine()
    djb.install(sync)
    try:
        for i, f in reversed(list(enumerate(files))):
            f.write_bytes(b"fast version 2 of file %d" % i)
            with sync.begin() as conn:
                conn.execute(sa.insert(t).values(id=i, f=f))
        time.sleep(4 * DELAY)  # time for anything left behind to land
        store = djb.get_store("fp")
        placed = {
            f.name: store.get(filepath_object(store, f.relative_to(stage).as_posix()))
            for f in files
        }
        assert placed == {f.name: f.read_bytes() for f in files}
        assert djb.externals(sync)["fp"].verify(progress=False).ok
    finally:
        djb.uninstall(sync)
        sync.dispose()


def test_cancel_does_not_wait_for_a_file_still_being_hashed(
    database: Database, tmp_path: Path
) -> None:
    """An attachment that is slow to read (a pipe fed 1 MiB every 50 ms, like a file on
    a slow mount): a cancel() stops its hashing instead of waiting for its end."""
    djb.config["stores"] = {
        "local": {"protocol": "memory", "location": "mem-" + uuid.uuid4().hex[:8]}
    }
    md = sa.MetaData()
    t = sa.Table(
        "att",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("a", djb.Attach(store="local"), nullable=True),
    )
    pipe = tmp_path / "slow.bin"
    os.mkfifo(pipe)
    fed: list[int] = []

    def feed() -> None:
        try:
            with open(pipe, "wb") as f:
                for _ in range(60):  # 3 s in all
                    f.write(b"x" * (1 << 20))
                    f.flush()
                    fed.append(1)
                    time.sleep(0.05)
        except BrokenPipeError:  # the reader stopped
            pass

    async def scenario() -> None:
        engine = _engine(database)
        feeder = threading.Thread(target=feed, daemon=True)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(md.create_all)

            async def insert() -> None:
                async with engine.begin() as conn:
                    await conn.execute(sa.insert(t), [{"id": 1, "a": pipe}])

            feeder.start()
            task = asyncio.create_task(insert())
            while len(fed) < 3:
                await asyncio.sleep(0.005)
            took = await _cancel(task, 1)
            # The feed runs 3 s; a cancel that waited for the end of the stream would
            # take that long. 1 s leaves a loaded machine room.
            assert took < 1.0, took
        finally:
            djb.uninstall(engine)
            await engine.dispose()
            feeder.join(5)

    asyncio.run(scenario())
