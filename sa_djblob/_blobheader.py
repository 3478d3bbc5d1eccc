"""What a blob is, from its first bytes, and where a slice of its array lies.

Pure functions, no I/O: :func:`parse_frame` reads the ``ZL123`` framing, :func:`parse_header`
the blob's header and first item (``docs/format.md``). For a blob that is one numeric
array (item ``A`` of a numeric, bool, complex or datetime64 class) :class:`Header` gives the
shape, the dtype and the offset of the elements, which are stored in Fortran order; a
:class:`SlicePlan` turns a numpy basic index into the byte ranges ("chunks") it needs and
builds the result from them.
"""

from __future__ import annotations

import math
import operator
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._codec import _MAX_NDIM, _READ_DTYPES, DJ0, MYM
from ._exceptions import BlobFormatError
from ._framing import ZL123

__all__ = ["Frame", "Header", "NeedMore", "SlicePlan", "parse_frame", "parse_header"]

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_TWO_U32 = struct.Struct("<II")
_CHAR = 4
_OBJECT = 5
#: the most chunks a slice is cut into (their offsets are an array of this many int64)
MAX_CHUNKS = 1 << 20

#: what an item code holds, for messages
_ITEMS = {
    b"A": "an array",
    b"S": "a MATLAB struct array",
    b"C": "a MATLAB cell array",
    b"P": "a MATLAB sparse matrix",
    b"F": "a structured (record) array",
    b"\x01": "a tuple",
    b"\x02": "a list",
    b"\x03": "a set",
    b"\x04": "a dict",
    b"\x05": "a string",
    b"\x06": "a bytes value",
    b"\x0a": "an int",
    b"\x0b": "a bool",
    b"\x0c": "a complex number",
    b"\x0d": "a float",
    b"\xff": "None",
    b"d": "a Decimal",
    b"t": "a date or time",
    b"u": "a UUID",
}


class NeedMore(Exception):
    """The prefix given is too short: at least *n* bytes are needed."""

    def __init__(self, n: int) -> None:
        super().__init__(n)
        self.n = n


@dataclass(frozen=True)
class Frame:
    """The framing of a stored blob: plain, or ``ZL123`` with the plain size declared."""

    compressed: bool
    plain_size: int
    #: where the plain blob (or the zlib stream) starts in the stored bytes
    start: int


def parse_frame(prefix: bytes, stored_size: int, legacy_u32: bool = False) -> Frame:
    """The framing of a stored blob of *stored_size* bytes, from its first bytes."""
    dim = _U32 if legacy_u32 else _U64
    if len(prefix) < min(len(ZL123), stored_size):
        raise NeedMore(min(len(ZL123), stored_size))
    if not prefix.startswith(ZL123):
        return Frame(False, stored_size, 0)
    head = len(ZL123) + dim.size
    if stored_size < head:
        raise BlobFormatError(
            f"truncated ZL123 header: needs {head} bytes, the blob has {stored_size}"
        )
    if len(prefix) < head:
        raise NeedMore(head)
    (size,) = dim.unpack_from(prefix, len(ZL123))
    return Frame(True, int(size), head)


@dataclass(frozen=True)
class Header:
    """The blob's first item, as far as its header tells."""

    code: bytes
    #: what the value is, for messages ("a dict", "an array of class char")
    what: str
    shape: tuple[int, ...] | None = None
    #: the element dtype of a numeric array (complex: the dtype of the whole value)
    dtype: np.dtype[Any] | None = None
    #: where the elements start in the plain blob
    data_at: int = 0

    @property
    def numeric(self) -> bool:
        """Whether the value is one numeric array, whose slices can be read by range."""
        return self.dtype is not None

    @property
    def complex(self) -> bool:
        return self.dtype is not None and self.dtype.kind == "c"

    @property
    def plane(self) -> np.dtype[Any]:
        """The stored element type (a complex value: the type of its real plane)."""
        assert self.dtype is not None
        if self.dtype.kind == "c":
            return np.dtype(f"<f{self.dtype.itemsize // 2}")
        return np.dtype("u1") if self.dtype.kind == "b" else self.dtype


def parse_header(prefix: bytes, plain_size: int, legacy_u32: bool = False) -> Header:
    """The header of a plain blob of *plain_size* bytes from its first bytes (*prefix*).

    Raises :class:`NeedMore` when *prefix* is too short, and ``BlobFormatError`` when the
    bytes are not a blob or a numeric array's size does not match *plain_size*.
    """
    dim, dim_size = (_U32, 4) if legacy_u32 else (_U64, 8)

    def need(n: int) -> None:
        if n > plain_size:
            raise BlobFormatError(
                f"truncated blob: its header needs {n} bytes, the blob has {plain_size}"
            )
        if len(prefix) < n:
            raise NeedMore(n)

    need(5)
    magic = prefix[:4]
    if magic not in (MYM, DJ0):
        raise BlobFormatError(
            f"unknown blob header {magic!r} at byte 0 (expected b'mYm\\x00' or b'dj0\\x00')"
        )
    code = prefix[4:5]
    what = _ITEMS.get(code)
    if what is None:
        raise BlobFormatError(f"unknown item code {code!r} at byte 4")
    if code != b"A":
        return Header(code, what)
    need(5 + dim_size)
    (ndim,) = dim.unpack_from(prefix, 5)
    if ndim > _MAX_NDIM:
        raise BlobFormatError(f"ndim {ndim} exceeds numpy's limit of {_MAX_NDIM} at byte 5")
    at = 5 + dim_size * (1 + ndim)
    need(at + 8)
    shape = tuple(int(dim.unpack_from(prefix, 5 + dim_size * (1 + i))[0]) for i in range(ndim))
    class_id, is_complex = _TWO_U32.unpack_from(prefix, at)
    data_at = at + 8
    dtype = _READ_DTYPES.get(class_id)
    if dtype is None or is_complex > 1 or (is_complex and dtype.kind not in "fiu"):
        kind = {_CHAR: "char", _OBJECT: "object"}.get(class_id)
        if kind is None and (dtype is None or is_complex > 1):
            raise BlobFormatError(f"unknown array class id {class_id} (complex flag {is_complex})")
        return Header(code, f"an array of class {kind or 'complex ' + str(dtype)}", shape)
    if is_complex:
        if dtype.kind != "f":  # DataJoint writes complex integers never; numpy has none
            return Header(code, f"a complex {dtype.name} array", shape)
        dtype = np.dtype(f"<c{dtype.itemsize * 2}")
    n = math.prod(shape)
    if plain_size - data_at != n * dtype.itemsize:
        raise BlobFormatError(
            f"array of shape {shape} and dtype {dtype} needs {data_at + n * dtype.itemsize}"
            f" bytes, the blob has {plain_size}: it is truncated or corrupt"
        )
    return Header(code, what, shape, dtype, data_at)


# -- slices ----------------------------------------------------------------------------


def _index(key: Any, shape: tuple[int, ...]) -> tuple[list[tuple[int, int, int, bool]], list[Any]]:
    """A numpy basic index on *shape*: per dimension ``(first, step, count, is_int)``
    (steps made positive) and the index that turns the box of those elements into the
    result (reversals, dropped dimensions, new axes)."""
    items = key if isinstance(key, tuple) else (key,)
    if sum(1 for k in items if k is Ellipsis) > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    for k in items:
        if k is None or k is Ellipsis or isinstance(k, slice):
            continue
        if isinstance(k, bool | np.bool_) or not hasattr(k, "__index__"):
            raise IndexError(
                f"a LazyBlob takes numpy's basic indexing (integers, slices, ..., None), not"
                f" {type(k).__name__}: load() the array for fancy or boolean indexing"
            )
    used = sum(1 for k in items if k is not None and k is not Ellipsis)
    if used > len(shape):
        raise IndexError(
            f"too many indices for array: array is {len(shape)}-dimensional, but {used}"
            " were indexed"
        )
    expanded: list[Any] = []
    for k in items:
        if k is Ellipsis:
            expanded.extend([slice(None)] * (len(shape) - used))
        else:
            expanded.append(k)
    if not any(k is Ellipsis for k in items):
        expanded.extend([slice(None)] * (len(shape) - used))
    dims: list[tuple[int, int, int, bool]] = []
    final: list[Any] = []
    axis = 0
    for k in expanded:
        if k is None:
            final.append(None)
            continue
        size = shape[axis]
        if isinstance(k, slice):
            r = range(*k.indices(size))
            if r.step < 0 and len(r):
                dims.append((r[-1], -r.step, len(r), False))
                final.append(slice(None, None, -1))
            else:
                dims.append((r.start if len(r) else 0, abs(r.step), len(r), False))
                final.append(slice(None))
        else:
            i = operator.index(k)
            if not -size <= i < size:
                raise IndexError(f"index {i} is out of bounds for axis {axis} with size {size}")
            dims.append((i % size, 1, 1, True))
            final.append(0)
        axis += 1
    if any(k is Ellipsis for k in items):
        final.append(Ellipsis)  # numpy: with an ellipsis, integers give a 0-d array
    return dims, final


@dataclass
class SlicePlan:
    """The chunks of stored bytes a slice needs, and how to build the result from them.

    Chunks are ``length`` bytes each, at ascending ``offsets`` in the plain blob (for a
    complex value, those of the real plane and then of the imaginary plane); they never
    overlap. The elements of every selected position of the dimensions ``>= split`` form
    one chunk, which spans the selected range of the dimensions below it.
    """

    header: Header
    offsets: NDArray[np.int64]
    length: int
    counts: tuple[int, ...]
    strides: tuple[int, ...]
    final: tuple[Any, ...]

    @classmethod
    def make(cls, header: Header, key: Any) -> SlicePlan:
        assert header.shape is not None and header.dtype is not None
        shape = header.shape
        dims, final = _index(key, shape)
        plane = header.plane
        b = plane.itemsize
        st = [b * math.prod(shape[:i]) for i in range(len(shape))]
        counts = tuple(c for _, _, c, _ in dims)
        if 0 in counts:
            return cls(header, np.zeros(0, np.int64), 0, counts, (), tuple(final))
        # the largest split whose chunks are at most about twice the elements they hold
        split = 0
        for d in range(len(dims), 0, -1):
            span = sum((c - 1) * step * st[i] for i, (_, step, c, _) in enumerate(dims[:d])) + b
            if span <= 2 * b * math.prod(counts[:d]):
                split = d
                break
        while split < len(dims) and math.prod(counts[split:]) > MAX_CHUNKS:
            split += 1  # fewer, longer chunks: read through the gaps of a sparse slice
        length = sum((c - 1) * step * st[i] for i, (_, step, c, _) in enumerate(dims[:split])) + b
        base = header.data_at + sum(first * st[i] for i, (first, _, _, _) in enumerate(dims))
        offsets = np.full(1, base, np.int64)
        for i in range(split, len(dims)):  # Fortran order: dimension `split` varies fastest
            _, step, c, _ = dims[i]
            steps = np.arange(c, dtype=np.int64) * (step * st[i])
            offsets = (offsets[:, None] + steps[None, :]).reshape(-1, order="F")
        if header.complex:
            n = math.prod(shape)
            offsets = np.concatenate([offsets, offsets + n * b])
        strides = [dims[i][1] * st[i] for i in range(split)]
        outer = length
        for i in range(split, len(dims)):
            strides.append(outer)
            outer *= counts[i]
        return cls(header, offsets, length, counts, tuple(strides), tuple(final))

    @property
    def nbytes(self) -> int:
        return len(self.offsets) * self.length

    def requests(self, max_gap: int, max_requests: int) -> list[tuple[int, int, int, int]]:
        """The chunks grouped into reads ``(start, end, first chunk, end chunk)``: chunks
        closer than *max_gap* (and than their own length) are read together, and so are the
        closest ones until at most *max_requests* reads remain."""
        offsets = self.offsets
        if not len(offsets):
            return []
        ends = offsets + self.length
        gaps = offsets[1:] - ends[:-1]
        join = gaps <= min(max_gap, self.length)
        if max_requests <= 1:
            join[:] = True
        elif int(np.count_nonzero(~join)) + 1 > max_requests:
            # read more than needed rather than make thousands of requests
            limit = np.partition(gaps, len(gaps) - (max_requests - 1))[
                len(gaps) - (max_requests - 1)
            ]
            join = gaps <= limit
        cut = np.flatnonzero(~join) + 1
        first = np.concatenate([[0], cut])
        last = np.concatenate([cut, [len(offsets)]])
        return [
            (int(offsets[a]), int(ends[z - 1]), int(a), int(z))
            for a, z in zip(first.tolist(), last.tolist(), strict=True)
        ]

    def result(self, gathered: NDArray[np.uint8]) -> Any:
        """The slice, from the chunks' bytes laid end to end (*gathered*)."""
        header = self.header
        assert header.dtype is not None
        plane = header.plane
        if not len(self.offsets):
            box = np.empty(self.counts, header.dtype)
            return box[self.final]
        half = len(self.offsets) // 2 * self.length

        def view(buf: NDArray[np.uint8]) -> NDArray[Any]:
            return np.ndarray(self.counts, plane, buffer=buf, strides=self.strides)

        if header.complex:
            box = np.empty(self.counts, header.dtype, order="F")
            box.real = view(gathered[:half])
            box.imag = view(gathered[half:])
        elif header.dtype.kind == "b":
            box = view(gathered) != 0
        else:
            box = view(gathered)
        out = box[self.final]
        if (
            isinstance(out, np.ndarray)
            and out.base is not None
            and 2 * out.nbytes < gathered.nbytes
        ):
            out = out.copy(order="K")  # compact: do not keep the bytes read around it
        elif isinstance(out, np.ndarray) and out.ndim == 0 and out.base is not None:
            out = out.copy()
        return out
