"""Configurations the protocol's tests never tried, each of which lost data before:
two store names on one location, a sweep from a database that does not own the area,
multi-tenant schemas (``schema_translate_map``), PostgreSQL's ``search_path``, tables
without a working foreign key, attachments that change while they are stored, and
names that could be written but not read back."""

from __future__ import annotations

import os
import types
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from conftest import Database
from helpers.common import make_models
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import sa_djblob as djb
from sa_djblob._area import database_identity
from sa_djblob._kinds import AttachKind
from sa_djblob._layout import attachment_prefix, content_hash, object_path

ZERO = timedelta(0)


def _paths(engine: sa.Engine, store: str = "shared", schema: str | None = None) -> set[Any]:
    return {p for _, p in djb.externals(engine, schema)[store].paths()}


# -- 1. two store names on one location ------------------------------------------


def _two_stores_one_location(tmp_path: Path) -> None:
    loc = str(tmp_path / "one-folder")
    djb.config["stores"] = {
        "raw": {"protocol": "file", "location": loc},
        "proc": {"protocol": "file", "location": loc},
    }


@pytest.mark.backends("sqlite", "mysql")
def test_two_store_names_on_one_location_are_stopped(engine: sa.Engine, tmp_path: Path) -> None:
    _two_stores_one_location(tmp_path)
    md = sa.MetaData()
    t = sa.Table(
        "t",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("raw", djb.Blob(store="raw"), nullable=True),
        sa.Column("proc", djb.Blob(store="proc"), nullable=True),
    )
    md.create_all(engine)
    djb.install(engine)
    same = np.arange(50.0)  # one content: one path in the shared folder
    with engine.begin() as conn:
        conn.execute(sa.insert(t), {"id": 1, "raw": same})
    # the second store name on the same location cannot write there ...
    with pytest.raises(djb.StoreError, match="belongs to another owner"), engine.begin() as conn:
        conn.execute(sa.insert(t), {"id": 2, "proc": same})
    # ... and its sweep deletes nothing there, even rows it has
    ext = djb.externals(engine)
    with engine.begin() as conn:
        conn.execute(
            sa.insert(ext["proc"].table),
            {"hash": ext["raw"].used()[0], "size": 1, "attachment_name": None},
        )
    report = ext["proc"].sweep(grace=ZERO, progress=False)
    assert report.rows_deleted == report.payloads_deleted == report.orphans_deleted == 0
    assert any("belongs to another owner" in e for e in report.errors)
    with engine.connect() as conn:
        got = conn.execute(sa.select(t.c.raw).where(t.c.id == 1)).scalar_one()
    np.testing.assert_array_equal(got, same)


@pytest.mark.backends("sqlite", "mysql")
def test_an_owner_marker_naming_no_store_lets_no_store_in(
    engine: sa.Engine, tmp_path: Path
) -> None:
    """A marker of sa_djblob 0.1 names the database alone: accepted, it let every store name
    of that database onto one location (which then sweep each other's payloads). It is
    refused, nothing is written or deleted, and the message says how to upgrade it."""
    _two_stores_one_location(tmp_path)
    md = sa.MetaData()
    t = sa.Table(
        "t",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("raw", djb.Blob(store="raw"), nullable=True),
        sa.Column("proc", djb.Blob(store="proc"), nullable=True),
    )
    md.create_all(engine)
    djb.install(engine)
    ext = djb.externals(engine)
    area = ext["raw"].area()
    with engine.connect() as conn:
        identity = database_identity(conn)
    marker = Path(area.marker)
    marker.parent.mkdir(parents=True)
    marker.write_text(identity + "\n")  # the old format: no store
    for store in ("raw", "proc"):
        with pytest.raises(djb.StoreError, match="names no store") as err, engine.begin() as conn:
            conn.execute(sa.insert(t), {"id": 1, store: np.arange(3.0)})
        assert f"{identity} store={store}" in str(err.value)  # the line to write
        report = ext[store].sweep(grace=ZERO, progress=False)
        assert any("names no store" in e for e in report.errors)
    assert [p for p in marker.parent.parent.rglob("*") if p.is_file()] == [marker]
    # upgraded as the message says: that store name writes, the other stays out
    marker.write_text(f"{identity} store=raw\n")
    with engine.begin() as conn:
        conn.execute(sa.insert(t), {"id": 1, "raw": np.arange(3.0)})
    with pytest.raises(djb.StoreError, match="belongs to another owner"), engine.begin() as conn:
        conn.execute(sa.insert(t), {"id": 2, "proc": np.arange(3.0)})


@pytest.mark.backends("sqlite", "mysql")
def test_an_area_handed_over_is_noticed_by_a_running_process(
    engine: sa.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The owner marker is read again after OWNER_RECHECK seconds (writers) and at every
    sweep: an area handed over to another owner while this process runs stops its writes
    and deletes, rather than being trusted forever from the first check."""
    from sa_djblob import _area

    djb.config["stores"] = {"raw": {"protocol": "file", "location": str(tmp_path / "s")}}
    md = sa.MetaData()
    t = sa.Table(
        "t",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("raw", djb.Blob(store="raw"), nullable=True),
    )
    md.create_all(engine)
    djb.install(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(t), {"id": 1, "raw": np.arange(3.0)})
    ext = djb.externals(engine)["raw"]
    Path(ext.area().marker).write_text("another-database store=raw\n")  # handed over
    # the sweep reads the marker every time: it deletes nothing
    report = ext.sweep(grace=ZERO, progress=False)
    assert any("belongs to another owner" in e for e in report.errors)
    # writers trust their last reading for OWNER_RECHECK seconds, then read it again
    monkeypatch.setattr(_area, "OWNER_RECHECK", 0.0)
    with pytest.raises(djb.StoreError, match="belongs to another owner"), engine.begin() as conn:
        conn.execute(sa.insert(t), {"id": 2, "raw": np.arange(4.0)})


# -- 2. a sweep from a database that does not own the area ------------------------


def test_sweep_of_a_database_not_owning_the_area_deletes_nothing(tmp_path: Path) -> None:
    djb.config["stores"] = {"shared": {"protocol": "file", "location": str(tmp_path / "s")}}
    owner, other = (sa.create_engine(f"sqlite:///{tmp_path / n}") for n in ("a.db", "b.db"))
    Rec, metadata = make_models()
    for e in (owner, other):
        metadata.create_all(e)
        djb.install(e)
    try:
        with Session(owner) as s:
            s.add(Rec(id=1, b="the owner's value"))
            s.commit()
        key = djb.externals(owner)["shared"].used()[0]
        # the other database has an (unused) row for the same content
        with other.begin() as conn:
            conn.execute(
                sa.insert(djb.externals(other)["shared"].table),
                {"hash": key, "size": 1, "attachment_name": None},
            )
        report = djb.externals(other)["shared"].sweep(grace=ZERO, progress=False)
        assert report.rows_deleted == report.payloads_deleted == 0
        assert any(
            "belongs to another owner" in e and "nothing deleted" in e for e in report.errors
        )
        with Session(owner) as s:
            assert s.get_one(Rec, 1).b == "the owner's value"
    finally:
        for e in (owner, other):
            djb.uninstall(e)
            e.dispose()


# -- 3. schema_translate_map (multi-tenant schemas) --------------------------------


@pytest.mark.backends("mysql", "postgresql")
def test_schema_translate_map_puts_payloads_in_the_tenant_area(
    engine: sa.Engine, database: Database, tmp_path: Path
) -> None:
    djb.config["stores"] = {"shared": {"protocol": "file", "location": str(tmp_path / "s")}}
    tenant = database.make_schema("t1")
    Rec, metadata = make_models()  # unqualified tables
    tenant_engine = engine.execution_options(schema_translate_map={None: tenant})
    metadata.create_all(engine)
    metadata.create_all(tenant_engine)
    djb.install(engine)
    with Session(tenant_engine) as s:
        s.add(Rec(id=1, b="tenant 1"))
        s.commit()
    with Session(engine) as s:
        s.add(Rec(id=1, b="default"))
        s.commit()
    tenant_paths = _paths(tenant_engine)
    assert len(tenant_paths) == 1
    (path,) = tenant_paths
    assert path.parts[-4] == tenant  # <location>/<tenant>/ab/cd/<hash>
    assert Path(path).is_file()
    # the default schema's sweep leaves the tenant's payload alone
    report = djb.externals(engine)["shared"].sweep(grace=ZERO, progress=False)
    assert report.ok and report.orphans_deleted == report.rows_deleted == 0
    with Session(tenant_engine) as s:
        assert s.get_one(Rec, 1).b == "tenant 1"
    with Session(engine) as s:
        assert s.get_one(Rec, 1).b == "default"
    # and the tenant's own sweep keeps its referenced payload
    report = djb.externals(tenant_engine)["shared"].sweep(grace=ZERO, progress=False)
    assert report.ok and Path(path).is_file()
    # a per-statement map (execution_options on the statement) is honoured too
    with Session(engine) as s:
        s.execute(
            sa.insert(Rec).values(id=2, b="per statement"),
            execution_options={"schema_translate_map": {None: tenant}},
        )
        s.commit()
    with Session(tenant_engine) as s:
        assert s.get_one(Rec, 2).b == "per statement"
    assert len(_paths(tenant_engine)) == 2


# -- 4. PostgreSQL search_path --------------------------------------------------


@pytest.mark.backends("postgresql")
def test_search_path_payloads_go_where_the_rows_go(
    engine: sa.Engine, database: Database, tmp_path: Path
) -> None:
    djb.config["stores"] = {"shared": {"protocol": "file", "location": str(tmp_path / "s")}}
    home = database.default_schema
    lab = database.make_schema("lab")  # first in search_path, but holds no tables
    Rec, metadata = make_models()
    metadata.create_all(engine)  # in `home`
    lab_engine = sa.create_engine(
        database.url.update_query_dict({"options": f"-csearch_path={lab},{home}"})
    )
    djb.install(lab_engine)
    djb.install(engine)
    try:
        with Session(lab_engine) as s:
            s.add(Rec(id=1, b=np.arange(7)))
            s.commit()
        (path,) = _paths(engine)
        assert path.parts[-4] == home
        with Session(engine) as s:  # another engine finds the payload
            np.testing.assert_array_equal(s.get_one(Rec, 1).b, np.arange(7))
        with Session(lab_engine) as s:
            np.testing.assert_array_equal(s.get_one(Rec, 1).b, np.arange(7))
    finally:
        djb.uninstall(lab_engine)
        lab_engine.dispose()


# -- 5. a referencing table without a working foreign key --------------------------


@pytest.mark.backends("mysql")
def test_sweep_respects_a_table_whose_foreign_key_was_dropped(
    engine: sa.Engine, tmp_path: Path
) -> None:
    djb.config["stores"] = {"shared": {"protocol": "file", "location": str(tmp_path / "s")}}
    md = sa.MetaData()
    t = sa.Table(
        "legacy",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("b", djb.Blob(store="shared")),
        mysql_engine="MyISAM",  # MyISAM drops foreign keys silently
    )
    md.create_all(engine)
    djb.install(engine)
    assert not sa.inspect(engine).get_foreign_keys("legacy")
    with engine.begin() as conn:
        conn.execute(sa.insert(t), {"id": 1, "b": np.arange(9)})
    ext = djb.externals(engine)["shared"]
    assert ext.unused() == []
    report = ext.sweep(grace=ZERO, progress=False)
    assert report.ok and report.rows_deleted == 0
    with engine.connect() as conn:
        np.testing.assert_array_equal(conn.execute(sa.select(t.c.b)).scalar_one(), np.arange(9))


@pytest.mark.backends("sqlite")
def test_metadata_columns_count_as_references(engine: sa.Engine, tmp_path: Path) -> None:
    """A table created without the type's foreign key (foreign_key=False, e.g. by hand
    or a migration that lost it) is still a reference when the models are given."""
    djb.config["stores"] = {"shared": {"protocol": "file", "location": str(tmp_path / "s")}}
    md = sa.MetaData()
    t = sa.Table(
        "nofk",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("b", djb.Blob(store="shared", foreign_key=False)),
    )
    djb.externals(engine)["shared"].table.to_metadata(md)
    md.create_all(engine)
    djb.install(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(t), {"id": 1, "b": "kept"})
    assert djb.externals(engine, metadata=md)["shared"].unused() == []
    report = djb.externals(engine, metadata=md)["shared"].sweep(grace=ZERO, progress=False)
    assert report.ok and report.rows_deleted == 0
    with engine.connect() as conn:
        assert conn.execute(sa.select(t.c.b)).scalar_one() == "kept"


# -- 6. an attachment that changes between hashing and upload ---------------------


@pytest.mark.backends("sqlite")
def test_attachment_changed_after_hashing_is_never_stored_wrong(
    engine: sa.Engine, shared_store: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Rec, metadata = make_models()
    metadata.create_all(engine)
    djb.install(engine)
    f = tmp_path / "growing.csv"
    f.write_bytes(b"a,b\n1,2\n" * 1000)
    original = f.read_bytes()
    real = AttachKind.prepare

    def prepare_then_change(self: AttachKind, value: Any, store: djb.Store) -> Any:
        payload = real(self, value, store)
        f.write_bytes(b"a,b\n9,9\n" * 1000)  # same size, other contents
        return payload

    monkeypatch.setattr(AttachKind, "prepare", prepare_then_change)
    try:
        with Session(engine) as s:
            s.add(Rec(id=1, a=f))
            s.commit()
    except djb.StoreError as exc:
        assert "changed while it was being stored" in str(exc)
        stored = False
    else:
        stored = True  # remote stores upload the copy taken while hashing
    monkeypatch.setattr(AttachKind, "prepare", real)
    with Session(engine) as s:
        rec = s.get(Rec, 1)
        if stored:
            assert rec is not None and rec.a.read_bytes() == original
        else:
            assert rec is None
    # nothing in the store differs from its key
    assert djb.externals(engine)["shared"].verify(progress=False, include_unused=True).ok
    # a later write of the (new) file works and reads back
    with Session(engine) as s:
        s.add(Rec(id=2, a=f))
        s.commit()
    with Session(engine) as s:
        assert s.get_one(Rec, 2).a.read_bytes() == f.read_bytes()


@pytest.mark.backends("sqlite")
def test_a_write_repairs_a_payload_of_the_wrong_size(
    engine: sa.Engine, shared_store: dict[str, Any]
) -> None:
    Rec, metadata = make_models()
    metadata.create_all(engine)
    djb.install(engine)
    value = np.arange(100.0)
    with Session(engine) as s:
        s.add(Rec(id=1, b=value))
        s.commit()
    ((_key, path),) = djb.externals(engine)["shared"].paths()
    djb.get_store("shared").put(path, b"torn")  # a torn write, or tampering
    with Session(engine) as s:
        s.add(Rec(id=2, b=value))  # the same content again
        s.commit()
    assert djb.externals(engine)["shared"].verify(progress=False).ok
    with Session(engine) as s:
        np.testing.assert_array_equal(s.get_one(Rec, 1).b, value)


# -- 7. names written must be names that can be read --------------------------------


@pytest.mark.backends("sqlite")
@pytest.mark.parametrize("column", ["a", "inrow_attach"])
def test_attachment_names_the_reader_refuses_are_refused_at_write(
    engine: sa.Engine, shared_store: dict[str, Any], tmp_path: Path, column: str
) -> None:
    md = sa.MetaData()
    t = sa.Table(
        "files",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("a", djb.Attach(store="shared"), nullable=True),
        sa.Column("inrow_attach", djb.Attach(), nullable=True),
    )
    md.create_all(engine)
    djb.install(engine)
    backslash = tmp_path / "Q3\\summary.txt"  # a legal file name on Linux
    backslash.write_text("q3")
    with (
        pytest.raises(djb.UnsupportedTypeError, match="not a plain file name"),
        engine.begin() as conn,
    ):
        conn.execute(sa.insert(t), {"id": 1, column: backslash})
    bad_utf8 = Path(os.fsdecode(bytes(tmp_path) + b"/caf\xe9.txt"))
    bad_utf8.write_text("latin-1 name")
    with pytest.raises(djb.UnsupportedTypeError, match="not valid UTF-8"), engine.begin() as conn:
        conn.execute(sa.insert(t), {"id": 2, column: bad_utf8})
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(t)).scalar() == 0


@pytest.mark.backends("sqlite")
def test_long_names_fail_at_write_on_file_stores(engine: sa.Engine, tmp_path: Path) -> None:
    djb.config["stores"] = {"shared": {"protocol": "file", "location": str(tmp_path / "s")}}
    Rec, metadata = make_models()
    metadata.create_all(engine)
    djb.install(engine)
    folder = tmp_path / "long"
    folder.mkdir()
    fine = folder / ("n" * 218 + ".txt")  # 222 bytes: <hash>.<name> is 255
    fine.write_text("fits")
    too_long = folder / ("n" * 219 + ".txt")
    too_long.write_text("does not fit")
    with Session(engine) as s:
        s.add(Rec(id=1, a=fine))
        s.commit()
    with Session(engine) as s, pytest.raises(djb.UnsupportedTypeError, match="at most 222"):
        s.add(Rec(id=2, a=too_long))
        s.commit()
    with Session(engine) as s:
        assert s.get_one(Rec, 1).a.read_text() == "fits"


# -- 13. orphans with odd names; links in download_path ------------------------------


@pytest.mark.backends("sqlite")
def test_orphan_with_a_newline_in_its_name_is_collected(engine: sa.Engine, tmp_path: Path) -> None:
    djb.config["stores"] = {"shared": {"protocol": "file", "location": str(tmp_path / "s")}}
    _rec, metadata = make_models()
    metadata.create_all(engine)
    djb.install(engine)
    # sa_djblob refuses to write such a name; DataJoint (or sa_djblob 0.1) did write them
    name = "two\nlines.txt"
    ext = djb.externals(engine)["shared"]
    key = content_hash(attachment_prefix(name), b"x")
    path = object_path(ext.store.location, ext.schema, key, name)
    ext.store.put(path, b"x")
    old = os.stat(path).st_mtime - 7200
    os.utime(path, (old, old))
    report = ext.sweep(grace=timedelta(hours=1), progress=False)
    assert report.ok and report.orphans_deleted == 1
    assert not os.path.exists(path)


@pytest.mark.backends("sqlite")
def test_a_symlink_in_download_path_is_never_the_download(
    engine: sa.Engine, shared_store: dict[str, Any], tmp_path: Path
) -> None:
    Rec, metadata = make_models()
    metadata.create_all(engine)
    djb.install(engine)
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "notes.txt"
    secret.write_text("same contents")
    f = tmp_path / "notes.txt"
    f.write_text("same contents")
    with Session(engine) as s:
        s.add(Rec(id=1, a=f))
        s.commit()
    downloads = Path(djb.config["download_path"])
    (downloads / "notes.txt").symlink_to(secret)
    with Session(engine) as s:
        got = s.get_one(Rec, 1).a
    assert not got.is_symlink() and got.parent == downloads
    assert got.read_text() == "same contents"


# -- 14. every statement form ------------------------------------------------------


def _forms_table(engine: sa.Engine) -> sa.Table:
    md = sa.MetaData()
    t = sa.Table(
        "forms",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("value", djb.Blob(store="shared"), key="v", nullable=True),
    )
    md.create_all(engine)
    djb.install(engine)
    return t


def _read(engine: sa.Engine, t: sa.Table) -> dict[int, Any]:
    with engine.connect() as conn:
        return {r.id: r.v for r in conn.execute(sa.select(t.c.id, t.c.v))}


def test_statement_forms(engine: sa.Engine, shared_store: dict[str, Any], backend: str) -> None:
    t = _forms_table(engine)
    with engine.begin() as conn:
        # multi-row values()
        conn.execute(sa.insert(t).values([{"id": 1, "v": "one"}, {"id": 2, "v": "two"}]))
        # update with a bindparam, executemany
        conn.execute(
            sa.update(t).where(t.c.id == sa.bindparam("i")).values(v=sa.bindparam("nv")),
            [{"i": 1, "nv": "uno"}, {"i": 2, "nv": "dos"}],
        )
        # values() keyed by the Column object, whose key differs from its name
        conn.execute(sa.insert(t).values({t.c.v: "three", t.c.id: 3}))
        conn.execute(sa.update(t).where(t.c.id == 3).values({t.c.v: "tres"}))
    assert _read(engine, t) == {1: "uno", 2: "dos", 3: "tres"}
    # upserts with the value in the conflict branch
    with engine.begin() as conn:
        if backend == "mysql":
            from sqlalchemy.dialects.mysql import insert as upsert

            stmt = upsert(t).values(id=3, v="x")
            stmt = stmt.on_duplicate_key_update({t.c.v: "upserted"})
            conn.execute(stmt)
        else:
            from sqlalchemy.dialects import postgresql, sqlite

            dialect = postgresql if backend == "postgresql" else sqlite
            ins = dialect.insert(t).values(id=3, v="x")
            conn.execute(
                ins.on_conflict_do_update(index_elements=[t.c.id], set_={t.c.v: "upserted"})
            )
    assert _read(engine, t)[3] == "upserted"
    # every payload is in the store, nothing dangling
    assert djb.externals(engine)["shared"].verify(progress=False).ok


def test_orm_insert_values_with_an_attribute_named_differently(
    engine: sa.Engine, shared_store: dict[str, Any]
) -> None:
    class Base(DeclarativeBase):
        pass

    class Thing(Base):
        __tablename__ = "thing"
        id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
        payload: Mapped[Any] = mapped_column("stored_value", djb.Blob(store="shared"))

    Base.metadata.create_all(engine)
    djb.install(engine)
    with Session(engine) as s:
        s.execute(sa.insert(Thing).values(id=1, payload=[1, 2, 3]))
        s.execute(sa.insert(Thing), [{"id": 2, "payload": "bulk"}])
        s.execute(sa.update(Thing).where(Thing.id == 1).values(payload="changed"))
        s.commit()
    with Session(engine) as s:
        assert s.get_one(Thing, 1).payload == "changed"
        assert s.get_one(Thing, 2).payload == "bulk"


def test_select_by_value_compares_hashes(engine: sa.Engine, shared_store: dict[str, Any]) -> None:
    t = _forms_table(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(t), [{"id": 1, "v": [1, 2]}, {"id": 2, "v": [3]}])
    with engine.connect() as conn:
        found = conn.execute(sa.select(t.c.id).where(t.c.v == [3])).scalars().all()
    assert found == [2]
    assert len(djb.externals(engine)["shared"].paths()) == 2  # the query stored nothing


# -- 15. errors users can catch ------------------------------------------------------


@pytest.mark.backends("sqlite", "postgresql")
def test_missing_externals_table_says_what_to_do(
    engine: sa.Engine, shared_store: dict[str, Any]
) -> None:
    Rec, metadata = make_models()
    metadata.create_all(engine)
    djb.install(engine)
    binary = "BLOB" if engine.dialect.name == "sqlite" else "BYTEA"
    with engine.begin() as conn:  # a database whose migration forgot the externals table
        conn.execute(sa.text("DROP TABLE rec"))
        conn.execute(sa.text('DROP TABLE "~external_shared"'))
        conn.execute(sa.text(f"CREATE TABLE rec (id INTEGER PRIMARY KEY, b {binary}, a {binary})"))
    with Session(engine) as s, pytest.raises(djb.SaDjblobError, match="create_all"):
        s.add(Rec(id=1, b="x"))
        s.commit()


@pytest.mark.backends("sqlite")
def test_misspelled_store_in_externals(engine: sa.Engine, shared_store: dict[str, Any]) -> None:
    with pytest.raises(djb.StoreNotConfiguredError, match="configured: shared"):
        djb.externals(engine)["sahred"]


@pytest.mark.backends("sqlite")
def test_unconfigured_store_is_reported_at_create_all(engine: sa.Engine) -> None:
    djb.config["stores"] = {"local": {"protocol": "memory", "location": "x"}}
    _Rec, metadata = make_models()  # its columns name store 'shared'
    with pytest.raises(djb.StoreNotConfiguredError, match=r"'shared'.*configured: local"):
        metadata.create_all(engine)


def test_unsupported_dialect_is_refused() -> None:
    """A database without SQL for the protocol is refused by install() and create_all,
    naming the supported ones; statements still print with SQLAlchemy's generic dialect."""
    fake_dbapi = types.SimpleNamespace(paramstyle="qmark", version="5", Cursor=type("C", (), {}))
    eng = sa.create_engine("mssql+pyodbc://u:p@dsn", module=fake_dbapi)
    with pytest.raises(djb.SaDjblobError, match="supported: mariadb, mysql, postgresql, sqlite"):
        djb.install(eng)
    md = sa.MetaData()
    t = sa.Table(
        "t",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("b", djb.Blob(store="s")),
    )
    ddl: list[Any] = []
    mock = sa.create_mock_engine("mssql+pyodbc://", lambda sql, *a, **kw: ddl.append(sql))
    with pytest.raises(djb.SaDjblobError, match="does not support the 'mssql' database"):
        md.create_all(mock, checkfirst=False)
    assert ddl == []
    assert "t.b" in str(sa.select(t))


# -- filepath objects live outside every schema's area ---------------------------------


@pytest.mark.backends("mysql", "postgresql")
def test_two_schemas_cannot_share_a_stores_filepaths(
    engine: sa.Engine, database: Database, tmp_path: Path
) -> None:
    stage = tmp_path / "stage"
    stage.mkdir()
    djb.config["stores"] = {
        "fp": {"protocol": "file", "location": str(tmp_path / "s"), "stage": str(stage)}
    }
    other = database.make_schema("other")

    def table(schema: str | None) -> sa.Table:
        md = sa.MetaData()
        t = sa.Table(
            "doc",
            md,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("f", djb.Filepath(store="fp")),
            schema=schema,
        )
        md.create_all(engine)
        return t

    mine, theirs = table(None), table(other)
    djb.install(engine)
    f = stage / "run1" / "data.bin"
    f.parent.mkdir()
    f.write_bytes(b"shared relative path")
    with engine.begin() as conn:
        conn.execute(sa.insert(mine), {"id": 1, "f": f})
    # the other schema would place the same relative path at the same object
    with pytest.raises(djb.StoreError, match="belongs to another owner"), engine.begin() as conn:
        conn.execute(sa.insert(theirs), {"id": 1, "f": f})
    # and its sweep removes no filepath object of this schema's
    ext_other = djb.externals(engine, other)["fp"]
    with engine.begin() as conn:
        key = conn.execute(sa.select(mine.c.f)).scalar_one()
    (obj,) = {p for _, p in djb.externals(engine)["fp"].paths()}
    with engine.begin() as conn:  # an unused entry for the same relative path there
        conn.execute(
            sa.insert(ext_other.table),
            {
                "hash": content_hash(b"run1/data.bin"),
                "size": 20,
                "filepath": "run1/data.bin",
                "contents_hash": content_hash(b"shared relative path"),
            },
        )
    report = ext_other.sweep(grace=ZERO, progress=False)
    assert report.rows_deleted == 0
    assert any("belongs to another owner" in e for e in report.errors), report
    assert Path(obj).is_file()
    assert key.read_bytes() == b"shared relative path"
