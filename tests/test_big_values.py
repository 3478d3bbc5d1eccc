"""Big arrays in one copy of memory: an external blob of a large numeric array is hashed in
place and streamed from the array's own buffer to the store, and read back into a result
allocated once, verified as the bytes arrive (compressed ones decompressed as a stream)."""

from __future__ import annotations

import functools
import io
import json
import sys
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from helpers.common import Trickle

import sa_djblob as djb
from sa_djblob import _bigvalues, _codec, _framing
from sa_djblob._layout import content_hash

ROOT = Path(__file__).resolve().parent.parent
MiB = 1 << 20

DTYPES = [
    "bool", "i1", "u1", "<i2", "<u2", "<i4", "<u4", "<i8", "<u8", "<f4", "<f8", "<c8",
    "<c16", "<M8[D]", "<M8[ns]",
]  # fmt: skip


def _array(dtype: str, shape: tuple[int, ...], seed: int = 0, smooth: bool = False) -> Any:
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    # smooth values compress; random ones do not
    base = (np.arange(n) // 64 % 7).reshape(shape) if smooth else rng.integers(0, 250, shape)
    dt = np.dtype(dtype)
    if dt.kind == "c":
        return (base + 1j * rng.integers(0, 9, shape)).astype(dt)
    if dt.kind == "M":
        return base.astype("<i8").astype(dt)
    if dt.kind == "b":
        return (base % 2).astype(bool)
    return base.astype(dt)


def _orders(a: Any) -> list[Any]:
    """The array in C order, Fortran order, and as non-contiguous and reversed views."""
    out = [a, np.asfortranarray(a)]
    if a.ndim >= 2:
        out += [a[::2, 1::3], a.T, a[::-1]]
    else:
        out += [a[::-3], a[::-1]]
    return out


@pytest.fixture
def small_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stream arrays from 1 KiB and copy 4 KiB pieces, so small arrays take every path."""
    monkeypatch.setattr(_bigvalues, "STREAM_ABOVE", 1024)
    monkeypatch.setattr(_bigvalues, "PIECE", 4096)


@pytest.mark.usefixtures("small_pieces")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("compress", [False, True])
def test_streamed_blob_is_byte_for_byte_what_pack_gives(dtype: str, compress: bool) -> None:
    for smooth in (False, True):
        for shape in [(3000,), (70, 45), (20, 9, 13)]:
            for a in _orders(_array(dtype, shape, smooth=smooth)):
                got = _bigvalues.pack_parts(a, compress=compress)
                joined = got.joined() if isinstance(got, _bigvalues.Packed) else got
                assert joined == _codec.pack(a, compress=compress), (a.shape, a.strides)


@pytest.mark.usefixtures("small_pieces")
def test_streamed_compression_matches_pack_above_the_parallel_threshold(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_framing, "_PARALLEL_ABOVE", 1 << 16)
    a = _array("<f8", (300, 400), smooth=True)
    for view in (a, a.T, a[:, ::2]):
        assert _bigvalues.pack_parts(view) == _codec.pack(view)
    djb.config["compression"] = "datajoint"
    assert _bigvalues.pack_parts(a.T) == _codec.pack(a.T)


def _table(engine: sa.Engine, compress: bool = True) -> sa.Table:
    meta = sa.MetaData()
    t = sa.Table(
        "big",
        meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("b", djb.Blob(store="big", compress=compress), nullable=True),
    )
    meta.create_all(engine)
    djb.install(engine)
    return t


@pytest.fixture(params=["file", "s3", "fsspec"])
def big_store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    kind = request.param
    if kind == "file":
        spec: dict[str, Any] = {"protocol": "file", "location": str(tmp_path / "big")}
    elif kind == "fsspec":
        spec = {"protocol": "fsspec", "url": f"file://{tmp_path}/fsspec", "location": "x"}
    else:
        server = request.getfixturevalue("s3_server")
        spec = server.store_spec(request.getfixturevalue("s3_bucket"))
        djb.config["cache"] = str(tmp_path / "cache")  # read through the cache
    djb.config["stores"] = {"big": spec}
    return kind


@pytest.mark.usefixtures("small_pieces")
@pytest.mark.parametrize("compress", [False, True])
def test_big_arrays_of_every_dtype_and_order_read_back_equal(
    engine: sa.Engine, big_store: str, compress: bool
) -> None:
    t = _table(engine, compress)
    values: dict[int, Any] = {}
    for dtype in DTYPES:
        for smooth in (False, True):
            for a in _orders(_array(dtype, (60, 35), seed=len(values), smooth=smooth)):
                values[len(values)] = a
    values[len(values)] = None
    with engine.begin() as conn:
        conn.execute(t.insert(), [{"id": i, "b": v} for i, v in values.items()])
    with engine.connect() as conn:
        got = dict(conn.execute(sa.select(t.c.id, t.c.b)).all())
    for i, a in values.items():
        if a is None:
            assert got[i] is None
            continue
        b = got[i]
        assert b.dtype == a.dtype and b.shape == a.shape, (i, a.dtype, a.shape)
        assert np.array_equal(b, a), (i, a.dtype, a.strides)
        assert b.flags.writeable and b.flags.f_contiguous


@pytest.mark.usefixtures("small_pieces")
@pytest.mark.parametrize("squeeze", [False, True])
def test_array_read_as_a_stream_is_what_unpack_gives(squeeze: bool) -> None:
    for a in [_array("<f8", (1, 3000, 1)), _array("<c8", (2000, 1)), _array("bool", (1, 1, 5000))]:
        for compress in (False, True):
            data = _codec.pack(a, compress=compress)
            key = uuid.uuid5(uuid.NAMESPACE_OID, "x")
            with pytest.raises(djb.IntegrityError, match="corrupt"):  # not its key
                _bigvalues.read_value(
                    io.BytesIO(data), key, "md5", lambda: "corrupt", functools.partial(len, data)
                )
            key = content_hash(data)
            got = _bigvalues.read_value(
                io.BytesIO(data), key, "md5", lambda: "corrupt", functools.partial(len, data)
            )
            assert isinstance(got, _bigvalues.Unpacked)
            value = got.value(squeeze=squeeze)
            expected = _codec.unpack(data, squeeze=squeeze)
            assert value.shape == expected.shape and value.dtype == expected.dtype
            assert np.array_equal(value, expected)


def _payload(tmp_path: Path) -> Path:
    (found,) = [p for p in (tmp_path / "big").rglob("*") if p.is_file() and "owner" not in str(p)]
    return found


@pytest.mark.usefixtures("small_pieces")
@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("damage", ["flip", "truncate", "extend"])
def test_corrupt_or_truncated_big_payload_is_an_integrity_error(
    engine: sa.Engine, tmp_path: Path, compress: bool, damage: str
) -> None:
    djb.config["stores"] = {"big": {"protocol": "file", "location": str(tmp_path / "big")}}
    t = _table(engine, compress)
    a = _array("<f8", (50, 40), smooth=compress)
    with engine.begin() as conn:
        conn.execute(t.insert().values(id=1, b=a))
    path = _payload(tmp_path)
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x55
    elif damage == "truncate":
        del data[len(data) - 100 :]
    else:
        data += b"\0" * 8
    path.write_bytes(bytes(data))
    with engine.connect() as conn, pytest.raises(djb.IntegrityError, match="does not match"):
        conn.execute(sa.select(t.c.b)).scalar_one()


@pytest.mark.usefixtures("small_pieces")
def test_array_modified_while_it_is_stored_leaves_no_payload(
    engine: sa.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    djb.config["stores"] = {"big": {"protocol": "file", "location": str(tmp_path / "big")}}
    t = _table(engine, compress=False)
    a = _array("<f8", (50, 40))
    real = _bigvalues.Packed.reader

    def reader(self: _bigvalues.Packed, *args: Any) -> Any:
        a[0, 0] += 1  # after hashing, before the bytes are streamed
        return real(self, *args)

    monkeypatch.setattr(_bigvalues.Packed, "reader", reader)
    changed = pytest.raises(djb.StoreError, match="changed while it was being stored")
    with changed, engine.begin() as conn:
        conn.execute(t.insert().values(id=1, b=a))
    assert not [p for p in (tmp_path / "big").rglob("*") if p.is_file() and "owner" not in str(p)]


def _measure(phase: str, url: str, store: dict[str, Any], mib: int, kind: str) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from big_values import run_child
    finally:
        sys.path.pop(0)
    result: dict[str, Any] = run_child(phase, url, store, mib, kind, 1, True)
    return result


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["random", "zeros"])
def test_big_array_insert_and_fetch_hold_one_copy_of_memory(
    database: Any, tmp_path: Path, kind: str
) -> None:
    """256 MiB through a file store, each phase in a fresh process: insert adds under
    64 MiB to the process holding the array; fetch adds under the value + 64 MiB."""
    url = database.url.render_as_string(hide_password=False)
    store = {"protocol": "file", "location": str(tmp_path / f"store-{uuid.uuid4().hex[:6]}")}
    mib = 256
    written = _measure("insert", url, store, mib, kind)
    read = _measure("fetch", url, store, mib, kind)
    assert read["md5"] == written["md5"]
    assert written["growth"] < 64 * MiB, (
        f"insert grew the process by {written['growth'] / MiB:.0f} MiB"
    )
    assert read["growth"] < mib * MiB + 64 * MiB, (
        f"fetch grew a fresh process by {read['growth'] / MiB:.0f} MiB for a {mib} MiB array"
    )


def test_benchmark_child_reports_json(tmp_path: Path) -> None:
    """The measuring child of benchmarks/big_values.py runs (a tiny array)."""
    url = f"sqlite:///{tmp_path}/b.sqlite"
    store = {"protocol": "file", "location": str(tmp_path / "s")}
    w = _measure("insert", url, store, 2, "random")
    r = _measure("fetch", url, store, 2, "random")
    assert w["md5"] == r["md5"] and r["nbytes"] == 2 * MiB
    assert json.dumps(w)


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("how", ["select", "lazy"])
def test_fetching_a_big_array_allocates_it_once(
    engine: sa.Engine, big_store: str, compress: bool, how: str
) -> None:
    """A plain select and ``djb.lazy(...).load()`` read a 32 MiB array with under 12 MiB
    beside the result (traced allocations), where reading the bytes and then unpacking
    them held two copies."""
    t = _table(engine, compress)
    n = 32 * MiB
    a = np.random.default_rng(3).random(n // 8) if not compress else np.zeros(n // 8)
    with engine.begin() as conn:
        conn.execute(t.insert().values(id=1, b=a))
    query = sa.select(t.c.b if how == "select" else djb.lazy(t.c.b))
    tracemalloc.start()
    try:
        with engine.connect() as conn:
            got = conn.execute(query).scalar_one()
            if how == "lazy":
                got = got.load()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert np.array_equal(got, a)
    assert peak < n + 12 * MiB, f"{(peak - n) / MiB:.0f} MiB beside the {n // MiB} MiB array"


@pytest.mark.usefixtures("small_pieces")
def test_big_arrays_and_attachment_contents_through_async_session(
    database: Any, tmp_path: Path
) -> None:
    """Under ``AsyncSession`` (aiosqlite, asyncmy, psycopg async) big arrays are streamed
    both ways and an attachment is taken from a file object, as in a web app."""
    import asyncio

    from sqlalchemy.ext.asyncio import create_async_engine

    drivers = {"sqlite": "sqlite+aiosqlite", "mysql": "mysql+asyncmy"}
    drivers["postgresql"] = "postgresql+psycopg_async"
    url = database.url.set(drivername=drivers[database.backend])
    djb.config["stores"] = {"big": {"protocol": "file", "location": str(tmp_path / "big")}}
    meta = sa.MetaData()
    t = sa.Table(
        "big_async",
        meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("b", djb.Blob(store="big"), nullable=True),
        sa.Column("a", djb.Attach(store="big"), nullable=True),
    )
    values = {i: a for i, a in enumerate(_orders(_array("<c16", (80, 30), smooth=True)))}
    values[9] = _array("<i4", (400, 30))
    upload = io.BytesIO(b"uploaded bytes\n" * 100)

    async def main() -> dict[int, Any]:
        engine = create_async_engine(url)
        djb.install(engine)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(meta.create_all)
                await conn.execute(t.insert(), [{"id": i, "b": v} for i, v in values.items()])
                await conn.execute(t.insert().values(id=20, a=("upload.txt", upload)))
            async with engine.connect() as conn:
                rows = (await conn.execute(sa.select(t.c.id, t.c.b, t.c.a))).all()
            return {i: (b, a) for i, b, a in rows}
        finally:
            await engine.dispose()

    got = asyncio.run(main())
    for i, a in values.items():
        assert got[i][0].dtype == a.dtype and np.array_equal(got[i][0], a)
    path = got[20][1]
    assert path.name == "upload.txt" and path.read_bytes() == b"uploaded bytes\n" * 100


class _ShortBuffered(io.BufferedIOBase):
    """A buffered stream that may answer less than asked before its end, as the io
    documentation allows for an interactive one (a store's own stream class)."""

    def __init__(self, data: bytes) -> None:
        self._f = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def read(self, n: int | None = -1) -> bytes:
        return self._f.read(1000 if n is None or n < 0 else min(n, 1000))

    def read1(self, n: int = -1) -> bytes:
        return self.read(n)


@pytest.mark.parametrize("stream", [io.BytesIO, Trickle, _ShortBuffered])
@pytest.mark.parametrize("size", [(64 << 10) - 1, 64 << 10, (64 << 10) + 1, (1 << 20) + 1])
def test_payloads_around_the_first_read_are_read_whole(size: int, stream: Any) -> None:
    """A payload is first read 64 KiB at a time (small ones are spared a 1 MiB buffer): blobs
    of exactly that size, a byte either side, and past the streaming threshold read back
    whole and verified, from a buffered file (read once: a short read is its end) and from
    a stream that answers in pieces."""
    for compress in (False, True):
        if compress:
            value = b"x" * size
        else:  # a payload of exactly *size* bytes
            value = np.random.default_rng(size).bytes(size - len(_codec.pack(b"", compress=False)))
        data = _codec.pack(value, compress=compress)
        assert compress or len(data) == size
        got = _bigvalues.read_value(
            stream(data),
            content_hash(data),
            "md5",
            lambda: "corrupt",
            functools.partial(len, data),
        )
        assert got == data
        assert _codec.unpack(got) == value
        with pytest.raises(djb.IntegrityError):  # every byte is hashed, the last one too
            damaged = data[:-1] + bytes([data[-1] ^ 1])
            _bigvalues.read_value(
                stream(damaged), content_hash(data), "md5", lambda: "corrupt", lambda: None
            )
