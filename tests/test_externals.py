"""External blobs and attachments: every backend with every store kind."""

from __future__ import annotations

import os
import threading
import tracemalloc
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from conftest import Database
from helpers.common import make_models
from sqlalchemy.orm import Session

import sa_djblob as djb
from sa_djblob._layout import content_hash, object_path


@pytest.fixture
def models(engine: sa.Engine, shared_store: dict[str, Any]) -> Iterator[type[Any]]:
    Rec, metadata = make_models()
    metadata.create_all(engine)
    djb.install(engine)
    yield Rec


def _ext_rows(engine: sa.Engine, schema: str | None = None) -> list[Any]:
    t = djb.externals(engine, schema)["shared"].table
    with engine.connect() as conn:
        return list(conn.execute(sa.select(t.c.hash, t.c.size, t.c.attachment_name)).all())


VALUES: list[Any] = [
    np.random.default_rng(1).random((20, 30)),
    np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
    {"nested": [1, "two", 3.0, None], "arr": np.eye(3, dtype=np.complex64)},
    "a string",
    np.zeros(100_000),
]


def test_round_trip_orm_and_core(
    engine: sa.Engine, models: type[Any], tmp_path: Path, database: Database
) -> None:
    Rec = models
    f = tmp_path / "report.csv"
    f.write_bytes(b"a,b\n1,2\n")
    with Session(engine) as s:
        for i, v in enumerate(VALUES):
            s.add(Rec(id=i, b=v, a=f if i % 2 == 0 else None, inrow=v))
        s.commit()
    with Session(engine) as s:
        for rec in s.scalars(sa.select(Rec).order_by(Rec.id)):
            for got in (rec.b, rec.inrow):
                expected = VALUES[rec.id]
                if isinstance(expected, np.ndarray):
                    assert got.dtype == expected.dtype
                    np.testing.assert_array_equal(got, expected)
                elif isinstance(expected, dict):
                    assert got["nested"] == expected["nested"]
                    np.testing.assert_array_equal(got["arr"], expected["arr"])
                else:
                    assert got == expected
            if rec.id % 2 == 0:
                assert rec.a.read_bytes() == f.read_bytes() and rec.a.name == "report.csv"
            else:
                assert rec.a is None
    # Core, with the paths where DataJoint puts them.
    t = Rec.__table__
    with engine.begin() as conn:
        conn.execute(sa.insert(t), [{"id": 100, "b": [1, 2, 3], "a": None, "inrow": None}])
        conn.execute(sa.update(t).where(t.c.id == 100), {"b": "updated"})
    with engine.connect() as conn:
        assert conn.execute(sa.select(t.c.b).where(t.c.id == 100)).scalar_one() == "updated"
    store = djb.get_store("shared")
    for key, path in djb.externals(engine)["shared"].paths():
        assert path.parts[-4] == database.default_schema
        assert path.name.startswith(key.hex)
        assert store.exists(path)


def test_dedup_stores_identical_payloads_once(
    engine: sa.Engine, models: type[Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    Rec = models
    store = djb.get_store("shared")
    puts: list[PurePosixPath] = []
    for method in ("put", "put_file", "upload_file"):
        real = getattr(store, method)

        def spy(path: PurePosixPath, *args: Any, _real: Any = real) -> None:
            if ".sa_djblob-owner" not in path.parts:  # the area's owner marker
                puts.append(path)
            _real(path, *args)

        monkeypatch.setattr(store, method, spy)
    f = tmp_path / "same.txt"
    f.write_text("same")
    arr = np.arange(1000.0)
    with Session(engine) as s:
        s.add_all([Rec(id=i, b=arr, a=f) for i in range(5)])
        s.commit()
    assert len(set(puts)) == 2  # one blob, one attachment, each uploaded once
    uploads = len(puts)
    with Session(engine) as s:
        s.add(Rec(id=10, b=arr, a=f))
        s.commit()
    assert len(puts) == uploads  # already in the store: no second upload
    assert len(_ext_rows(engine)) == 2


def test_schema_qualified_tables(
    engine: sa.Engine, database: Database, shared_store: dict[str, Any]
) -> None:
    other = database.make_schema()
    Rec, metadata = make_models(schema=other)
    assert f"{other}.~external_shared" in metadata.tables
    metadata.create_all(engine)
    djb.install(engine)
    with Session(engine) as s:
        s.add(Rec(id=1, b=np.arange(5)))
        s.commit()
    with Session(engine) as s:
        rec = s.get(Rec, 1)
        assert rec is not None
        np.testing.assert_array_equal(rec.b, np.arange(5))
    ((key, path),) = djb.externals(engine, other)["shared"].paths()
    assert path.parts[-4] == other
    assert djb.get_store("shared").exists(path)
    assert djb.externals(engine, other)["shared"].used() == [key]


def test_rollback_leaves_no_externals_rows(engine: sa.Engine, models: type[Any]) -> None:
    Rec = models
    with Session(engine) as s:
        s.add(Rec(id=1, b=np.arange(3)))
        s.flush()
        s.rollback()
    assert _ext_rows(engine) == []
    with engine.connect() as conn:
        conn.execute(sa.insert(Rec.__table__), {"id": 2, "b": [1], "a": None, "inrow": None})
        conn.rollback()
    assert _ext_rows(engine) == []


def test_savepoint_rolled_back_and_released(engine: sa.Engine, models: type[Any]) -> None:
    Rec = models
    with Session(engine) as s:
        s.add(Rec(id=1, b="outer"))
        s.flush()
        sp = s.begin_nested()
        s.add(Rec(id=2, b="inner rolled back"))
        s.flush()
        sp.rollback()
        with s.begin_nested():
            s.add(Rec(id=3, b="inner released"))
        s.commit()
    with Session(engine) as s:
        got = {r.id: r.b for r in s.scalars(sa.select(Rec))}
    assert got == {1: "outer", 3: "inner released"}
    keys = {r.hash for r in _ext_rows(engine)}
    assert keys == {content_hash(djb.pack("outer")), content_hash(djb.pack("inner released"))}


def test_store_failing_mid_flush_commits_nothing(
    engine: sa.Engine, models: type[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    Rec = models
    store = djb.get_store("shared")
    calls = {"n": 0}
    lock = threading.Lock()
    real_put = store.put

    def flaky(path: PurePosixPath, data: Any) -> None:
        with lock:
            calls["n"] += 1
            n = calls["n"]
        if n == 3:
            raise OSError("disk on fire")
        real_put(path, data)

    monkeypatch.setattr(store, "put", flaky)
    with Session(engine) as s:
        s.add_all([Rec(id=i, b=f"value {i}") for i in range(6)])
        with pytest.raises(djb.StoreError):
            s.commit()
        s.rollback()
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(Rec.__table__)).scalar_one() == 0
    assert _ext_rows(engine) == []


def test_missing_and_corrupt_payloads(engine: sa.Engine, models: type[Any]) -> None:
    Rec = models
    with Session(engine) as s:
        s.add_all([Rec(id=1, b="will vanish"), Rec(id=2, b="will rot")])
        s.commit()
    store = djb.get_store("shared")
    schema = engine.dialect.default_schema_name
    assert schema
    gone = object_path(store.location, schema, content_hash(djb.pack("will vanish")))
    rot = object_path(store.location, schema, content_hash(djb.pack("will rot")))
    store.remove(gone)
    store.put(rot, djb.pack("something else"))
    t = Rec.__table__
    with engine.connect() as conn:
        with pytest.raises(djb.MissingPayloadError):
            conn.execute(sa.select(t.c.b).where(t.c.id == 1)).all()
        with pytest.raises(djb.IntegrityError) as info:
            conn.execute(sa.select(t.c.b).where(t.c.id == 2)).all()
    msg = str(info.value)
    assert "shared" in msg and content_hash(djb.pack("will rot")).hex[:8] in msg.replace("-", "")


def test_corrupt_external_attachment_leaves_no_file(
    engine: sa.Engine, models: type[Any], tmp_path: Path
) -> None:
    Rec = models
    f = tmp_path / "doc.txt"
    f.write_text("genuine")
    with Session(engine) as s:
        s.add(Rec(id=1, a=f))
        s.commit()
    ((_key, path),) = djb.externals(engine)["shared"].paths()
    djb.get_store("shared").put(path, b"forged!")
    with engine.connect() as conn, pytest.raises(djb.IntegrityError):
        conn.execute(sa.select(Rec.__table__.c.a)).all()
    assert list(Path(djb.config["download_path"]).iterdir()) == []


def test_not_installed_raises_with_the_fix(engine: sa.Engine, shared_store: dict[str, Any]) -> None:
    Rec, metadata = make_models()
    metadata.create_all(engine)
    with Session(engine) as s:
        s.add(Rec(id=1, b=np.arange(3)))
        # the documented class itself, not a StatementError around it
        with pytest.raises(djb.NotInstalledError, match=r"sa_djblob\.install\(engine\)"):
            s.commit()


def test_install_is_idempotent_and_uninstall_removes(engine: sa.Engine) -> None:
    from sa_djblob._externals import installed

    djb.install(engine)
    djb.install(engine)
    assert installed(engine)
    djb.uninstall(engine)
    djb.uninstall(engine)
    assert not installed(engine)


def test_one_query_for_many_attachments(
    engine: sa.Engine, models: type[Any], tmp_path: Path
) -> None:
    Rec = models
    files = []
    for i in range(20):
        p = tmp_path / f"f{i}.txt"
        p.write_text(f"file {i}")
        files.append(p)
    with Session(engine) as s:
        s.add_all([Rec(id=i, a=p, b=i) for i, p in enumerate(files)])
        s.commit()
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        with Session(engine) as s:
            recs = s.scalars(sa.select(Rec).order_by(Rec.id)).all()
            first = list(statements)
            statements.clear()
            again = s.scalars(sa.select(Rec).order_by(Rec.id)).all()
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)
    assert [r.a.read_text() for r in recs] == [f"file {i}" for i in range(20)]
    assert [r.b for r in recs] == list(range(20)) == [r.b for r in again]
    # One SELECT of the rows; at most one more per transaction, where the database says
    # which schema an unqualified externals table is in (MySQL's USE, PostgreSQL's
    # search_path); none per row.
    reading = [s for s in first if '"rec"' in s or "rec." in s or "FROM rec" in s]
    assert len(reading) == 1 and len(first) <= 2, first
    assert len(statements) == 1, statements


def test_subquery_and_alias_selects(engine: sa.Engine, models: type[Any], tmp_path: Path) -> None:
    Rec = models
    f = tmp_path / "n.txt"
    f.write_text("n")
    with Session(engine) as s:
        s.add(Rec(id=1, a=f, b=[1, 2]))
        s.commit()
    sub = sa.select(Rec.__table__).subquery()
    with engine.connect() as conn:
        row = conn.execute(sa.select(sub.c.a, sub.c.b)).one()
    assert row.a.read_text() == "n" and row.b == [1, 2]
    alias = sa.orm.aliased(Rec)
    with Session(engine) as s:
        rec = s.scalars(sa.select(alias)).one()
        assert rec.a.read_text() == "n"


def test_large_attachment_streams(engine: sa.Engine, models: type[Any], tmp_path: Path) -> None:
    Rec = models
    big = tmp_path / "big.bin"
    chunk = os.urandom(1 << 20)
    with big.open("wb") as f:
        for _ in range(48):
            f.write(chunk)
    tracemalloc.start()
    try:
        with Session(engine) as s:
            s.add(Rec(id=1, a=big))
            s.commit()
        _, peak_insert = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        with engine.connect() as conn:
            got = conn.execute(sa.select(Rec.__table__.c.a)).scalar_one()
        _, peak_fetch = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got.stat().st_size == big.stat().st_size
    assert got.read_bytes()[:4096] == chunk[:4096]
    if djb.get_store("shared").protocol != "memory":  # a memory store holds it all, of course
        assert peak_insert < 32 << 20, peak_insert
        assert peak_fetch < 32 << 20, peak_fetch


def test_hostile_external_attachment_name_is_refused(
    engine: sa.Engine, models: type[Any], tmp_path: Path
) -> None:
    Rec = models
    f = tmp_path / "ok.txt"
    f.write_text("ok")
    with Session(engine) as s:
        s.add(Rec(id=1, a=f))
        s.commit()
    ext = djb.externals(engine)["shared"].table
    with engine.begin() as conn:
        conn.execute(sa.update(ext).values(attachment_name="../../../etc/passwd"))
    with engine.connect() as conn, pytest.raises(djb.SaDjblobError, match="attachment name"):
        conn.execute(sa.select(Rec.__table__.c.a)).all()
    assert list(Path(djb.config["download_path"]).iterdir()) == []


# -- the layout of docs/design.md ------------------------------------------------------


def test_vector_layout(
    engine: sa.Engine, models: type[Any], tmp_path: Path, database: Database
) -> None:
    Rec = models
    f = tmp_path / "a.txt"
    f.write_bytes(b"hello")
    v1 = np.array([1.0, 2.0, 3.0])
    with Session(engine) as s:
        s.add(Rec(id=1, a=f, b=v1))
        s.commit()
    store = djb.get_store("shared")
    loc, schema = store.location, database.default_schema
    paths = dict(djb.externals(engine)["shared"].paths())
    att = uuid.UUID("677d5f3fc50fdacdd08e66c152620116")
    blob = uuid.UUID("71b234d9ded1c0d180f5f7da6b38b169")
    assert paths[att] == PurePosixPath(
        loc, schema, "67", "7d", "677d5f3fc50fdacdd08e66c152620116.a.txt"
    )
    assert paths[blob] == PurePosixPath(loc, schema, "71", "b2", "71b234d9ded1c0d180f5f7da6b38b169")
    assert store.get(paths[att]) == b"hello"  # the stored object is the raw file
    assert store.get(paths[blob]) == djb.pack(v1)
    rows = {r.hash: r for r in _ext_rows(engine)}
    assert rows[att].size == 5 and rows[att].attachment_name == "a.txt"
    assert rows[blob].size == len(djb.pack(v1)) and rows[blob].attachment_name is None


def test_file_store_layout_is_datajoints(
    engine: sa.Engine, tmp_path: Path, database: Database
) -> None:
    """A folder populated by sa_djblob has exactly the files DataJoint's rules name."""
    location = tmp_path / "djstore"
    djb.config["stores"] = {"shared": {"protocol": "file", "location": str(location)}}
    Rec, metadata = make_models()
    metadata.create_all(engine)
    djb.install(engine)
    f = tmp_path / "notes.md"
    f.write_text("# notes")
    with Session(engine) as s:
        s.add_all([Rec(id=1, b=np.arange(4), a=f), Rec(id=2, b={"k": "v"})])
        s.commit()
    on_disk = sorted(
        p.relative_to(location).as_posix()
        for p in location.rglob("*")
        if p.is_file() and ".sa_djblob-owner" not in p.parts
    )
    expected = []
    for key, path in djb.externals(engine)["shared"].paths():
        rel = PurePosixPath(path).relative_to(PurePosixPath(str(location)))
        hexkey = key.hex
        name = rel.name
        assert rel.parts[:3] == (database.default_schema, hexkey[:2], hexkey[2:4])
        assert name == hexkey or name.startswith(hexkey + ".")
        expected.append(rel.as_posix())
    assert on_disk == sorted(expected)


def test_sha256_store(engine: sa.Engine, tmp_path: Path) -> None:
    djb.config["stores"] = {
        "shared": {"protocol": "file", "location": str(tmp_path / "s"), "hash": "sha256"}
    }
    Rec, metadata = make_models()
    metadata.create_all(engine)
    djb.install(engine)
    with Session(engine) as s:
        s.add(Rec(id=1, b="sha"))
        s.commit()
    ((key, _path),) = djb.externals(engine)["shared"].paths()
    assert key == content_hash(djb.pack("sha"), algorithm="sha256")
    with Session(engine) as s:
        rec = s.get(Rec, 1)
        assert rec is not None and rec.b == "sha"


def test_unconfigured_store_is_a_clear_error(engine: sa.Engine, tmp_path: Path) -> None:
    Rec, metadata = make_models()
    # reported when the tables are created, with what to set ...
    with pytest.raises(djb.StoreNotConfiguredError, match=r"djb.config\['stores'\]\['shared'\]"):
        metadata.create_all(engine)
    # ... and when a value is written, if the store is gone from the settings since
    djb.config["stores"] = {"shared": {"protocol": "file", "location": str(tmp_path / "s")}}
    metadata.create_all(engine)
    djb.install(engine)
    djb.config["stores"] = {}
    with Session(engine) as s:
        s.add(Rec(id=1, b="x"))
        with pytest.raises(
            djb.StoreNotConfiguredError, match=r"djb.config\['stores'\]\['shared'\]"
        ):
            s.commit()


def test_cache_hits_need_no_store(
    engine: sa.Engine, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    server = request.getfixturevalue("s3_server")
    bucket = request.getfixturevalue("s3_bucket")
    spec = server.store_spec(bucket)
    djb.config["stores"] = {"shared": spec}
    djb.config["cache"] = str(tmp_path / "cache")
    Rec, metadata = make_models()
    metadata.create_all(engine)
    djb.install(engine)
    f = tmp_path / "cached.txt"
    f.write_text("cached attachment")
    with Session(engine) as s:
        s.add_all([Rec(id=1, b=np.arange(10), a=f), Rec(id=2, b="two")])
        s.commit()
    t = Rec.__table__
    with engine.connect() as conn:  # fills the cache
        conn.execute(sa.select(t.c.b, t.c.a)).all()
    # The store becomes unreachable: same location, a closed port.
    djb.config["stores"] = {"shared": {**spec, "endpoint": "127.0.0.1:9"}}
    with pytest.raises(djb.StoreError):
        djb.get_store("shared").exists(PurePosixPath("x"))
    for p in Path(djb.config["download_path"]).iterdir():
        p.unlink()
    with engine.connect() as conn:
        rows = conn.execute(sa.select(t.c.id, t.c.b, t.c.a).order_by(t.c.id)).all()
    np.testing.assert_array_equal(rows[0].b, np.arange(10))
    assert rows[0].a.read_text() == "cached attachment"
    assert rows[1].b == "two"


@pytest.fixture
def s3_models(engine: sa.Engine, request: pytest.FixtureRequest) -> type[Any]:
    server = request.getfixturevalue("s3_server")
    bucket = request.getfixturevalue("s3_bucket")
    djb.config["stores"] = {"shared": server.store_spec(bucket)}
    Rec, metadata = make_models()
    metadata.create_all(engine)
    djb.install(engine)
    return Rec


def test_s3_fetch_prefetches_concurrently(
    engine: sa.Engine, s3_models: type[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Rec = s3_models
    files = []
    for i in range(8):
        p = tmp_path / f"att{i}.txt"
        p.write_text(f"attachment {i}")
        files.append(p)
    with Session(engine) as s:
        s.add_all([Rec(id=i, b=np.full(10, i), a=files[i]) for i in range(8)])
        s.commit()
    store = djb.get_store("shared")
    threads: list[str] = []
    for method in ("get", "open"):
        real = getattr(store, method)

        def spy(path: PurePosixPath, _real: Any = real) -> Any:
            threads.append(threading.current_thread().name)
            return _real(path)

        monkeypatch.setattr(store, method, spy)
    with Session(engine) as s:
        recs = s.scalars(sa.select(Rec).order_by(Rec.id)).all()
        assert [int(r.b[0]) for r in recs] == list(range(8))
        assert [r.a.read_text() for r in recs] == [f"attachment {i}" for i in range(8)]
    assert len(threads) == 16
    assert all(name.startswith("sa_djblob") for name in threads), threads


def test_s3_prefetch_reports_missing_payload_at_its_row(
    engine: sa.Engine, s3_models: type[Any]
) -> None:
    Rec = s3_models
    with Session(engine) as s:
        s.add_all([Rec(id=i, b=f"v{i}") for i in range(3)])
        s.commit()
    store = djb.get_store("shared")
    schema = engine.dialect.default_schema_name
    assert schema
    store.remove(object_path(store.location, schema, content_hash(djb.pack("v1"))))
    with engine.connect() as conn, pytest.raises(djb.MissingPayloadError):
        conn.execute(sa.select(Rec.__table__.c.b)).all()
    with engine.connect() as conn:
        assert conn.execute(
            sa.select(Rec.__table__.c.b).where(Rec.__table__.c.id != 1)
        ).scalars().all() in (["v0", "v2"], ["v2", "v0"])


def test_table_copies_do_not_double_the_fk_or_index() -> None:
    Rec, _ = make_models()
    copy = Rec.__table__.to_metadata(sa.MetaData())
    fks = [
        fk for fk in copy.foreign_key_constraints if fk.referred_table.name == "~external_shared"
    ]
    assert sorted(c.name for fk in fks for c in fk.columns) == ["a", "b"]
    assert sorted(ix.name for ix in copy.indexes) == ["ix_rec_a", "ix_rec_b"]
    assert "~external_shared" in copy.metadata.tables


def test_orm_bulk_insert_bulk_update_and_merge(
    engine: sa.Engine, models: type[Any], tmp_path: Path
) -> None:
    Rec = models
    f = tmp_path / "bulk.txt"
    f.write_text("bulk")
    with Session(engine) as s:
        s.execute(
            sa.insert(Rec), [{"id": i, "b": np.full(3, i), "a": f, "inrow": i} for i in range(4)]
        )
        s.execute(sa.update(Rec), [{"id": 0, "b": "changed"}, {"id": 1, "b": None}])
        s.merge(Rec(id=2, b={"merged": True}, a=None))
        s.merge(Rec(id=9, b=[9], a=f))
        s.commit()
    with Session(engine) as s:
        got = {r.id: r for r in s.scalars(sa.select(Rec))}
    assert got[0].b == "changed" and got[1].b is None
    assert got[2].b == {"merged": True} and got[2].a is None
    np.testing.assert_array_equal(got[3].b, np.full(3, 3))
    assert got[9].b == [9] and got[9].a.read_text() == "bulk"
    assert got[3].a.read_text() == "bulk"
    used = set(djb.externals(engine)["shared"].used())
    expected = {content_hash(djb.pack(v)) for v in ("changed", {"merged": True}, [9])}
    expected.add(content_hash(djb.pack(np.full(3, 3))))
    assert expected <= used


def test_inline_values_are_written_too(engine: sa.Engine, models: type[Any]) -> None:
    t = models.__table__
    with engine.begin() as conn:
        conn.execute(sa.insert(t).values(id=1, b=np.arange(4)))
        conn.execute(sa.update(t).where(t.c.id == 1).values(b="inline update"))
    with engine.connect() as conn:
        assert conn.execute(sa.select(t.c.b)).scalar_one() == "inline update"


def test_autocommit_connections_are_refused(engine: sa.Engine, models: type[Any]) -> None:
    t = models.__table__
    with engine.connect() as conn:
        auto = conn.execution_options(isolation_level="AUTOCOMMIT")
        with pytest.raises(djb.SaDjblobError, match="AUTOCOMMIT"):
            auto.execute(sa.insert(t), {"id": 1, "b": "x", "a": None, "inrow": None})
    assert _ext_rows(engine) == []


@pytest.mark.backends("mysql")
def test_attachment_name_the_table_cannot_hold_is_refused(
    engine: sa.Engine, tmp_path: Path
) -> None:
    djb.config["stores"] = {"shared": {"protocol": "file", "location": str(tmp_path / "s")}}
    Rec, metadata = make_models()
    ext = metadata.tables["~external_shared"]
    ext.dialect_options["mysql"]["charset"] = "latin1"  # an old, DataJoint-era table
    metadata.create_all(engine)
    djb.install(engine)
    f = tmp_path / "photo_\N{CAMERA}.txt"
    f.write_text("snap")
    with Session(engine) as s:
        s.add(Rec(id=1, a=f))
        with pytest.raises(djb.StoreError, match="character set"):
            s.commit()


def test_two_databases_cannot_share_a_store_area(tmp_path: Path) -> None:
    """Two SQLite files both call their schema 'main': the second one to write into the
    same store location is stopped, and its sweep would not touch the first one's payloads."""
    djb.config["stores"] = {"shared": {"protocol": "file", "location": str(tmp_path / "s")}}
    engines = [sa.create_engine(f"sqlite:///{tmp_path / name}") for name in ("a.db", "b.db")]
    Rec, metadata = make_models()
    for e in engines:
        metadata.create_all(e)
        djb.install(e)
    with Session(engines[0]) as s:
        s.add(Rec(id=1, b="owned by a"))
        s.commit()
    with Session(engines[1]) as s:
        s.add(Rec(id=1, b="b tries"))
        with pytest.raises(djb.StoreError, match="belongs to another owner"):
            s.commit()
    report = djb.externals(engines[1])["shared"].sweep(grace=timedelta(0), progress=False)
    assert any("belongs to another owner" in e for e in report.errors)
    assert report.orphans_deleted == report.rows_deleted == report.payloads_deleted == 0
    with Session(engines[0]) as s:
        rec = s.get(Rec, 1)
        assert rec is not None and rec.b == "owned by a"
    for e in engines:
        djb.uninstall(e)
        e.dispose()
