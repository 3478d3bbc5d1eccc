"""What ``dj2.Npy``, ``dj2.Object`` and ``dj2.Filepath`` columns read: references that
do no I/O until asked.

:class:`NpyRef` knows shape and dtype from the pointer; indexing reads only the rows it
needs (a range of the ``.npy`` file, through the store's ``read_range`` where it has one,
else ``open`` and ``seek``). :class:`ObjectRef` opens, reads and downloads an object, and
maps it with fsspec. Self-contained, so that they can later be pointed at the range
reads of ``djb.lazy``.
"""

from __future__ import annotations

import ast
import io
import math
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import numpy as np

from .._exceptions import IntegrityError, SaDjblobError
from .._pool import call
from ..stores import Store, get_store
from .layout import object_key

__all__ = ["NpyRef", "ObjectRef", "read_range"]

_HEADER_GUESS = 4096


def read_range(store: Store, key: PurePosixPath, start: int, length: int) -> bytes:
    """*length* bytes of the object at *key* from offset *start* (fewer at its end)."""
    ranged = getattr(store, "read_range", None)
    if callable(ranged):
        return bytes(call(ranged, key, start, length))

    def read() -> bytes:
        with store.open(key) as f:
            if f.seekable():
                f.seek(start)
            else:  # a stream: skip to the start, never read past the end of the range
                left = start
                while left > 0:
                    skipped = f.read(min(left, 1 << 20))
                    if not skipped:
                        return b""
                    left -= len(skipped)
            return f.read(length)

    return call(read)


class _Located:
    """A pointer, its store, and its object."""

    def __init__(self, ptr: Mapping[str, Any], column_store: str | None) -> None:
        self._meta = dict(ptr)
        name = ptr.get("store") or column_store
        if not isinstance(name, str):
            raise SaDjblobError(f"a DataJoint 2.x pointer names no store: {self._meta!r}")
        self._store_name = name
        self._key: PurePosixPath | None = None

    @property
    def path(self) -> str:
        """The object's path within its store, as the pointer records it."""
        return str(self._meta["path"])

    @property
    def store(self) -> str:
        return self._store_name

    @property
    def metadata(self) -> dict[str, Any]:
        """The pointer, as stored in the column."""
        return dict(self._meta)

    def _located(self) -> tuple[Store, PurePosixPath]:
        store = get_store(self._store_name)
        if self._key is None:
            self._key = object_key(store, self.path)
        return store, self._key


class NpyRef(_Located):
    """A ``.npy`` array in a store: shape and dtype without I/O, rows by range reads.

    ``ref[100:200]``, ``ref[5]``, ``ref[10:20, 3]`` read only the rows they select (C-order
    arrays); anything else, and ``load()`` / ``np.asarray(ref)``, reads the whole file.
    """

    def __init__(self, ptr: Mapping[str, Any], column_store: str | None) -> None:
        super().__init__(ptr, column_store)
        try:
            self._shape = tuple(int(n) for n in ptr["shape"])
            self._dtype = np.dtype(str(ptr["dtype"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise SaDjblobError(
                f"an <npy> pointer lacks a valid shape or dtype ({exc}): {self._meta!r}"
            ) from None
        self._offset: int | None = None
        self._fortran = False
        self._cached: np.ndarray[Any, Any] | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        """The array's shape (no I/O)."""
        return self._shape

    @property
    def dtype(self) -> np.dtype[Any]:
        """The array's dtype (no I/O)."""
        return self._dtype

    @property
    def ndim(self) -> int:
        return len(self._shape)

    @property
    def size(self) -> int:
        return math.prod(self._shape)

    @property
    def nbytes(self) -> int:
        return self.size * self._dtype.itemsize

    @property
    def is_loaded(self) -> bool:
        return self._cached is not None

    def __len__(self) -> int:
        if not self._shape:
            raise TypeError("len() of a 0-d array")
        return self._shape[0]

    def __repr__(self) -> str:
        return f"NpyRef(shape={self._shape}, dtype={self._dtype}, path={self.path!r})"

    def _check(self, shape: tuple[int, ...], dtype: np.dtype[Any], fortran: bool) -> None:
        if shape != self._shape or dtype != self._dtype:
            raise IntegrityError(
                f"npy object {self.path!r} in store {self.store!r} holds a {dtype}"
                f" array of shape {shape}, its pointer says {self._dtype} {self._shape}:"
                " the object or the row was changed"
            )
        self._fortran = fortran

    def load(self) -> np.ndarray[Any, Any]:
        """The whole array (read once, then kept)."""
        if self._cached is None:
            store, key = self._located()
            data = call(store.get, key)
            arr = np.load(io.BytesIO(data), allow_pickle=False)
            self._check(arr.shape, arr.dtype, np.isfortran(arr) and arr.ndim > 1)
            self._cached = arr
        return self._cached

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray[Any, Any]:
        arr = self.load()
        return arr if dtype is None else arr.astype(dtype)

    def _header(self) -> int:
        """Read the .npy header (one small range read): the offset of the data."""
        if self._offset is None:
            store, key = self._located()
            head = read_range(store, key, 0, _HEADER_GUESS)
            if head[:6] != b"\x93NUMPY":
                raise IntegrityError(f"npy object {self.path!r} is not a .npy file")
            major = head[6]
            size_bytes = 2 if major == 1 else 4
            hlen = int.from_bytes(head[8 : 8 + size_bytes], "little")
            start = 8 + size_bytes
            if start + hlen > len(head):
                head = read_range(store, key, 0, start + hlen)
            try:
                header = ast.literal_eval(head[start : start + hlen].decode("latin1"))
                dtype = np.dtype(header["descr"])
                shape = tuple(int(n) for n in header["shape"])
                fortran = bool(header["fortran_order"])
            except (ValueError, SyntaxError, KeyError, TypeError) as exc:
                raise IntegrityError(
                    f"npy object {self.path!r} has an unreadable header: {exc}"
                ) from None
            if dtype.hasobject:
                raise IntegrityError(f"npy object {self.path!r} holds Python objects")
            self._check(shape, dtype, fortran and len(shape) > 1)
            self._offset = start + hlen
        return self._offset

    def __getitem__(self, index: Any) -> Any:
        if self._cached is not None or not self._shape:
            return self.load()[index]
        first, rest = (index[0], index[1:]) if isinstance(index, tuple) and index else (index, ())
        if isinstance(first, int | np.integer):
            n = self._shape[0]
            i = int(first) + n if int(first) < 0 else int(first)
            if not 0 <= i < n:
                raise IndexError(f"index {first} is out of bounds for axis 0 with size {n}")
            rows, squeeze = range(i, i + 1), True
        elif isinstance(first, slice):
            rows, squeeze = range(*first.indices(self._shape[0])), False
        else:
            return self.load()[index]
        offset = self._header()
        if self._fortran:
            return self.load()[index]
        if not rows:
            part = np.empty((0, *self._shape[1:]), self._dtype)
        else:
            lo, hi = min(rows[0], rows[-1]), max(rows[0], rows[-1]) + 1
            row_bytes = math.prod(self._shape[1:]) * self._dtype.itemsize
            store, key = self._located()
            data = read_range(store, key, offset + lo * row_bytes, (hi - lo) * row_bytes)
            if len(data) != (hi - lo) * row_bytes:
                raise IntegrityError(f"npy object {self.path!r} is shorter than its header says")
            block = np.frombuffer(data, self._dtype).reshape((hi - lo, *self._shape[1:]))
            part = block[np.arange(len(rows)) * rows.step + (rows[0] - lo)]  # a copy
        if squeeze:
            return part[0][rest] if rest else part[0]
        return part[(slice(None), *rest)] if rest else part


class ObjectRef(_Located):
    """An ``<object@s>`` or ``<filepath@s>`` value: a file in a store, opened on demand."""

    @property
    def size(self) -> int | None:
        size = self._meta.get("size")
        return size if isinstance(size, int) else None

    @property
    def ext(self) -> str | None:
        ext = self._meta.get("ext")
        return ext if isinstance(ext, str) else None

    @property
    def is_dir(self) -> bool:
        return bool(self._meta.get("is_dir"))

    def __repr__(self) -> str:
        return f"ObjectRef(store={self.store!r}, path={self.path!r}, size={self.size})"

    def _file(self) -> tuple[Store, PurePosixPath]:
        if self.is_dir:
            raise SaDjblobError(
                f"{self.path!r} of store {self.store!r} is a folder: sa_djblob reads files"
                " (use fsmap() to reach a folder's files)"
            )
        return self._located()

    def exists(self) -> bool:
        store, key = self._located()
        return bool(call(store.exists, key))

    def read(self) -> bytes:
        """The whole object."""
        store, key = self._file()
        data = bytes(call(store.get, key))
        if self.size is not None and len(data) != self.size:
            raise IntegrityError(
                f"object {self.path!r} in store {self.store!r} is {len(data)} bytes, its"
                f" pointer says {self.size}: it was changed"
            )
        return data

    def open(self) -> BinaryIO:
        """A readable binary stream of the object (close it)."""
        store, key = self._file()
        return call(store.open, key)

    def download(self, destination: str | os.PathLike[str]) -> Path:
        """Copy the object into the folder *destination* under its own name (atomically)."""
        folder = Path(destination)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / PurePosixPath(self.path).name
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name[:40]}.", dir=folder)
        try:
            with os.fdopen(fd, "wb") as out, self.open() as src:
                shutil.copyfileobj(src, out, 1 << 20)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target

    def fsmap(self) -> Any:
        """An fsspec mapper of the object (for zarr and friends); needs fsspec, and a
        file store or an fsspec store."""
        try:
            import fsspec
        except ImportError:
            raise SaDjblobError("ObjectRef.fsmap() needs fsspec: pip install fsspec") from None
        store, key = self._located()
        fs = getattr(store, "fs", None)
        if fs is not None and hasattr(store, "_path"):
            return fsspec.FSMap(store._path(key), fs)
        if store.local_paths:
            return fsspec.get_mapper(os.fspath(key))
        raise SaDjblobError(
            f"ObjectRef.fsmap() maps objects of file and fsspec stores; store"
            f" {store.name!r} is {store.protocol!r}: use open() or read()"
        )
