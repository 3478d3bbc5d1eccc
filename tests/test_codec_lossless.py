"""No silent loss: every value either round-trips exactly, reads back differently by
design (each such kind is listed in docs/format.md), or is refused with a message that
says what to do."""

from __future__ import annotations

import array
import collections
import datetime
import enum
import math
import uuid
import warnings
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers.codec import assert_same

from sa_djblob import MatCell, MatStruct, UnsupportedTypeError, pack, unpack

DOC = (Path(__file__).resolve().parent.parent / "docs" / "format.md").read_text()
PLUS5 = datetime.timezone(datetime.timedelta(hours=5))


class Color(enum.IntEnum):
    RED = 1


class Name(str):
    pass


class Tagged(np.ndarray):
    """An ndarray subclass we know nothing about."""


def _timestamp_with_ns() -> Any:
    class Stamp(datetime.datetime):  # stands for pandas.Timestamp
        nanosecond = 7

    return Stamp(2024, 1, 1)


# (id, value, a fragment of the message) -- each must be refused, never stored lossily
REFUSED: list[tuple[str, Any, str]] = [
    (
        "tz-aware datetime",
        datetime.datetime(2024, 1, 1, 12, tzinfo=PLUS5),
        "convert to UTC and drop tzinfo",
    ),
    ("tz-aware utc datetime", datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC), "tzinfo"),
    ("tz-aware time", datetime.time(12, tzinfo=PLUS5), "drop tzinfo, value.replace(tzinfo=None)"),
    ("datetime with nanoseconds", _timestamp_with_ns(), "nanoseconds"),
    (
        "masked array",
        np.ma.masked_array([1.0, 2.0], mask=[False, True]),
        "arr.filled(fill_value)",
    ),
    ("masked array, no mask", np.ma.masked_array([1.0, 2.0]), "the mask would be lost"),
    ("unknown ndarray subclass", np.arange(3.0).view(Tagged), "store np.asarray(value)"),
    ("memoryview", memoryview(b"ab"), "bytes(view)"),
    ("lone surrogate", "a\ud800", "surrogatepass"),
    ("lone surrogate in unicode array", np.array(["\udfff"]), "lone surrogate"),
    ("frozenset dict key", {frozenset({1}): 2}, "use a sorted tuple"),
    ("frozenset in a tuple key", {(1, frozenset({2})): 3}, "use a sorted tuple"),
    ("frozenset set element", {frozenset({1})}, "use a sorted tuple"),
    ("float16 array", np.zeros(2, np.float16), "astype(np.float32)"),
    ("float16 scalar", np.float16(1), "astype(np.float32)"),
    ("longdouble", np.longdouble(1), "astype(np.float64)"),
    ("clongdouble array", np.zeros(2, np.clongdouble), "arrays are not supported"),
    ("timedelta64 array", np.zeros(2, "m8[s]"), "astype('int64')"),
    ("timedelta64 scalar", np.timedelta64(1, "s"), "timedelta64"),
    ("datetime.timedelta", datetime.timedelta(1), "not supported"),
    ("generic datetime64", np.array(["NaT"], "M8"), "astype('datetime64[us]')"),
    ("datetime64 with a multiple", np.zeros(1, "M8[10s]"), "without multiples"),
    ("S2 array", np.array([b"ab"]), "object array of bytes"),
    ("S1 field", np.zeros(3, [("a", "f8"), ("b", "S1")]), "byte-string field 'b'"),
    (
        "sub-array fields sharing dimensions",
        np.zeros(2, [("a", "f8", (3,)), ("b", "f8", (3,))]),
        "would read back with shape (2, 3)",
    ),
    ("single sub-array field", np.zeros((), [("a", "i4", (2,))]), "store its fields separately"),
    ("structured without fields", np.zeros(1, dtype=[]), "without fields"),
    ("numpy void scalar", np.zeros(1, [("a", "f8")])[0], "numpy.void"),
    ("int beyond 65535 bytes", 2 ** (8 * 70000), "too large"),
    ("arbitrary object", object(), "values of type object"),
]


@pytest.mark.parametrize(
    ("value", "message"), [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED]
)
def test_refused(value: Any, message: str) -> None:
    with pytest.raises(UnsupportedTypeError) as info:
        pack(value)
    assert message in str(info.value)
    # nested, the message says where
    with pytest.raises(UnsupportedTypeError, match=r"^value\['k'\]\[1\]"):
        pack({"k": [0, value]})


def test_refusal_messages_say_what_to_do() -> None:
    aware = datetime.datetime(2024, 1, 1, 12, tzinfo=PLUS5)
    with pytest.raises(UnsupportedTypeError) as info:
        pack(aware)
    # the suggested fix works and keeps the instant
    fixed = aware.astimezone(datetime.UTC).replace(tzinfo=None)
    assert unpack(pack(fixed)) == datetime.datetime(2024, 1, 1, 7)
    assert "value.astimezone(datetime.timezone.utc).replace(tzinfo=None)" in str(info.value)
    masked = np.ma.masked_array([1.0, 2.0], mask=[False, True])
    assert np.array_equal(unpack(pack(masked.filled(np.nan))), [1.0, np.nan], equal_nan=True)


# (id, value) -- read back exactly: same type, dtype, shape and value
EXACT: list[tuple[str, Any]] = [
    ("big-endian float64 values", (np.arange(5) / 3).astype(">f8")),
    ("big-endian int32 matrix", np.arange(-3, 3, dtype=">i4").reshape(2, 3)),
    ("big-endian complex", np.array([1 + 2j, -3j], dtype=">c16")),
    ("big-endian datetime64", np.array([1, -1], dtype=">M8[s]")),
    ("big-endian scalar", np.arange(3, dtype=">u2")[2]),
    ("nan and inf", [math.nan, math.inf, -math.inf, -0.0, np.float32("nan")]),
    ("float payloads", np.array([0x7FF8000000000001, 0xFFF0000000000001], "<u8").view("<f8")),
    ("complex signed zeros", complex(-0.0, -0.0)),
    ("nested empty containers", [[], {}, (), set(), np.empty((0, 3)), [[[]]], {"a": {}}]),
    ("Decimal specials", [Decimal("sNaN"), Decimal("-0.00"), Decimal("1E+999999")]),
    ("UUID", uuid.UUID("12345678-1234-5678-1234-567812345678")),
    ("bool vs int", [True, 1, False, 0, np.True_, np.int64(1)]),
    ("numpy scalar keys", {np.int64(3): 1, np.float32(1.5): 2, np.uint8(7): 3}),
    ("datetime bounds", [datetime.datetime.min, datetime.datetime.max, datetime.date.max]),
    ("object array of mixed values", np.array([1, "a", None, np.float32(2)], dtype=object)),
    ("all datetime64 units", [np.datetime64(5, u) for u in ("Y", "D", "ns", "as")]),
]


@pytest.mark.parametrize("value", [r[1] for r in EXACT], ids=[r[0] for r in EXACT])
def test_round_trips_exactly(value: Any) -> None:
    back = unpack(pack(value))
    if isinstance(value, np.ndarray) and value.dtype.byteorder == ">":
        value = value.astype(value.dtype.newbyteorder("<"))  # the same values
    if isinstance(value, np.generic) and value.dtype.byteorder == ">":
        value = value.astype(value.dtype.newbyteorder("<"))
    assert_same(back, value)
    if isinstance(value, np.ndarray) and value.dtype.kind == "f":
        assert back.tobytes() == value.tobytes()  # bit for bit, NaN payloads included


def test_big_endian_record_fields_keep_their_values() -> None:
    rec = np.array([(1, 2.5), (-7, 1e300)], dtype=[("a", ">i8"), ("b", ">f8")])
    back = unpack(pack(rec))
    assert back["a"].tolist() == [1, -7] and back["b"].tolist() == [2.5, 1e300]
    assert back.dtype == np.dtype([("a", "<i8"), ("b", "<f8")])


def _default_dict() -> Any:
    d: collections.defaultdict[str, list[int]] = collections.defaultdict(list)
    d["a"].append(1)
    return d


def _matrix() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        return np.matrix([[1, 2]])


def _char_field_struct() -> Any:
    st = MatStruct((1,), dtype=[("x", "f8")])
    st[0] = (1.5,)
    return st


# (id, value, what it reads back as) -- by design; every id is in docs/format.md
DIFFERENT: list[tuple[str, Any, Any]] = [
    ("0-d numeric array", np.array(2.5), np.float64(2.5)),
    ("0-d bool array", np.array(True), np.True_),
    ("0-d datetime64 array", np.array(5, "M8[D]"), np.datetime64(5, "D")),
    ("tuple", (1, 2), (1, 2)),
    ("other immutable sequence", range(3), (0, 1, 2)),
    ("list subclass or other mutable sequence", collections.deque([1]), [1]),
    ("array.array", array.array("d", [1.0]), [1.0]),
    ("frozenset", frozenset({1}), {1}),
    ("mapping subclass", _default_dict(), {"a": [1]}),
    ("OrderedDict", collections.OrderedDict(b=1, a=2), {"b": 1, "a": 2}),
    ("bytearray", bytearray(b"ab"), b"ab"),
    ("numpy bytes scalar", np.bytes_(b"ab"), b"ab"),
    ("str subclass", Name("x"), "x"),
    ("numpy str scalar", np.str_("x"), "x"),
    ("int subclass", Color.RED, 1),
    ("datetime fold", datetime.datetime(2024, 11, 3, 1, 30, fold=1), None),
    ("unicode array", np.array(["ab", "c"]), np.array(["ab", "c"], dtype=object)),
    ("0-d unicode array", np.array("ab"), np.array("ab", dtype=object)),
    ("1-D char array", np.array([b"a", b"b"], "S1"), np.array(["ab"])),
    ("2-D char array", np.array([[b"a"], [b"b"]], "S1"), np.array([["a"], ["b"]])),
    ("0-d char array", np.array(b"a", "S1"), np.array("a")),
    ("np.matrix", _matrix(), np.array([[1, 2]])),
    ("structured array", np.zeros(2, [("a", "i2")]), np.zeros(2, [("a", "i2")])),
    ("unicode field", np.array([("ab",)], [("s", "U2")]), None),
    ("big-endian dtype", np.arange(2, dtype=">i2"), np.arange(2, dtype="<i2")),
    ("MatStruct field values", _char_field_struct(), None),
]


@pytest.mark.parametrize(
    ("value", "want"), [r[1:] for r in DIFFERENT], ids=[r[0] for r in DIFFERENT]
)
def test_reads_back_differently_by_design(value: Any, want: Any, request: Any) -> None:
    name = request.node.callspec.id
    assert f"`{name}`" in DOC, f"docs/format.md does not list {name!r}"
    back = unpack(pack(value))
    if name == "datetime fold":
        assert back == value and back.fold == 0
    elif name == "unicode field":
        assert back.dtype == np.dtype([("s", object)]) and back["s"][0] == "ab"
    elif name == "structured array":
        assert type(back) is np.recarray and back.dtype == value.dtype
    elif name == "MatStruct field values":
        assert type(back) is MatStruct and back.dtype == np.dtype([("x", object)])
        assert type(back["x"][0]) is np.float64
    else:
        assert_same(back, want)


def _object_cell(*items: Any) -> MatCell:
    cell = MatCell((len(items),), dtype=object)
    for i, item in enumerate(items):
        cell[i] = item
    return cell


def test_mat_cells_read_back_with_numpys_rule() -> None:
    cell = MatCell((2,), dtype=float)
    cell[:] = [1.0, 2.0]
    assert_same(unpack(pack(cell)), cell)  # a float cell reads back as itself
    assert type(unpack(pack(cell))) is MatCell
    cases = [
        ("MatCell of numbers", _object_cell(1, 2.5), np.array([1.0, 2.5])),
        ("MatCell of strings", _object_cell("a", "bc"), np.array(["a", "bc"])),
        ("MatCell of mixed items", _object_cell(1, "a"), np.array(["1", "a"], "<U21")),
    ]
    for name, value, want in cases:
        assert f"`{name}`" in DOC
        back = unpack(pack(value))
        assert type(back) is MatCell
        assert_same(back, want.view(MatCell), name)
    matlab = MatCell((1, 2), dtype=object)
    matlab[0, 0], matlab[0, 1] = np.array([[1.0]]), np.array([[2.0]])
    assert "`MatCell of MATLAB arrays`" in DOC
    assert_same(unpack(pack(matlab)), np.array([[1.0, 2.0]]).view(MatCell))
    assert pack(unpack(pack(matlab)), compress=False)[:4] == b"dj0\0"
