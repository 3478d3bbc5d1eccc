"""The blob codec: DataJoint's bytes, every type both ways, the hardened reader."""

from __future__ import annotations

import datetime
import json
import struct
import time
import tracemalloc
import uuid
import zlib
from collections import OrderedDict, deque
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers.codec import assert_same

import sa_djblob as djb
from sa_djblob import BlobFormatError, MatCell, MatStruct, UnsupportedTypeError, pack, unpack

VECTORS_PATH = Path("/work/shared/vectors/datajoint-0.14.json")
_HERE = Path(__file__).resolve().parent
for _candidate in (_HERE / "vectors" / "datajoint-0.14.json", VECTORS_PATH):
    if _candidate.exists():
        VECTORS_PATH = _candidate
        break

VECTORS: list[dict[str, str]] = json.loads(VECTORS_PATH.read_text())["vectors"]
NAMES = {"np": np, "datetime": datetime, "uuid": uuid, "Decimal": Decimal}

U64 = struct.Struct("<Q")
U32 = struct.Struct("<I")


def u64(*values: int) -> bytes:
    return b"".join(U64.pack(v) for v in values)


def u32(*values: int) -> bytes:
    return b"".join(U32.pack(v) for v in values)


def roundtrip(value: Any, **kwargs: Any) -> Any:
    blob = pack(value, **kwargs)
    assert blob.startswith((b"mYm\0", b"dj0\0", b"ZL123\0"))
    return unpack(blob)


def plain(blob: bytes) -> bytes:
    """The plain form of a possibly compressed blob."""
    if blob.startswith(b"ZL123\0"):
        return zlib.decompress(blob[14:])
    return blob


# ------------------------------------------------------------------------------------------
# the DataJoint 0.14 vectors


def _expected_after_read(vector: dict[str, str], value: Any) -> Any:
    """What our reader gives for a vector value (the notes of the vector file)."""
    vid = vector["id"]
    if vid == "V3":
        return np.float64(3.5)  # a 0-d array reads back as a numpy scalar, as in DataJoint
    if vid == "V6":
        return np.array(["ab"])
    if vid == "V7":
        return np.array(["ab", "c"], dtype=object)
    if vid == "V27":
        return value.view(np.recarray)
    return value


@pytest.mark.parametrize("vector", [v for v in VECTORS if "value" in v], ids=lambda v: v["id"])
def test_vector_pack_and_unpack(vector: dict[str, str]) -> None:
    value = eval(vector["value"], NAMES)
    blob = bytes.fromhex(vector["hex"])
    if vector["id"] == "VZ":
        assert blob.startswith(b"ZL123\0")
        plain_bytes = zlib.decompress(blob[14:])
        assert U64.unpack_from(blob, 6)[0] == len(plain_bytes)
        assert pack(value, compress=False) == plain_bytes
        assert plain(pack(value)) == plain_bytes
        assert_same(unpack(blob), value)
        return
    assert pack(value, compress=False).hex() == vector["hex"]
    assert pack(value) == blob  # all of these are short: never compressed
    assert_same(unpack(blob), _expected_after_read(vector, value))


def test_vector_v29_cell_array() -> None:
    blob = bytes.fromhex(next(v["hex"] for v in VECTORS if v["id"] == "V29"))
    value = unpack(blob)
    # DataJoint 0.14 reads it as np.array(items): a float64 cell (the vector file's note,
    # "an object array", is not what DataJoint 0.14.10 does; test_codec_datajoint.py
    # compares with DataJoint itself)
    assert type(value) is MatCell
    assert_same(value, np.array([[1.0, 2.0]]).view(MatCell))
    cell = MatCell((1, 2), dtype=object)
    cell[0, 0], cell[0, 1] = np.array([[1.0]]), np.array([[2.0]])
    assert pack(cell, compress=False) == blob
    squeezed = unpack(blob, squeeze=True)
    assert isinstance(squeezed, MatCell) and squeezed.shape == (2,)
    assert squeezed[0] == 1.0 and squeezed[1] == 2.0


def test_vector_v30_struct_array() -> None:
    blob = bytes.fromhex(next(v["hex"] for v in VECTORS if v["id"] == "V30"))
    value = unpack(blob)
    assert type(value) is MatStruct
    assert value.shape == (1, 1)
    assert value.dtype.names == ("a",) and value.dtype["a"] == np.dtype(object)
    assert_same(value[0, 0]["a"], np.array([[1.0]]))
    assert_same(value.a[0, 0], np.array([[1.0]]))
    assert pack(value, compress=False) == blob
    assert unpack(blob, squeeze=True).shape == ()


def test_vector_hash_of_v1() -> None:
    import hashlib

    blob = pack(np.array([1.0, 2.0, 3.0]))
    assert uuid.UUID(bytes=hashlib.md5(blob).digest()) == uuid.UUID(
        "71b234d9ded1c0d180f5f7da6b38b169"
    )


# ------------------------------------------------------------------------------------------
# round trips of every kind

INT_DTYPES = ["int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64"]
DATETIME_UNITS = ["Y", "M", "W", "D", "h", "m", "s", "ms", "us", "ns", "ps", "fs", "as"]


@pytest.mark.parametrize("dtype", [*INT_DTYPES, "float32", "float64", "bool"])
@pytest.mark.parametrize("shape", [(), (0,), (5,), (3, 4), (2, 0, 3), (2, 3, 4), (1, 1)])
def test_numeric_arrays(dtype: str, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(1)
    arr = np.asarray(rng.random(shape) * 100).astype(dtype)
    blob = pack(arr)
    assert blob[:4] == (b"dj0\0" if arr.ndim == 0 else b"mYm\0")
    assert_same(unpack(blob), arr)


def test_extreme_integers() -> None:
    for dtype in INT_DTYPES:
        info = np.iinfo(dtype)
        arr = np.array([info.min, info.max, 0], dtype=dtype)
        assert_same(roundtrip(arr), arr)


def test_float_specials() -> None:
    arr = np.array([np.nan, np.inf, -np.inf, -0.0, 5e-324])
    back = roundtrip(arr)
    assert_same(back, arr)
    assert np.signbit(back[3])


def test_fortran_order_bytes() -> None:
    arr = np.arange(6, dtype=np.int32).reshape(2, 3)
    body = pack(arr, compress=False)[4 + 1 + 8 + 16 + 8 :]
    assert np.frombuffer(body, np.int32).tolist() == [0, 3, 1, 4, 2, 5]
    fortran = np.asfortranarray(arr)
    assert pack(fortran, compress=False) == pack(arr, compress=False)
    assert_same(roundtrip(fortran), arr)


def test_non_contiguous_arrays() -> None:
    base = np.arange(60, dtype=np.float64).reshape(3, 4, 5)
    for view in (base[::2, 1:, ::-2], base.transpose(2, 0, 1), base[:, 2], base[..., ::3]):
        assert not (view.flags.c_contiguous and view.flags.f_contiguous) or view.ndim < 2
        assert_same(roundtrip(view), np.ascontiguousarray(view))
    complex_view = (base + 1j * base)[:, ::2, 1::2]
    assert_same(roundtrip(complex_view), np.ascontiguousarray(complex_view))


@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
def test_complex_arrays(dtype: str) -> None:
    arr = (np.arange(6).reshape(2, 3) + 1j * np.arange(10, 16).reshape(2, 3)).astype(dtype)
    blob = pack(arr, compress=False)
    class_id, is_complex = struct.unpack_from("<II", blob, 4 + 1 + 8 + 16)
    assert class_id == (7 if dtype == "complex64" else 6) and is_complex == 1
    planes = np.frombuffer(blob[4 + 1 + 8 + 16 + 8 :], arr.real.dtype)
    assert planes.tolist() == [0, 3, 1, 4, 2, 5, 10, 13, 11, 14, 12, 15]  # real, then imag
    assert_same(unpack(blob), arr)
    assert_same(roundtrip(arr[0, 0]), np.array(arr[0, 0]))


@pytest.mark.parametrize("unit", DATETIME_UNITS)
def test_datetime64_units(unit: str) -> None:
    arr = np.array([0, 1, 1000, -5], dtype=f"datetime64[{unit}]").reshape(2, 2)
    arr[1, 1] = np.datetime64("NaT")
    blob = pack(arr, compress=False)
    assert blob[:4] == b"dj0\0"
    class_id = struct.unpack_from("<I", blob, 4 + 1 + 8 + 16)[0]
    assert class_id == 65536 + DATETIME_UNITS.index(unit)
    assert_same(unpack(blob), arr)
    scalar = np.datetime64(7, unit)  # type: ignore[call-overload]  # stubs: literal units only
    assert_same(roundtrip(scalar), np.array(scalar))


def test_char_arrays() -> None:
    one_d = np.array([b"a", b"b", b"c"], dtype="S1")
    assert_same(roundtrip(one_d), np.array(["abc"]))
    row = np.array([[b"h", b"i"]], dtype="S1")
    assert_same(roundtrip(row), np.array(["hi"]))
    assert pack(row, compress=False)[:4] == b"mYm\0"
    assert_same(roundtrip(np.array([], dtype="S1")), np.array([""]))
    two_d = np.array([[b"a", b"b", b"c"], [b"d", b"e", b"f"]], dtype="S1")
    blob = pack(two_d, compress=False)
    assert blob[:4] == b"mYm\0"
    # Fortran order, each byte widened to u16 (what MATLAB writes for a 2x3 char array)
    assert np.frombuffer(blob[4 + 1 + 8 + 16 + 8 :], "<u2").tolist() == [ord(c) for c in "adbecf"]
    assert_same(unpack(blob), two_d.astype("U1"))
    assert_same(roundtrip(np.asfortranarray(two_d)), two_d.astype("U1"))
    # non-ASCII bytes survive (read as Latin-1 code points)
    high = np.array([[b"\xe9", b"\x01"], [b"\xff", b"z"]], dtype="S1")
    assert roundtrip(high).tolist() == [["\xe9", "\x01"], ["\xff", "z"]]


def test_char_array_written_by_matlab_keeps_low_byte() -> None:
    # MATLAB writes 'hé' as a 1x2 char array of u16 code units; the reader keeps the low byte
    blob = b"mYm\0A" + u64(2, 1, 2) + u32(4, 0) + struct.pack("<2H", ord("h"), 0x1E9)
    assert_same(unpack(blob), np.array(["h\xe9"]))
    assert unpack(blob, squeeze=True) == "h\xe9"


def test_unicode_and_object_arrays() -> None:
    uni = np.array([["ab", "c"], ["déf", ""]])
    expected = np.empty((2, 2), dtype=object)
    expected[:] = [["ab", "c"], ["déf", ""]]
    blob = pack(uni)
    assert blob[:4] == b"dj0\0"
    assert_same(unpack(blob), expected)
    obj = np.empty((2, 3), dtype=object)
    obj[:] = [[1, "x", None], [np.arange(3), {"k": [1, 2]}, 2.5]]
    obj[1, 0] = np.arange(3)
    back = roundtrip(obj)
    assert_same(back, obj)
    # elements that are same-shaped arrays stay elements (no numpy stacking)
    same = np.empty(2, dtype=object)
    same[0], same[1] = np.zeros(3), np.ones(3)
    back = roundtrip(same)
    assert back.shape == (2,) and back.dtype == object
    assert_same(back[1], np.ones(3))


def test_record_arrays() -> None:
    rec = np.rec.fromrecords(
        [(1.0, 2, "ab"), (3.0, 4, "c")], dtype=[("x", "<f8"), ("y", "<i4"), ("s", "U3")]
    )
    back = roundtrip(rec)
    assert isinstance(back, np.recarray) and back.shape == (2,)
    assert back.dtype.names == ("x", "y", "s")
    assert_same(back.x, rec.x)
    assert_same(back.y, rec.y)
    assert back["s"].tolist() == ["ab", "c"]
    structured = np.zeros((2, 3), dtype=[("a", "<f4"), ("b", "u1")])
    structured["a"] = np.arange(6).reshape(2, 3)
    back = roundtrip(structured)
    assert back.shape == (2, 3)
    assert_same(np.asarray(back["a"]), structured["a"])
    assert pack(structured, compress=False)[:4] == b"dj0\0"


def test_nested_record_arrays() -> None:
    inner = np.dtype([("p", "<f8"), ("q", "<i2")])
    dt = np.dtype([("id", "<i8"), ("pos", inner), ("vec", "<f4", (3,))])
    arr = np.zeros(4, dtype=dt)
    arr["id"] = [1, 2, 3, 4]
    arr["pos"]["p"] = [0.5, 1.5, 2.5, 3.5]
    arr["pos"]["q"] = [-1, -2, -3, -4]
    arr["vec"] = np.arange(12).reshape(4, 3)
    back = roundtrip(arr)
    assert back.shape == (4,)
    assert back["id"].tolist() == [1, 2, 3, 4]
    assert back["pos"]["p"].tolist() == [0.5, 1.5, 2.5, 3.5]
    assert back["pos"]["q"].tolist() == [-1, -2, -3, -4]
    assert back["vec"].shape == (4, 3)
    assert_same(np.asarray(back["vec"]), arr["vec"])
    zero_d = np.array((1, 2.5), dtype=[("a", "i8"), ("b", "f8")])
    back = roundtrip(zero_d)
    assert back.shape == () and back["a"] == 1 and back["b"] == 2.5


def test_python_scalars_and_special_types() -> None:
    values = [
        None,
        True,
        False,
        0,
        -1,
        255,
        -256,
        2**63,
        -(2**200),
        1.5,
        float("nan"),
        float("-inf"),
        complex(1, -2),
        "",
        "h\u00e9llo \U0001f600",
        b"",
        b"\x00\xff",
        Decimal("3.14159265358979323846"),
        Decimal("-1E+10"),
        Decimal("NaN"),
        datetime.datetime(1999, 12, 31, 23, 59, 59, 999999),
        datetime.date(1, 1, 1),
        datetime.time(0, 0),
        datetime.time(23, 59, 59, 999999),
        uuid.UUID(int=0),
        uuid.uuid4(),
    ]
    for value in values:
        blob = pack(value)
        assert blob[:4] == b"dj0\0"
        assert_same(unpack(blob), value)


def test_type_conversions_on_read() -> None:
    assert_same(roundtrip(bytearray(b"ab")), b"ab")
    assert_same(roundtrip(frozenset({1, 2})), {1, 2})
    assert_same(roundtrip(range(3)), (0, 1, 2))
    assert_same(roundtrip(deque([1, "a"])), [1, "a"])
    assert_same(roundtrip(OrderedDict([("b", 1), ("a", 2)])), {"b": 1, "a": 2})
    assert_same(roundtrip(np.str_("abc")), "abc")
    # a 0-d array and a numpy scalar are the same bytes; both read back as the scalar
    assert pack(np.array(5.0)) == pack(np.float64(5.0))
    back = roundtrip(np.array(5.0))
    assert type(back) is np.float64 and back == 5.0


def test_nested_structures() -> None:
    value = {
        "a": [1, 2.5, "x", None, (True, b"b")],
        "b": {"c": {"d": np.arange(3)}, 1: {2, 3}, (1, "k"): frozenset()},
        "e": np.zeros((2, 0)),
        "f": [[[[np.float64(1.0)]]]],
        "g": [uuid.UUID(int=7), Decimal("1.5"), datetime.date(2020, 2, 29)],
        "h": np.array([[1 + 2j, 3]], dtype=np.complex64),
    }
    back = roundtrip(value)
    expected = dict(value)
    expected["b"] = {"c": {"d": np.arange(3)}, 1: {2, 3}, (1, "k"): set()}
    expected["f"] = [[[[np.array(1.0)]]]]
    assert_same(back, expected)


def test_mat_cell_and_struct_round_trip() -> None:
    cell = MatCell((2, 2), dtype=object)
    cell[0, 0] = np.array([[1.0, 2.0]])
    cell[1, 0] = np.array([b"a", b"b"], dtype="S1")
    cell[0, 1] = MatCell((1, 0), dtype=object)
    cell[1, 1] = np.array([[True]])
    blob = pack(cell, compress=False)
    assert blob[:5] == b"mYm\0C"
    back = unpack(blob)
    assert type(back) is MatCell and back.shape == (2, 2)
    assert_same(back[0, 0], cell[0, 0])
    assert_same(back[1, 0], np.array(["ab"]))
    assert type(back[0, 1]) is MatCell and back[0, 1].shape == (1, 0)
    struct_array = MatStruct((1, 2), dtype=[("name", object), ("value", object)])
    struct_array[0, 0] = (np.array([b"x"], dtype="S1"), np.array([[1.0]]))
    struct_array[0, 1] = (np.array([b"y"], dtype="S1"), cell)
    blob = pack(struct_array, compress=False)
    assert blob[:5] == b"mYm\0S"
    back = unpack(blob)
    assert type(back) is MatStruct and back.shape == (1, 2)
    assert back.dtype.names == ("name", "value")
    assert_same(back[0, 1]["name"], np.array(["y"]))
    assert type(back[0, 1]["value"]) is MatCell
    # a dj0 item anywhere inside switches the header
    cell[1, 1] = {"python": "dict"}
    assert pack(cell, compress=False)[:4] == b"dj0\0"
    assert_same(unpack(pack(cell))[1, 1], {"python": "dict"})


def test_struct_array_elements_in_fortran_order() -> None:
    arr = MatStruct((2, 2), dtype=[("v", object)])
    for i, j in np.ndindex(2, 2):
        arr[i, j] = (np.array([[float(10 * i + j)]]),)
    blob = pack(arr, compress=False)
    back = unpack(blob)
    for i, j in np.ndindex(2, 2):
        assert back[i, j]["v"][0, 0] == 10 * i + j
    element = b"A" + u64(2, 1, 1) + u32(6, 0)
    written, pos = [], blob.find(element)
    while pos >= 0:
        written.append(struct.unpack_from("<d", blob, pos + len(element))[0])
        pos = blob.find(element, pos + 1)
    assert written == [0.0, 10.0, 1.0, 11.0]  # (0,0), (1,0), (0,1), (1,1)


def test_empty_containers_and_zero_d() -> None:
    value: Any
    for value in ([], (), {}, set(), "", b"", np.array([]), np.zeros((0, 3)), np.array(1)):
        back = roundtrip(value)
        assert_same(back, value)
    # an empty cell is float64, as np.array([]) (DataJoint's rule for cells)
    assert_same(roundtrip(MatCell((0,), dtype=object)), MatCell((0,), dtype=float))
    empty_struct = MatStruct((1, 1), dtype=[])
    back = roundtrip(empty_struct)
    assert type(back) is MatStruct and back.shape == (1, 1) and back.dtype.names in ((), None)


def test_squeeze() -> None:
    arr = np.arange(3.0).reshape(1, 3, 1)
    assert unpack(pack(arr), squeeze=True).shape == (3,)
    assert unpack(pack(np.array([[7.0]])), squeeze=True) == 7.0
    assert isinstance(unpack(pack(np.array([[7.0]])), squeeze=True), float)
    assert unpack(pack(np.array([b"o", b"k"], dtype="S1")), squeeze=True) == "ok"
    nested = unpack(pack({"x": np.ones((1, 2))}), squeeze=True)
    assert nested["x"].shape == (2,)


# ------------------------------------------------------------------------------------------
# the header and the compression framing


def test_header_decision() -> None:
    mym = [
        np.zeros(3),
        np.zeros((2, 2), dtype=np.uint8),
        np.array([True]),
        np.array([b"a"], dtype="S1"),
        MatCell((1, 1), dtype=object),
        np.array([1 + 1j]),
    ]
    cell = MatCell((1, 1), dtype=object)
    cell[0, 0] = np.zeros((1, 1))
    mym.append(cell)
    for value in mym:
        if isinstance(value, MatCell) and value[0, 0] is None:
            continue
        assert pack(value, compress=False)[:4] == b"mYm\0", value
    dj0 = [
        np.float64(1.0),
        np.array(1.0),
        np.array(["a"]),
        np.array([None], dtype=object),
        np.array(["2020-01-01"], dtype="datetime64[D]"),
        np.zeros(1, dtype=[("a", "f8")]),
        1,
        [np.zeros(3)],
        {"a": np.zeros(3)},
    ]
    for value in dj0:
        assert pack(value, compress=False)[:4] == b"dj0\0", value


def test_compression_threshold_and_framing() -> None:
    small = np.zeros(120)  # 4 + 33 + 960 = 997 plain bytes
    assert len(pack(small, compress=False)) <= 1000
    assert pack(small) == pack(small, compress=False)
    big = np.zeros(200)
    blob = pack(big)
    plain_bytes = pack(big, compress=False)
    assert blob.startswith(b"ZL123\0")
    assert U64.unpack_from(blob, 6)[0] == len(plain_bytes)
    assert zlib.decompress(blob[14:]) == plain_bytes
    assert len(blob) < len(plain_bytes)
    assert_same(unpack(blob), big)
    # incompressible data stays plain (compressed form only if strictly shorter)
    noise = np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8)
    assert pack(noise) == pack(noise, compress=False)


@pytest.mark.parametrize("size", [2_000, 300_000, 6_000_000])
def test_compressed_blobs_are_valid_zlib(size: int) -> None:
    rng = np.random.default_rng(size)
    arr = np.repeat(rng.integers(0, 50, size // 16, dtype=np.uint8), 16)
    blob = pack(arr)
    assert blob.startswith(b"ZL123\0")
    assert zlib.decompress(blob[14:]) == pack(arr, compress=False)  # what DataJoint does
    assert_same(unpack(blob), arr)


def test_large_random_floats_skip_compression() -> None:
    arr = np.random.default_rng(3).random(1 << 17)  # 1 MiB of high-entropy floats
    assert pack(arr) == pack(arr, compress=False)


def test_reads_datajoint_level6_streams() -> None:
    value = {"a": np.arange(1000.0), "b": ["x"] * 50}
    plain_bytes = pack(value, compress=False)
    for level in (1, 6, 9):
        framed = b"ZL123\0" + u64(len(plain_bytes)) + zlib.compress(plain_bytes, level)
        assert_same(unpack(framed), value)
        assert_same(unpack(bytearray(framed)), value)
        assert_same(unpack(memoryview(framed)), value)


# ------------------------------------------------------------------------------------------
# returned arrays are the caller's


def test_returned_arrays_are_writable_and_owned() -> None:
    values = [
        np.arange(12.0).reshape(3, 4),
        np.arange(5, dtype=np.int16),
        np.array([1 + 2j, 3]),
        np.array([True, False]),
        np.array(["2020-01-01"], dtype="datetime64[D]"),
        np.array([[b"a", b"b"], [b"c", b"d"]], dtype="S1"),
        np.array([b"a", b"b"], dtype="S1"),
        np.array(["a", "b"]),
        MatCell((1, 2), dtype=object),
        np.zeros(3, dtype=[("a", "f8"), ("b", "i1")]),
    ]
    for value in values:
        blob = pack(value, compress=False)
        back = unpack(blob)
        assert back.flags.writeable, value
        assert back.flags.owndata or back.base.flags.owndata, value
        assert not np.shares_memory(back, np.frombuffer(blob, np.uint8)), value
        back[...] = back.copy()  # writing works
    arr = unpack(pack(np.arange(10.0), compress=False))
    assert arr.base is None
    arr[0] = 42.0
    assert arr[0] == 42.0


def test_results_do_not_alias_the_input_buffer() -> None:
    data = bytearray(pack(np.arange(8.0), compress=False))
    back = unpack(data)
    data[-8:] = b"\xff" * 8
    assert back[-1] == 7.0
    view = memoryview(data)
    back = unpack(view)
    assert not np.shares_memory(back, np.frombuffer(data, np.uint8))


# ------------------------------------------------------------------------------------------
# unsupported values


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (np.zeros(2, dtype=np.float16), "value: float16 arrays are not supported"),
        (np.zeros(2, dtype=np.longdouble), "arrays are not supported"),
        (np.array([b"ab"]), "value: byte-string arrays of dtype S2 are not supported"),
        (np.zeros(2, dtype="m8[s]"), "value: timedelta64[s] arrays are not supported"),
        (np.timedelta64(1, "s"), "value: timedelta64 values are not supported"),
        (datetime.timedelta(1), "value: values of type datetime.timedelta are not supported"),
        (object(), "value: values of type object are not supported"),
        (np.zeros(1, dtype=[]), "structured arrays without fields are not supported"),
        (2 ** (8 * 70000), "too large"),
    ],
    ids=lambda v: type(v).__name__ if not isinstance(v, str) else "",
)
def test_unsupported_types(value: Any, message: str) -> None:
    with pytest.raises(UnsupportedTypeError, match=None) as info:
        pack(value)
    assert message in str(info.value)


def test_unsupported_type_positions() -> None:
    with pytest.raises(UnsupportedTypeError) as info:
        pack({"a": [1, 2, np.zeros(1, dtype=np.float16)]})
    assert str(info.value) == (
        "value['a'][2]: float16 arrays are not supported: convert with arr.astype(np.float32)"
    )
    obj = np.empty((2, 2), dtype=object)
    obj[:] = 0
    obj[1, 0] = object()
    with pytest.raises(UnsupportedTypeError, match=r"^value\[3\]\[1, 0\]: values of type object"):
        pack((1, 2, 3, obj))
    with pytest.raises(UnsupportedTypeError, match=r"^value\.keys\(\)\[1\]: "):
        pack({"ok": 1, datetime.timedelta(1): 2})
    cell = MatCell((1, 2), dtype=object)
    cell[0, 1] = [np.float16(1)]
    with pytest.raises(UnsupportedTypeError, match=r"^value\[0, 1\]\[0\]: float16"):
        pack(cell)
    rec = np.zeros(2, dtype=[("a", "f8"), ("b", "f2")])
    with pytest.raises(UnsupportedTypeError, match=r"^value\['b'\]: float16 arrays"):
        pack(rec)
    st = MatStruct((1, 1), dtype=[("field", object)])
    st[0, 0] = (datetime.timedelta(0),)
    with pytest.raises(UnsupportedTypeError, match=r"^value\[0, 0\]\.field: "):
        pack(st)


def test_pack_depth_limit_and_recursion() -> None:
    deep: Any = []
    for _ in range(djb.config["max_depth"]):
        deep = [deep]
    assert_same(unpack(pack(deep)), deep)  # exactly max_depth levels are fine
    with pytest.raises(UnsupportedTypeError, match="nesting deeper than max_depth"):
        pack([deep])
    looped: list[Any] = [1]
    looped.append(looped)
    with pytest.raises(UnsupportedTypeError, match="recursive"):
        pack(looped)
    with djb.config.override(max_depth=3):
        pack([[[1]]])
        with pytest.raises(UnsupportedTypeError, match="max_depth=3"):
            pack([[[[1]]]])


# ------------------------------------------------------------------------------------------
# the hardened reader


def _raises(blob: bytes | bytearray, pattern: str, **kwargs: Any) -> str:
    with pytest.raises(BlobFormatError, match=pattern) as info:
        unpack(blob, **kwargs)
    return str(info.value)


def test_unknown_header_and_code() -> None:
    _raises(b"xyz\0\xff", r"unknown blob header b'xyz\\x00' at byte 0")
    _raises(b"", "unknown blob header")
    _raises(b"dj0\0Z", r"unknown item code 0x5a at byte 4")
    message = _raises(pack([1, 2, 3]).replace(b"\x0a\x01\x00\x03", b"\x0e\x01\x00\x03"), "0x0e")
    assert "value[2]" in message


def test_truncation_everywhere_is_a_format_error() -> None:
    value = {
        "a": [1, "x", np.arange(4.0)],
        "b": MatCell((1, 1), dtype=object),
        # numpy infers the formats; its stubs want them given with names
        "c": np.rec.fromrecords([(1.0, 2)], names="p,q"),  # type: ignore[call-overload]
        "d": (Decimal("2.5"), uuid.UUID(int=3), datetime.datetime(2020, 1, 1)),
    }
    blob = pack(value, compress=False)
    for cut in range(len(blob)):
        with pytest.raises(BlobFormatError):
            unpack(blob[:cut])


def test_error_message_names_offset_and_path() -> None:
    blob = pack({"a": [1, 2, np.arange(3.0)]}, compress=False)
    header = b"A" + u64(1, 3) + u32(6, 0)
    at = blob.index(header)
    broken = blob.replace(header, b"A" + u64(1, 3) + u32(99, 0))
    message = _raises(broken, "unknown array class id 99")
    assert message == (f"unknown array class id 99 at byte {at} (in value['a'][2])")
    # a cut stream: the outermost length that no longer fits is reported
    message = _raises(blob[:-1], "exceeds the remaining")
    assert "at byte" in message


def test_trailing_bytes() -> None:
    blob = pack([1, 2], compress=False)
    _raises(blob + b"\0", rf"1 trailing bytes after the value at byte {len(blob)}")


def test_item_length_mismatch() -> None:
    # list of one int whose length prefix says 5 bytes although the int takes 4
    blob = b"dj0\0\x02" + u64(1) + u64(5) + b"\x0a\x01\x00\x07" + b"\xff"
    _raises(blob, r"item declares 5 bytes but holds 4 .*in value\[0\]")


def test_huge_counts_fail_fast_without_allocating() -> None:
    cases = [
        b"mYm\0A" + u64(1, 2**60) + u32(6, 0),
        b"mYm\0A" + u64(3, 2**40, 2**40, 2**40) + u32(9, 0),
        b"mYm\0A" + u64(2, 0, 2**63) + u32(6, 0),
        b"mYm\0A" + u64(2**60) + u32(6, 0),
        b"mYm\0A" + u64(1, 2**30) + u32(5, 0),
        b"mYm\0C" + u64(2, 2**31, 2**31),
        b"mYm\0S" + u64(1, 2**40) + u32(1) + b"a\0",
        b"mYm\0S" + u64(1, 1) + u32(2**32 - 1) + b"a\0",
        b"dj0\0\x02" + u64(2**62),
        b"dj0\0\x04" + u64(2**40),
        b"dj0\0\x05" + u64(2**63),
        b"dj0\0\x06" + u64(2**64 - 1),
        b"dj0\0d" + u64(2**50),
        b"dj0\0\x0a\xff\xff",
        b"dj0\0F" + u32(2**32 - 1) + b"a\0",
        b"ZL123\0" + u64(2**62) + zlib.compress(b"dj0\0\xff"),
        b"ZL123\0" + u64(2**33) + zlib.compress(b"dj0\0\xff"),
    ]
    tracemalloc.start()
    try:
        for blob in cases:
            start = time.perf_counter()
            with pytest.raises(BlobFormatError):
                unpack(blob)
            assert time.perf_counter() - start < 2.0, blob  # refused, not attempted
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 << 20


def test_shape_message() -> None:
    message = _raises(b"mYm\0A" + u64(1, 2**60) + u32(6, 0), "at byte 5")
    assert str(2**60) in message


def test_invalid_array_headers() -> None:
    _raises(b"mYm\0A" + u64(1, 1) + u32(99, 0) + b"\0" * 8, "unknown array class id 99")
    _raises(b"mYm\0A" + u64(1, 1) + u32(2, 0) + b"\0" * 8, "unsupported MATLAB class 'struct'")
    _raises(b"mYm\0A" + u64(1, 1) + u32(6, 2) + b"\0" * 16, "invalid complex flag 2")
    _raises(b"mYm\0A" + u64(1, 1) + u32(3, 1) + b"\0" * 2, "complex bool arrays")
    _raises(b"mYm\0A" + u64(65, *([1] * 65)) + u32(6, 0) + b"\0" * 8, "ndim 65")
    _raises(b"mYm\0P" + b"\0" * 40, "sparse arrays .* unsupported")


def test_complex_integer_arrays_from_matlab() -> None:
    blob = b"mYm\0A" + u64(2, 1, 2) + u32(12, 1) + struct.pack("<4i", 1, 2, 3, 4)
    assert_same(unpack(blob), np.array([[1 + 3j, 2 + 4j]]))


def test_invalid_scalars() -> None:
    _raises(b"dj0\0\x05" + u64(2) + b"\xff\xfe", "str is not valid UTF-8 .* at byte 4")
    _raises(b"dj0\0d" + u64(3) + b"abc", "invalid Decimal")
    _raises(b"dj0\0t" + struct.pack("<iq", 20201340, -1), r"invalid date/time")
    _raises(b"dj0\0t" + struct.pack("<iq", -1, 250000000000), r"invalid date/time")
    _raises(b"dj0\0t" + struct.pack("<iq", -1, -1), r"invalid date/time")
    _raises(b"dj0\0\x03" + u64(1) + u64(9) + b"\x02" + u64(0), "unhashable set")
    blob = b"dj0\0\x04" + u64(1) + u64(9) + b"\x02" + u64(0) + u64(1) + b"\xff"
    _raises(blob, "unhashable dict key of type list")


def test_struct_and_record_field_names() -> None:
    _raises(b"mYm\0S" + u64(1, 1) + u32(2) + b"a\0a\0", "repeated struct field names")
    _raises(b"mYm\0S" + u64(1, 1) + u32(1) + b"abc", "unterminated struct field name")
    _raises(b"mYm\0S" + u64(1, 1) + u32(1) + b"\xff\0" + u64(1) + b"\xff", "not valid UTF-8")
    _raises(b"dj0\0F" + u32(0), "record array without fields")
    _raises(b"dj0\0F" + u32(1) + b"a\0\x05" + u64(0), r"'A' or 'F' item.*in value\['a'\]")


def test_decompression_bounds() -> None:
    inner = pack(np.zeros(2000), compress=False)
    stream = zlib.compress(inner)
    good = b"ZL123\0" + u64(len(inner)) + stream
    assert_same(unpack(good), np.zeros(2000))
    _raises(b"ZL123\0" + u64(len(inner) - 1) + stream, "beyond the declared")
    _raises(b"ZL123\0" + u64(len(inner) + 1) + stream, "ends after")
    _raises(b"ZL123\0" + u64(len(inner)) + stream[:-6], "truncated|ends after")
    _raises(b"ZL123\0" + u64(len(inner)) + stream[:-2], "truncated|corrupt")
    _raises(good + b"junk", "4 trailing bytes after the zlib stream")
    _raises(b"ZL123\0" + u64(len(inner)) + b"\x00" + stream[1:], "corrupt zlib stream")
    _raises(b"ZL123\0\x01", "truncated ZL123 header")
    _raises(good, "more than max_size=1000", max_size=1000)
    _raises(inner, "larger than max_size=1000", max_size=1000)
    with djb.config.override(max_blob_size=1000):
        _raises(good, "max_size=1000")
    nested = b"ZL123\0" + u64(len(good)) + zlib.compress(good)
    _raises(nested, "unknown blob header b'ZL12' at byte 0 of the decompressed blob")
    bad_inside = zlib.compress(inner + b"\0")
    message = _raises(b"ZL123\0" + u64(len(inner) + 1) + bad_inside, "trailing")
    assert "of the decompressed blob" in message


def test_zip_bomb_is_refused_before_inflating() -> None:
    bomb_plain = b"dj0\0\x06" + u64(50_000_000) + bytes(50_000_000)
    bomb = b"ZL123\0" + u64(len(bomb_plain)) + zlib.compress(bomb_plain, 9)
    _raises(bomb, "max_size=1000000", max_size=1_000_000)
    assert unpack(bomb) == bytes(50_000_000)


def test_read_depth_limit() -> None:
    deep: Any = 1
    for _ in range(40):
        deep = [deep]
    blob = pack(deep)
    assert_same(unpack(blob), deep)
    message = _raises(blob, "nesting deeper than max_depth=10", max_depth=10)
    assert "value[0][0]" in message
    with djb.config.override(max_depth=39):
        _raises(blob, "max_depth=39")
    # deep cells and object arrays are limited too
    cell: Any = np.zeros(1)
    for _ in range(20):
        outer = MatCell((1,), dtype=object)
        outer[0] = cell
        cell = outer
    _raises(pack(cell), "max_depth=5", max_depth=5)


def test_read_deep_nesting_without_recursion_error() -> None:
    depth = 2000
    blob = b"dj0\0"
    for _ in range(depth):
        blob += b"\x02" + u64(1) + u64(0)
    # build properly: each list holds the next, the innermost holds None
    item = b"\xff"
    for _ in range(depth):
        item = b"\x02" + u64(1) + u64(len(item)) + item
    _raises(b"dj0\0" + item, "nesting deeper than max_depth=256")
    _raises(b"dj0\0" + item, "nesting|recursion", max_depth=100_000)


def test_non_bytes_input() -> None:
    _raises("mYm", "must be bytes")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------
# the legacy 32-bit mym layout


def test_legacy_u32_arrays_and_containers() -> None:
    arr_blob = b"mYm\0A" + u32(2, 2, 3) + u32(6, 0) + np.arange(6.0).tobytes()
    back = unpack(arr_blob, legacy_u32=True)
    assert_same(back, np.arange(6.0).reshape(2, 3, order="F"))
    with pytest.raises(BlobFormatError):
        unpack(arr_blob)
    inner = b"A" + u32(2, 1, 1) + u32(6, 0) + struct.pack("<d", 4.0)
    cell_blob = b"mYm\0C" + u32(2, 1, 2) + u32(len(inner)) + inner + u32(len(inner)) + inner
    cell = unpack(cell_blob, legacy_u32=True)
    assert type(cell) is MatCell and cell.shape == (1, 2)
    assert_same(cell[0, 1], np.float64(4.0))  # a cell of 1x1 arrays is a numeric cell
    struct_blob = b"mYm\0S" + u32(2, 1, 1) + u32(1) + b"f\0" + u32(len(inner)) + inner
    st = unpack(struct_blob, legacy_u32=True)
    assert type(st) is MatStruct
    assert_same(st[0, 0]["f"], np.array([[4.0]]))
    char_blob = b"mYm\0A" + u32(2, 1, 2) + u32(4, 0) + b"o\0k\0"
    assert_same(unpack(char_blob, legacy_u32=True), np.array(["ok"]))
    compressed = b"ZL123\0" + u32(len(arr_blob)) + zlib.compress(arr_blob)
    assert_same(unpack(compressed, legacy_u32=True), back)
    string = b"dj0\0\x02" + u32(1) + u32(7) + b"\x05" + u32(2) + b"hi"
    assert unpack(string, legacy_u32=True) == ["hi"]


def test_datajoint_compression_mode_matches_datajoints_rule() -> None:
    import zlib

    value = np.tile(np.arange(100.0), 50)
    plain = djb.pack(value, compress=False)
    with djb.config.override(compression="datajoint"):
        packed = djb.pack(value)
    assert packed == b"ZL123\0" + len(plain).to_bytes(8, "little") + zlib.compress(plain)
    np.testing.assert_array_equal(djb.unpack(packed), value)
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, 5000, dtype=np.uint8)
    with djb.config.override(compression="datajoint"):
        assert djb.pack(noise) == djb.pack(noise, compress=False)  # kept only when shorter
