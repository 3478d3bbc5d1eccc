"""Sweeps racing with writers: nothing committed may ever lose its payload.

Several writer threads insert and delete rows whose blobs come from a handful of shared
payloads (so the same hash keeps becoming unused and used again) while sweepers run in
a loop with ``grace=0`` (so orphan collection races with uploads in flight too).
Afterwards every committed row must read back its exact value, and a final sweep must
leave exactly the referenced payloads in the store.
"""

from __future__ import annotations

import datetime
import itertools
import random
import threading
import time
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from helpers.common import make_table, store_paths, value

import sa_djblob as djb
from sa_djblob._dialects import dialect_support

DURATION = 6.0  # seconds of racing per backend and store
WRITERS = 4
SWEEPERS = 2
SHARED_VALUES = 8
ZERO = datetime.timedelta(0)


def _retryable(exc: BaseException) -> bool:
    # deadlocks and serialization failures, or a claim that lost too often to sweeps
    retryable = any(dialect_support(n).is_retryable(exc) for n in ("mysql", "postgresql"))
    return retryable or "retry the transaction" in str(exc)


@pytest.mark.slow
@pytest.mark.backends("mysql", "postgresql")
@pytest.mark.parametrize("store_kind", ["file", "s3"])
def test_writers_and_sweepers_race(
    engine: sa.Engine, shared_store: dict[str, Any], backend: str, store_kind: str
) -> None:
    djb.install(engine)
    table = make_table(engine)
    ext = djb.externals(engine)["shared"]
    values = [value(i, size=200) for i in range(SHARED_VALUES)]
    ids = itertools.count(1)
    lock = threading.Lock()
    stop = threading.Event()
    expected: dict[int, int] = {}  # committed id -> index of its value
    stats = dict(
        commits=0,
        inserted=0,
        deleted=0,
        retries=0,
        sweeps=0,
        swept_rows=0,
        swept_orphans=0,
        skipped=0,
    )
    failures: list[str] = []

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        mine: list[int] = []
        while not stop.is_set():
            with lock:
                new = [next(ids) for _ in range(rng.randint(1, 3))]
            rows: list[dict[str, Any]] = [
                {"id": i, "b": values[rng.randrange(SHARED_VALUES)]} for i in new
            ]
            # few rows alive at a time, so each shared value keeps losing its last reference
            drop = list(mine) if len(mine) >= 3 else rng.sample(mine, rng.randint(0, len(mine)))
            try:
                with engine.begin() as conn:
                    conn.execute(sa.insert(table), rows)
                    if drop:
                        conn.execute(sa.delete(table).where(table.c.id.in_(drop)))
            except Exception as exc:
                if _retryable(exc):
                    with lock:
                        stats["retries"] += 1
                    continue
                failures.append(f"writer: {type(exc).__name__}: {exc}")
                return
            mine = [i for i in mine if i not in drop] + new
            with lock:
                for r in rows:
                    # the value's index, recovered from the array itself
                    expected[r["id"]] = int(r["b"][0])
                for i in drop:
                    del expected[i]
                stats["commits"] += 1
                stats["inserted"] += len(rows)
                stats["deleted"] += len(drop)

    def sweeper(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            try:
                report = ext.sweep(grace=ZERO, progress=False, batch=rng.choice([2, 5, 50]))
            except Exception as exc:
                failures.append(f"sweeper: {type(exc).__name__}: {exc}")
                return
            if report.errors:
                failures.append(f"sweep errors: {report.errors[:3]}")
                return
            with lock:
                stats["sweeps"] += 1
                stats["swept_rows"] += report.rows_deleted
                stats["swept_orphans"] += report.orphans_deleted
                stats["skipped"] += report.skipped_referenced

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(WRITERS)]
    threads += [threading.Thread(target=sweeper, args=(100 + i,)) for i in range(SWEEPERS)]
    start = time.monotonic()
    for t in threads:
        t.start()
    time.sleep(DURATION)
    stop.set()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    elapsed = time.monotonic() - start

    # every committed reference still has its payload
    store = ext.store
    used = dict(ext.paths())
    referenced = set(ext.used())
    lost = [k for k in referenced if not store.exists(used[k])]
    with engine.connect() as conn:
        got = {r.id: r.b for r in conn.execute(sa.select(table.c.id, table.c.b))}
    wrong = [
        i for i, v in got.items() if i in expected and not np.array_equal(v, values[expected[i]])
    ]

    final = ext.sweep(grace=ZERO, progress=False)
    left = store_paths(ext)
    want = {p for k, p in ext.paths()}
    summary = (
        f"RACE {backend}/{store_kind}: {elapsed:.1f}s, writers={WRITERS}, sweepers={SWEEPERS},"
        f" transactions committed={stats['commits']}, rows committed={stats['inserted']},"
        f" rows deleted={stats['deleted']}, rows alive={len(expected)}, writer retries="
        f"{stats['retries']}, sweeps run={stats['sweeps']}, entries swept={stats['swept_rows']},"
        f" orphans swept={stats['swept_orphans']}, skipped referenced={stats['skipped']},"
        f" payloads lost={len(lost)}, wrong values={len(wrong)}"
    )
    print("\n" + summary)
    assert not failures, f"{failures[:5]}\n{summary}"
    assert stats["commits"] > 20 and stats["sweeps"] > 5, summary
    assert stats["swept_rows"] > 0, summary  # the sweeps did race with the writers
    assert lost == [], summary
    assert set(got) == set(expected), summary
    assert wrong == [], summary
    assert final.ok, final.errors
    assert set(ext.used()) == referenced and ext.unused() == []
    assert left == want, f"store holds {len(left)} payloads, {len(want)} referenced\n{summary}"
    assert ext.verify(progress=False).ok
