"""DataJoint's blob format, both directions (see docs/format.md): ``pack`` and ``unpack``.

Pure functions, no I/O. The writer produces DataJoint 0.14's bytes; the reader accepts
everything DataJoint and MATLAB's mym write, and treats its input as hostile: every
count is checked against the bytes that remain before anything is allocated,
decompression is bounded, nesting is capped, and every violation is a
:class:`~sa_djblob._exceptions.BlobFormatError` that says what went wrong and where.
"""

from __future__ import annotations

import collections.abc as abc
import contextlib
import datetime
import math
import struct
import uuid
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any, NoReturn

import numpy as np
from numpy.typing import NDArray

from . import _framing
from ._config import config
from ._exceptions import BlobFormatError, UnsupportedTypeError
from ._framing import ZL123

__all__ = ["MatCell", "MatStruct", "pack", "unpack"]


class MatCell(np.ndarray):
    """A MATLAB cell array: an object array written as a ``C`` item."""


class MatStruct(np.recarray):
    """A MATLAB struct array: a record array (object fields) written as an ``S`` item."""


# --------------------------------------------------------------------------------------
# format constants

MYM = b"mYm\0"
DJ0 = b"dj0\0"
#: plain blobs up to this many bytes are never compressed (DataJoint's rule)
COMPRESS_THRESHOLD = 1000

_U8 = struct.Struct("<B")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_F64 = struct.Struct("<d")
_C128 = struct.Struct("<dd")
_TWO_U32 = struct.Struct("<II")
_DATETIME = struct.Struct("<iq")

_CHAR = 4
_OBJECT = 5
_NUMERIC_IDS: dict[int, np.dtype[Any]] = {
    3: np.dtype("bool"),
    6: np.dtype("<f8"),
    7: np.dtype("<f4"),
    8: np.dtype("i1"),
    9: np.dtype("u1"),
    10: np.dtype("<i2"),
    11: np.dtype("<u2"),
    12: np.dtype("<i4"),
    13: np.dtype("<u4"),
    14: np.dtype("<i8"),
    15: np.dtype("<u8"),
}
_DATETIME_UNITS = ("Y", "M", "W", "D", "h", "m", "s", "ms", "us", "ns", "ps", "fs", "as")
_READ_DTYPES: dict[int, np.dtype[Any]] = dict(_NUMERIC_IDS)
_READ_DTYPES.update({65536 + i: np.dtype(f"<M8[{unit}]") for i, unit in enumerate(_DATETIME_UNITS)})
#: dtype.str -> class id, for the writer
_WRITE_IDS: dict[str, int] = {dt.str: cid for cid, dt in _READ_DTYPES.items()}
_WRITE_IDS[np.dtype("S1").str] = _CHAR
_WRITE_IDS[np.dtype("O").str] = _OBJECT
_COMPLEX_PARTS: dict[str, np.dtype[Any]] = {
    np.dtype("<c8").str: np.dtype("<f4"),
    np.dtype("<c16").str: np.dtype("<f8"),
}
_MATLAB_CLASS_NAMES = {0: "unknown", 1: "cell", 2: "struct", 16: "function handle"}

#: memory estimates (bytes) of what the reader builds, for max_expansion (see _Reader.charge)
_COST_SLOT = 48  # a pointer in a container plus a small object (int, float, str header)
_COST_SEQ = 64  # an empty list, tuple or dict
_COST_SET = 216  # an empty set
_COST_ENTRY = 32  # a set or dict entry (hash table slots, amortized over resizes)
_COST_ARRAY = 112  # an ndarray header
#: a dict or set with more keys than this on one hash value is hostile (hash flooding)
_MAX_SAME_HASH = 16

#: numpy refuses arrays whose nonzero dimensions multiply beyond this (with any itemsize)
_MAX_ELEMENTS = 1 << 48
_MAX_NDIM = 64


def _dtype_phrase(dt: np.dtype[Any]) -> str:
    if dt.kind == "S":
        return (
            f"byte-string arrays of dtype {dt.str[1:]} are not supported (only S1 char"
            " arrays): store a unicode array, or an object array of bytes"
        )
    if dt.kind == "M":
        return (
            f"{dt} arrays are not supported (only the units Y, M, W, D, h, m, s, ms, us, ns,"
            " ps, fs, as without multiples): convert with arr.astype('datetime64[us]')"
        )
    if dt.kind == "m":
        return (
            f"{dt} arrays are not supported: store arr.astype('int64') and the unit, or"
            " datetime.timedelta values converted to seconds"
        )
    if dt.kind == "f" and dt.itemsize == 2:
        return "float16 arrays are not supported: convert with arr.astype(np.float32)"
    if dt.kind in "fc" and dt.itemsize > (8 if dt.kind == "f" else 16):
        return (
            f"{dt.name} arrays are not supported (the format holds float64 at most):"
            " convert with arr.astype(np.float64) if the precision can go"
        )
    if dt.kind == "V":
        return f"arrays of dtype {dt} are not supported"
    return f"{dt.name} arrays are not supported"


# --------------------------------------------------------------------------------------
# writer


#: ndarray types whose whole state is their data: np.matrix reads back as a 2-D
#: ndarray, np.memmap as an ndarray, np.recarray as itself (with fields) or an ndarray
_PLAIN_ARRAY_TYPES = (np.ndarray, np.matrix, np.memmap, np.recarray)
#: key types that never hold a set (the usual case, checked without recursion)
_FLAT_KEYS = frozenset({int, str, float, bool, bytes, complex, type(None), Decimal, uuid.UUID})


def _subclass_phrase(arr: Any) -> str:
    if isinstance(arr, np.ma.MaskedArray):
        return (
            "masked arrays are not supported (the mask would be lost): store"
            " arr.filled(fill_value), or the data and the mask separately"
            " (arr.data and np.ma.getmaskarray(arr))"
        )
    kind = type(arr)
    return (
        f"ndarray subclass {kind.__module__}.{kind.__qualname__} is not supported (what it"
        " adds to the array would be lost): store np.asarray(value) if the plain array is"
        " what you mean"
    )


def _tz_phrase(obj: datetime.date | datetime.time) -> str:
    if isinstance(obj, datetime.datetime):
        return (
            f"timezone-aware datetime (tzinfo={obj.tzinfo}) is not supported (the format has"
            " no time zone): convert to UTC and drop tzinfo,"
            " value.astimezone(datetime.timezone.utc).replace(tzinfo=None)"
        )
    return (
        f"timezone-aware time (tzinfo={getattr(obj, 'tzinfo', None)}) is not supported (the"
        " format has no time zone): convert it to the zone you mean and drop tzinfo,"
        " value.replace(tzinfo=None)"
    )


def _surrogate_phrase(text: str, exc: UnicodeEncodeError) -> str:
    return (
        f"str with a lone surrogate {text[exc.start : exc.end]!r} at index {exc.start} is not"
        " valid UTF-8: store value.encode('utf-8', 'surrogatepass') as bytes instead"
    )


def _set_key_phrase(what: str) -> str:
    return (
        f"a {what} that holds a frozenset is not supported (a frozenset reads back as a"
        " set, which cannot be a key): use a sorted tuple instead"
    )


def _holds_a_set(key: Any) -> bool:
    """Whether a hashable key holds a set somewhere: it would read back unhashable."""
    if isinstance(key, abc.Set):
        return True
    if isinstance(key, tuple):
        return any(type(k) not in _FLAT_KEYS and _holds_a_set(k) for k in key)
    return False


def _check_write_hashes(keys: abc.Iterable[Any], what: str) -> None:
    """Refuse more than _MAX_SAME_HASH keys on one hash value: the reader would."""
    hashes = [hash(key) for key in keys]
    if len(set(hashes)) == len(hashes):
        return
    counts: dict[int, int] = {}
    for h in hashes:
        counts[h] = counts.get(h, 0) + 1
    if max(counts.values()) > _MAX_SAME_HASH:
        raise _PackError(
            f"more than {_MAX_SAME_HASH} {what} share one hash value (e.g. ints that"
            " differ by multiples of 2**61 - 1): unpack refuses them as hash flooding;"
            " store them in a list"
        )


def _record_bytes_bound(dt: np.dtype[Any]) -> int:
    """At least the bytes per element of a record read back (unicode fields are read
    as object fields, records are packed without padding)."""
    if dt.names is None:
        return max(dt.itemsize, 8)
    total = 0
    for name in dt.names:
        field = dt.fields[name][0]  # type: ignore[index]
        base = field.base if field.subdtype is not None else field
        total += _record_bytes_bound(base) * math.prod(field.shape)
    return total


def _check_record_layout(arr: NDArray[Any]) -> None:
    """Refuse structured arrays that would read back with another shape or dtype.

    The reader rebuilds the array's shape as the longest common prefix of the field
    columns' shapes (docs/format.md, ``F``); sub-array fields that share leading dimensions
    would extend it. Byte-string fields would read back as one string per column.
    """
    shapes = []
    for name in arr.dtype.names or ():
        field = arr.dtype.fields[name][0]  # type: ignore[index]
        base = field.base if field.subdtype is not None else field
        if base.kind == "S":
            raise _PackError(
                f"byte-string field {name!r} ({base.str[1:]}) in a structured array is not"
                " supported (it reads back as one string): use a unicode field or an object"
                " field of bytes"
            )
        shapes.append(arr.shape + field.shape)
    common = shapes[0]
    for shape in shapes[1:]:
        k = 0
        while k < min(len(common), len(shape)) and common[k] == shape[k]:
            k += 1
        common = common[:k]
    if common != arr.shape:
        raise _PackError(
            f"a structured array of shape {arr.shape} whose fields all have sub-array shapes"
            f" starting with {common[len(arr.shape) :]} is not supported (it would read back"
            f" with shape {common}): store its fields separately, e.g. in a dict"
        )


def _pandas_hint(kind: type) -> str:
    """How to store a pandas object (pandas need not be installed to say so)."""
    if kind.__module__.partition(".")[0] != "pandas":
        return ""
    if kind.__name__ == "DataFrame":
        return (
            ": convert it, e.g. df.to_numpy() (one dtype, the column names are lost) or"
            " df.to_records(index=False) (a record array that keeps the column names and"
            " dtypes)"
        )
    return ": convert it with .to_numpy()"


class _PackError(Exception):
    """Internal: an unsupported value; ``path`` collects the location, innermost first."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.path: list[str] = []


def _index_str(flat_index: int, shape: tuple[int, ...]) -> str:
    if len(shape) <= 1:
        return f"[{flat_index}]"
    idx = np.unravel_index(flat_index, shape, order="F")
    return "[" + ", ".join(str(int(i)) for i in idx) + "]"


def _path_str(innermost_first: list[str]) -> str:
    """``value['a'][2]`` from segments collected while unwinding; elided when very deep."""
    parts = innermost_first[::-1]
    if len(parts) > 24:
        parts = [*parts[:12], f"...({len(parts) - 20} levels)...", *parts[-8:]]
    return "value" + "".join(parts)


_KEYS = "keys"
_VALUE = "value"


def _where_str(where: Any, shape: Any) -> str:
    """A path segment for the reader's lazily described positions (see sized_item)."""
    if shape is None:
        return f"[{where}]"
    if shape is _KEYS:
        return f".keys()[{where}]"
    if shape is _VALUE:
        return _key_str(where)
    if isinstance(shape, tuple) and len(shape) == 2 and isinstance(shape[1], str):
        return f"{_index_str(where, shape[0])}.{shape[1]}"
    return _index_str(where, shape)


def _key_str(key: Any) -> str:
    try:
        text = repr(key)
    except ValueError:  # e.g. an int too long to print
        text = f"<{type(key).__name__}>"
    if len(text) > 60:
        text = text[:57] + "..."
    return f"[{text}]"


_Packer_fn = Callable[["_Packer", Any, int], int]


class _Packer:
    """Serializes one value into a list of byte pieces (joined once at the end)."""

    __slots__ = ("cells", "cost", "dj0", "max_depth", "out")

    def __init__(self, max_depth: int) -> None:
        self.out: list[Any] = []  # bytes and bytes-like (memoryviews of arrays)
        self.dj0 = False
        #: at least the memory _Reader.charge counts to read the value back; a cell reads
        #: as np.array(items), whose memory is measured by reading (see _readable)
        self.cost = 0
        self.cells = False
        self.max_depth = max_depth

    # -- dispatch ----------------------------------------------------------------------
    def item(self, obj: Any, depth: int, sized: bool = False) -> int:
        """Append ``obj`` as one item; return the number of bytes appended (the item's).

        *sized*: write ``u64 len + item`` instead, the one place that reserves the
        length's slot, packs the item after it and fills the slot in (no extra call: a
        frame per level would lower the nesting Python's recursion limit allows)."""
        if depth > self.max_depth:
            raise _PackError(
                f"nesting deeper than max_depth={self.max_depth} (a recursive structure?)"
            )
        if sized:
            out = self.out
            slot = len(out)
            out.append(b"")
        fast = _FAST_PACK.get(type(obj))
        n: int = fast(self, obj, depth) if fast is not None else self.generic(obj, depth)
        if sized:
            out[slot] = _U64.pack(n)
        return n

    def generic(self, obj: Any, depth: int) -> int:
        # the order decides the bytes: it is DataJoint's writer order
        if isinstance(obj, MatCell):
            return self.cell(obj, depth)
        if isinstance(obj, MatStruct):
            return self.struct_array(obj, depth)
        if isinstance(obj, np.ndarray) and type(obj) not in _PLAIN_ARRAY_TYPES:
            raise _PackError(_subclass_phrase(obj))
        if isinstance(obj, np.ndarray) and obj.dtype.names is None:
            return self.array(obj, depth)
        self.dj0 = True
        if not isinstance(obj, np.ndarray | np.generic):
            if isinstance(obj, bool):
                return self.boolean(obj, depth)
            if isinstance(obj, int):
                return self.integer(obj, depth)
            if isinstance(obj, complex):
                return self.complex_(obj, depth)
            if isinstance(obj, float):
                return self.float_(obj, depth)
        if isinstance(obj, np.ndarray):
            return self.recarray(obj, depth)
        if isinstance(obj, np.timedelta64):
            raise _PackError("timedelta64 values are not supported")
        if isinstance(obj, np.number | np.datetime64 | np.bool_):
            return self.array(np.asarray(obj), depth)
        if isinstance(obj, datetime.date | datetime.time):
            return self.datetime_(obj, depth)
        if isinstance(obj, Decimal):
            return self.decimal(obj, depth)
        if isinstance(obj, uuid.UUID):
            return self.uuid_(obj, depth)
        if isinstance(obj, abc.Mapping):
            return self.mapping(obj, depth)
        if isinstance(obj, str):
            return self.string(obj, depth)
        if isinstance(obj, bytes | bytearray):
            return self.bytes_(obj, depth)
        if isinstance(obj, memoryview):
            raise _PackError(
                "memoryview values are not supported (store bytes(view) or np.asarray(view))"
            )
        if isinstance(obj, abc.MutableSequence):
            return self.sequence(obj, depth, b"\x02")
        if isinstance(obj, abc.Sequence):
            return self.sequence(obj, depth, b"\x01")
        if isinstance(obj, abc.Set):
            return self.set_(obj, depth)
        if obj is None:
            return self.none(obj, depth)
        kind = type(obj)
        name = kind.__qualname__
        if kind.__module__ not in ("builtins", "__main__"):
            name = f"{kind.__module__}.{name}"
        if isinstance(obj, np.generic):
            raise _PackError(f"{name} values are not supported")
        raise _PackError(f"values of type {name} are not supported{_pandas_hint(kind)}")

    # -- Python scalars (dj0) ------------------------------------------------------------
    def none(self, obj: Any, depth: int) -> int:
        self.dj0 = True
        self.out.append(b"\xff")
        return 1

    def boolean(self, obj: Any, depth: int) -> int:
        self.dj0 = True
        self.out.append(b"\x0b\x01" if obj else b"\x0b\x00")
        return 2

    def integer(self, obj: Any, depth: int) -> int:
        self.dj0 = True
        n: int = obj.bit_length() // 8 + 1
        if n > 0xFFFF:
            raise _PackError(f"int of {n} bytes is too large (the format holds 65535 bytes)")
        self.out.append(b"\x0a" + _U16.pack(n) + int(obj).to_bytes(n, "little", signed=True))
        self.cost += n
        return 3 + n

    def float_(self, obj: Any, depth: int) -> int:
        self.dj0 = True
        self.out.append(b"\x0d" + _F64.pack(obj))
        return 9

    def complex_(self, obj: Any, depth: int) -> int:
        self.dj0 = True
        self.out.append(b"\x0c" + _C128.pack(obj.real, obj.imag))
        return 17

    def string(self, obj: Any, depth: int) -> int:
        self.dj0 = True
        try:
            data = str.encode(obj, "utf-8")
        except UnicodeEncodeError as exc:
            raise _PackError(_surrogate_phrase(obj, exc)) from None
        self.out.append(b"\x05" + _U64.pack(len(data)) + data)
        self.cost += len(data)
        return 9 + len(data)

    def bytes_(self, obj: Any, depth: int) -> int:
        self.dj0 = True
        self.out.append(b"\x06" + _U64.pack(len(obj)))
        self.out.append(bytes(obj))
        self.cost += len(obj)
        return 9 + len(obj)

    def decimal(self, obj: Decimal, depth: int) -> int:
        self.dj0 = True
        data = str(obj).encode("ascii")
        self.out.append(b"d" + _U64.pack(len(data)) + data)
        self.cost += 64 + len(data)
        return 9 + len(data)

    def datetime_(self, obj: datetime.date | datetime.time, depth: int) -> int:
        self.dj0 = True
        date: datetime.date | None
        time: datetime.time | None
        if getattr(obj, "tzinfo", None) is not None:
            raise _PackError(_tz_phrase(obj))
        if getattr(obj, "nanosecond", 0):  # e.g. pandas.Timestamp
            raise _PackError(
                f"{type(obj).__name__} with nanoseconds is not supported (the format holds"
                " microseconds): round it, or store np.datetime64(value, 'ns')"
            )
        if isinstance(obj, datetime.datetime):
            date, time = obj.date(), obj.time()
        elif isinstance(obj, datetime.date):
            date, time = obj, None
        else:
            date, time = None, obj
        day = -1 if date is None else (date.year * 100 + date.month) * 100 + date.day
        tod = (
            -1
            if time is None
            else ((time.hour * 100 + time.minute) * 100 + time.second) * 1_000_000
            + time.microsecond
        )
        self.out.append(b"t" + _DATETIME.pack(day, tod))
        return 13

    def uuid_(self, obj: uuid.UUID, depth: int) -> int:
        self.dj0 = True
        self.out.append(b"u" + obj.bytes)
        self.cost += 48
        return 17

    # -- containers (dj0) ----------------------------------------------------------------
    def sequence(self, obj: Any, depth: int, code: bytes) -> int:
        self.dj0 = True
        out = self.out
        items = list(obj)
        out.append(code + _U64.pack(len(items)))
        if code == b"\x03":
            self.cost += _COST_SET + (_COST_SLOT + _COST_ENTRY) * len(items)
        else:
            self.cost += _COST_SEQ + _COST_SLOT * len(items)
        total = 9
        child = depth + 1
        for i, element in enumerate(items):
            try:
                total += 8 + self.item(element, child, sized=True)
            except _PackError as exc:
                exc.path.append(f"[{i}]")
                raise
        return total

    def list_(self, obj: Any, depth: int) -> int:
        return self.sequence(obj, depth, b"\x02")

    def tuple_(self, obj: Any, depth: int) -> int:
        return self.sequence(obj, depth, b"\x01")

    def set_(self, obj: Any, depth: int) -> int:
        for i, element in enumerate(obj):
            if type(element) not in _FLAT_KEYS and _holds_a_set(element):
                exc = _PackError(_set_key_phrase("set element"))
                exc.path.append(f"[{i}]")
                raise exc
        if len(obj) > _MAX_SAME_HASH:
            _check_write_hashes(obj, "set elements")
        return self.sequence(obj, depth, b"\x03")

    def mapping(self, obj: Any, depth: int) -> int:
        self.dj0 = True
        out = self.out
        pairs = list(obj.items())
        self.cost += _COST_SEQ + (2 * _COST_SLOT + _COST_ENTRY) * len(pairs)
        if len(pairs) > _MAX_SAME_HASH:
            _check_write_hashes([key for key, _ in pairs], "dict keys")
        out.append(b"\x04" + _U64.pack(len(pairs)))
        total = 9
        child = depth + 1
        for i, (key, value) in enumerate(pairs):
            if type(key) not in _FLAT_KEYS and _holds_a_set(key):
                exc = _PackError(_set_key_phrase("dict key"))
                exc.path.append(f".keys()[{i}]")
                raise exc
            try:
                n = self.item(key, child, sized=True)
            except _PackError as exc:
                exc.path.append(f".keys()[{i}]")
                raise
            try:
                m = self.item(value, child, sized=True)
            except _PackError as exc:
                exc.path.append(_key_str(key))
                raise
            total += 16 + n + m
        return total

    # -- arrays ----------------------------------------------------------------------------
    def _elements(self, flat: Any, shape: tuple[int, ...], depth: int) -> int:
        """Each element as ``u64 len + item`` (object arrays, cells)."""
        total = 0
        child = depth + 1
        for i, element in enumerate(flat):
            try:
                total += 8 + self.item(element, child, sized=True)
            except _PackError as exc:
                exc.path.append(_index_str(i, shape))
                raise
        return total

    def array(self, arr: NDArray[Any], depth: int) -> int:
        arr = np.asarray(arr)
        dt = arr.dtype
        if dt.byteorder == ">":  # the values, written little-endian like every array
            arr = arr.astype(dt.newbyteorder("<"))
            dt = arr.dtype
        key = dt.str
        real = _COMPLEX_PARTS.get(key)
        if real is not None:
            class_id = _WRITE_IDS[real.str]
        else:
            found = _WRITE_IDS.get(key)
            if found is None:
                if dt.kind != "U":
                    raise _PackError(_dtype_phrase(dt))
                found = _OBJECT
            class_id = found
        shape = arr.shape
        ndim = len(shape)
        out = self.out
        out.append(
            b"A"
            + struct.pack(f"<{ndim + 1}Q", ndim, *shape)
            + _TWO_U32.pack(class_id, 0 if real is None else 1)
        )
        total = 1 + 8 * (ndim + 1) + 8
        if class_id == _OBJECT:
            self.cost += _COST_ARRAY + _COST_SLOT * arr.size
            total += self._elements(arr.ravel(order="F"), shape, depth)
            self.dj0 = True
            return total
        if ndim == 0 or class_id >= 65536:
            self.dj0 = True
        if class_id == _CHAR:
            self.cost += _COST_ARRAY + 4 * arr.size
            # Fortran order like every MATLAB array (DataJoint 0.14 writes 2-D char arrays
            # in C order, which its own reader transposes; 1-D and 1xN are the same bytes)
            data = arr.ravel(order="F").view(np.uint8).astype("<u2")
            out.append(data.data)
            return total + data.nbytes
        self.cost += _COST_ARRAY + arr.nbytes
        if real is not None:
            for part in (arr.real, arr.imag):
                plane = part.ravel(order="F")
                out.append(plane.view(np.uint8).data)
                total += plane.nbytes
            return total
        flat = arr.ravel(order="F")
        out.append(flat.view(np.uint8).data)
        return total + flat.nbytes

    def ndarray_(self, arr: NDArray[Any], depth: int) -> int:
        if arr.dtype.names is None:
            return self.array(arr, depth)
        return self.recarray(arr, depth)

    def cell(self, arr: NDArray[Any], depth: int) -> int:
        self.cells = True
        self.cost += _COST_ARRAY + _COST_SLOT * arr.size
        shape = arr.shape
        ndim = len(shape)
        self.out.append(b"C" + struct.pack(f"<{ndim + 1}Q", ndim, *shape))
        flat = np.asarray(arr).ravel(order="F")
        return 1 + 8 * (ndim + 1) + self._elements(flat, shape, depth)

    def _field_names(self, names: tuple[str, ...]) -> bytes:
        for name in names:
            if "\0" in name:
                raise _PackError(f"field name {name!r} contains a NUL character")
        try:
            return b"".join(name.encode("utf-8") + b"\0" for name in names)
        except UnicodeEncodeError as exc:
            raise _PackError(f"a field name is not valid UTF-8 ({exc.reason})") from None

    def struct_array(self, arr: NDArray[Any], depth: int) -> int:
        names = arr.dtype.names or ()
        shape = arr.shape
        ndim = len(shape)
        head = (
            b"S"
            + struct.pack(f"<{ndim + 1}Q", ndim, *shape)
            + _U32.pack(len(names))
            + self._field_names(names)
        )
        self.out.append(head)
        total = len(head)
        flat = np.asarray(arr).ravel(order="F")
        self.cost += _COST_ARRAY + _COST_SLOT * flat.size * len(names)
        columns = [flat[name] for name in names]
        child = depth + 1
        for i in range(flat.shape[0]):
            for name, column in zip(names, columns, strict=True):
                try:
                    total += 8 + self.item(column[i], child, sized=True)
                except _PackError as exc:
                    exc.path.append(f"{_index_str(i, shape)}.{name}")
                    raise
        return total

    def recarray(self, arr: NDArray[Any], depth: int) -> int:
        self.dj0 = True
        names = arr.dtype.names or ()
        if not names:
            raise _PackError("structured arrays without fields are not supported")
        head = b"F" + _U32.pack(len(names)) + self._field_names(names)
        self.out.append(head)
        total = len(head)
        plain = np.asarray(arr)
        _check_record_layout(plain)
        self.cost += _COST_ARRAY + arr.size * _record_bytes_bound(arr.dtype)
        child = depth + 1
        for name in names:
            column = plain[name]
            try:
                if child > self.max_depth:
                    raise _PackError(f"nesting deeper than max_depth={self.max_depth}")
                if column.dtype.names is not None:
                    total += self.recarray(column, child)
                else:
                    total += self.array(column, child)
            except _PackError as exc:
                exc.path.append(f"[{name!r}]")
                raise
        return total


_FAST_PACK: dict[type, _Packer_fn] = {
    type(None): _Packer.none,
    bool: _Packer.boolean,
    int: _Packer.integer,
    float: _Packer.float_,
    complex: _Packer.complex_,
    str: _Packer.string,
    np.str_: _Packer.string,
    bytes: _Packer.bytes_,
    bytearray: _Packer.bytes_,
    list: _Packer.list_,
    tuple: _Packer.tuple_,
    set: _Packer.set_,
    frozenset: _Packer.set_,
    dict: _Packer.mapping,
    Decimal: _Packer.decimal,
    uuid.UUID: _Packer.uuid_,
    datetime.datetime: _Packer.datetime_,
    datetime.date: _Packer.datetime_,
    datetime.time: _Packer.datetime_,
    np.ndarray: _Packer.ndarray_,
    MatCell: _Packer.cell,
    MatStruct: _Packer.struct_array,
}


def pack(obj: Any, compress: bool = True) -> bytes:
    """Serialize ``obj`` into DataJoint blob bytes.

    The header is ``mYm`` when MATLAB can read the value, else ``dj0``. With
    ``compress`` (the default), blobs longer than 1000 bytes are stored zlib-compressed
    (``ZL123`` framing) when that is shorter; data that a probe shows to be
    incompressible is stored as is. Raises :class:`UnsupportedTypeError` naming the
    value's type and its position (``value['a'][2]: float16 arrays are not supported``).

    What it writes, :func:`unpack` reads with the same ``djb.config`` limits: a blob
    whose value would need more memory than ``max_expansion`` times its compressed size
    keeps an uncompressed tail, and a value that would exceed ``max_blob_size``, or
    ``max_expansion`` in any form, is refused with :class:`UnsupportedTypeError`.
    """
    max_depth = int(config["max_depth"])
    packer = _Packer(max_depth)
    try:
        packer.item(obj, 0)
    except _PackError as exc:
        raise UnsupportedTypeError(f"{_path_str(exc.path)}: {exc.message}") from None
    except RecursionError:
        raise UnsupportedTypeError(
            "value: nesting too deep for Python's recursion limit (a recursive structure?)"
        ) from None
    packer.out.insert(0, DJ0 if packer.dj0 else MYM)
    plain = b"".join(packer.out)
    blob = plain
    datajoint = config["compression"] == "datajoint"
    if compress and len(plain) > COMPRESS_THRESHOLD:
        blob = _framing.compress_like_datajoint(plain) if datajoint else _framing.compress(plain)
    return _readable(plain, blob, None if packer.cells else packer.cost, datajoint)


def _read_cost(plain: bytes) -> int:
    """The memory the reader charges for ``plain`` (the more of ``squeeze`` False and
    True: a squeezed cell may hold text that widens it), read with the current limits:
    what exceeds them even uncompressed is refused."""
    spent = 0
    for squeeze in (False, True):
        reader = _Reader(
            plain,
            4,
            squeeze=squeeze,
            max_depth=int(config["max_depth"]),
            legacy_u32=False,
            expansion=int(config["max_expansion"]),
        )
        try:
            reader.item(0)
            reader.charge(0, reader.pos)
        except _ReadError as exc:
            inside = f"value{''.join(exc.path[::-1])}: " if exc.path else "value: "
            raise UnsupportedTypeError(f"{inside}unpack would refuse it: {exc.message}") from None
        spent = max(spent, reader.spent)
    return spent


def _readable(plain: bytes, blob: bytes, cost: int | None, datajoint: bool) -> bytes:
    """``blob``, or a less compressed form of ``plain``, that ``unpack`` reads with the
    current limits (``max_blob_size``, ``max_expansion``); else UnsupportedTypeError.
    ``cost`` is the packer's count of the memory reading needs (None: measure it).

    The reader refuses a blob whose decoded value needs more than ``max_expansion``
    times its stored size: highly compressed lists of small objects do. Such blobs get
    an uncompressed tail, just long enough (a valid zlib stream, read by DataJoint too).
    """
    size = len(plain)
    max_size = int(config["max_blob_size"])
    if size > max_size:
        raise UnsupportedTypeError(
            f"value: its blob would be {size} bytes, more than max_blob_size={max_size}"
            " that unpack reads: raise djb.config['max_blob_size'] (where it is read too)"
        )
    expansion = int(config["max_expansion"])
    budget = len(blob) * expansion
    need = max(_read_cost(plain) if cost is None else cost, size)
    if need <= budget:
        return blob
    if need > size * expansion:
        raise UnsupportedTypeError(
            f"value: reading it back needs about {need} bytes of memory, more than"
            f" max_expansion={expansion} times its {size}-byte blob, so unpack would"
            " refuse it: store it in another form, or raise djb.config['max_expansion']"
            " (where it is read too)"
        )
    padded = _framing.compress_with_raw_tail(plain, -(-need // expansion), datajoint)
    return padded if len(padded) < size else plain


# --------------------------------------------------------------------------------------
# reader


class _ReadError(Exception):
    """Internal: invalid bytes at ``offset``; ``path`` collects the location, innermost first."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset
        self.path: list[str] = []


def _fail(message: str, offset: int) -> NoReturn:
    raise _ReadError(message, offset)


_Reader_fn = Callable[["_Reader", int], Any]


class _Reader:
    __slots__ = (
        "budget",
        "buf",
        "dim",
        "dim_size",
        "end",
        "expansion",
        "max_depth",
        "pos",
        "spent",
        "squeeze",
        "stored",
    )

    def __init__(
        self,
        buf: bytes,
        pos: int,
        *,
        squeeze: bool,
        max_depth: int,
        legacy_u32: bool,
        stored: int | None = None,
        expansion: int = 1 << 62,
    ) -> None:
        self.buf = buf
        self.pos = pos
        self.end = len(buf)
        self.squeeze = squeeze
        self.max_depth = max_depth
        self.dim = _U32 if legacy_u32 else _U64
        self.dim_size = 4 if legacy_u32 else 8
        # memory accounting (see charge): what the reader builds, not the plain buffer
        # (itself bounded by the same ratio on decompression), so peak memory stays
        # within about twice max_expansion times the stored size
        self.stored = len(buf) if stored is None else stored
        self.expansion = expansion
        self.budget = self.stored * expansion
        self.spent = 0

    def charge(self, nbytes: int, pos: int) -> None:
        """Account for ``nbytes`` of memory about to be allocated; refuse beyond the budget.

        The estimates are those of CPython and numpy objects (see _COST_*); they bound
        what a hostile blob can make the reader allocate, relative to its stored size.
        """
        self.spent += nbytes
        if self.spent > self.budget:
            _fail(
                f"the decoded value needs more than max_expansion={self.expansion} times"
                f" the blob's {self.stored} stored bytes (about {self.spent} bytes so far);"
                " if the blob is trusted, raise djb.config['max_expansion']",
                pos,
            )

    # -- primitives --------------------------------------------------------------------
    def need(self, n: int, what: str) -> int:
        """Check that ``n`` bytes remain; return the current position."""
        pos = self.pos
        if n > self.end - pos:
            left = self.end - pos
            _fail(f"truncated {what}: needs {n} bytes, {left} left", pos)
        return pos

    def length(self, what: str) -> int:
        pos = self.pos
        size = self.dim_size
        if self.end - pos < size:
            _fail(f"truncated {what}: needs {size} bytes, {self.end - pos} left", pos)
        self.pos = pos + size
        value: int = self.dim.unpack_from(self.buf, pos)[0]
        return value

    def count(self, what: str, min_item: int) -> int:
        """A count of items that need at least ``min_item`` bytes each."""
        pos = self.pos
        n = self.length(what)
        if n * min_item > self.end - self.pos:
            _fail(
                f"{what} {n} is larger than the remaining {self.end - self.pos} bytes can hold",
                pos,
            )
        return n

    def shape(self, min_item: int) -> tuple[tuple[int, ...], int]:
        """``ndim`` and the shape; returns the shape and the element count."""
        pos = self.pos
        ndim = self.length("ndim")
        if ndim > _MAX_NDIM:
            _fail(f"ndim {ndim} exceeds numpy's limit of {_MAX_NDIM}", pos)
        start = self.need(ndim * self.dim_size, "shape")
        code = "I" if self.dim_size == 4 else "Q"
        shape: tuple[int, ...] = struct.unpack_from(f"<{ndim}{code}", self.buf, start)
        self.pos = start + ndim * self.dim_size
        n = math.prod(shape)
        if n * min_item > self.end - self.pos:
            _fail(
                f"shape {shape} ({n} elements) is larger than the remaining"
                f" {self.end - self.pos} bytes can hold",
                pos,
            )
        if math.prod(d for d in shape if d) > _MAX_ELEMENTS:
            _fail(f"shape {shape} is too large", pos)
        return shape, n

    def cstring(self, what: str) -> str:
        pos = self.pos
        stop = self.buf.find(b"\0", pos, self.end)
        if stop < 0:
            _fail(f"unterminated {what}", pos)
        self.pos = stop + 1
        try:
            return self.buf[pos:stop].decode("utf-8")
        except UnicodeDecodeError:
            _fail(f"{what} is not valid UTF-8", pos)

    def check_hashes(self, keys: list[Any], what: str, pos: int) -> None:
        """Refuse unhashable keys and keys that share one hash value (hash flooding).

        A dict or set of keys with one hash takes quadratic time to build (each insert
        compares with every earlier key); ints that differ by multiples of 2**61 - 1 do
        that. Distinct hash values are ints whose own hashes are distinct, so counting
        them is linear; more than _MAX_SAME_HASH keys on one value is refused.
        """
        counts: dict[int, int] = {}
        for key in keys:
            try:
                h = hash(key)
            except TypeError:
                _fail(f"unhashable {what} of type {type(key).__name__}", pos)
            c = counts.get(h, 0) + 1
            if c > _MAX_SAME_HASH:
                _fail(
                    f"more than {_MAX_SAME_HASH} {what}s of this {what.split()[0]} share one"
                    " hash value: hostile input (hash flooding) is refused",
                    pos,
                )
            counts[h] = c

    # -- items -----------------------------------------------------------------------------
    def item(self, depth: int) -> Any:
        pos = self.pos
        if pos >= self.end:
            _fail("truncated: an item is missing", pos)
        code = self.buf[pos]
        self.pos = pos + 1
        reader = _READERS[code]
        if reader is None:
            _fail(f"unknown item code 0x{code:02x}", pos)
        if depth > self.max_depth:
            _fail(f"nesting deeper than max_depth={self.max_depth}", pos)
        return reader(self, depth)

    def sized_item(self, depth: int, where: Any, shape: Any = None) -> Any:
        """``u64 len + item``: the item must fill exactly ``len`` bytes.

        ``where`` (with ``shape``) locates the item for error messages; it is only
        formatted when an error occurs: an int is an index (into ``shape`` when given,
        a field name string when ``shape`` is a str), anything else a dict key.
        """
        pos = self.pos
        size = self.length("item length")
        start = self.pos
        if size > self.end - start:
            _fail(f"item length {size} exceeds the remaining {self.end - start} bytes", pos)
        outer = self.end
        self.end = start + size
        try:
            # the dispatch of item(), inlined: one Python frame less per nesting level
            if size == 0:
                _fail("truncated: an item is missing", start)
            code = self.buf[start]
            self.pos = start + 1
            reader = _READERS[code]
            if reader is None:
                _fail(f"unknown item code 0x{code:02x}", start)
            if depth > self.max_depth:
                _fail(f"nesting deeper than max_depth={self.max_depth}", start)
            value = reader(self, depth)
            if self.pos != self.end:
                _fail(f"item declares {size} bytes but holds {self.pos - start}", pos)
        except _ReadError as exc:
            exc.path.append(_where_str(where, shape))
            raise
        self.end = outer
        return value

    def read_none(self, depth: int) -> Any:
        return None

    def read_bool(self, depth: int) -> Any:
        pos = self.need(1, "bool")
        self.pos = pos + 1
        return self.buf[pos] != 0

    def read_int(self, depth: int) -> Any:
        pos = self.need(2, "int size")
        n: int = _U16.unpack_from(self.buf, pos)[0]
        start = self.need(n + 2, "int")
        self.pos = start + 2 + n
        self.spent += n
        return int.from_bytes(self.buf[start + 2 : start + 2 + n], "little", signed=True)

    def read_float(self, depth: int) -> Any:
        pos = self.need(8, "float")
        self.pos = pos + 8
        return _F64.unpack_from(self.buf, pos)[0]

    def read_complex(self, depth: int) -> Any:
        pos = self.need(16, "complex")
        self.pos = pos + 16
        re, im = _C128.unpack_from(self.buf, pos)
        return complex(re, im)

    def _bytes(self, what: str) -> bytes:
        n = self.length(f"{what} size")
        pos = self.need(n, what)
        self.pos = pos + n
        self.spent += n  # checked at the next container or array, and at the end
        return self.buf[pos : pos + n]

    def read_str(self, depth: int) -> Any:
        pos = self.pos - 1
        data = self._bytes("str")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            _fail(f"str is not valid UTF-8 ({exc.reason})", pos)

    def read_bytes(self, depth: int) -> Any:
        return self._bytes("bytes")

    def read_decimal(self, depth: int) -> Any:
        pos = self.pos - 1
        self.spent += 64  # a Decimal is larger than _COST_SLOT
        data = self._bytes("Decimal")
        try:
            return Decimal(data.decode("ascii"))
        except (UnicodeDecodeError, InvalidOperation, ValueError):
            _fail("invalid Decimal text", pos)

    def read_datetime(self, depth: int) -> Any:
        pos = self.need(12, "datetime")
        self.pos = pos + 12
        day, tod = _DATETIME.unpack_from(self.buf, pos)
        if day < -1 or tod < -1 or day == tod == -1:
            _fail(f"invalid date/time fields ({day}, {tod})", pos)
        try:
            date = None if day < 0 else datetime.date(day // 10000, day // 100 % 100, day % 100)
            time = (
                None
                if tod < 0
                else datetime.time(
                    tod // 10_000_000_000,
                    tod // 100_000_000 % 100,
                    tod // 1_000_000 % 100,
                    tod % 1_000_000,
                )
            )
        except (ValueError, OverflowError):
            _fail(f"invalid date/time fields ({day}, {tod})", pos)
        if date is None:
            return time
        if time is None:
            return date
        return datetime.datetime.combine(date, time)

    def read_uuid(self, depth: int) -> Any:
        pos = self.need(16, "UUID")
        self.pos = pos + 16
        self.spent += 48  # a UUID and its int
        return uuid.UUID(bytes=self.buf[pos : pos + 16])

    # (the loops are written out in each reader: one Python frame per nesting level)
    def read_tuple(self, depth: int) -> Any:
        n = self.count("tuple length", self.dim_size + 1)
        self.charge(_COST_SEQ + _COST_SLOT * n, self.pos)
        child = depth + 1
        items = []
        for i in range(n):
            items.append(self.sized_item(child, i))
        return tuple(items)

    def read_list(self, depth: int) -> Any:
        n = self.count("list length", self.dim_size + 1)
        self.charge(_COST_SEQ + _COST_SLOT * n, self.pos)
        child = depth + 1
        items = []
        for i in range(n):
            items.append(self.sized_item(child, i))
        return items

    def read_set(self, depth: int) -> Any:
        pos = self.pos
        n = self.count("set length", self.dim_size + 1)
        self.charge(_COST_SET + (_COST_SLOT + _COST_ENTRY) * n, pos)
        child = depth + 1
        items = []
        for i in range(n):
            items.append(self.sized_item(child, i))
        if n > _MAX_SAME_HASH:
            self.check_hashes(items, "set element", pos)
        try:
            return set(items)
        except TypeError as exc:
            _fail(f"unhashable set element ({exc})", pos)

    def read_dict(self, depth: int) -> Any:
        start = self.pos
        n = self.count("dict length", 2 * (self.dim_size + 1))
        self.charge(_COST_SEQ + (2 * _COST_SLOT + _COST_ENTRY) * n, start)
        child = depth + 1
        if n <= _MAX_SAME_HASH:
            result: dict[Any, Any] = {}
            for i in range(n):
                pos = self.pos
                key = self.sized_item(child, i, _KEYS)
                value = self.sized_item(child, key, _VALUE)
                try:
                    result[key] = value
                except TypeError:
                    _fail(f"unhashable dict key of type {type(key).__name__}", pos)
            return result
        keys = []
        values = []
        for i in range(n):
            key = self.sized_item(child, i, _KEYS)
            keys.append(key)
            values.append(self.sized_item(child, key, _VALUE))
        self.check_hashes(keys, "dict key", start)
        return dict(zip(keys, values, strict=True))

    def read_sparse(self, depth: int) -> Any:
        _fail("MATLAB sparse arrays ('P' items) are unsupported", self.pos - 1)

    # -- arrays ----------------------------------------------------------------------------
    def read_array(self, depth: int) -> Any:
        result = self.array(depth, self.squeeze)
        # DataJoint 0.14 reads a 0-d numeric, bool, complex or datetime64 array as a numpy
        # scalar of its dtype (0-d char and object arrays stay arrays); the writer turns
        # numpy scalars into exactly such 0-d arrays, so they come back as themselves
        if type(result) is np.ndarray and result.ndim == 0 and result.dtype.kind in "biufcM":
            return result[()]
        return result

    def array(self, depth: int, squeeze: bool) -> Any:
        start = self.pos - 1
        pos = self.pos
        # peek at the class id to know the minimal element size before trusting the shape
        ndim = self.length("ndim")
        if ndim > _MAX_NDIM:
            _fail(f"ndim {ndim} exceeds numpy's limit of {_MAX_NDIM}", pos)
        head = self.need(ndim * self.dim_size + 8, "array header")
        class_id, is_complex = _TWO_U32.unpack_from(self.buf, head + ndim * self.dim_size)
        if is_complex > 1:
            _fail(f"invalid complex flag {is_complex}", head + ndim * self.dim_size + 4)
        dtype = _READ_DTYPES.get(class_id)
        if dtype is not None:
            if is_complex and dtype.kind not in "fiu":
                _fail(f"complex {dtype.name} arrays do not exist", start)
            min_item = dtype.itemsize * (2 if is_complex else 1)
        elif class_id == _CHAR:
            min_item = 2
        elif class_id == _OBJECT:
            min_item = self.dim_size + 1
        else:
            name = _MATLAB_CLASS_NAMES.get(class_id)
            if name is not None:
                _fail(f"unsupported MATLAB class {name!r} (class id {class_id})", start)
            _fail(f"unknown array class id {class_id}", start)
        if (class_id in (_CHAR, _OBJECT)) and is_complex:
            _fail("complex char/object arrays do not exist", start)
        self.pos = pos
        shape, n = self.shape(0)
        self.pos += 8
        data_at = self.pos
        if n * min_item > self.end - data_at:
            _fail(
                f"array of shape {shape} needs at least {n * min_item} bytes,"
                f" {self.end - data_at} left",
                start,
            )
        result: Any
        if dtype is not None:
            nbytes = n * dtype.itemsize
            self.charge(_COST_ARRAY + nbytes * (2 if is_complex else 1), start)
            self.pos = data_at + nbytes * (2 if is_complex else 1)
            if is_complex:
                result = self._complex(dtype, shape, n, data_at, nbytes)
            elif dtype.kind == "b":
                raw = np.frombuffer(self.buf, np.uint8, n, data_at)
                result = np.empty(shape, dtype=bool, order="F")
                np.not_equal(raw.reshape(shape, order="F"), 0, out=result)
            else:
                raw = np.frombuffer(self.buf, dtype, n, data_at)
                result = raw.reshape(shape, order="F").copy(order="K")
        elif class_id == _CHAR:
            self.charge(_COST_ARRAY + 4 * n, start)
            self.pos = data_at + 2 * n
            low = np.frombuffer(self.buf, "<u2", n, data_at).astype(np.uint8)
            if ndim == 1 or (ndim == 2 and shape[0] == 1):
                result = np.array([low.tobytes().decode("latin-1")])
            else:
                result = low.astype("<u4").view("<U1").reshape(shape, order="F").copy(order="K")
        else:
            self.charge(_COST_ARRAY + _COST_SLOT * n, start)
            result = np.empty(shape, dtype=object, order="F")
            flat = result.reshape(-1, order="F")
            child = depth + 1
            for i in range(n):
                flat[i] = self.sized_item(child, i, shape)
        if squeeze:
            result = result.squeeze()
            if result.ndim == 0:
                return result.item()
        return result

    def _complex(
        self, dtype: np.dtype[Any], shape: tuple[int, ...], n: int, at: int, nbytes: int
    ) -> NDArray[Any]:
        cdtype = np.dtype("<c8") if dtype == np.dtype("<f4") else np.dtype("<c16")
        result = np.empty(shape, dtype=cdtype, order="F")
        flat = result.reshape(-1, order="F")
        flat.real = np.frombuffer(self.buf, dtype, n, at)
        flat.imag = np.frombuffer(self.buf, dtype, n, at + nbytes)
        return result

    def read_cell(self, depth: int) -> Any:
        start = self.pos - 1
        shape, n = self.shape(self.dim_size + 1)
        self.charge(_COST_ARRAY + _COST_SLOT * n, start)
        child = depth + 1
        items = [self.sized_item(child, i, shape) for i in range(n)]
        result = self.stack_cell(items, shape, start)
        if self.squeeze:
            return result.squeeze()
        return result

    def stack_cell(self, items: list[Any], shape: tuple[int, ...], start: int) -> MatCell:
        """The cell as DataJoint 0.14 builds it: ``np.array(items)`` in ``shape``.

        numpy's rule for a list of items makes a cell of numbers a numeric array and a
        cell of strings a unicode array. Where that rule does not give one element per
        item (items of several elements or of different shapes, which DataJoint fails
        to read), the cell is an object array of the items. The memory numpy may
        allocate (unicode elements as wide as the longest string) is charged first.
        """
        n = len(items)
        count, width = _stack_bound(items, n)
        stacked = None
        if count == n:
            # numpy's array, then the cell (which owns its data) copied from it
            self.charge(_COST_ARRAY + 2 * n * width, start)
            with contextlib.suppress(ValueError, TypeError, OverflowError):
                stacked = np.array(items)
        if stacked is not None and stacked.size == n:
            result = MatCell(shape, dtype=stacked.dtype, order="F")
            result.reshape(-1, order="F")[...] = stacked.reshape(-1)
            return result
        result = MatCell(shape, dtype=object, order="F")
        flat = result.reshape(-1, order="F")
        for i, item in enumerate(items):
            flat[i] = item
        return result

    def _names(self, what: str, n: int) -> list[str]:
        names = [self.cstring(f"{what} field name") for _ in range(n)]
        if len(set(names)) != len(names) or not all(names):
            _fail(f"empty or repeated {what} field names {names!r}", self.pos)
        return names

    def read_struct(self, depth: int) -> Any:
        start = self.pos - 1
        shape, n = self.shape(0)
        at = self.need(4, "struct field count")
        n_fields: int = _U32.unpack_from(self.buf, at)[0]
        self.pos = at + 4
        if n_fields > self.end - self.pos:
            _fail(
                f"struct field count {n_fields} is larger than the remaining"
                f" {self.end - self.pos} bytes can hold",
                at,
            )
        names = self._names("struct", n_fields)
        min_bytes = n * n_fields * (self.dim_size + 1)
        if min_bytes > self.end - self.pos:
            _fail(
                f"struct array of {n} elements with {n_fields} fields is larger than the"
                f" remaining {self.end - self.pos} bytes can hold",
                start,
            )
        self.charge(_COST_ARRAY + _COST_SLOT * n * n_fields, start)
        try:
            dtype = np.dtype([(name, object) for name in names])
        except (ValueError, TypeError) as exc:
            _fail(f"invalid struct field names ({exc})", start)
        result = MatStruct(shape, dtype=dtype, order="F")
        flat = np.asarray(result).reshape(-1, order="F")
        columns = [flat[name] for name in names]
        child = depth + 1
        for i in range(n if n_fields else 0):
            for name, column in zip(names, columns, strict=True):
                column[i] = self.sized_item(child, i, (shape, name))
        if self.squeeze:
            return result.squeeze()
        return result

    def read_recarray(self, depth: int) -> Any:
        start = self.pos - 1
        pos = self.need(4, "field count")
        n_fields: int = _U32.unpack_from(self.buf, pos)[0]
        self.pos = pos + 4
        if n_fields == 0:
            _fail("record array without fields", start)
        if 2 * n_fields > self.end - self.pos:
            _fail(
                f"field count {n_fields} is larger than the remaining"
                f" {self.end - self.pos} bytes can hold",
                pos,
            )
        names = self._names("record", n_fields)
        child = depth + 1
        columns: list[NDArray[Any]] = []
        for name in names:
            at = self.pos
            try:
                if at >= self.end:
                    _fail("truncated: a record field is missing", at)
                code = self.buf[at]
                if child > self.max_depth:
                    _fail(f"nesting deeper than max_depth={self.max_depth}", at)
                self.pos = at + 1
                if code == 0x41:  # A
                    column = self.array(child, False)
                elif code == 0x46:  # F
                    column = self.read_recarray(child)
                else:
                    _fail(f"record field must be an 'A' or 'F' item, not code 0x{code:02x}", at)
            except _ReadError as exc:
                exc.path.append(f"[{name!r}]")
                raise
            columns.append(column)
        common = columns[0].shape
        for column in columns[1:]:
            k = 0
            while k < min(len(common), column.ndim) and common[k] == column.shape[k]:
                k += 1
            common = common[:k]
        depth_of = len(common)
        self.charge(_COST_ARRAY + sum(column.nbytes for column in columns), start)
        try:
            dtype = np.dtype(
                [
                    (
                        name,
                        np.dtype(column.dtype.descr) if column.dtype.names else column.dtype,
                        column.shape[depth_of:],
                    )
                    for name, column in zip(names, columns, strict=True)
                ]
            )
            result = np.recarray(common, dtype=dtype)
            for name, column in zip(names, columns, strict=True):
                result[name] = column
        except (ValueError, TypeError) as exc:
            _fail(f"inconsistent record fields ({exc})", start)
        return result


#: bytes per element numpy makes of a number: at most complex128, or U64 as text
_NUMBER_WIDTH = 16
_NUMBER_AS_TEXT_WIDTH = 256


def _stack_bound(items: list[Any], n: int) -> tuple[int, int]:
    """How many elements ``np.array(items)`` holds (counting stops beyond ``n``), and
    the most bytes per element it can allocate for them.

    numpy descends into lists and tuples and stacks arrays; it makes unicode elements
    as wide as the longest text, and numbers become text next to text.
    """
    count = 0
    text = other = 0
    number = False
    stack = list(items)
    while stack and count <= n:
        item = stack.pop()
        if isinstance(item, list | tuple):
            stack.extend(item)
            continue
        if isinstance(item, np.ndarray):
            count += item.size
            kind = item.dtype.kind
            if kind == "U":
                text = max(text, item.dtype.itemsize)
            elif kind == "S":
                text = max(text, 4 * item.dtype.itemsize)
            elif kind in "biufcmM":
                number = True
            else:
                other = max(other, item.dtype.itemsize)
            continue
        count += 1
        if isinstance(item, str | bytes):
            text = max(text, 4 * len(item))
        elif isinstance(item, int | float | complex | np.generic):
            number = True
        else:
            other = max(other, 8)
    if number:
        other = max(other, _NUMBER_AS_TEXT_WIDTH if text else _NUMBER_WIDTH)
    return count, max(text, other)


_READERS: list[_Reader_fn | None] = [None] * 256
for _code, _fn in {
    b"A": _Reader.read_array,
    b"P": _Reader.read_sparse,
    b"S": _Reader.read_struct,
    b"C": _Reader.read_cell,
    b"F": _Reader.read_recarray,
    b"\x01": _Reader.read_tuple,
    b"\x02": _Reader.read_list,
    b"\x03": _Reader.read_set,
    b"\x04": _Reader.read_dict,
    b"\x05": _Reader.read_str,
    b"\x06": _Reader.read_bytes,
    b"\x0a": _Reader.read_int,
    b"\x0b": _Reader.read_bool,
    b"\x0c": _Reader.read_complex,
    b"\x0d": _Reader.read_float,
    b"\xff": _Reader.read_none,
    b"d": _Reader.read_decimal,
    b"t": _Reader.read_datetime,
    b"u": _Reader.read_uuid,
}.items():
    _READERS[_code[0]] = _fn
del _code, _fn


def unpack(
    data: bytes | bytearray | memoryview,
    *,
    squeeze: bool = False,
    legacy_u32: bool | None = None,
    max_size: int | None = None,
    max_depth: int | None = None,
    max_expansion: int | None = None,
) -> Any:
    """Deserialize DataJoint blob bytes (``mYm`` or ``dj0``, plain or ``ZL123``-compressed).

    ``squeeze`` drops singleton dimensions of arrays (and turns 0-d arrays into
    scalars), as DataJoint's ``squeeze=True``. ``legacy_u32`` reads blobs of old 32-bit
    mym builds (lengths and dimensions as u32); ``None`` means
    ``djb.config["legacy_u32"]``. ``max_size`` (bytes of the plain blob), ``max_depth``
    and ``max_expansion`` (memory of the result, counting the decompressed bytes, as a
    multiple of ``len(data)``) default to ``djb.config["max_blob_size"]``,
    ``djb.config["max_depth"]`` and ``djb.config["max_expansion"]``. Every problem with
    the bytes raises :class:`BlobFormatError`; returned arrays are writable and owned by
    the caller. A 0-d numeric, bool, complex or datetime64 array reads back as the numpy
    scalar of its dtype (``np.float64(3.0)``), as in DataJoint 0.14.
    """
    size_, depth_, expansion_, u32_ = config._get_many(
        "max_blob_size", "max_depth", "max_expansion", "legacy_u32"
    )
    max_size = int(size_ if max_size is None else max_size)
    max_depth = int(depth_ if max_depth is None else max_depth)
    max_expansion = int(expansion_ if max_expansion is None else max_expansion)
    legacy_u32 = bool(u32_ if legacy_u32 is None else legacy_u32)
    if isinstance(data, bytes):
        buf = data
    elif isinstance(data, bytearray | memoryview):
        buf = bytes(data)
    else:
        raise BlobFormatError(
            f"a blob must be bytes, bytearray or memoryview, not {type(data).__name__}"
        )
    stored = len(buf)
    compressed = buf.startswith(ZL123)
    if compressed:
        buf = _framing.decompress(buf, max_size, legacy_u32, max_expansion)
    elif len(buf) > max_size:
        raise BlobFormatError(
            f"blob of {len(buf)} bytes is larger than max_size={max_size}"
            " (raise djb.config['max_blob_size'] to read it)"
        )
    where = " of the decompressed blob" if compressed else ""
    header = buf[:4]
    if header not in (MYM, DJ0):
        raise BlobFormatError(
            f"unknown blob header {header!r} at byte 0{where} (expected b'mYm\\x00' or"
            " b'dj0\\x00', or b'ZL123\\x00' framing)"
        )
    reader = _Reader(
        buf,
        4,
        squeeze=squeeze,
        max_depth=max_depth,
        legacy_u32=legacy_u32,
        stored=stored,
        expansion=max_expansion,
    )
    try:
        value = reader.item(0)
        if reader.pos != len(buf):
            _fail(f"{len(buf) - reader.pos} trailing bytes after the value", reader.pos)
        reader.charge(0, reader.pos)
    except _ReadError as exc:
        inside = f" (in {_path_str(exc.path)})" if exc.path else ""
        raise BlobFormatError(f"{exc.message} at byte {exc.offset}{where}{inside}") from None
    except RecursionError:
        raise BlobFormatError(
            f"nesting too deep for Python's recursion limit near byte {reader.pos}{where}"
        ) from None
    except (
        ArithmeticError,
        IndexError,
        KeyError,
        MemoryError,
        TypeError,
        ValueError,
        struct.error,
    ) as exc:
        raise BlobFormatError(
            f"invalid blob near byte {reader.pos}{where}: {type(exc).__name__}: {exc}"
        ) from None
    return value
