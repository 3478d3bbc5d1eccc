"""``dj2.Npy``, ``dj2.Object`` and ``dj2.Filepath``: values read as references that do
no I/O until used; an ``NpyRef`` reads only the rows an index selects."""

from __future__ import annotations

import io
import json
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from conftest import Database

import sa_djblob as djb
from sa_djblob import dj2


@pytest.fixture
def store(tmp_path: Path) -> Path:
    root = tmp_path / "dj2-store"
    djb.config["stores"] = {"main": {"protocol": "file", "location": str(root)}}
    return root


def make_table(engine: sa.Engine) -> sa.Table:
    md = sa.MetaData()
    t = sa.Table(
        "refs",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("n", dj2.Npy(store="main"), nullable=True),
        sa.Column("o", dj2.Object(store="main"), nullable=True),
        sa.Column("f", dj2.Filepath(store="main"), nullable=True),
    )
    md.create_all(engine)
    return t


class Reads:
    """Counts the store's reads: whole objects, opened streams, and bytes read."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.gets = self.opens = self.bytes = 0
        cls = type(djb.get_store("main"))
        real_get, real_open = cls.get, cls.open
        reads = self

        def get(self: Any, path: PurePosixPath) -> bytes:
            reads.gets += 1
            data = real_get(self, path)
            reads.bytes += len(data)
            return data

        def open_(self: Any, path: PurePosixPath) -> Any:
            reads.opens += 1
            f: Any = real_open(self, path)
            real_read = f.read

            def read(n: int = -1) -> bytes:
                data = real_read(n)
                reads.bytes += len(data)
                return data

            f.read = read
            return f

        monkeypatch.setattr(cls, "get", get)
        monkeypatch.setattr(cls, "open", open_)


def test_npy_reads_shape_and_dtype_without_io_and_slices_by_range(
    engine: sa.Engine, database: Database, store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    djb.install(engine)
    t = make_table(engine)
    arr = np.arange(20000, dtype=np.float64).reshape(2000, 10)
    with engine.begin() as conn:
        conn.execute(sa.insert(t), {"id": 1, "n": arr})
        raw: Any = conn.execute(sa.select(sa.column("n")).select_from(t)).scalar_one()
    ptr = json.loads(raw) if isinstance(raw, str) else raw
    assert ptr["shape"] == [2000, 10] and ptr["dtype"] == "float64" and ptr["store"] == "main"
    assert ptr["path"].startswith(f"_schema/{database.default_schema}/refs/npy_")
    assert ptr["path"].endswith(".npy")
    np.testing.assert_array_equal(np.load(store / ptr["path"]), arr)

    reads = Reads(monkeypatch)
    with engine.connect() as conn:
        ref = conn.execute(sa.select(t.c.n)).scalar_one()
    assert isinstance(ref, dj2.NpyRef)
    assert (ref.shape, ref.dtype, ref.ndim, len(ref), ref.nbytes) == (
        (2000, 10),
        np.dtype("float64"),
        2,
        2000,
        arr.nbytes,
    )
    assert (reads.gets, reads.opens, reads.bytes) == (0, 0, 0)  # no I/O so far
    np.testing.assert_array_equal(ref[100:110], arr[100:110])
    np.testing.assert_array_equal(ref[5], arr[5])
    np.testing.assert_array_equal(ref[-1, 3], arr[-1, 3])
    np.testing.assert_array_equal(ref[50:40:-3, 2:], arr[50:40:-3, 2:])
    np.testing.assert_array_equal(ref[10:10], arr[10:10])
    assert reads.gets == 0 and reads.bytes < 20 * 4096  # headers and the rows asked for
    with pytest.raises(IndexError):
        ref[2000]
    np.testing.assert_array_equal(np.asarray(ref), arr)
    assert reads.gets == 1 and ref.is_loaded


def test_npy_reference_refuses_an_object_that_differs_from_its_pointer(
    engine: sa.Engine, store: Path
) -> None:
    djb.install(engine)
    t = make_table(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(t), {"id": 1, "n": np.zeros((4, 3), np.int32)})
    with engine.connect() as conn:
        ref = conn.execute(sa.select(t.c.n)).scalar_one()
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((5, 3), np.int32))
    (store / ref.path).write_bytes(buffer.getvalue())
    with pytest.raises(djb.IntegrityError, match="shape"):
        ref[1:2]
    with pytest.raises(djb.UnsupportedTypeError), engine.begin() as conn:
        conn.execute(sa.insert(t), {"id": 2, "n": np.array([{"a": 1}], dtype=object)})


def test_object_values_are_written_and_read_as_references(
    engine: sa.Engine, store: Path, tmp_path: Path
) -> None:
    djb.install(engine)
    t = make_table(engine)
    src = tmp_path / "movie.avi"
    src.write_bytes(b"frames" * 1000)
    with engine.begin() as conn:
        conn.execute(
            sa.insert(t),
            [
                {"id": 1, "o": src},
                {"id": 2, "o": b"raw"},
                {"id": 3, "o": ("json", b"{}")},
            ],
        )
    with engine.connect() as conn:
        refs = dict(conn.execute(sa.select(t.c.id, t.c.o)).all())
    assert all(isinstance(r, dj2.ObjectRef) for r in refs.values())
    assert refs[1].read() == src.read_bytes() and refs[1].ext == ".avi"
    assert refs[1].path.endswith(".avi") and refs[1].size == 6000
    assert refs[2].read() == b"raw" and refs[2].ext is None
    assert refs[3].path.endswith(".json")
    with refs[1].open() as f:
        assert f.read(6) == b"frames"
    got = refs[1].download(tmp_path / "out")
    assert got.read_bytes() == src.read_bytes()
    mapper = refs[3].fsmap()
    assert mapper.fs.cat_file(mapper.root) == b"{}"
    with pytest.raises(djb.UnsupportedTypeError, match="folder"), engine.begin() as conn:
        conn.execute(sa.insert(t), {"id": 4, "o": tmp_path})


def test_filepath_names_a_file_already_in_the_store(engine: sa.Engine, store: Path) -> None:
    djb.install(engine)
    t = make_table(engine)
    (store / "raw" / "day1").mkdir(parents=True)
    (store / "raw" / "day1" / "scan.tif").write_bytes(b"tiff")
    with engine.begin() as conn:
        conn.execute(sa.insert(t), {"id": 1, "f": "raw/day1/scan.tif"})
    with engine.connect() as conn:
        ref = conn.execute(sa.select(t.c.f)).scalar_one()
    assert isinstance(ref, dj2.ObjectRef)
    assert (ref.path, ref.size, ref.read()) == ("raw/day1/scan.tif", 4, b"tiff")
    missing = pytest.raises(djb.MissingPayloadError, match="put the file into the store")
    with missing, engine.begin() as conn:
        conn.execute(sa.insert(t), {"id": 2, "f": "raw/missing.tif"})
    with pytest.raises(djb.UnsupportedTypeError, match="_hash"), engine.begin() as conn:
        conn.execute(sa.insert(t), {"id": 3, "f": "_hash/x/abc"})
