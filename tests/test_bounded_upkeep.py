"""Upkeep in bounded memory: the sweep, verify and the entry iterators hold a batch, not
the store listing or the externals table, whatever the number of entries."""

from __future__ import annotations

import datetime
import gc
import hashlib
import io
import os
import threading
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import sqlalchemy as sa
from helpers.common import make_table, store_paths

import sa_djblob as djb
from sa_djblob._externals import verify as verify_module
from sa_djblob._layout import content_hash, hash_stream, object_path

ZERO = datetime.timedelta(0)
BATCH = 100
SMALL, LARGE = 400, 10_000
# What a run over LARGE entries may allocate at its peak beyond a run over SMALL entries.
# Holding the listing or the table costs about 1 KB per entry (10 MB here); the slack
# covers what does not depend on the number of entries but comes and goes (the
# interpreter growing its table of interned strings: about 2 MB at once; cyclic garbage
# awaiting the collector).
SLACK = 6 << 20  # 6 MiB (tracemalloc peaks vary by about 1 MiB between runs on MariaDB)


@pytest.fixture
def setup(engine: sa.Engine, tmp_path: Path) -> tuple[sa.Engine, sa.Table, djb.ExternalTable]:
    djb.config["stores"] = {
        "shared": {"protocol": "file", "location": str(tmp_path / "store"), "fsync": False}
    }
    table = make_table(engine)
    return engine, table, djb.externals(engine)["shared"]


def fill(engine: sa.Engine, table: sa.Table, ext: djb.ExternalTable, n: int, tag: str) -> None:
    """*n* entries as a lab's store has them, made with bulk INSERTs and plain file
    writes: half used, a quarter unused rows, a quarter orphan payloads (no row)."""
    store = ext.store
    old = (datetime.datetime.now() - datetime.timedelta(days=1)).timestamp()
    rows, refs = [], []
    for i in range(n):
        data = f"{tag}:{i}".encode()
        key = content_hash(data)
        path = Path(object_path(store.location, ext.schema, key, None, store.subfolding))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, (old, old))
        if i % 4 != 3:
            rows.append({"hash": key, "size": len(data), "attachment_name": None})
        if i % 2 == 0:
            refs.append({"id": i, "_key": key})
    with engine.begin() as conn:
        conn.execute(sa.insert(ext.table), rows)
        # the referencing rows point at their entries by hash, as the write path leaves them
        raw = sa.table(table.name, sa.column("id"), sa.column("b", ext.table.c.hash.type))
        conn.execute(sa.insert(raw), [{"id": r["id"], "b": r["_key"]} for r in refs])


def peak(fn: Callable[[], object]) -> int:
    """The peak of Python allocations while *fn* runs, above what was allocated before."""
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        fn()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def _growth(setup: Any, run: Callable[[djb.ExternalTable], object]) -> tuple[int, int]:
    """Peak memory of *run* over SMALL entries and over LARGE entries (in fresh tables of
    the same database, after a warm-up run)."""
    engine, table, ext = setup
    fill(engine, table, ext, 40, "warm-up")
    run(ext)
    peaks = []
    for n in (SMALL, LARGE):
        with engine.begin() as conn:
            conn.execute(sa.delete(table))
            conn.execute(sa.delete(ext.table))
        for info in list(ext.store.list(PurePosixPath(ext.store.location, ext.schema))):
            ext.store.remove(info.path)
        fill(engine, table, ext, n, f"n{n}")
        peaks.append(peak(lambda: run(ext)))
    return peaks[0], peaks[1]


def _bounded(small: int, large: int) -> None:
    assert large <= small + SLACK, (
        f"peak memory {large:,} B over {LARGE:,} entries against {small:,} B over {SMALL}"
    )


def test_sweep_memory_is_bounded_by_the_batch_not_the_store(setup: Any) -> None:
    def sweep(ext: djb.ExternalTable) -> None:
        report = ext.sweep(grace=ZERO, progress=False, batch=BATCH)
        assert report.ok, report.errors

    small, large = _growth(setup, sweep)
    _, _, ext = setup
    # the sweep did its work: the unused rows and the orphans went, the used stayed
    assert len(ext.used()) == len(ext.paths()) == LARGE // 2
    assert store_paths(ext) == {p for _, p in ext.paths()}
    _bounded(small, large)


def test_dry_run_memory_is_bounded_and_counts_everything(setup: Any) -> None:
    reports = []

    def dry(ext: djb.ExternalTable) -> None:
        reports.append(ext.sweep(dry_run=True, grace=ZERO, progress=False, batch=BATCH))

    small, large = _growth(setup, dry)
    rep = reports[-1]
    assert (rep.rows_deleted, rep.orphans_deleted) == (LARGE // 4, LARGE // 4)
    _bounded(small, large)


def test_verify_memory_is_bounded_by_the_page_not_the_table(
    setup: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    djb.config["threads"] = 2  # each payload in flight has its read buffer
    # pages of BATCH rows, so that SMALL entries already take several full pages (with the
    # default 1,000-row page, SMALL would hold one partial page and LARGE full ones)
    monkeypatch.setattr("sa_djblob._externals.verify.DEFAULT_BATCH", BATCH)
    reports = []

    def verify(ext: djb.ExternalTable) -> None:
        reports.append(ext.verify(progress=False, include_unused=True, chunk=BATCH))

    small, large = _growth(setup, verify)
    rep = reports[-1]
    assert rep.ok and rep.checked == LARGE * 3 // 4
    _bounded(small, large)


def test_entry_iterators_hold_one_page(setup: Any) -> None:
    counted: list[tuple[int, ...]] = []

    def count(ext: djb.ExternalTable) -> None:
        counted.append(
            tuple(
                sum(1 for _ in it)
                for it in (
                    ext.iter_paths(batch=BATCH),
                    ext.iter_used(batch=BATCH),
                    ext.iter_unused(batch=BATCH),
                )
            )
        )

    small, large = _growth(setup, count)
    _, _, ext = setup
    assert counted[-1] == (LARGE * 3 // 4, LARGE // 2, LARGE // 4)
    assert list(ext.iter_paths(batch=7)) == ext.paths()
    assert list(ext.iter_used(batch=7)) == ext.used()
    assert list(ext.iter_unused(batch=7)) == ext.unused()
    _bounded(small, large)


def test_sweep_finds_orphans_whatever_order_the_store_lists_in(
    setup: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store that does not list in path order is swept as well (no merge, lookups)."""
    engine, table, ext = setup
    fill(engine, table, ext, 400, "order")
    store = ext.store
    in_order = store.list

    def out_of_order(prefix: PurePosixPath) -> Iterator[djb.stores.ObjectInfo]:
        listed = list(in_order(prefix))
        yield from listed[1::2] + listed[::2][::-1]

    monkeypatch.setattr(store, "list", out_of_order)
    report = ext.sweep(grace=ZERO, progress=False, batch=16)
    assert report.ok, report.errors
    assert (report.rows_deleted, report.orphans_deleted) == (100, 100)
    monkeypatch.undo()
    assert len(ext.used()) == 200
    assert store_paths(ext) == {p for _, p in ext.paths()}


def test_orphans_next_to_an_attachment_of_the_same_hash_across_batches(setup: Any) -> None:
    """``<hash>`` and ``<hash>.<name>`` list next to each other; a batch boundary between
    them keeps the merge right."""
    engine, table, ext = setup
    store = ext.store
    old = (datetime.datetime.now() - datetime.timedelta(days=1)).timestamp()
    keys = sorted(uuid.uuid4() for _ in range(6))
    kept = []
    for i, key in enumerate(keys):
        for name in (None, "a.txt"):
            path = Path(object_path(store.location, ext.schema, key, name, store.subfolding))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"x")
            os.utime(path, (old, old))
            if i % 2 == 0:
                kept.append(PurePosixPath(path))
    with engine.begin() as conn:
        conn.execute(
            sa.insert(ext.table),
            [{"hash": k, "size": 1, "attachment_name": None} for k in keys[::2]],
        )
        raw = sa.table(table.name, sa.column("id"), sa.column("b", ext.table.c.hash.type))
        conn.execute(sa.insert(raw), [{"id": i, "b": k} for i, k in enumerate(keys[::2])])
    report = ext.sweep(grace=ZERO, progress=False, batch=3)
    assert report.ok, report.errors
    # a name starting with a hash that has a row is that row's (as before)
    assert report.orphans_deleted == 6
    assert store_paths(ext) == set(kept)


@pytest.mark.backends("sqlite")
@pytest.mark.parametrize(("size", "on_pool"), [(1000, False), (1 << 20, True)])
def test_verify_reads_small_local_payloads_in_the_caller(
    setup: Any, monkeypatch: pytest.MonkeyPatch, size: int, on_pool: bool
) -> None:
    """A local store answers in microseconds: a page of small payloads is checked in the
    calling thread (a thread hand-off per payload tripled verify's time); a page of large
    ones (4 MiB or more in all) on the pool, where reading and hashing run in parallel."""

    engine, table, ext = setup
    djb.install(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(table), [{"id": i, "b": os.urandom(size)} for i in range(8)])
    threads: set[int] = set()
    real = verify_module._check

    def check(*args: Any) -> str:
        threads.add(threading.get_ident())
        return str(real(*args))

    monkeypatch.setattr(verify_module, "_check", check)
    report = ext.verify()
    assert report.checked == 8 and report.ok, report
    assert (threads != {threading.get_ident()}) is on_pool, threads


@pytest.mark.parametrize("n", [0, 1, (64 << 10) - 1, 64 << 10, (64 << 10) + 1, (1 << 20) + 7])
def test_hash_stream_hashes_every_byte_whatever_the_read_sizes(n: int) -> None:
    data = os.urandom(n)
    key, size = hash_stream(io.BytesIO(data), prefix=b"name\0")
    assert size == n + 5
    assert key == uuid.UUID(bytes=hashlib.md5(b"name\0" + data).digest())
