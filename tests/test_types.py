"""In-row Blob and Attach columns through the ORM and Core on every backend."""

from __future__ import annotations

import datetime
import os
import struct
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import sa_djblob as djb
from sa_djblob import _attach as djattach
from sa_djblob._layout import content_hash


class Base(DeclarativeBase):
    # declared tables: a Table (sa.insert, CreateTable), not just a FromClause
    __table__: ClassVar[sa.Table]


class Item(Base):
    __tablename__ = "item"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    b: Mapped[Any] = mapped_column(djb.Blob(), nullable=True)
    a: Mapped[Path | None] = mapped_column(djb.Attach(), nullable=True)


VALUES: list[Any] = [
    np.arange(12, dtype=np.int16).reshape(3, 4),
    np.random.default_rng(0).random((5, 7)),
    {"a": [1, "x", (2.5, None)], "b": {"c": np.eye(2)}},
    "héllo",
    b"\x00\x01\xff",
    12345678901234567890,
    np.zeros(50_000),  # compressed
]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    return bool(a == b)


@pytest.fixture
def tables(engine: sa.Engine) -> sa.Engine:
    Base.metadata.create_all(engine)
    return engine


def test_ddl_types(engine: sa.Engine, backend: str) -> None:
    ddl = str(sa.schema.CreateTable(Item.__table__).compile(engine)).upper()
    expected = {"sqlite": "BLOB", "mysql": "LONGBLOB", "postgresql": "BYTEA"}[backend]
    assert f"B {expected}" in ddl and f"A {expected}" in ddl
    if backend == "mysql":
        assert "COMMENT ':ATTACH:'" in ddl


def test_orm_round_trip(tables: sa.Engine, tmp_path: Path) -> None:
    src = tmp_path / "data.bin"
    src.write_bytes(os.urandom(3000))
    with Session(tables) as s:
        for i, v in enumerate(VALUES):
            s.add(Item(id=i, b=v, a=src if i == 0 else None))
        s.commit()
    with Session(tables) as s:
        got = {it.id: it for it in s.scalars(sa.select(Item))}
        for i, v in enumerate(VALUES):
            assert _same(v, got[i].b), (i, v, got[i].b)
        path = got[0].a
        assert isinstance(path, Path)
        assert path.name == "data.bin"
        assert path.parent == Path(djb.config["download_path"])
        assert path.read_bytes() == src.read_bytes()
        assert got[1].a is None
        # attribute update
        got[1].b = np.array([1.5, 2.5])
        s.commit()
    with Session(tables) as s:
        item = s.get(Item, 1)
        assert item is not None
        np.testing.assert_array_equal(item.b, [1.5, 2.5])


def test_core_round_trip(tables: sa.Engine, tmp_path: Path) -> None:
    t = Item.__table__
    src = tmp_path / "x.txt"
    src.write_text("contents")
    with tables.begin() as conn:
        conn.execute(
            sa.insert(t),
            [{"id": 1, "b": np.arange(3), "a": str(src)}, {"id": 2, "b": None, "a": None}],
        )
        conn.execute(sa.update(t).where(t.c.id == 2).values(b=[1, 2]))
    with tables.connect() as conn:
        rows = conn.execute(sa.select(t.c.id, t.c.b, t.c.a).order_by(t.c.id)).all()
    np.testing.assert_array_equal(rows[0].b, np.arange(3))
    assert rows[0].a.read_text() == "contents"
    assert rows[1].b == [1, 2] and rows[1].a is None
    # raw bytes are DataJoint's: the stored value is pack(value)
    with tables.connect() as conn:
        raw = conn.execute(
            sa.select(sa.type_coerce(t.c.b, sa.LargeBinary)).where(t.c.id == 1)
        ).scalar_one()
    assert bytes(raw) == djb.pack(np.arange(3))


def test_repr_rebuilds_constructor() -> None:
    for t in (djb.Blob(), djb.Blob(store="shared"), djb.Attach(), djb.Attach(store="local")):
        again = eval(repr(t), {"Blob": djb.Blob, "Attach": djb.Attach})
        assert type(again) is type(t) and again.store == t.store
    assert repr(djb.Blob(store="shared")) == "Blob(store='shared')"
    assert djb.Blob.cache_ok and djb.Attach.cache_ok


def test_bad_store_name() -> None:
    with pytest.raises(ValueError, match="store"):
        djb.Blob(store="no such/store")


def test_unsupported_value_is_clear(tables: sa.Engine) -> None:
    with Session(tables) as s:
        s.add(Item(id=1, b={"a": [1, 2, np.float16(1)]}))
        # the documented class itself, not a StatementError around it
        with pytest.raises(djb.UnsupportedTypeError, match="float16"):
            s.commit()


# -- attachments on disk -------------------------------------------------------


def _fetch_attach(engine: sa.Engine, item_id: int) -> Path:
    with engine.connect() as conn:
        got = conn.execute(
            sa.select(Item.__table__.c.a).where(Item.__table__.c.id == item_id)
        ).scalar_one()
    assert isinstance(got, Path)
    return got


def test_attach_reuses_identical_and_aliases_different(tables: sa.Engine, tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    (one / "f.txt").write_text("first")
    (two / "f.txt").write_text("second")
    with tables.begin() as conn:
        conn.execute(
            sa.insert(Item.__table__),
            [{"id": 1, "a": one / "f.txt"}, {"id": 2, "a": two / "f.txt"}],
        )
    p1 = _fetch_attach(tables, 1)
    p1_again = _fetch_attach(tables, 1)
    p2 = _fetch_attach(tables, 2)
    assert p1 == p1_again and p1.name == "f.txt"
    assert p2.name == "f_0000.txt" and p2.read_text() == "second"
    assert p1.read_text() == "first"  # never overwritten
    assert _fetch_attach(tables, 2) == p2


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("/abs/path/x.txt", "x.txt"),
        ("..", "attachment"),
        ("", "attachment"),
        ("a\x01b\x7fc.txt", "abc.txt"),
        ("..\\..\\win.ini", "win.ini"),
    ],
)
def test_hostile_names_stay_inside_download_path(
    tables: sa.Engine, stored: str, expected: str
) -> None:
    raw = stored.encode() + b"\0payload"
    with tables.begin() as conn:
        conn.execute(
            sa.insert(sa.table("item", sa.column("id"), sa.column("a", sa.LargeBinary))),
            {"id": 1, "a": raw},
        )
    got = _fetch_attach(tables, 1)
    base = Path(djb.config["download_path"]).resolve()
    assert got.resolve().parent == base
    assert got.name == expected
    assert got.read_bytes() == b"payload"


def test_safe_name_truncates_long_names() -> None:
    name = "x" * 400 + ".txt"
    safe = djattach.safe_name(name)
    assert len(safe.encode()) <= 255 and safe.endswith(".txt")


def test_attach_without_separator_is_format_error(tables: sa.Engine) -> None:
    with tables.begin() as conn:
        conn.execute(
            sa.insert(sa.table("item", sa.column("id"), sa.column("a", sa.LargeBinary))),
            {"id": 1, "a": b"no separator"},
        )
    with pytest.raises(djb.BlobFormatError):
        _fetch_attach(tables, 1)


def test_attach_rejects_non_paths(tables: sa.Engine) -> None:
    with Session(tables) as s:
        s.add(Item(id=1, a=12))
        with pytest.raises(djb.UnsupportedTypeError, match="file paths"):
            s.commit()


def test_corrupt_blob_in_row_raises_format_error(tables: sa.Engine) -> None:
    with tables.begin() as conn:
        conn.execute(
            sa.insert(sa.table("item", sa.column("id"), sa.column("b", sa.LargeBinary))),
            {"id": 1, "b": b"mYm\0Zjunk"},
        )
    with tables.connect() as conn, pytest.raises(djb.BlobFormatError):
        conn.execute(sa.select(Item.__table__.c.b)).all()


# -- MySQL's max_allowed_packet -------------------------------------------------


@pytest.mark.backends("mysql")
def test_mysql_value_over_packet_limit_fails_before_sending(tables: sa.Engine) -> None:
    djb.install(tables)
    with tables.connect() as conn:
        limit = conn.exec_driver_sql("SELECT @@max_allowed_packet").scalar_one()
    big = np.frombuffer(os.urandom(limit // 2 + 1024), dtype=np.uint8)
    with Session(tables) as s:
        s.add(Item(id=1, b=big))
        with pytest.raises(djb.SaDjblobError, match="max_allowed_packet") as info:
            s.commit()
    assert f"{limit:,}" in str(info.value)
    # the connection survived: nothing was sent
    with Session(tables) as s:
        s.add(Item(id=2, b=np.arange(10)))
        s.commit()
        assert s.get(Item, 2) is not None


@pytest.mark.backends("mysql")
def test_mysql_value_under_packet_limit_is_stored(tables: sa.Engine) -> None:
    djb.install(tables)
    with tables.connect() as conn:
        limit = conn.exec_driver_sql("SELECT @@max_allowed_packet").scalar_one()
    data = np.frombuffer(os.urandom(limit // 2 - 64 * 1024), dtype=np.uint8)
    with Session(tables) as s:
        s.add(Item(id=1, b=data))
        s.commit()
    with Session(tables) as s:
        item = s.get(Item, 1)
        assert item is not None
        np.testing.assert_array_equal(item.b, data)


def test_uuid_values_are_ordinary_blobs(tables: sa.Engine) -> None:
    u = uuid.uuid4()
    with Session(tables) as s:
        s.add(Item(id=1, b=u))
        s.commit()
    with Session(tables) as s:
        item = s.get(Item, 1)
        assert item is not None and item.b == u


# -- legacy 32-bit mYm blobs -------------------------------------------------------


def _legacy_blob() -> bytes:
    u32 = struct.Struct("<I").pack
    dims = u32(2) + u32(2) + u32(3)
    return b"mYm\0A" + dims + u32(6) + u32(0) + np.arange(6.0).tobytes()


@pytest.mark.backends("sqlite", "mysql")
def test_legacy_u32_column_setting(engine: sa.Engine, tmp_path: Path) -> None:
    djb.config["stores"] = {"old": {"protocol": "file", "location": str(tmp_path / "s")}}
    md = sa.MetaData()
    t = sa.Table(
        "legacy",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("inrow", djb.Blob(legacy_u32=True), nullable=True),
        sa.Column("default", djb.Blob(), nullable=True),
        sa.Column("ext", djb.Blob(store="old", legacy_u32=True), nullable=True),
    )
    md.create_all(engine)
    djb.install(engine)
    blob = _legacy_blob()
    ext = djb.externals(engine)["old"]
    key = content_hash(blob)
    djb.get_store("old").put(ext.object_path(key), blob)
    with engine.begin() as conn:
        conn.execute(sa.insert(ext.table), {"hash": key, "size": len(blob)})
        conn.execute(
            sa.text('INSERT INTO legacy (id, inrow, "default", ext) VALUES (1, :b, :b, :h)')
            if engine.dialect.name != "mysql"
            else sa.text("INSERT INTO legacy (id, inrow, `default`, ext) VALUES (1, :b, :b, :h)"),
            {"b": blob, "h": key.bytes},
        )
    expected = np.arange(6.0).reshape((2, 3), order="F")
    with engine.connect() as conn:
        row = conn.execute(sa.select(t.c.inrow, t.c.ext)).one()
        np.testing.assert_array_equal(row.inrow, expected)
        np.testing.assert_array_equal(row.ext, expected)
        with pytest.raises(djb.BlobFormatError):  # a Blob() column reads u64 by default
            conn.execute(sa.select(t.c.default)).scalar_one()
        with djb.config.override(legacy_u32=True):  # ... unless configured otherwise
            np.testing.assert_array_equal(
                conn.execute(sa.select(t.c.default)).scalar_one(), expected
            )
    assert eval(repr(djb.Blob(legacy_u32=True)), {"Blob": djb.Blob}).legacy_u32 is True


@pytest.mark.parametrize("name", ["repo-s3", "raw-data_2", "_x"])
def test_datajoint_store_names_are_accepted(name: str) -> None:
    assert djb.Blob(store=name).store == name
    cfg = djb.config.__class__()
    cfg["stores"] = {name: {"protocol": "file", "location": "/x"}}


@pytest.mark.parametrize("name", ["9lives", "a b", "a/b", "a.b", "", "-x"])
def test_store_names_datajoint_refuses_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="store"):
        djb.Blob(store=name)
    with pytest.raises(djb.ConfigError, match="store name"):
        djb.config.__class__()["stores"] = {name: {"protocol": "file", "location": "/x"}}


def test_a_store_named_as_datajoint_names_them_round_trips(
    engine: sa.Engine, tmp_path: Path
) -> None:
    djb.config["stores"] = {"repo-s3": {"protocol": "file", "location": str(tmp_path / "s")}}
    djb.install(engine)
    md = sa.MetaData()
    t = sa.Table(
        "t",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("b", djb.Blob(store="repo-s3")),
    )
    md.create_all(engine)
    assert sa.inspect(engine).has_table("~external_repo-s3")
    with engine.begin() as conn:
        conn.execute(sa.insert(t), [{"id": 1, "b": np.arange(3)}, {"id": 2, "b": [1, 2]}])
        conn.execute(sa.delete(t).where(t.c.id == 2))
    with engine.connect() as conn:
        assert np.array_equal(conn.execute(sa.select(t.c.b)).scalar_one(), np.arange(3))
    ext = djb.externals(engine)["repo-s3"]
    assert ext.sweep(grace=datetime.timedelta(0), progress=False).rows_deleted == 1
    assert ext.verify(progress=False).ok
    assert len(ext.paths()) == 1


def test_a_committed_blob_of_many_small_objects_reads_back(tables: sa.Engine) -> None:
    # compressed as usual, these rows would need more than max_expansion times their
    # stored size to read: committed, then unreadable with the default settings
    values = {1: [Decimal("0")] * 200_000, 2: [set()] * 50_000}
    with Session(tables) as s:
        s.add_all(Item(id=i, b=v) for i, v in values.items())
        s.commit()
    with Session(tables) as s:
        got = {it.id: it.b for it in s.scalars(sa.select(Item))}
    assert got == values
