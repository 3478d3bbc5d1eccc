"""Property tests of the codec: generated values round-trip; mutated blobs never escape
as anything but BlobFormatError, and never take long."""

from __future__ import annotations

import datetime
import struct
import time
import uuid
import zlib
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from helpers.codec import assert_same
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from sa_djblob import BlobFormatError, MatCell, MatStruct, pack, unpack
from sa_djblob._codec import _Packer, _read_cost

# the recursive strategies make hypothesis warn about long reprs of generated values
pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")

FUZZ = settings(
    max_examples=2500,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
ROUNDTRIP = settings(
    max_examples=400,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# ------------------------------------------------------------------------------------------
# generated values

DATETIME_UNITS = ["Y", "M", "W", "D", "h", "m", "s", "ms", "us", "ns", "ps", "fs", "as"]
NUMERIC_DTYPES = [
    "bool",
    "int8",
    "uint8",
    "<i2",
    "<u2",
    "<i4",
    "<u4",
    "<i8",
    "<u8",
    "<f4",
    "<f8",
    "<c8",
    "<c16",
    *(f"<M8[{unit}]" for unit in DATETIME_UNITS),
]
shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4)
text = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=8)


def numeric_arrays() -> st.SearchStrategy[Any]:
    return st.sampled_from(NUMERIC_DTYPES).flatmap(lambda dt: hnp.arrays(np.dtype(dt), shapes))


def layouts(arr: Any) -> st.SearchStrategy[Any]:
    """The same values as a C, Fortran or strided array."""
    return st.sampled_from(["C", "F", "strided"]).map(
        lambda how: (
            arr.copy(order="F")
            if how == "F"
            else np.repeat(arr, 2, axis=0)[::2]
            if how == "strided" and arr.ndim
            else arr
        )
    )


char_arrays = hnp.arrays(
    np.dtype("S1"), shapes, elements=st.binary(min_size=1, max_size=1).filter(lambda b: b != b"\0")
)
unicode_arrays = st.integers(1, 4).flatmap(
    lambda n: hnp.arrays(
        np.dtype(f"<U{n}"),
        shapes,
        elements=st.text(
            st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=n
        ),
    )
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**300), max_value=2**300),
    st.floats(),
    st.complex_numbers(),
    text,
    st.binary(max_size=16),
    st.decimals(allow_nan=False, places=None).filter(lambda d: d.is_finite()),
    st.datetimes(),
    st.dates(),
    st.times(),
    st.uuids(),
)
#: numpy scalars of every dtype the format holds (read back as themselves, DataJoint's rule)
numpy_scalars = st.sampled_from(NUMERIC_DTYPES).flatmap(
    lambda dt: hnp.from_dtype(np.dtype(dt)).map(np.dtype(dt).type)
)
record_dtypes = st.lists(
    st.tuples(
        st.from_regex(r"[a-z][a-z0-9]{0,3}", fullmatch=True), st.sampled_from(NUMERIC_DTYPES)
    ),
    min_size=1,
    max_size=3,
    unique_by=lambda field: field[0],
).map(np.dtype)
record_arrays = hnp.arrays(
    record_dtypes, hnp.array_shapes(min_dims=1, max_dims=2, min_side=0, max_side=3)
)


def object_arrays(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    def build(elements: list[Any], shape: tuple[int, ...]) -> Any:
        arr = np.empty(int(np.prod(shape)), dtype=object)
        for i in range(arr.size):
            arr[i] = elements[i % len(elements)]
        return arr.reshape(shape)

    return st.builds(
        build,
        st.lists(children, min_size=1, max_size=4),
        hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=3),
    )


def cells(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    def build(elements: list[Any], shape: tuple[int, ...]) -> Any:
        cell = MatCell(shape, dtype=object)
        flat = cell.reshape(-1)
        for i in range(flat.size):
            flat[i] = elements[i % len(elements)]
        return cell

    return st.builds(
        build,
        st.lists(children, min_size=1, max_size=4),
        hnp.array_shapes(min_dims=1, max_dims=2, min_side=0, max_side=3),
    )


def structs(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    def build(names: list[str], elements: list[Any], shape: tuple[int, ...]) -> Any:
        arr = MatStruct(shape, dtype=[(name, object) for name in names])
        flat = np.asarray(arr).reshape(-1)
        k = 0
        for i in range(flat.size):
            for name in names:
                flat[name][i] = elements[k % len(elements)]
                k += 1
        return arr

    return st.builds(
        build,
        st.lists(
            st.from_regex(r"[a-z][a-z0-9_]{0,5}", fullmatch=True),
            min_size=1,
            max_size=3,
            unique=True,
        ),
        st.lists(children, min_size=1, max_size=4),
        hnp.array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=2),
    )


leaves = st.one_of(
    scalars,
    numpy_scalars,
    numeric_arrays().flatmap(layouts),
    char_arrays,
    unicode_arrays,
    record_arrays,
)
hashable = st.one_of(
    st.integers(),
    text,
    st.booleans(),
    st.tuples(st.integers(), text),
    st.integers(-(2**63), 2**63 - 1).map(np.int64),
    st.integers(0, 255).map(np.uint8),
)
values = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.tuples(children, children),
        st.dictionaries(hashable, children, max_size=4),
        st.sets(hashable, max_size=4),
        st.frozensets(st.integers(), max_size=3),
        object_arrays(children),
        cells(children),
        structs(children),
    ),
    max_leaves=12,
)


def expected(value: Any) -> Any:
    """What reading back ``value`` gives (docs/format.md: what reads back differently)."""
    if isinstance(value, MatCell):
        # DataJoint's rule: np.array of the items read back, in the cell's shape; an
        # object cell of them where that does not give one element per item
        items = [expected(v) for v in np.asarray(value).ravel(order="F")]
        try:
            stacked = np.array(items)
        except ValueError:
            stacked = None
        if stacked is not None and stacked.size == len(items):
            return stacked.reshape(value.shape, order="F").view(MatCell)
        cell = MatCell(value.shape, dtype=object, order="F")
        flat = cell.reshape(-1, order="F")
        for i, item in enumerate(items):
            flat[i] = item
        return cell
    if isinstance(value, MatStruct):
        result = value.copy()
        flat = np.asarray(result).reshape(-1)
        for name in value.dtype.names or ():
            column = flat[name]
            for i in range(column.size):
                column[i] = expected(column[i])
        return result
    if isinstance(value, np.ndarray):
        if value.dtype.names is not None:
            return value.view(np.recarray)
        if value.dtype.kind == "U":
            out = np.empty(value.shape, dtype=object)
            for index in np.ndindex(value.shape):
                out[index] = str(value[index])
            return out
        if value.dtype.kind == "S":
            if value.ndim == 1 or (value.ndim == 2 and value.shape[0] == 1):
                return np.array([value.tobytes(order="F").decode("latin-1")])
            return np.char.decode(value, "latin-1").astype("U1")
        if value.dtype.kind == "O":
            out = np.empty(value.shape, dtype=object)
            for index in np.ndindex(value.shape):
                out[index] = expected(value[index])
            return out
        if value.ndim == 0 and type(value) is np.ndarray:
            return value[()]  # a 0-d numeric array reads back as a numpy scalar
        return value.copy()
    if isinstance(value, np.generic):
        return value  # numpy scalars read back as themselves
    if isinstance(value, list):
        return [expected(v) for v in value]
    if isinstance(value, tuple):
        return tuple(expected(v) for v in value)
    if isinstance(value, frozenset | set):
        return set(value)
    if isinstance(value, dict):
        return {k: expected(v) for k, v in value.items()}
    return value


@ROUNDTRIP
@given(values, st.booleans())
def test_generated_values_round_trip(value: Any, compress: bool) -> None:
    blob = pack(value, compress=compress)
    back = unpack(blob)
    want = expected(value)
    if isinstance(want, np.recarray):
        assert isinstance(back, np.recarray)
        assert back.shape == want.shape and back.dtype.names == want.dtype.names
        for name in want.dtype.names or ():
            assert_same(np.asarray(back[name]), np.asarray(want[name]).copy())
    elif isinstance(want, MatStruct):
        assert type(back) is MatStruct and back.shape == want.shape
        assert back.dtype.names == want.dtype.names
        for name in want.dtype.names or ():
            assert_same(np.asarray(back[name]), np.asarray(want[name]), f"value.{name}")
    elif isinstance(want, MatCell):
        assert type(back) is MatCell
        assert_same(back, want)
    else:
        assert_same(back, want)
    # the bytes are stable: packing what was read gives the same blob (modulo U -> object)
    if not _changes_type(value):
        assert pack(back, compress=False) == pack(value, compress=False)


@ROUNDTRIP
@given(values)
def test_the_writer_counts_at_least_the_memory_the_reader_charges(value: Any) -> None:
    # pack() relies on it to keep its blobs within max_expansion without reading them
    packer = _Packer(256)
    packer.item(value, 0)
    if not packer.cells:
        assert _read_cost(pack(value, compress=False)) <= packer.cost


def _changes_type(value: Any) -> bool:
    if isinstance(value, MatCell):
        return True  # its items may become one numpy array (DataJoint's rule)
    if isinstance(value, MatStruct):
        flat = np.asarray(value).reshape(-1)
        return any(
            _changes_type(flat[name][i])
            for name in value.dtype.names or ()
            for i in range(flat.size)
        )
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "US" or value.dtype.names is not None:
            return True
        if value.ndim == 0 and value.dtype.kind != "O":
            return False  # read back as a numpy scalar: the same bytes
        if value.dtype.kind == "O":
            return any(_changes_type(v) for v in value.reshape(-1))
        return False
    if isinstance(value, list | tuple | set | frozenset):
        # sets: iteration order of the rebuilt set may differ
        return isinstance(value, set | frozenset) or any(_changes_type(v) for v in value)
    if isinstance(value, dict):
        return any(_changes_type(v) for v in value.values())
    return False


@ROUNDTRIP
@given(numeric_arrays().flatmap(layouts))
def test_arrays_are_fortran_ordered_on_the_wire(arr: Any) -> None:
    blob = pack(arr, compress=False)
    real = arr.real if arr.dtype.kind == "c" else arr
    header = 4 + 1 + 8 + 8 * arr.ndim + 8
    if arr.dtype.kind == "c":
        body = real.tobytes(order="F") + arr.imag.tobytes(order="F")
    elif arr.dtype.kind == "M":
        body = arr.view("<i8").tobytes(order="F")
    else:
        body = arr.tobytes(order="F")
    assert blob[header:] == body
    assert struct.unpack_from(f"<{arr.ndim + 1}Q", blob, 5) == (arr.ndim, *arr.shape)
    back = unpack(blob)
    if arr.ndim:
        assert back.flags.writeable
    assert_same(back, arr.copy())


# ------------------------------------------------------------------------------------------
# mutated blobs


def _corpus() -> list[bytes]:
    cell = MatCell((1, 2), dtype=object)
    cell[0, 0] = np.array([[1.0, 2.0]])
    cell[0, 1] = np.array([b"h", b"i"], dtype="S1")
    st_arr = MatStruct((1, 1), dtype=[("a", object), ("bb", object)])
    st_arr[0, 0] = (np.array([[3.0]]), cell)
    obj = np.empty(3, dtype=object)
    obj[:] = [1, "x", None]
    samples: list[Any] = [
        np.arange(6.0).reshape(2, 3),
        np.array([1 + 2j, 3 - 4j], dtype=np.complex64),
        np.array([[True, False]]),
        np.array([[b"a", b"b"], [b"c", b"d"]], dtype="S1"),
        np.array(["ab", "c"]),
        np.array(["2020-01-01", "NaT"], dtype="datetime64[D]"),
        np.float64(3.5),
        obj,
        cell,
        st_arr,
        # numpy infers the formats; its stubs want them given with names
        np.rec.fromrecords([(1.0, 2, "x")], names="a,b,c"),  # type: ignore[call-overload]
        np.zeros(2, dtype=[("p", [("q", "<f4"), ("r", "i1")]), ("s", "<u2", (2,))]),
        {"a": 1, "b": [1.5, "x", b"y"], "c": {"d": np.arange(3)}, 2: (None, True)},
        [Decimal("1.25"), uuid.UUID(int=5), datetime.datetime(2020, 1, 2, 3, 4, 5, 6)],
        [datetime.date(2020, 1, 2), datetime.time(1, 2), 2**70, -255, 1 + 2j, {1, 2}],
        "h\u00e9llo",
        [[[[[1]]]]],
    ]
    blobs = [pack(value, compress=False) for value in samples]
    blobs.append(pack(np.arange(400, dtype=np.int32) // 7))  # compressed
    blobs.append(pack({"k": ["spam"] * 100}))  # compressed
    assert sum(b.startswith(b"ZL123\0") for b in blobs) == 2
    return blobs


CORPUS = _corpus()
HUGE = [2**64 - 1, 2**63, 2**60, 2**40, 2**32 - 1, 2**31, 2**16, 1000, 255, 1, 0]

mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(0, 7)),
    st.tuples(st.just("truncate"), st.integers(0, 10**6)),
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.binary(min_size=1, max_size=9)),
    st.tuples(st.just("delete"), st.integers(0, 10**6), st.integers(1, 16)),
    st.tuples(st.just("u64"), st.integers(0, 10**6), st.sampled_from(HUGE)),
    st.tuples(st.just("u32"), st.integers(0, 10**6), st.sampled_from(HUGE)),
    st.tuples(st.just("byte"), st.integers(0, 10**6), st.integers(0, 255)),
)


def mutate(blob: bytes, mutations: list[tuple[Any, ...]]) -> bytes:
    data = bytearray(blob)
    for kind, pos, *args in mutations:
        pos = pos % (len(data) + 1)
        if kind == "flip" and pos < len(data):
            data[pos] ^= 1 << args[0]
        elif kind == "truncate":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = args[0]
        elif kind == "delete":
            del data[pos : pos + args[0]]
        elif kind == "u64":
            data[pos : pos + 8] = struct.pack("<Q", args[0])
        elif kind == "u32":
            data[pos : pos + 4] = struct.pack("<I", args[0] & 0xFFFFFFFF)
        elif kind == "byte" and pos < len(data):
            data[pos] = args[0]
    return bytes(data)


def _check(blob: bytes, **kwargs: Any) -> None:
    start = time.perf_counter()
    try:
        unpack(blob, **kwargs)
    except BlobFormatError as exc:
        assert str(exc)
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0, f"{elapsed:.2f} s for {blob[:64]!r}"


@FUZZ
@given(
    st.sampled_from(range(len(CORPUS))),
    st.lists(mutation, min_size=1, max_size=3),
    st.booleans(),
    st.booleans(),
)
def test_mutated_blobs_raise_only_blob_format_error(
    index: int, mutations: list[tuple[Any, ...]], reframe: bool, squeeze: bool
) -> None:
    blob = CORPUS[index]
    if reframe and blob.startswith(b"ZL123\0"):
        # mutate the plain blob and frame it again: the reader gets past zlib
        inner = mutate(zlib.decompress(blob[14:]), mutations)
        blob = b"ZL123\0" + struct.pack("<Q", len(inner)) + zlib.compress(inner)
    else:
        blob = mutate(blob, mutations)
    _check(blob, squeeze=squeeze)
    _check(blob, legacy_u32=True, max_depth=8)


@pytest.mark.parametrize("index", range(len(CORPUS)))
def test_every_single_byte_change_of_the_corpus(index: int) -> None:
    blob = CORPUS[index]
    for pos in range(min(len(blob), 400)):
        for value in (0x00, 0xFF, blob[pos] ^ 0x01, blob[pos] ^ 0x80):
            changed = bytearray(blob)
            changed[pos] = value
            _check(bytes(changed))
