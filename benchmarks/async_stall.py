"""Event-loop stalls under asyncio: external values through ``AsyncConnection``.

    python benchmarks/async_stall.py [--quick]

A heartbeat task ticks every 5 ms; its longest gap is the longest time the event loop
could not serve another task. Measured on aiosqlite with an S3 store (a moto server
behind ``shared/tools/latency_proxy.py``, 20 ms per request) for 200 x 1 KB blobs
(insert, fetch) and one large attachment (256 MiB; 32 MiB with ``--quick``). The
baseline is the same work through a sync ``Engine`` (pysqlite) run in a thread with
``asyncio.to_thread``, the usual way to keep blocking code off the loop. Targets: no
stall over 50 ms from store I/O, total time no worse than the sync path (10 % slack).

What is left above the target: the first write sets up the S3 client (botocore loads
its models, holding the GIL, even in a thread) and checks the bucket and the store's
owner marker with single store calls not yet routed through ``_pool.call``; during a
large attachment the loop thread waits in ``select`` while the transfer threads hold
the GIL (the sync-in-a-thread baseline shows stalls of the same size).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _servers import latency_proxy, moto_server, s3_client, s3_spec

import sa_djblob as djb

STALL_TARGET = 0.050


async def heartbeat(stop: asyncio.Event, gaps: list[float]) -> None:
    last = time.perf_counter()
    worst = 0.0
    while not stop.is_set():
        await asyncio.sleep(0.005)
        now = time.perf_counter()
        worst = max(worst, now - last)
        last = now
    gaps.append(worst)


async def measure(work: Callable[[], Awaitable[Any]]) -> tuple[float, float]:
    """(longest loop stall, total seconds) of *work* with a heartbeat running."""
    stop, gaps = asyncio.Event(), list[float]()
    beat = asyncio.create_task(heartbeat(stop, gaps))
    await asyncio.sleep(0.02)
    t0 = time.perf_counter()
    try:
        await work()
    finally:
        total = time.perf_counter() - t0
        stop.set()
        await beat
    return gaps[0], total


def line(name: str, async_fig: tuple[float, float], sync_fig: tuple[float, float]) -> None:
    stall, total = async_fig
    base_stall, base_total = sync_fig
    ok_stall = "ok" if stall <= STALL_TARGET else "MISS"
    ok_total = "ok" if total <= base_total * 1.1 else "MISS"
    print(
        f"  {name:<38} stall {stall * 1000:7.1f} ms (target <= 50 ms: {ok_stall:4})"
        f"  total {total:6.2f} s (sync in a thread {base_total:6.2f} s: {ok_total:4})"
        f"  | sync-in-thread stall {base_stall * 1000:6.1f} ms",
        flush=True,
    )


def table(md: sa.MetaData, name: str, col: Any) -> sa.Table:
    return sa.Table(
        name,
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("v", col),
    )


async def async_figures(
    db: Path, blobs: list[np.ndarray], big: Path
) -> dict[str, tuple[float, float]]:
    md = sa.MetaData()
    blob_t = table(md, "blob", djb.Blob(store="s3"))
    file_t = table(md, "file", djb.Attach(store="s3"))
    engine = create_async_engine(f"sqlite+aiosqlite:///{db}")
    djb.install(engine)
    async with engine.begin() as conn:
        await conn.run_sync(md.create_all)

    async def insert(t: sa.Table, rows: list[dict[str, Any]]) -> None:
        async with engine.begin() as conn:
            await conn.execute(sa.insert(t), rows)

    async def fetch(t: sa.Table) -> list[Any]:
        async with engine.connect() as conn:
            return list((await conn.execute(sa.select(t.c.v).where(t.c.id >= 0))).scalars())

    out: dict[str, tuple[float, float]] = {}
    try:
        out["first"] = await measure(lambda: insert(blob_t, [{"id": -1, "v": blobs[0] + 1}]))
        rows = [{"id": i, "v": b} for i, b in enumerate(blobs)]
        out["blobs insert"] = await measure(lambda: insert(blob_t, rows))
        out["blobs fetch"] = await measure(lambda: fetch(blob_t))
        out["file insert"] = await measure(lambda: insert(file_t, [{"id": 1, "v": big}]))
        out["file fetch"] = await measure(lambda: fetch(file_t))
    finally:
        djb.uninstall(engine)
        await engine.dispose()
    return out


async def sync_figures(
    db: Path, blobs: list[np.ndarray], big: Path
) -> dict[str, tuple[float, float]]:
    md = sa.MetaData()
    blob_t = table(md, "blob", djb.Blob(store="s3"))
    file_t = table(md, "file", djb.Attach(store="s3"))
    engine = sa.create_engine(f"sqlite:///{db}")
    djb.install(engine)
    md.create_all(engine)

    def insert(t: sa.Table, rows: list[dict[str, Any]]) -> None:
        with engine.begin() as conn:
            conn.execute(sa.insert(t), rows)

    def fetch(t: sa.Table) -> list[Any]:
        with engine.connect() as conn:
            return list(conn.execute(sa.select(t.c.v).where(t.c.id >= 0)).scalars())

    def threaded(fn: Callable[..., Any], *args: Any) -> Callable[[], Awaitable[Any]]:
        return lambda: asyncio.to_thread(fn, *args)

    out: dict[str, tuple[float, float]] = {}
    try:
        out["first"] = await measure(threaded(insert, blob_t, [{"id": -1, "v": blobs[0] + 1}]))
        rows = [{"id": i, "v": b} for i, b in enumerate(blobs)]
        out["blobs insert"] = await measure(threaded(insert, blob_t, rows))
        out["blobs fetch"] = await measure(threaded(fetch, blob_t))
        out["file insert"] = await measure(threaded(insert, file_t, [{"id": 1, "v": big}]))
        out["file fetch"] = await measure(threaded(fetch, file_t))
    finally:
        djb.uninstall(engine)
        engine.dispose()
    return out


def empty_bucket(endpoint: str, bucket: str) -> None:
    client = s3_client(endpoint)
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys})


async def run(tmp: Path, endpoint: str, bucket: str, size_mib: int) -> None:
    blobs = [np.frombuffer(uuid.uuid4().bytes * 64, dtype=np.uint8) for _ in range(200)]
    big = tmp / "inputs" / "big.bin"
    big.parent.mkdir()
    with big.open("wb") as f:
        chunk = np.random.default_rng(0).bytes(1 << 20)
        for i in range(size_mib):
            f.write(i.to_bytes(8, "little") + chunk[8:])
    figures = {}
    for mode, measure_all in (("async", async_figures), ("sync", sync_figures)):
        # a fresh store client, download folder and bucket for each mode
        djb.config["stores"] = {"s3": s3_spec(endpoint, bucket, location=mode)}
        djb.config["cache"] = None
        djb.config["download_path"] = str(tmp / f"downloads-{mode}")
        figures[mode] = await measure_all(tmp / f"{mode}.sqlite", blobs, big)
        empty_bucket(endpoint, bucket)

    print(f"aiosqlite, S3 behind a 20 ms latency proxy ({size_mib} MiB attachment):")
    names = {
        "first": "first write (S3 client, owner check)",
        "blobs insert": "insert 200 x 1 KB Blob",
        "blobs fetch": "fetch 200 x 1 KB Blob",
        "file insert": f"insert {size_mib} MiB Attach",
        "file fetch": f"fetch {size_mib} MiB Attach",
    }
    for key, name in names.items():
        line(name, figures["async"][key], figures["sync"][key])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="a 32 MiB attachment")
    args = ap.parse_args()
    size = 32 if args.quick else 256
    with tempfile.TemporaryDirectory() as tmpdir, moto_server() as s3, latency_proxy(s3) as slow:
        bucket = "bench-" + uuid.uuid4().hex[:8]
        s3_client(s3).create_bucket(Bucket=bucket)
        asyncio.run(run(Path(tmpdir), slow, bucket, size))


if __name__ == "__main__":
    main()
