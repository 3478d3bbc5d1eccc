"""How fast a cancelled asyncio task that writes external values ends.

    python benchmarks/cancel.py [--repeat N] [--delay SECONDS]

An ``AsyncEngine`` (aiosqlite) inserts 12 rows of ``Blob(store=...)`` into a store whose
uploads each block for ``--delay`` seconds (0.3 by default, as a slow disk or a network
mount would; local stores upload one at a time, remote ones on the thread pool). Once the
first upload is on the wire the task is cancelled (once, and in a second case twice, 20 ms
apart); the figure is the time from the first ``cancel()`` to the task's end, less what
was left of the upload in flight: the overhead of cancelling. Also printed: the uploads
started in all (the target: none after the one(s) in flight) and, as the baseline, the
time the uncancelled insert takes (12 x the delay for a local store).

Target (issue 14): cancellation takes effect within 100 ms plus at most the requests
already on the wire.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import threading
import time
import uuid
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

import numpy as np
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

import sa_djblob as djb


class _Slow(djb.MemoryStore):
    """Uploads take ``delay`` seconds each (blocking); their start and end are recorded."""

    protocol = "bench-slow-upload"
    delay = 0.3
    lock = threading.Lock()
    starts: ClassVar[list[float]] = []
    ends: ClassVar[list[float]] = []

    def put(self, path: PurePosixPath, data: bytes | memoryview) -> None:
        if ".sa_djblob-owner" in str(path):
            super().put(path, data)
            return
        with _Slow.lock:
            _Slow.starts.append(time.perf_counter())
        time.sleep(_Slow.delay)
        super().put(path, data)
        with _Slow.lock:
            _Slow.ends.append(time.perf_counter())


class _SlowRemote(_Slow):
    protocol = "bench-slow-upload-remote"

    @property
    def is_remote(self) -> bool:
        return True


async def once(folder: Path, protocol: str, cancels: int | None) -> dict[str, Any]:
    """One insert of 12 rows, cancelled *cancels* times (None: left to finish)."""
    _Slow.starts, _Slow.ends = [], []
    djb.config["stores"] = {"slow": {"protocol": protocol, "location": uuid.uuid4().hex}}
    engine = create_async_engine(f"sqlite+aiosqlite:///{folder / uuid.uuid4().hex}.db")
    djb.install(engine)
    md = sa.MetaData()
    t = sa.Table(
        "item",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("b", djb.Blob(store="slow")),
    )
    try:
        async with engine.begin() as conn:
            await conn.run_sync(md.create_all)

        async def insert() -> None:
            async with engine.begin() as conn:
                await conn.execute(sa.insert(t), [{"id": i, "b": np.full(3, i)} for i in range(12)])

        t0 = time.perf_counter()
        task = asyncio.create_task(insert())
        if cancels is None:
            await task
            return {"total": time.perf_counter() - t0, "started": len(_Slow.starts)}
        while not _Slow.starts:
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.05)  # the upload is well under way
        t_cancel = time.perf_counter()
        for i in range(cancels):
            if i:
                await asyncio.sleep(0.02)
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        t_end = time.perf_counter()
        started = len(_Slow.starts)
        await asyncio.sleep(3 * _Slow.delay)  # anything started after the task ended?
        on_wire_until = max([e for e in _Slow.ends if e >= t_cancel], default=t_cancel)
        return {
            "took": t_end - t_cancel,
            "overhead": t_end - max(on_wire_until, t_cancel),
            "started": started,
            "started_later": len(_Slow.starts) - started,
            "running_after": sum(1 for e in _Slow.ends if e > t_end),
        }
    finally:
        djb.uninstall(engine)
        await engine.dispose()


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--delay", type=float, default=0.3)
    args = ap.parse_args()
    _Slow.delay = args.delay
    djb.config["threads"] = 2
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print(f"sa_djblob {djb.__version__}, aiosqlite, 12 uploads of {args.delay} s each")
        print(
            f"  {'store / cancels':<24}{'cancel -> end':>14}{'overhead':>10}{'started':>9}"
            f"{'later':>7}{'after end':>10}   uncancelled insert"
        )
        worst = 0.0
        for protocol, label in (
            ("bench-slow-upload", "local"),
            ("bench-slow-upload-remote", "remote, 2 threads"),
        ):
            base = asyncio.run(once(folder, protocol, None))
            for cancels in (1, 2):
                runs = [asyncio.run(once(folder, protocol, cancels)) for _ in range(args.repeat)]
                over = max(r["overhead"] for r in runs)
                worst = max(worst, over)
                print(
                    f"  {f'{label}, {cancels}x':<24}"
                    f"{max(r['took'] for r in runs) * 1000:>11.0f} ms"
                    f"{over * 1000:>7.0f} ms"
                    f"{max(r['started'] for r in runs):>9}"
                    f"{max(r['started_later'] for r in runs):>7}"
                    f"{max(r['running_after'] for r in runs):>10}"
                    f"   {base['total']:.2f} s ({base['started']} uploads)"
                )
        verdict = "met" if worst <= 0.1 else "MISSED"
        print(
            f"worst overhead beyond the uploads on the wire, of {args.repeat} runs each:"
            f" {worst * 1000:.0f} ms (target <= 100 ms: {verdict})"
        )


if __name__ == "__main__":
    main()
