"""The sweep of a DataJoint 2.x store (``dj2.sweep``): safe while sa_djblob writers run.

DataJoint 2.x has no externals table and no foreign keys; sa_djblob's writers claim each
object in ``~sa_djblob_claims`` (inserted, locked ``FOR SHARE``) before uploading it, and
the sweep takes the claim ``FOR UPDATE`` and looks for references again before deleting.
"""

from __future__ import annotations

import datetime
import itertools
import json
import os
import random
import threading
import time
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from conftest import Database
from helpers.common import kill, run_until, url_with_password, value

import sa_djblob as djb
from sa_djblob import dj2
from sa_djblob._dialects import dialect_support
from sa_djblob._dj2 import sweep as sweep_mod
from sa_djblob._layout import store_root

HELPERS = Path(__file__).parent / "helpers"
HOUR = datetime.timedelta(hours=1)
ZERO = datetime.timedelta(0)
B32 = "abcdefghijklmnopqrstuvwxyz"[:26]  # 26 base32 letters: a name the GC would list


def make_table(engine: sa.Engine, name: str = "item", schema: str | None = None) -> sa.Table:
    md = sa.MetaData()
    t = sa.Table(
        name,
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("b", dj2.Blob(store="shared"), nullable=True),
        schema=schema,
    )
    md.create_all(engine)
    return t


def root() -> PurePosixPath:
    store = djb.get_store("shared")
    return store_root(store.location, store.protocol)


def objects(schema: str) -> set[str]:
    """Every object below ``_hash/<schema>/`` of store 'shared', relative to its root."""
    store = djb.get_store("shared")
    top = root()
    return {o.path.relative_to(top).as_posix() for o in store.list(top / "_hash" / schema)}


def referenced(engine: sa.Engine, table: sa.Table) -> set[str]:
    q: sa.Select[Any] = (
        sa.select(sa.column("b")).select_from(table).where(sa.column("b").is_not(None))
    )
    with engine.connect() as conn:
        out = set()
        for (v,) in conn.execute(q):
            out.add((json.loads(v) if isinstance(v, str) else v)["path"])
        return out


def backdate(rel: str, age: datetime.timedelta) -> None:
    when = (datetime.datetime.now(datetime.UTC) - age).timestamp()
    os.utime(root() / rel, (when, when))


@pytest.fixture
def file_store(tmp_path: Path) -> dict[str, Any]:
    spec = {"protocol": "file", "location": str(tmp_path / "store")}
    djb.config["stores"] = {"shared": spec}
    return spec


def _rows(table: sa.Table, engine: sa.Engine, ids: range) -> None:
    with engine.begin() as conn:
        conn.execute(sa.insert(table), [{"id": i, "b": value(i)} for i in ids])


def test_sweep_deletes_only_unreferenced_objects_older_than_the_grace_period(
    engine: sa.Engine, database: Database, file_store: dict[str, Any]
) -> None:
    djb.install(engine)
    t = make_table(engine)
    schema = database.default_schema
    _rows(t, engine, range(4))
    live = referenced(engine, t)
    with engine.begin() as conn:
        conn.execute(sa.delete(t).where(t.c.id >= 2))
    dead = live - referenced(engine, t)
    old, young = sorted(dead)
    backdate(old, 2 * HOUR)

    preview = dj2.sweep(engine, "shared", [schema], dry_run=True)
    assert preview.candidates == [old] and preview.deleted == []
    assert objects(schema) == live

    report = dj2.sweep(engine, "shared", [schema])
    assert report.deleted == [old] and report.kept == [] and report.listed == 4
    assert objects(schema) == live - {old}
    assert dj2.sweep(engine, "shared", grace=ZERO).deleted == [young]
    assert objects(schema) == referenced(engine, t)
    with engine.connect() as conn:
        for i, b in conn.execute(sa.select(t.c.id, t.c.b)):
            np.testing.assert_array_equal(b, value(i))
        # the claims of swept objects went with them; live objects keep theirs
        claims = sa.table("~sa_djblob_claims", sa.column("hash"))
        left = set(conn.execute(sa.select(claims.c.hash)).scalars())
        assert left == {PurePosixPath(p).name for p in live} - {
            PurePosixPath(old).name,
            PurePosixPath(young).name,
        }


def test_sweep_touches_only_the_hash_area_of_the_schemas_given(
    engine: sa.Engine, database: Database, file_store: dict[str, Any]
) -> None:
    djb.install(engine)
    t = make_table(engine)
    schema = database.default_schema
    store = djb.get_store("shared")
    outside = [
        f"_hash/{schema}_other/{B32}",  # another schema's area
        f"_schema/{schema}/item/1/b_x.npy",  # schema-addressed objects
        f"{B32}",  # the store's root
        f"_hash/{schema}/not-a-hash.txt",  # not a name DataJoint 2.x hashes give
        f"_hash/{schema}x/{B32}",  # a schema whose name starts like this one's
    ]
    for rel in outside:
        store.put(root() / rel, b"x")
        backdate(rel, 2 * HOUR)
    _rows(t, engine, range(2))
    report = dj2.sweep(engine, "shared", [schema], grace=ZERO)
    assert report.deleted == []
    for rel in outside:
        assert store.exists(root() / rel), rel


def test_sweep_deletes_nothing_when_a_reference_scan_fails(
    engine: sa.Engine, database: Database, file_store: dict[str, Any], monkeypatch: Any
) -> None:
    djb.install(engine)
    t = make_table(engine)
    schema = database.default_schema
    _rows(t, engine, range(3))
    before = objects(schema)
    real = sweep_mod._columns

    def with_a_missing_table(conn: sa.Connection, schema: str) -> list[tuple[str, str]]:
        return [*real(conn, schema), ("no_such_table", "b")]

    monkeypatch.setattr(sweep_mod, "_columns", with_a_missing_table)
    with pytest.raises(sa.exc.DBAPIError):
        dj2.sweep(engine, "shared", [schema], grace=ZERO)
    assert objects(schema) == before
    # the scan succeeds once the table can be read: the live objects stay
    monkeypatch.setattr(sweep_mod, "_columns", real)
    assert dj2.sweep(engine, "shared", [schema], grace=ZERO).deleted == []
    assert objects(schema) == before


def test_sweep_deletes_nothing_when_a_listing_fails(
    engine: sa.Engine, database: Database, file_store: dict[str, Any], monkeypatch: Any
) -> None:
    djb.install(engine)
    t = make_table(engine)
    schema = database.default_schema
    other = database.make_schema()
    t2 = make_table(engine, schema=other)
    _rows(t, engine, range(2))
    _rows(t2, engine, range(2))
    with engine.begin() as conn:
        conn.execute(sa.delete(t))
    before = objects(schema)
    store = djb.get_store("shared")
    real = type(store).list

    def failing(self: Any, prefix: PurePosixPath) -> Any:
        if prefix.name == other:
            raise djb.StoreError("listing failed")
        return real(self, prefix)

    monkeypatch.setattr(type(store), "list", failing)
    with pytest.raises(djb.StoreError, match="listing failed"):
        dj2.sweep(engine, "shared", [schema, other], grace=ZERO)
    assert objects(schema) == before  # the unreferenced objects of the first schema too


def test_sweep_refuses_a_schema_the_database_does_not_have(
    engine: sa.Engine, database: Database, file_store: dict[str, Any]
) -> None:
    djb.install(engine)
    make_table(engine)
    store = djb.get_store("shared")
    store.put(root() / "_hash" / "no_such_schema" / B32, b"x")
    backdate(f"_hash/no_such_schema/{B32}", 2 * HOUR)
    with pytest.raises(djb.SaDjblobError, match="do not exist in this database"):
        dj2.sweep(engine, "shared", [database.default_schema, "no_such_schema"])
    assert store.exists(root() / "_hash" / "no_such_schema" / B32)


def test_a_value_written_after_its_object_was_swept_is_uploaded_again(
    engine: sa.Engine, database: Database, file_store: dict[str, Any]
) -> None:
    djb.install(engine)
    t = make_table(engine)
    _rows(t, engine, range(1))
    with engine.begin() as conn:
        conn.execute(sa.delete(t))
    assert len(dj2.sweep(engine, "shared", grace=ZERO).deleted) == 1
    _rows(t, engine, range(1))
    with engine.connect() as conn:
        np.testing.assert_array_equal(conn.execute(sa.select(t.c.b)).scalar_one(), value(0))


@pytest.mark.backends("mysql", "postgresql")
@pytest.mark.parametrize("outcome", ["commit", "rollback"])
def test_sweep_waits_for_a_writer_that_claimed_an_object(
    engine: sa.Engine, database: Database, file_store: dict[str, Any], outcome: str
) -> None:
    """An uploaded object whose row is not committed yet: the sweep waits for the writer,
    keeps the object if the row commits and deletes it if the writer rolls back."""
    djb.install(engine)
    t = make_table(engine)
    schema = database.default_schema
    result: dict[str, Any] = {}

    def sweep() -> None:
        try:
            result["report"] = dj2.sweep(engine, "shared", grace=ZERO)
        except Exception as exc:  # reported by the assertion below
            result["error"] = exc

    with engine.connect() as writer:
        tx = writer.begin()
        writer.execute(sa.insert(t), {"id": 1, "b": value(1)})
        (path,) = objects(schema)  # uploaded, not committed
        sweeper = threading.Thread(target=sweep)
        sweeper.start()
        sweeper.join(1.5)
        assert sweeper.is_alive(), f"the sweep did not wait for the writer: {result}"
        tx.commit() if outcome == "commit" else tx.rollback()
    sweeper.join(30)
    assert "error" not in result, result
    report = result["report"]
    if outcome == "commit":
        assert report.kept == [path] and report.deleted == []
        assert objects(schema) == {path}
        with engine.connect() as conn:
            np.testing.assert_array_equal(conn.execute(sa.select(t.c.b)).scalar_one(), value(1))
    else:
        assert report.deleted == [path] and objects(schema) == set()


# -- races and faults ---------------------------------------------------------------


def _retryable(exc: BaseException) -> bool:
    retryable = any(dialect_support(n).is_retryable(exc) for n in ("mysql", "postgresql"))
    return retryable or "retry the transaction" in str(exc)


@pytest.mark.slow
@pytest.mark.backends("mysql", "postgresql")
@pytest.mark.parametrize("store_kind", ["file", "s3"])
def test_sweeps_racing_writers_never_delete_a_committed_rows_object(
    engine: sa.Engine,
    database: Database,
    shared_store: dict[str, Any],
    backend: str,
    store_kind: str,
) -> None:
    djb.install(engine)
    t = make_table(engine)
    schema = database.default_schema
    values = [value(i, size=200) for i in range(8)]
    ids = itertools.count(1)
    lock = threading.Lock()
    stop = threading.Event()
    expected: dict[int, int] = {}
    stats = dict(commits=0, retries=0, sweeps=0, deleted=0, kept=0)
    failures: list[str] = []

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        mine: list[int] = []
        while not stop.is_set():
            with lock:
                new = [next(ids) for _ in range(rng.randint(1, 3))]
            rows: list[dict[str, Any]] = [
                {"id": i, "b": values[rng.randrange(len(values))]} for i in new
            ]
            drop = list(mine) if len(mine) >= 3 else rng.sample(mine, rng.randint(0, len(mine)))
            try:
                with engine.begin() as conn:
                    conn.execute(sa.insert(t), rows)
                    time.sleep(rng.random() * 0.02)  # work between the upload and the commit
                    if drop:
                        conn.execute(sa.delete(t).where(t.c.id.in_(drop)))
            except Exception as exc:
                if _retryable(exc):
                    with lock:
                        stats["retries"] += 1
                    continue
                failures.append(f"writer: {type(exc).__name__}: {exc}")
                return
            mine = [i for i in mine if i not in drop] + new
            try:  # what was just committed reads back (its objects are in the store)
                with engine.connect() as conn:
                    conn.execute(sa.select(t.c.b).where(t.c.id.in_(new))).all()
            except djb.MissingPayloadError as exc:
                failures.append(f"lost: {exc}")
                return
            with lock:
                for r in rows:
                    expected[r["id"]] = int(r["b"][0])
                for i in drop:
                    del expected[i]
                stats["commits"] += 1

    def sweeper(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            try:
                report = dj2.sweep(engine, "shared", grace=ZERO, batch=rng.choice([1, 3, 50]))
            except Exception as exc:
                failures.append(f"sweeper: {type(exc).__name__}: {exc}")
                return
            with lock:
                stats["sweeps"] += 1
                stats["deleted"] += len(report.deleted)
                stats["kept"] += len(report.kept)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    threads += [threading.Thread(target=sweeper, args=(100 + i,)) for i in range(2)]
    for th in threads:
        th.start()
    time.sleep(6.0)
    stop.set()
    for th in threads:
        th.join(60)
    assert not any(th.is_alive() for th in threads), "a thread hung"
    summary = f"DJ2 RACE {backend}/{store_kind}: {stats}, rows alive={len(expected)}"
    print("\n" + summary)
    assert not failures, f"{failures[:5]}\n{summary}"
    assert stats["commits"] > 20 and stats["sweeps"] > 5, summary
    assert stats["deleted"] > 0, summary  # the sweeps did race with the writers

    store = djb.get_store("shared")
    live = referenced(engine, t)
    lost = [p for p in live if not store.exists(root() / p)]
    assert lost == [], summary
    with engine.connect() as conn:
        got = {r.id: r.b for r in conn.execute(sa.select(t.c.id, t.c.b))}
    assert set(got) == set(expected), summary
    assert all(np.array_equal(v, values[expected[i]]) for i, v in got.items()), summary
    dj2.sweep(engine, "shared", grace=ZERO)
    assert objects(schema) == live, summary


@pytest.mark.slow
@pytest.mark.backends("mysql", "postgresql")
@pytest.mark.parametrize("store_kind", ["file", "s3"])
def test_writer_killed_before_commit_leaves_an_orphan_the_sweep_collects(
    engine: sa.Engine, database: Database, shared_store: dict[str, Any], store_kind: str
) -> None:
    djb.install(engine)
    t = make_table(engine)
    schema = database.default_schema
    _rows(t, engine, range(1))
    live = referenced(engine, t)
    proc = run_until(
        [
            str(HELPERS / "writer_killed.py"),
            url_with_password(engine),
            json.dumps(shared_store),
            t.name,
            "2",
            "2",
            "dj2",
        ],
        "UPLOADED",
    )
    kill(proc)
    orphans = objects(schema) - live
    assert len(orphans) == 1, "the killed writer's upload is an orphan"
    deadline = time.monotonic() + 20
    while True:  # the server notices the dead client and rolls back (its claim too)
        kept = dj2.sweep(engine, "shared", grace=HOUR)
        if kept.deleted == [] or time.monotonic() > deadline:
            break
    assert kept.deleted == [] and objects(schema) == live | orphans
    collected = dj2.sweep(engine, "shared", grace=ZERO)
    assert collected.deleted == sorted(orphans)
    assert objects(schema) == live
    _rows(t, engine, range(2, 3))  # the same content can be written again
    with engine.connect() as conn:
        got = conn.execute(sa.select(t.c.b).where(t.c.id == 2)).scalar_one()
    np.testing.assert_array_equal(got, value(2))


@pytest.mark.slow
@pytest.mark.backends("mysql", "postgresql")
@pytest.mark.parametrize("store_kind", ["file", "s3"])
def test_sweep_killed_before_commit_loses_nothing_referenced(
    engine: sa.Engine, database: Database, shared_store: dict[str, Any], store_kind: str
) -> None:
    djb.install(engine)
    t = make_table(engine)
    schema = database.default_schema
    _rows(t, engine, range(6))
    with engine.begin() as conn:
        conn.execute(sa.delete(t).where(t.c.id >= 3))
    live = referenced(engine, t)
    assert len(objects(schema) - live) == 3
    proc = run_until(
        [str(HELPERS / "dj2_sweep_killed.py"), url_with_password(engine), json.dumps(shared_store)],
        "DELETED",
    )
    # while the killed sweep holds its claims, a writer of a swept value waits, then
    # uploads it again
    result: dict[str, Any] = {}

    def write_again() -> None:
        try:
            with engine.begin() as conn:
                conn.execute(sa.insert(t), {"id": 3, "b": value(3)})
        except Exception as exc:
            result["error"] = exc

    writer = threading.Thread(target=write_again)
    writer.start()
    writer.join(1.0)
    kill(proc)
    writer.join(30)
    assert not writer.is_alive() and "error" not in result, result
    store = djb.get_store("shared")
    live = referenced(engine, t)
    assert all(store.exists(root() / p) for p in live)
    with engine.connect() as conn:
        for i, b in conn.execute(sa.select(t.c.id, t.c.b)):
            np.testing.assert_array_equal(b, value(i))
    final = dj2.sweep(engine, "shared", grace=ZERO)
    assert objects(schema) == live, final
