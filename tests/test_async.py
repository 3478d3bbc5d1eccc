"""sa_djblob under asyncio: ``djb.install(async_engine)`` and the types through ``AsyncSession``
on aiosqlite, psycopg's async mode and aiomysql."""

from __future__ import annotations

import asyncio
import datetime
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

import numpy as np
import pytest
import sqlalchemy as sa
from helpers.aio import Heartbeat, async_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

import sa_djblob as djb
from sa_djblob import _pool
from sa_djblob._externals import installed
from sa_djblob._externals.aio import AsyncExternalTable
from sa_djblob._pool import in_async_greenlet

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from examples import models  # noqa: E402

Base, Extracted, Image, ImageFile = models.Base, models.Extracted, models.Image, models.ImageFile

T = TypeVar("T")


def _table(model: type[Any]) -> sa.Table:
    """The Table a model is declared on (typed: ``__table__`` is only a FromClause)."""
    table = model.__table__
    assert isinstance(table, sa.Table)
    return table


def run(factory: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await factory()

    return asyncio.run(main())


@pytest.fixture
def stores(tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, Any]:
    """'shared' on a real S3 endpoint (remote: read through the cache and the prefetch),
    'local' in a folder."""
    server = request.getfixturevalue("s3_server")
    bucket = request.getfixturevalue("s3_bucket")
    djb.config["stores"] = {
        "shared": server.store_spec(bucket),
        "local": {"protocol": "file", "location": str(tmp_path / "local-store")},
    }
    djb.config["cache"] = str(tmp_path / "cache")
    return dict(djb.config["stores"])


@pytest.fixture
def files(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "inputs"
    folder.mkdir()
    out = []
    for i in range(3):
        p = folder / f"file{i}.npy"
        p.write_bytes(f"attachment {i} ".encode() * (100 + i))
        out.append(p)
    return out


async def _create(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)


async def _dispose(engine: AsyncEngine) -> None:
    djb.uninstall(engine)
    await engine.dispose()


def test_orm_roundtrip_through_async_session(
    database: Any, stores: dict[str, Any], files: list[Path], drivername: str | None = None
) -> None:
    arrays = [np.arange(12, dtype=np.float64).reshape(3, 4) * (i + 1) for i in range(3)]

    async def scenario() -> None:
        engine = create_async_engine(async_url(database, drivername))
        djb.install(engine)
        try:
            await _create(engine)
            Session = async_sessionmaker(engine, expire_on_commit=False)
            async with Session() as session, session.begin():
                for i in range(3):
                    session.add(
                        models.Test(
                            id=i,
                            b0=arrays[i],
                            b1=arrays[i] + 0.5,
                            b2={"row": i, "values": arrays[i]},
                            a0=str(files[i]),
                            a1=files[i],
                            a2=str(files[(i + 1) % 3]),
                        )
                    )
            async with Session() as session:
                rows = (
                    await session.scalars(sa.select(models.Test).order_by(models.Test.id))
                ).all()
                assert [r.id for r in rows] == [0, 1, 2]
                for i, r in enumerate(rows):
                    np.testing.assert_array_equal(r.b0, arrays[i])
                    np.testing.assert_array_equal(r.b1, arrays[i] + 0.5)
                    assert r.b2["row"] == i
                    np.testing.assert_array_equal(r.b2["values"], arrays[i])
                    for got, src in (
                        (r.a0, files[i]),
                        (r.a1, files[i]),
                        (r.a2, files[(i + 1) % 3]),
                    ):
                        assert isinstance(got, Path)
                        assert got.name == src.name
                        assert got.read_bytes() == src.read_bytes()
                        assert got.parent == Path(djb.config["download_path"])

            # An attribute update through the ORM goes through the write path too.
            async with Session() as session, session.begin():
                row = await session.get(models.Test, 1)
                assert row is not None
                row.b2 = np.ones(5)
                row.a1 = files[2]
            async with Session() as session:
                row = (
                    await session.scalars(sa.select(models.Test).where(models.Test.id == 1))
                ).one()
                np.testing.assert_array_equal(row.b2, np.ones(5))
                assert row.a1.read_bytes() == files[2].read_bytes()

            # The externals tables know every payload, and the payloads are in the stores.
            async with engine.connect() as conn:
                shared = await conn.scalar(
                    sa.select(sa.func.count()).select_from(Base.metadata.tables["~external_shared"])
                )
                local = await conn.scalar(
                    sa.select(sa.func.count()).select_from(Base.metadata.tables["~external_local"])
                )
            assert shared == 3 + 3  # b1 x3, a1: files 0, 1, 2
            assert local == 3 + 1 + 3  # b2 x3 + the update, a2 x3
            local_store = Path(stores["local"]["location"])
            assert (
                len(
                    [
                        p
                        for p in local_store.rglob("*")
                        if p.is_file() and ".sa_djblob-owner" not in p.parts
                    ]
                )
                == local
            )
        finally:
            await _dispose(engine)

    run(scenario)


def test_core_and_pipeline_through_async_connection(
    database: Any, stores: dict[str, Any], files: list[Path]
) -> None:
    async def scenario() -> None:
        engine = create_async_engine(async_url(database))
        djb.install(engine)
        try:
            await _create(engine)
            async with engine.begin() as conn:
                await conn.execute(
                    sa.insert(_table(Image)), [{"id": i, "name": f"img{i}"} for i in range(3)]
                )
                await conn.execute(
                    sa.insert(_table(ImageFile)),
                    [{"image_id": i, "file": files[i]} for i in range(3)],
                )
                # A savepoint that rolls back leaves no row behind.
                nested = await conn.begin_nested()
                await conn.execute(
                    sa.insert(_table(Extracted)), [{"image_id": 0, "features": np.zeros(3)}]
                )
                await nested.rollback()
                await conn.execute(
                    sa.insert(_table(Extracted)),
                    [{"image_id": i, "features": np.full((2, 2), i)} for i in range(3)],
                )
            async with engine.connect() as conn:
                got = (
                    await conn.execute(
                        sa.select(_table(ImageFile).c.file, _table(Extracted).c.features)
                        .join_from(_table(ImageFile), _table(Extracted))
                        .order_by(_table(ImageFile).c.image_id)
                    )
                ).all()
                # A streamed result processes its rows outside the greenlet.
                streamed = [
                    row.file
                    async for row in await conn.stream(
                        sa.select(_table(ImageFile).c.file).order_by(_table(ImageFile).c.image_id)
                    )
                ]
            assert [p.read_bytes() for p, _ in got] == [f.read_bytes() for f in files]
            for i, (_, features) in enumerate(got):
                np.testing.assert_array_equal(features, np.full((2, 2), i))
            assert [p.read_bytes() for p in streamed] == [f.read_bytes() for f in files]
        finally:
            await _dispose(engine)

    run(scenario)


def test_install_on_async_engine_is_idempotent_and_uninstall_removes_it(
    database: Any, stores: dict[str, Any], files: list[Path]
) -> None:
    async def scenario() -> None:
        engine = create_async_engine(async_url(database))
        sync = engine.sync_engine

        def listeners() -> dict[str, int]:
            return {
                "before_execute": len(sync.dispatch.before_execute),
                "before_cursor_execute": len(sync.dispatch.before_cursor_execute),
                "after_cursor_execute": len(sync.dispatch.after_cursor_execute),
                "checkout": len(sync.pool.dispatch.checkout),
            }

        bare = listeners()
        try:
            assert not installed(engine)
            djb.install(engine)
            once = listeners()
            djb.install(engine)
            djb.install(sync)  # the same engine, reached through its sync side
            assert listeners() == once
            assert installed(engine) and installed(sync)
            assert once["before_execute"] == bare["before_execute"] + 1

            await _create(engine)
            async with engine.begin() as conn:
                await conn.execute(sa.insert(_table(Image)), [{"id": 1, "name": "one"}])
                await conn.execute(
                    sa.insert(_table(ImageFile)), [{"image_id": 1, "file": files[0]}]
                )

            djb.uninstall(engine)
            assert not installed(engine)
            assert listeners() == bare
            djb.uninstall(engine)  # idempotent too
            assert listeners() == bare

            async with engine.begin() as conn:
                await conn.execute(sa.insert(_table(Image)), [{"id": 2, "name": "two"}])
            with pytest.raises(djb.NotInstalledError):
                async with engine.begin() as conn:
                    await conn.execute(
                        sa.insert(_table(ImageFile)), [{"image_id": 2, "file": files[1]}]
                    )

            djb.install(engine)
            async with engine.connect() as conn:
                (path,) = (await conn.scalars(sa.select(_table(ImageFile).c.file))).all()
            assert path.read_bytes() == files[0].read_bytes()
        finally:
            await _dispose(engine)

    run(scenario)


@pytest.mark.backends("sqlite")
def test_sqlite_foreign_keys_are_on_for_async_connections(database: Any) -> None:
    async def scenario() -> None:
        engine = create_async_engine(async_url(database))
        djb.install(engine)
        try:
            async with engine.connect() as conn:
                assert await conn.scalar(sa.text("PRAGMA foreign_keys")) == 1
        finally:
            await _dispose(engine)

    run(scenario)


def test_concurrent_readers_in_one_event_loop(
    database: Any, stores: dict[str, Any], files: list[Path]
) -> None:
    """Tasks interleaving on one thread each get their own rows' payloads (the prefetch of
    remote payloads is per thread; a task never sees another task's values)."""

    async def scenario() -> None:
        engine = create_async_engine(async_url(database), pool_size=8)
        djb.install(engine)
        try:
            await _create(engine)
            async with engine.begin() as conn:
                await conn.execute(
                    sa.insert(_table(Image)), [{"id": i, "name": f"img{i}"} for i in range(3)]
                )
                await conn.execute(
                    sa.insert(_table(ImageFile)),
                    [{"image_id": i, "file": files[i]} for i in range(3)],
                )

            async def reader(order: Any) -> list[bytes]:
                async with engine.connect() as conn:
                    result = await conn.execute(sa.select(_table(ImageFile).c.file).order_by(order))
                    await asyncio.sleep(0)  # let the other readers run their queries
                    return [p.read_bytes() for p in result.scalars()]

            ids = _table(ImageFile).c.image_id
            want = [f.read_bytes() for f in files]
            for _ in range(3):
                got = await asyncio.gather(
                    *[reader(ids if i % 2 else ids.desc()) for i in range(6)]
                )
                for i, values in enumerate(got):
                    assert values == (want if i % 2 else want[::-1])
        finally:
            await _dispose(engine)

    run(scenario)


def _aiomysql_works() -> bool:
    try:
        from pymysql import converters
    except ImportError:
        return False
    return callable(getattr(converters, "escape_bytes_prefixed", None))


@pytest.mark.backends("mysql")
def test_orm_roundtrip_on_aiomysql(
    database: Any, stores: dict[str, Any], files: list[Path]
) -> None:
    pytest.importorskip("aiomysql")
    if not _aiomysql_works():
        pytest.skip(
            "aiomysql cannot send bytes parameters with the installed PyMySQL"
            " (aio-libs/aiomysql#1080)"
        )
    test_orm_roundtrip_through_async_session(database, stores, files, "mysql+aiomysql")


# -- store I/O does not stall the event loop -----------------------------------------

DELAY = 0.02


class SlowStore(djb.MemoryStore):
    """A remote-looking memory store: every request takes DELAY seconds (blocking, like
    a store client would), and the requests in flight are counted."""

    protocol = "slow-memory"  # registers the kind
    delay = DELAY
    lock = threading.Lock()
    in_flight = 0
    requests = 0

    @property
    def is_remote(self) -> bool:
        return True

    def _slow(self) -> None:
        with SlowStore.lock:
            SlowStore.in_flight += 1
            SlowStore.requests += 1
        try:
            time.sleep(SlowStore.delay)
        finally:
            with SlowStore.lock:
                SlowStore.in_flight -= 1

    def put(self, path: PurePosixPath, data: bytes | memoryview) -> None:
        self._slow()
        super().put(path, data)

    def get(self, path: PurePosixPath) -> bytes:
        self._slow()
        return super().get(path)

    def exists(self, path: PurePosixPath) -> bool:
        self._slow()
        return super().exists(path)


@pytest.fixture
def slow_store(monkeypatch: pytest.MonkeyPatch) -> str:
    """Store 'slow' (protocol 'memory' served by SlowStore), one pool thread: the store
    I/O of N values takes N x DELAY whether or not it runs on the pool."""
    location = "slow-" + uuid.uuid4().hex[:8]
    djb.config["stores"] = {"slow": {"protocol": "slow-memory", "location": location}}
    djb.config["threads"] = 1
    SlowStore.requests = 0
    monkeypatch.setattr(SlowStore, "delay", DELAY)
    return "slow"


def _slow_table() -> tuple[sa.MetaData, sa.Table]:
    md = sa.MetaData()
    t = sa.Table(
        "slow_item",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("data", djb.Blob(store="slow")),
        sa.Column("file", djb.Attach(store="slow")),
    )
    return md, t


def test_store_io_does_not_stall_the_event_loop(
    database: Any, slow_store: str, tmp_path: Path
) -> None:
    n = 30
    files = []
    for i in range(n):
        p = tmp_path / f"f{i}.bin"
        p.write_bytes(f"file {i}".encode() * 50)
        files.append(p)
    rows = [{"id": i, "data": np.full(8, i), "file": files[i]} for i in range(n)]
    serial = 2 * n * DELAY  # one put per blob and per attachment; one get each to read

    async def scenario() -> tuple[float, float, float, float]:
        engine = create_async_engine(async_url(database))
        djb.install(engine)
        md, t = _slow_table()
        try:
            async with engine.begin() as conn:
                await conn.run_sync(md.create_all)
            t0 = time.perf_counter()
            async with Heartbeat() as beat, engine.begin() as conn:
                await conn.execute(sa.insert(t), rows)
            insert_gap, insert_time = beat.gap, time.perf_counter() - t0
            assert SlowStore.requests >= 2 * n  # (and the store's owner marker)
            before = SlowStore.requests
            t0 = time.perf_counter()
            async with Heartbeat() as beat, engine.connect() as conn:
                got = (await conn.execute(sa.select(t).order_by(t.c.id))).all()
            fetch_gap, fetch_time = beat.gap, time.perf_counter() - t0
            assert SlowStore.requests == before + 2 * n
            for i, row in enumerate(got):
                np.testing.assert_array_equal(row.data, np.full(8, i))
                assert row.file.read_bytes() == files[i].read_bytes()

            # One value alone (no batch to prefetch) is fetched on the pool too.
            SlowStore.delay = 1.0
            async with Heartbeat() as beat, engine.connect() as conn:
                one = await conn.scalar(sa.select(t.c.data).where(t.c.id == 3))
            np.testing.assert_array_equal(one, np.full(8, 3))
            assert beat.gap < 0.5, beat.gap  # a blocked loop would stall for the whole 1 s
            return insert_gap, insert_time, fetch_gap, fetch_time
        finally:
            await _dispose(engine)

    insert_gap, insert_time, fetch_gap, fetch_time = run(scenario)
    # The store I/O really took its time (one thread), yet the loop kept ticking.
    assert insert_time >= serial * 0.9 and fetch_time >= serial * 0.9
    assert insert_gap < 0.5 * serial, (insert_gap, serial)
    assert fetch_gap < 0.5 * serial, (fetch_gap, serial)


def test_cancelled_insert_leaves_nothing_running_and_rolls_back(
    database: Any, slow_store: str, tmp_path: Path
) -> None:
    n = 30

    async def scenario() -> None:
        engine = create_async_engine(async_url(database))
        djb.install(engine)
        md, t = _slow_table()
        try:
            async with engine.begin() as conn:
                await conn.run_sync(md.create_all)

            async def insert() -> None:
                async with engine.begin() as conn:
                    await conn.execute(
                        sa.insert(t), [{"id": i, "data": np.full(4, i)} for i in range(n)]
                    )

            task = asyncio.create_task(insert())
            # wait for the uploads to begin (a loaded machine may take a while to get there)
            for _ in range(1000):
                if SlowStore.requests >= 2:
                    break
                await asyncio.sleep(DELAY / 10)
            assert 0 < SlowStore.requests < n  # cancelled in the middle of the uploads
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert SlowStore.in_flight == 0  # nothing keeps running behind the caller
            done = SlowStore.requests
            await asyncio.sleep(3 * DELAY)
            assert SlowStore.requests == done
            async with engine.connect() as conn:
                assert await conn.scalar(sa.select(sa.func.count()).select_from(t)) == 0
            # the engine is still usable, and the uploads can be redone
            await insert()
            async with engine.connect() as conn:
                assert await conn.scalar(sa.select(sa.func.count()).select_from(t)) == n
        finally:
            await _dispose(engine)

    run(scenario)


def test_in_async_greenlet_detection(database: Any) -> None:
    """Fails loudly if SQLAlchemy changes how its asyncio greenlet can be recognized."""
    assert not in_async_greenlet()
    assert _pool.call(lambda x: x + 1, 1) == 2

    async def scenario() -> list[Any]:
        engine = create_async_engine(async_url(database))
        try:
            assert not in_async_greenlet()  # a coroutine, not the greenlet

            def inside(conn: Any) -> list[Any]:
                thread = threading.get_ident()
                return [
                    in_async_greenlet(),
                    _pool.call(threading.get_ident) != thread,  # ran on the pool
                    _pool.run_all(lambda _: threading.get_ident(), [1], serial=True)[0] != thread,
                    _pool.run_all(lambda x: 2 * x, range(5)),
                ]

            async with engine.connect() as conn:
                return await conn.run_sync(inside)
        finally:
            await engine.dispose()

    assert run(scenario) == [True, True, True, [0, 2, 4, 6, 8]]


# -- awaitable maintenance -------------------------------------------------------------


def test_async_externals_maintenance(
    database: Any, stores: dict[str, Any], files: list[Path]
) -> None:
    """paths / used / unused / sweep / verify awaited on an AsyncEngine equal the sync
    results, without MissingGreenlet."""

    async def scenario() -> None:
        engine = create_async_engine(async_url(database))
        djb.install(engine)
        sync = database.create_engine()
        try:
            await _create(engine)
            async with engine.begin() as conn:
                await conn.execute(
                    sa.insert(_table(Image)), [{"id": i, "name": f"img{i}"} for i in range(3)]
                )
                await conn.execute(
                    sa.insert(_table(ImageFile)),
                    [{"image_id": i, "file": files[i]} for i in range(3)],
                )
                await conn.execute(
                    sa.insert(_table(Extracted)),
                    [{"image_id": i, "features": np.full(3, i)} for i in range(3)],
                )
            async with engine.begin() as conn:
                await conn.execute(sa.delete(_table(Extracted)).where(Extracted.image_id != 1))
                await conn.execute(sa.delete(_table(ImageFile)).where(ImageFile.image_id == 0))

            for store in ("shared", "local"):
                aext = djb.externals(engine)[store]
                assert isinstance(aext, AsyncExternalTable)
                ext = djb.externals(sync)[store]
                assert isinstance(ext, djb.ExternalTable)
                assert await aext.exists()
                assert await aext.schema() == ext.schema
                assert await aext.references() == ext.references()
                assert await aext.paths() == ext.paths()
                assert await aext.used() == ext.used()
                unused = ext.unused()
                assert await aext.unused() == unused
                # the iterators page through the table (here one entry per query)
                assert [p async for p in aext.iter_paths(batch=1)] == ext.paths()
                assert [h async for h in aext.iter_used(batch=1)] == ext.used()
                assert [h async for h in aext.iter_unused(batch=1)] == unused
                assert len(unused) == {"shared": 1, "local": 2}[store]
                report = await aext.verify(progress=False)
                assert report.ok and report.checked == len(ext.used())
                swept = await aext.sweep(grace=datetime.timedelta(0), progress=False)
                assert swept.ok
                assert swept.rows_deleted == swept.payloads_deleted == len(unused)
                assert await aext.unused() == [] == ext.unused()
                assert len(await aext.paths()) == {"shared": 2, "local": 1}[store]
                assert (await aext.verify(progress=False, include_unused=True)).ok
        finally:
            sync.dispose()
            await _dispose(engine)

    run(scenario)


# -- stored objects: serve attachments without downloading them ----------------------


def test_stored_objects(database: Any, stores: dict[str, Any], files: list[Path]) -> None:
    """djb.stored() in a select through AsyncConnection: StoredObjects; open() streams
    verified bytes, url() is a working presigned S3 URL that expires, download()."""

    async def scenario() -> Sequence[sa.Row[Any]]:
        engine = create_async_engine(async_url(database))
        djb.install(engine)
        try:
            await _create(engine)
            async with engine.begin() as conn:
                await conn.execute(
                    sa.insert(_table(Image)), [{"id": i, "name": f"img{i}"} for i in range(3)]
                )
                await conn.execute(
                    sa.insert(_table(ImageFile)),
                    [{"image_id": i, "file": files[i]} for i in range(3)],
                )
                await conn.execute(
                    sa.insert(_table(Extracted)),
                    [{"image_id": i, "features": np.full(3, i)} for i in range(2)],
                )
            q = (
                sa.select(
                    ImageFile.image_id,
                    djb.stored(ImageFile.file).label("f"),
                    djb.stored(Extracted.features).label("x"),
                )
                .outerjoin(Extracted)
                .order_by(ImageFile.image_id)
            )
            async with engine.connect() as conn:
                rows = (await conn.execute(q)).all()
            assert [r.image_id for r in rows] == [0, 1, 2]
            return rows
        finally:
            await _dispose(engine)

    rows = run(scenario)
    sync = database.create_engine()
    try:
        shared = djb.externals(sync)["shared"]
        local = djb.externals(sync)["local"]
        for i, row in enumerate(rows):
            f: djb.StoredObject = row.f
            assert isinstance(f, djb.StoredObject)
            assert (f.store, f.name, f.size) == ("shared", files[i].name, files[i].stat().st_size)
            assert f.path == shared.object_path(f.key, f.name)
            with f.open() as stream:
                assert stream.read() == files[i].read_bytes()
            got = f.download(Path(djb.config["download_path"]) / "here")
            assert got.name == files[i].name and got.read_bytes() == files[i].read_bytes()
            with urllib.request.urlopen(f.url(expires_in=60)) as resp:
                assert resp.read() == files[i].read_bytes()
                assert files[i].name in resp.headers["Content-Disposition"]
        # no download happened for the selects themselves
        assert list(Path(djb.config["download_path"]).glob("*.npy")) == []

        x = rows[1].x
        assert (x.store, x.name) == ("local", None) and rows[2].x is None
        assert x.path == local.object_path(x.key)
        with x.open() as stream:
            payload = stream.read()
        assert len(payload) == x.size
        np.testing.assert_array_equal(djb.unpack(payload), np.full(3, 1))
        with pytest.raises(djb.StoreError, match="cannot make URLs"):
            x.url()

        # the URL carries the expiry asked for, within S3's limits
        f = rows[0].f
        bad: Any
        for bad in (0, -1, 8 * 24 * 3600, 1.5, True):
            with pytest.raises(ValueError, match="expires_in"):
                f.url(expires_in=bad)
        url = f.url(expires_in=1)
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
        if "X-Amz-Expires" in query:  # SigV4
            assert query["X-Amz-Expires"] == ["1"]
        else:  # SigV2: the expiry as a Unix time
            assert 0 <= int(query["Expires"][0]) - time.time() <= 2
        # (moto does not enforce the expiry: the signed expiry itself is checked above)

        # corrupted payloads: the stream ends with IntegrityError, not EOF
        store = djb.get_store("local")
        store.put(x.path, payload[:-1] + bytes([payload[-1] ^ 1]))
        with x.open() as stream, pytest.raises(djb.IntegrityError, match="does not match"):
            stream.read()
        f = rows[2].f
        djb.get_store("shared").put(f.path, b"something else entirely")
        with f.open() as stream, pytest.raises(djb.IntegrityError):
            while stream.read(7):
                pass
        with pytest.raises(djb.IntegrityError):
            f.download(Path(djb.config["download_path"]) / "corrupt")
        assert list((Path(djb.config["download_path"]) / "corrupt").glob("*")) == []
    finally:
        sync.dispose()


def test_stored_refuses_inrow_columns() -> None:
    with pytest.raises(djb.SaDjblobError, match="values kept in the row"):
        djb.stored(models.Test.b0)
