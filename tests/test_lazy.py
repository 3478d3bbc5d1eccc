"""Big arrays read by range: ``djb.Blob(store=..., compress=False)`` keeps every value
uncompressed, and ``djb.lazy(column)`` selects a :class:`djb.LazyBlob` that reads only the
header for ``.shape`` and only the byte ranges a slice needs."""

from __future__ import annotations

import asyncio
import struct
import threading
import time
import uuid
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import sqlalchemy as sa
from helpers.aio import Heartbeat, async_url
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as npst
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import sa_djblob as djb
from sa_djblob._area import Area
from sa_djblob._blobheader import MAX_CHUNKS, SlicePlan, parse_header
from sa_djblob._codec import ZL123
from sa_djblob._externals.lazy import LazyBlob, _RowSource, _StoreSource
from sa_djblob._layout import content_hash


class Base(DeclarativeBase):
    pass


class Recording(Base):
    __tablename__ = "recording"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    plain: Mapped[Any] = mapped_column(djb.Blob(store="big", compress=False), nullable=True)
    packed: Mapped[Any] = mapped_column(djb.Blob(store="big"), nullable=True)
    inrow: Mapped[Any] = mapped_column(djb.Blob(), nullable=True)


def _file_store(tmp_path: Path) -> None:
    djb.config["stores"] = {"big": {"protocol": "file", "location": str(tmp_path / "big")}}


def _payloads(tmp_path: Path) -> list[bytes]:
    return [
        p.read_bytes()
        for p in (tmp_path / "big").rglob("*")
        if p.is_file() and "owner" not in str(p)
    ]


# -- compress=False ------------------------------------------------------------------


def test_uncompressed_column_never_compresses_its_values(engine: sa.Engine, tmp_path: Path) -> None:
    _file_store(tmp_path)
    Base.metadata.create_all(engine)
    djb.install(engine)
    value = np.zeros((1000, 20))  # compresses to almost nothing
    with Session(engine) as s:
        s.add(Recording(id=1, plain=value))
        s.commit()
    (payload,) = _payloads(tmp_path)
    assert not payload.startswith(ZL123)
    assert payload == djb.pack(value, compress=False)
    with Session(engine) as s:
        np.testing.assert_array_equal(s.get_one(Recording, 1).plain, value)


def test_uncompressed_blob_type_rebuilds_from_its_repr() -> None:
    t = djb.Blob(store="big", compress=False)
    assert repr(t) == "Blob(store='big', compress=False)"
    assert repr(eval(repr(t), {"Blob": djb.Blob})) == repr(t)
    assert repr(djb.Blob(store="big")) == "Blob(store='big')"


# -- helpers: a blob put in a store by hand, read through a LazyBlob ---------------------


class CountingFileStore(djb.FileStore):
    """A file store that records every ranged read and refuses whole reads."""

    protocol = "counting-file"  # registers the kind
    ranges: ClassVar[list[tuple[int, int]]] = []
    whole_reads = 0

    def read_ranges(self, path: Any, ranges: Any) -> list[bytes]:
        CountingFileStore.ranges.extend(ranges)
        return super().read_ranges(path, ranges)

    def get(self, path: Any) -> bytes:
        CountingFileStore.whole_reads += 1
        return super().get(path)

    def open(self, path: Any) -> Any:
        CountingFileStore.whole_reads += 1
        return super().open(path)

    @classmethod
    def read_bytes(cls) -> int:
        return sum(n for _, n in cls.ranges)

    @classmethod
    def reset(cls) -> None:
        cls.ranges = []
        cls.whole_reads = 0


def _put(store_name: str, data: bytes) -> djb.LazyBlob:
    """A LazyBlob of *data* kept in store *store_name* (as the write path keeps it)."""
    store = djb.get_store(store_name)
    area = Area(store, "lab")
    key = content_hash(data, algorithm=store.hash)
    path = area.path(key)
    store.put(path, data)
    obj = djb.StoredObject(store_name, key, None, len(data), path, store.hash, "lab")
    return LazyBlob(_StoreSource(obj), {})


@pytest.fixture(params=["file", "s3", "fsspec", "memory"])
def range_store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Store 'big' of each kind that reads by range (memory: the Store default)."""
    kind = request.param
    if kind == "memory":
        spec: dict[str, Any] = {"protocol": "memory", "location": uuid.uuid4().hex}
    elif kind == "file":
        spec = {"protocol": "file", "location": str(tmp_path / "big")}
    elif kind == "fsspec":
        spec = {"protocol": "fsspec", "url": f"memory://djbt-{uuid.uuid4().hex[:8]}/lab"}
    else:
        server = request.getfixturevalue("s3_server")
        spec = server.store_spec(request.getfixturevalue("s3_bucket"))
    djb.config["stores"] = {"big": spec}
    return "big"


@pytest.fixture
def counting_store(tmp_path: Path) -> str:
    djb.config["stores"] = {"big": {"protocol": "counting-file", "location": str(tmp_path / "c")}}
    CountingFileStore.reset()
    return "big"


DTYPES = [
    "bool", "i1", "u1", "<i2", "<u2", "<i4", "<u4", "<i8", "<u8", "<f4", "<f8", "<c8",
    "<c16", "<M8[D]", "<M8[s]", "<M8[ns]",
]  # fmt: skip


def _array(dtype: str, shape: tuple[int, ...], order: str) -> np.ndarray:
    rng = np.random.default_rng(7)
    n = int(np.prod(shape))
    dt = np.dtype(dtype)
    if dt.kind == "b":
        flat = rng.integers(0, 2, n).astype(bool)
    elif dt.kind == "c":
        flat = (rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(dt)
    elif dt.kind == "M":
        flat = rng.integers(-(10**9), 10**9, n).astype(dt)
    elif dt.kind == "f":
        flat = rng.standard_normal(n).astype(dt)
    else:
        info = np.iinfo(dt)
        flat = rng.integers(info.min, info.max, n, dtype=dt, endpoint=True)
    arr = flat.reshape(shape, order="C")
    if order == "F":
        return np.asfortranarray(arr)
    if order == "strided":  # a non-contiguous view
        return np.concatenate([arr, arr], axis=-1)[..., ::2]
    return arr


KEYS: list[Any] = [
    np.s_[3], np.s_[-1], np.s_[1:7], np.s_[::3], np.s_[::-2], np.s_[:, 2], np.s_[2, :, 1],
    np.s_[..., 1], np.s_[..., ::2], np.s_[None, 1:3, ..., None], np.s_[5:2], np.s_[:, 1:4, ::-1],
    np.s_[-3:, -2, 1:2], np.s_[...], np.s_[4, 3, 2],
]  # fmt: skip


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "compressed"])
@pytest.mark.parametrize("order", ["C", "F", "strided"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_slice_equals_slicing_the_loaded_array(
    counting_store: str, dtype: str, order: str, compress: bool
) -> None:
    value = _array(dtype, (9, 5, 4), order)
    data = djb.pack(value, compress=compress)
    if compress and dtype not in ("bool", "i1", "u1"):  # random bytes: kept plain
        data = djb.pack(np.repeat(value, 30, axis=0), compress=True)
        value = np.repeat(value, 30, axis=0)
    ref = _put(counting_store, data)
    assert (ref.shape, ref.dtype, ref.ndim) == (value.shape, value.dtype, value.ndim)
    assert ref.nbytes == value.nbytes and len(ref) == len(value)
    for key in KEYS:
        got = ref[key]
        want = value[key]
        assert type(got) is type(want), key
        np.testing.assert_array_equal(got, want)
        assert np.shape(got) == np.shape(want) and np.asarray(got).dtype == want.dtype
    loaded = ref.load()
    np.testing.assert_array_equal(loaded, value)
    np.testing.assert_array_equal(np.asarray(ref), value)
    ref.verify()


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "compressed"])
def test_slices_read_by_range_from_every_store_kind(range_store: str, compress: bool) -> None:
    value = np.arange(20_000 * 8, dtype="<f8").reshape(20_000, 8) % 1000
    ref = _put(range_store, djb.pack(value, compress=compress))
    assert ref.shape == (20_000, 8) and ref.dtype == np.float64
    for key in (np.s_[1000:2000], np.s_[:, 3], np.s_[..., ::2], np.s_[-5], np.s_[::-7, 1:3]):
        np.testing.assert_array_equal(ref[key], value[key])
    np.testing.assert_array_equal(ref.load(), value)
    ref.verify()


def test_a_slice_reads_only_the_ranges_it_needs(counting_store: str) -> None:
    value = np.arange(100_000 * 8, dtype="<f8").reshape(100_000, 8)
    ref = _put(counting_store, djb.pack(value, compress=False))
    assert ref.shape == (100_000, 8)
    header_bytes = CountingFileStore.read_bytes()
    assert header_bytes <= 4096
    for key in (np.s_[1000:2000], np.s_[:, 3], np.s_[500, :], np.s_[10:20, 2:5]):
        CountingFileStore.ranges = []
        got = ref[key]
        np.testing.assert_array_equal(got, value[key])
        assert CountingFileStore.read_bytes() <= 2 * got.nbytes + 64 * 1024, key
    assert CountingFileStore.whole_reads == 0


def test_a_compressed_blob_is_decompressed_only_as_far_as_the_slice_needs(
    counting_store: str,
) -> None:
    value = np.random.default_rng(1).integers(0, 16, 4_000_000).astype("u1")  # about 1:2
    data = djb.pack(value)
    assert data.startswith(ZL123)
    ref = _put(counting_store, data)
    assert ref.shape == value.shape
    assert CountingFileStore.read_bytes() <= 64 * 1024
    CountingFileStore.ranges = []
    np.testing.assert_array_equal(ref[:100], value[:100])
    assert CountingFileStore.read_bytes() < len(data) // 4
    np.testing.assert_array_equal(ref[-3:], value[-3:])
    assert CountingFileStore.whole_reads == 0


def _cell() -> djb.MatCell:
    cell = djb.MatCell((2,), dtype=object)
    cell[0], cell[1] = np.arange(2.0), "x"
    return cell


@pytest.mark.parametrize(
    ("value", "what"),
    [
        ({"a": np.arange(3)}, "a dict"),
        ("a string", "a string"),
        (_cell(), "a MATLAB cell array"),
        ([1, 2], "a list"),
        (np.array(["ab", "c"]), "an array of class object"),
    ],
)
def test_a_value_that_is_not_one_numeric_array_loads_and_refuses_indexing(
    counting_store: str, value: Any, what: str
) -> None:
    ref = _put(counting_store, djb.pack(value))
    with pytest.raises(djb.NotSliceableError, match=f"holds {what}.*load"):
        ref[0]
    with pytest.raises(djb.NotSliceableError, match="load"):
        _ = ref.shape
    loaded = ref.load()
    assert type(loaded) is type(djb.unpack(djb.pack(value)))


def test_fancy_and_out_of_bounds_indexing_is_refused_like_numpy(counting_store: str) -> None:
    ref = _put(counting_store, djb.pack(np.arange(12.0).reshape(3, 4)))
    with pytest.raises(IndexError, match="basic indexing"):
        ref[[0, 2]]
    with pytest.raises(IndexError, match="out of bounds"):
        ref[3]
    with pytest.raises(IndexError, match="too many indices"):
        ref[0, 0, 0]
    with pytest.raises(IndexError, match="single ellipsis"):
        ref[..., ...]


# -- corrupt and truncated objects --------------------------------------------------


def _object_file(ref: djb.LazyBlob) -> Path:
    assert ref.stored is not None
    return Path(ref.stored.path)


def test_a_corrupted_payload_fails_verify_and_load_but_not_a_slice(counting_store: str) -> None:
    value = np.arange(10_000, dtype="<f8")
    ref = _put(counting_store, djb.pack(value, compress=False))
    f = _object_file(ref)
    raw = bytearray(f.read_bytes())
    raw[-8:] = np.float64(-1).tobytes()  # the last element, same size
    f.write_bytes(bytes(raw))
    # a slice is not verified (documented): it reads what is there
    assert ref[-1] == -1.0
    np.testing.assert_array_equal(ref[:10], value[:10])
    with pytest.raises(djb.IntegrityError):
        ref.verify()
    with pytest.raises(djb.IntegrityError):
        ref.load()


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "compressed"])
def test_a_truncated_payload_is_reported_not_returned(counting_store: str, compress: bool) -> None:
    value = np.repeat(np.arange(500, dtype="<i8"), 200)
    ref = _put(counting_store, djb.pack(value, compress=compress))
    f = _object_file(ref)
    raw = f.read_bytes()
    f.write_bytes(raw[: len(raw) * 2 // 3])
    assert ref.shape == value.shape  # the header is still there
    with pytest.raises((djb.IntegrityError, djb.BlobFormatError), match="truncated"):
        ref[-10:]
    with pytest.raises(djb.IntegrityError):
        ref.verify()


def test_a_corrupt_header_or_stream_raises_blob_format_error(counting_store: str) -> None:
    ref = _put(counting_store, b"nope" + bytes(100))
    with pytest.raises(djb.BlobFormatError, match="unknown blob header"):
        _ = ref.shape
    # an array header whose shape does not match the bytes
    data = bytearray(djb.pack(np.arange(100, dtype="<f8"), compress=False))
    data[5 + 8 : 5 + 16] = (1000).to_bytes(8, "little")
    with pytest.raises(djb.BlobFormatError, match="truncated or corrupt"):
        _ = _put(counting_store, bytes(data)).shape
    # a compressed blob whose zlib stream is damaged past the header
    packed = bytearray(djb.pack(np.repeat(np.arange(300, dtype="<i8"), 300)))
    packed[len(packed) // 2 : len(packed) // 2 + 64] = bytes(range(64))
    broken = _put(counting_store, bytes(packed))
    assert broken.shape == (90_000,)
    with pytest.raises(djb.BlobFormatError):
        broken[-5:]


def test_a_missing_payload_raises_missing_payload_error(counting_store: str) -> None:
    ref = _put(counting_store, djb.pack(np.arange(10.0), compress=False))
    _object_file(ref).unlink()
    with pytest.raises(djb.MissingPayloadError):
        _ = ref.shape


def test_a_strided_slice_takes_a_bounded_number_of_requests(counting_store: str) -> None:
    value = np.arange(20_000 * 8, dtype="<f8").reshape(20_000, 8)
    ref = _put(counting_store, djb.pack(value, compress=False))
    _ = ref.shape
    CountingFileStore.ranges = []
    np.testing.assert_array_equal(ref[::-7, 1:3], value[::-7, 1:3])
    assert len(CountingFileStore.ranges) <= CountingFileStore.max_range_requests


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_any_basic_index_equals_numpy(data: st.DataObject) -> None:
    shape = data.draw(st.lists(st.integers(0, 5), min_size=0, max_size=4).map(tuple))
    dtype = data.draw(st.sampled_from(["<f8", "<i2", "bool", "<c8", "u1"]))
    value = np.arange(int(np.prod(shape)), dtype="<i8").reshape(shape).astype(dtype)
    if data.draw(st.booleans()):
        value = np.asfortranarray(value)
    key = data.draw(npst.basic_indices(shape, allow_newaxis=True, allow_ellipsis=True))
    ref = LazyBlob(_RowSource(djb.pack(value, compress=data.draw(st.booleans()))), {})
    want = value[key]
    got = ref[key]
    assert type(got) is type(want)
    np.testing.assert_array_equal(got, want)
    assert np.shape(got) == np.shape(want)


# -- through the database ------------------------------------------------------------------


@pytest.fixture
def recordings(engine: sa.Engine, tmp_path: Path) -> sa.Engine:
    _file_store(tmp_path)
    Base.metadata.create_all(engine)
    djb.install(engine)
    trace = np.arange(3000 * 4, dtype="<f4").reshape(3000, 4)
    with Session(engine) as s:
        s.add(Recording(id=1, plain=trace, packed=np.zeros((3000, 4)), inrow=trace))
        s.add(Recording(id=2, plain=None, packed=None, inrow=None))
        s.add(Recording(id=3, plain={"not": "an array"}, packed=[1, 2], inrow="text"))
        s.commit()
    return engine


def test_orm_select_of_lazy_gives_references_that_outlive_the_session(
    recordings: sa.Engine,
) -> None:
    q = sa.select(
        Recording.id,
        djb.lazy(Recording.plain).label("plain"),
        djb.lazy(Recording.packed).label("packed"),
        djb.lazy(Recording.inrow).label("inrow"),
    ).order_by(Recording.id)
    with Session(recordings) as s:
        rows = s.execute(q).all()
        only = s.execute(sa.select(djb.lazy(Recording.plain)).where(Recording.id == 1)).scalar_one()
    recordings.dispose()  # no connection left: a reference needs only the store
    trace = np.arange(3000 * 4, dtype="<f4").reshape(3000, 4)
    one, null, other = rows
    assert isinstance(one.plain, djb.LazyBlob) and isinstance(only, djb.LazyBlob)
    assert (only.shape, only.dtype) == ((3000, 4), np.float32)
    np.testing.assert_array_equal(only[1000:2000], trace[1000:2000])
    assert one.plain.stored is not None and one.plain.stored.store == "big"
    np.testing.assert_array_equal(one.plain[:, 3], trace[:, 3])
    np.testing.assert_array_equal(one.packed[5:9], np.zeros((4, 4)))
    np.testing.assert_array_equal(one.inrow[..., ::2], trace[..., ::2])
    np.testing.assert_array_equal(one.inrow.load(), trace)
    np.testing.assert_array_equal(np.asarray(one.packed), np.zeros((3000, 4)))
    assert (null.plain, null.packed, null.inrow) == (None, None, None)
    assert other.plain.load() == {"not": "an array"} and other.packed.load() == [1, 2]
    assert other.inrow.load() == "text"
    with pytest.raises(djb.NotSliceableError, match="a dict"):
        other.plain[0]
    one.plain.verify()
    one.inrow.verify()


def test_core_select_of_lazy_reads_nothing_from_the_store(
    recordings: sa.Engine, tmp_path: Path
) -> None:
    t = Recording.__table__
    for p in (tmp_path / "big").rglob("*"):
        if p.is_file() and "owner" not in str(p):
            p.chmod(0)  # unreadable: the select must not open it
    try:
        with recordings.connect() as conn:
            refs = conn.execute(sa.select(djb.lazy(t.c.plain)).order_by(t.c.id)).scalars().all()
        assert refs[1] is None and all(isinstance(r, djb.LazyBlob) for r in (refs[0], refs[2]))
    finally:
        for p in (tmp_path / "big").rglob("*"):
            if p.is_file():
                p.chmod(0o644)
    np.testing.assert_array_equal(refs[0][-1], np.arange(11996, 12000, dtype="<f4"))


def test_lazy_refuses_columns_that_are_not_blobs() -> None:
    md = sa.MetaData()
    t = sa.Table("t", md, sa.Column("a", djb.Attach(store="big")), sa.Column("i", sa.Integer))
    with pytest.raises(djb.SaDjblobError, match="Blob"):
        djb.lazy(t.c.a)
    with pytest.raises(djb.SaDjblobError, match="Blob"):
        djb.lazy(t.c.i)


def test_lazy_references_under_async_session_do_not_block_the_loop(
    database: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    _file_store(tmp_path)
    trace = np.arange(2000 * 3, dtype="<i4").reshape(2000, 3)
    delay = 0.3

    async def scenario() -> tuple[Any, Any, Any, float]:
        engine = create_async_engine(async_url(database))
        djb.install(engine)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(Base.metadata.create_all)
            async with AsyncSession(engine) as s:
                s.add(Recording(id=1, plain=trace, inrow=trace))
                await s.commit()
            async with AsyncSession(engine) as s:
                ref = await s.scalar(sa.select(djb.lazy(Recording.plain)))
                row_ref = await s.scalar(sa.select(djb.lazy(Recording.inrow)))
        finally:
            await engine.dispose()
        assert ref is not None and row_ref is not None
        monkeypatch.setattr(djb.FileStore, "read_ranges", _slowed(djb.FileStore.read_ranges, delay))
        async with Heartbeat() as beat:
            await ref.header_async()
            part = await ref.getitem_async(np.s_[100:200, 1])
            whole = await row_ref.load_async()
            await ref.verify_async()
        return ref.shape, part, whole, beat.gap

    shape, part, whole, gap = asyncio.run(scenario())
    assert shape == (2000, 3)
    np.testing.assert_array_equal(part, trace[100:200, 1])
    np.testing.assert_array_equal(whole, trace)
    assert gap < delay / 2, gap


def _slowed(fn: Any, delay: float) -> Any:
    def slow(*args: Any, **kw: Any) -> Any:
        time.sleep(delay)
        return fn(*args, **kw)

    return slow


def test_s3_reads_the_ranges_of_a_slice_concurrently(
    s3_server: Any, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    djb.config["stores"] = {"big": s3_server.store_spec(s3_bucket)}
    value = np.arange(50_000 * 8, dtype="<f8").reshape(50_000, 8)
    ref = _put("big", djb.pack(value, compress=False))
    _ = ref.shape
    lock = threading.Lock()
    state = {"now": 0, "most": 0, "calls": 0}
    plain = djb.S3Store._get_range

    def counted(self: Any, path: Any, start: int, length: int) -> bytes:
        with lock:
            state["now"] += 1
            state["calls"] += 1
            state["most"] = max(state["most"], state["now"])
        try:
            time.sleep(0.05)
            return plain(self, path, start, length)
        finally:
            with lock:
                state["now"] -= 1

    monkeypatch.setattr(djb.S3Store, "_get_range", counted)
    np.testing.assert_array_equal(ref[100:200], value[100:200])  # 8 ranges, one per column
    assert state["calls"] == 8 and state["most"] >= 4, state


def test_legacy_u32_blobs_are_sliced_with_their_u32_dimensions() -> None:
    value = np.arange(24, dtype="<i4").reshape(4, 6)
    header = b"mYm\0A" + struct.pack("<3I", 2, 4, 6) + struct.pack("<II", 12, 0)
    data = header + value.tobytes(order="F")
    np.testing.assert_array_equal(djb.unpack(data, legacy_u32=True), value)
    ref = LazyBlob(_RowSource(data), {"legacy_u32": True})
    assert ref.shape == (4, 6)
    np.testing.assert_array_equal(ref[1:3, ::2], value[1:3, ::2])
    np.testing.assert_array_equal(ref.load(), value)


def test_a_sparse_slice_of_a_big_array_is_planned_in_bounded_memory() -> None:
    value = (np.arange(5_000_000) % 251).astype("u1")
    data = djb.pack(value, compress=False)
    plan = SlicePlan.make(parse_header(data[:4096], len(data)), np.s_[::3])
    assert len(plan.offsets) <= MAX_CHUNKS
    np.testing.assert_array_equal(LazyBlob(_RowSource(data), {})[::3], value[::3])


def test_slices_of_a_cached_remote_payload_are_read_from_the_cache(
    s3_server: Any, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    djb.config["stores"] = {"big": s3_server.store_spec(s3_bucket)}
    djb.config["cache"] = str(tmp_path / "cache")
    value = np.arange(30_000 * 4, dtype="<i8").reshape(30_000, 4)
    ref = _put("big", djb.pack(value, compress=False))
    np.testing.assert_array_equal(ref.load(), value)  # fills the cache

    def refuse(*args: Any, **kw: Any) -> Any:
        raise AssertionError("read from S3 although the cache holds the payload")

    monkeypatch.setattr(djb.S3Store, "read_ranges", refuse)
    fresh = LazyBlob(_StoreSource(ref.stored), {})  # type: ignore[arg-type]
    assert fresh.shape == (30_000, 4)
    np.testing.assert_array_equal(fresh[29_000:, 1], value[29_000:, 1])
