"""``djb.lazy(column)``: a reference to a blob that reads only what it is asked for.

``select(djb.lazy(Recording.trace))`` yields a :class:`LazyBlob` per row (None for NULL),
like :func:`djb.stored() <sa_djblob.stored>` for an external column (the key and size come
from the externals table in the same query) and from the row's bytes for an in-row one.
Nothing is read from the store until it is asked:

- ``.shape``, ``.dtype``, ``.ndim``, ``.nbytes`` read the blob's header: one small read
  (a compressed blob is decompressed only as far as its header);
- ``ref[...]`` (numpy's basic indexing) of a blob that is one numeric array reads only
  the byte ranges the slice needs from an uncompressed blob (several ranges concurrently
  where the store can), and decompresses a compressed one as a stream only as far as the
  slice needs;
- ``ref.load()`` / ``np.asarray(ref)`` read the whole value as a plain select does,
  verified against its hash; ``ref.verify()`` checks the stored bytes against the hash.

The hash covers the whole object: a slice read by range is not verified (call
``verify()``, or ``load()``, where that matters). A reference needs only the store: it
stays usable after its session or connection has closed.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import zlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import sqlalchemy as sa
from numpy.typing import NDArray
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

from .._area import Area
from .._blobheader import Frame, Header, NeedMore, SlicePlan, parse_frame, parse_header
from .._codec import unpack
from .._config import config
from .._exceptions import BlobFormatError, IntegrityError, NotSliceableError, SaDjblobError
from .._fetch import fetch_blob, fetch_bytes
from .._kinds import Kind, kind
from ..stores import Store, get_cache, get_store
from ..stores.file import pread_ranges
from .stored import StoredObject, StoredResult, stored

__all__ = ["LazyBlob", "lazy"]

#: the first read of a blob: enough for the header of any array (at most 64 dimensions)
_HEAD = 4096
#: compressed bytes read per request while decompressing as a stream (doubling up to the max)
_STREAM_FIRST = 64 * 1024
_STREAM_MAX = 8 << 20
#: the largest piece of plain bytes decompressed at once
_PIECE = 16 << 20


class _Source:
    """Where a blob's stored bytes are: a store object, or the bytes of a row."""

    @property
    def size(self) -> int:
        raise NotImplementedError

    def read_ranges(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        raise NotImplementedError

    def whole(self) -> bytes:
        """Every stored byte, verified against the hash where there is one."""
        raise NotImplementedError

    def verify(self) -> None:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


class _RowSource(_Source):
    def __init__(self, data: bytes) -> None:
        self.data = data

    @property
    def size(self) -> int:
        return len(self.data)

    def read_ranges(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        return [self.data[s : s + n] for s, n in ranges]

    def whole(self) -> bytes:
        return self.data

    def verify(self) -> None:
        return None  # the database's own bytes: there is no hash to check them against

    def describe(self) -> str:
        return f"in-row blob of {self.size} bytes"


class _StoreSource(_Source):
    def __init__(self, obj: StoredObject) -> None:
        self.obj = obj
        self._size = obj.size

    @functools.cached_property
    def store(self) -> Store:
        return get_store(self.obj.store)

    @property
    def size(self) -> int:
        if self._size is None:
            found = self.store.size(self.obj.path)
            if found is None or found < 0:  # (-1: present, size unknown: read it whole)
                found = len(self.store.get(self.obj.path))
            self._size = found
        return self._size

    def read_ranges(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        store = self.store
        cache = get_cache() if store.is_remote else None
        cached = cache.path(self.obj.key) if cache is not None else None
        if cached is not None:
            try:
                return pread_ranges(cached, ranges)
            except OSError:
                pass  # evicted meanwhile: read the store
        got = store.read_ranges(self.obj.path, ranges)
        for (start, length), data in zip(ranges, got, strict=True):
            if len(data) != min(length, max(0, self.size - start)):
                raise IntegrityError(
                    f"payload {self.obj.key} in store {self.obj.store!r} at {self.obj.path}"
                    f" is shorter than its recorded {self.size} bytes: it was truncated"
                )
        return got

    def whole(self) -> bytes:
        return fetch_bytes(Area(self.store, self.obj.schema), self.obj.key)

    def verify(self) -> None:
        with self.obj.open() as f:
            while f.read(1 << 20):
                pass

    def describe(self) -> str:
        o = self.obj
        return f"store={o.store!r}, key={str(o.key)!r}, size={o.size}"


class LazyBlob:
    """A blob that reads nothing until asked (see :func:`sa_djblob.lazy`). Thread-safe."""

    def __init__(self, source: _Source, options: dict[str, Any]) -> None:
        self._source = source
        self._options = options
        self._legacy_u32 = bool(options.get("legacy_u32", config["legacy_u32"]))
        self._lock = threading.Lock()
        self._frame: Frame | None = None
        self._header: Header | None = None

    @property
    def stored(self) -> StoredObject | None:
        """The :class:`StoredObject` of an external blob (None for an in-row one)."""
        src = self._source
        return src.obj if isinstance(src, _StoreSource) else None

    def __repr__(self) -> str:
        head = self._header
        known = "" if head is None or head.shape is None else f", shape={head.shape}"
        if head is not None and head.dtype is not None:
            known += f", dtype={head.dtype}"
        return f"LazyBlob({self._source.describe()}{known})"

    # -- the header --------------------------------------------------------------------
    def _read_header(self) -> tuple[Frame, Header]:
        with self._lock:
            if self._frame is not None and self._header is not None:
                return self._frame, self._header
            src = self._source
            size = src.size
            (head,) = src.read_ranges([(0, min(size, _HEAD))])
            legacy = self._legacy_u32
            frame = parse_frame(head, size, legacy)
            if not frame.compressed:
                while True:
                    try:
                        header = parse_header(head, size, legacy)
                        break
                    except NeedMore as more:
                        (head,) = src.read_ranges([(0, more.n)])
            else:
                self._check_declared(frame, size)
                plain = b""
                for _, piece in self._inflate(frame):
                    plain += piece
                    try:
                        header = parse_header(plain, frame.plain_size, legacy)
                        break
                    except NeedMore:
                        continue
                else:
                    header = parse_header(plain, frame.plain_size, legacy)
            self._frame, self._header = frame, header
            return frame, header

    def _check_declared(self, frame: Frame, size: int) -> None:
        max_size = int(config["max_blob_size"])
        if frame.plain_size > max_size:
            raise BlobFormatError(
                f"compressed blob declares {frame.plain_size} bytes, more than"
                f" max_size={max_size} (raise djb.config['max_blob_size'] to read it)"
            )
        if frame.plain_size > size * int(config["max_expansion"]):
            raise BlobFormatError(
                f"compressed blob of {size} bytes declares {frame.plain_size} bytes, more"
                " than max_expansion times its size (if the blob is trusted, raise"
                " djb.config['max_expansion'])"
            )

    def _inflate(self, frame: Frame, first: int = 4096) -> Iterator[tuple[int, bytes]]:
        """The plain blob as ``(offset, bytes)`` pieces, decompressed as the compressed bytes
        are read (ranged reads of growing size); stop iterating to stop reading."""
        src = self._source
        inflater = zlib.decompressobj()
        at = frame.start
        want = first
        plain_at = 0
        while True:
            if at >= src.size:
                raise BlobFormatError(
                    f"zlib stream ends after {plain_at} of the declared {frame.plain_size}"
                    " bytes (truncated)"
                )
            data: bytes = src.read_ranges([(at, min(want, src.size - at))])[0]
            at += len(data)
            want = min(want * 2, _STREAM_MAX)
            while True:
                try:  # bounded pieces: a small stream may inflate to gigabytes
                    piece = inflater.decompress(data, _PIECE)
                except zlib.error as exc:
                    raise BlobFormatError(f"corrupt zlib stream: {exc}") from None
                data = inflater.unconsumed_tail
                if plain_at + len(piece) > frame.plain_size:
                    raise BlobFormatError(
                        f"zlib stream decompresses beyond the declared {frame.plain_size} bytes"
                    )
                if piece:
                    yield plain_at, piece
                    plain_at += len(piece)
                if not data and len(piece) < _PIECE:
                    break
            if inflater.eof:
                if plain_at < frame.plain_size:
                    raise BlobFormatError(
                        f"zlib stream ends after {plain_at} of the declared"
                        f" {frame.plain_size} bytes"
                    )
                if inflater.unused_data or at < src.size:
                    raise BlobFormatError("trailing bytes after the zlib stream")
                return

    def _array_header(self, what: str) -> Header:
        _, header = self._read_header()
        if not header.numeric:
            raise NotSliceableError(
                f"{what} needs a blob that is one numeric array, but this blob holds"
                f" {header.what}: use .load() for the whole value"
            )
        return header

    @property
    def shape(self) -> tuple[int, ...]:
        """The array's shape, from the blob's header."""
        header = self._array_header(".shape")
        assert header.shape is not None
        return header.shape

    @property
    def dtype(self) -> np.dtype[Any]:
        """The array's dtype (as :meth:`load` gives it), from the blob's header."""
        header = self._array_header(".dtype")
        assert header.dtype is not None
        return header.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        """The number of elements."""
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        """The bytes of the loaded array."""
        return self.size * self.dtype.itemsize

    def __len__(self) -> int:
        shape = self.shape
        if not shape:
            raise TypeError("len() of unsized object (a 0-d array)")
        return shape[0]

    # -- reading ---------------------------------------------------------------------
    def __getitem__(self, key: Any) -> Any:
        """``ref[1000:2000]``, ``ref[:, 3]``, ``ref[..., ::2]``: numpy's basic indexing,
        reading only the bytes the slice needs. Equals ``ref.load()[key]``, as a new array
        (not a view). Not verified against the hash: see :meth:`verify`."""
        header = self._array_header("indexing")
        frame, _ = self._read_header()
        plan = SlicePlan.make(header, key)
        gathered = np.empty(plan.nbytes, np.uint8)
        filler = _Filler(plan, gathered)
        if not len(plan.offsets):
            pass
        elif frame.compressed:
            end = int(plan.offsets[-1]) + plan.length
            for at, piece in self._inflate(frame, _STREAM_FIRST):
                filler.fill(at, piece)
                if at + len(piece) >= end:
                    break
        else:
            store = self._source.store if isinstance(self._source, _StoreSource) else None
            gap = store.range_gap if store is not None else 0
            most = store.max_range_requests if store is not None else 1 << 30
            # long reads in parts, each copied once into place (S3: parts in parallel)
            part = int(getattr(store, "part_size", 0) or 0) if store is not None else 0
            pieces: list[tuple[int, int]] = []
            for start, end, _, _ in plan.requests(gap, most):
                step = part or end - start
                pieces.extend((at, min(step, end - at)) for at in range(start, end, step))
            got = self._source.read_ranges(pieces)
            for (start, _), data in zip(pieces, got, strict=True):
                filler.fill(start, data)
        filler.check()
        return plan.result(gathered)

    def load(self) -> Any:
        """The whole value, as a plain select gives it (verified against the hash)."""
        src = self._source
        if isinstance(src, _StoreSource):  # a big array: read into its final buffer
            loaded = fetch_blob(Area(src.store, src.obj.schema), src.obj.key)
            return kind("blob").finish(loaded, self._options)
        return unpack(src.whole(), **self._options)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> NDArray[Any]:
        value = self.load()
        if not isinstance(value, np.ndarray | np.generic):
            raise NotSliceableError(
                f"np.asarray() needs a blob that holds an array, but this one holds"
                f" {type(value).__name__}: use .load()"
            )
        out = np.asarray(value)
        return out if dtype is None else out.astype(dtype, copy=False)

    def verify(self) -> None:
        """Read every stored byte and check it against the hash (``IntegrityError`` if it
        does not match). Slices read by range are not checked: call this where it matters.
        An in-row blob has no hash: nothing to check."""
        self._source.verify()

    # -- asyncio -----------------------------------------------------------------------
    async def load_async(self) -> Any:
        """:meth:`load` in a worker thread: the event loop runs on."""
        return await asyncio.to_thread(self.load)

    async def getitem_async(self, key: Any) -> Any:
        """``ref[key]`` in a worker thread."""
        return await asyncio.to_thread(self.__getitem__, key)

    async def header_async(self) -> LazyBlob:
        """Read the header in a worker thread; then ``.shape``, ``.dtype``... need no I/O."""
        await asyncio.to_thread(self._read_header)
        return self

    async def verify_async(self) -> None:
        """:meth:`verify` in a worker thread."""
        await asyncio.to_thread(self.verify)


class _Filler:
    """Copies the parts of arriving plain-blob pieces that fall in a plan's chunks into
    the chunks' buffer, each byte once."""

    def __init__(self, plan: SlicePlan, out: NDArray[np.uint8]) -> None:
        self.offsets = plan.offsets
        self.length = plan.length
        self.ends = plan.offsets + plan.length
        self.out = out
        self.filled = 0

    def fill(self, start: int, data: bytes) -> None:
        end = start + len(data)
        src = np.frombuffer(data, np.uint8)
        first = int(np.searchsorted(self.ends, start, "right"))
        last = int(np.searchsorted(self.offsets, end, "left"))
        n = self.length
        j = first
        while j < last:
            off = int(self.offsets[j])
            if n < 256 and off >= start and last - j > 16:
                # many small chunks wholly inside the piece: copy them at once
                k = min(int(np.searchsorted(self.ends, end, "right")), j + (1 << 20) // n)
                if k > j:
                    rel = self.offsets[j:k] - start
                    block = src[rel[:, None] + np.arange(n)]
                    self.out[j * n : k * n] = block.reshape(-1)
                    self.filled += (k - j) * n
                    j = k
                    continue
            a = max(off, start)
            b = min(off + n, end)
            self.out[j * n + a - off : j * n + b - off] = src[a - start : b - start]
            self.filled += b - a
            j += 1

    def check(self) -> None:
        if self.filled != len(self.out):
            raise IntegrityError(
                f"read {self.filled} of the {len(self.out)} bytes the slice needs: the"
                " payload is truncated"
            )


# -- the column expression ---------------------------------------------------------


class LazyResult(StoredResult):
    """The result type of :func:`lazy` on an external column: a :class:`LazyBlob`."""

    cache_ok = True

    def __init__(
        self,
        kind: str,
        store: str,
        schema: str | None = None,
        options: tuple[tuple[str, Any], ...] = (),
    ) -> None:
        super().__init__(kind, store, schema)
        self.options = options

    def process_result_value(self, value: Any, dialect: Dialect) -> LazyBlob | None:  # type: ignore[override]
        obj = super().process_result_value(value, dialect)
        if obj is None:
            return None
        return LazyBlob(_StoreSource(obj), dict(self.options))


class LazyRowResult(TypeDecorator[Any]):
    """The result type of :func:`lazy` on an in-row column: a :class:`LazyBlob` over the
    row's bytes."""

    impl = sa.LargeBinary
    cache_ok = True

    def __init__(self, options: tuple[tuple[str, Any], ...] = ()) -> None:
        super().__init__()
        self.options = options

    def process_result_value(self, value: Any, dialect: Dialect) -> LazyBlob | None:
        if value is None:
            return None
        return LazyBlob(_RowSource(bytes(value)), dict(self.options))


def lazy(column: Any) -> sa.ColumnElement[Any]:
    """A SQL expression for ``select()``: a :class:`LazyBlob` of a ``Blob`` column per row
    (None for NULL) instead of its value.

    ``select(djb.lazy(Recording.trace)).where(Recording.id == 1)`` reads, for an external
    column, the key and size from the externals table in the same query (as
    :func:`djb.stored() <sa_djblob.stored>` does) and nothing from the store; for an
    in-row column the row's bytes. Label it (``.label("trace")``) to name the result
    column.
    """
    colexpr = column.__clause_element__() if hasattr(column, "__clause_element__") else column
    typ = getattr(colexpr, "type", None)
    k = getattr(typ, "kind", None) if hasattr(type(typ), "sa_djblob_store") else None
    if not isinstance(k, Kind) or not k.packed:
        raise SaDjblobError(
            f"djb.lazy() takes a column of type Blob(), got {colexpr!r} of type {typ!r}"
        )
    options = tuple(sorted(typ.read_options().items()))  # type: ignore[union-attr]
    if typ.store is None:  # type: ignore[union-attr]
        return sa.type_coerce(colexpr, LazyRowResult(options))
    expr = stored(column)
    old = expr.type
    assert isinstance(old, StoredResult)
    expr.type = LazyResult(old.kind, old.store, old.schema, options)
    return expr
