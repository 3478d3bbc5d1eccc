"""The small abstract Store every backend implements.

Paths are the full object paths of DataJoint's layout (``layout.object_path``):
for a file store, file system paths; for S3, keys inside the bucket (a leading
``/`` is ignored). Deleting tolerates already-missing objects.
"""

from __future__ import annotations

import abc
import contextlib
import datetime
import os
import secrets
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Self

__all__ = ["COPY_CHUNK", "ObjectInfo", "Store", "is_temp_name", "temp_name"]

COPY_CHUNK = 1 << 20
"""The chunk size of streaming copies (bytes)."""


def temp_name(name: str) -> str:
    """A hidden temporary name next to *name*: ``.<name>.tmp-<random>`` (listings skip it).

    Only the first 40 characters of *name* are used, so the temporary name is never
    longer than the longest name a store accepts (``<hash>.<attachment name>``).
    """
    return f".{name[:40]}.tmp-{secrets.token_hex(6)}"


def is_temp_name(name: str) -> bool:
    """Whether *name* was made by :func:`temp_name`."""
    return name.startswith(".") and ".tmp-" in name


@dataclass(frozen=True)
class ObjectInfo:
    """One entry of a store listing."""

    path: PurePosixPath
    size: int
    modified: datetime.datetime  # timezone-aware (UTC)


class Store(abc.ABC):
    """A place that keeps payloads by path."""

    protocol: str = ""
    #: the longest object file name the store can hold (bytes), if it has a limit
    max_object_name: int | None = None

    def __init__(
        self,
        name: str,
        *,
        location: str = "",
        hash: str = "md5",
        subfolding: tuple[int, ...] = (2, 2),
        **_: Any,
    ) -> None:
        self.name = name
        self.location = location
        self.hash = hash
        self.subfolding = tuple(subfolding)

    @property
    def is_remote(self) -> bool:
        """Remote stores are read through the local cache."""
        return False

    @abc.abstractmethod
    def put(self, path: PurePosixPath, data: bytes | memoryview) -> None:
        """Store *data* at *path*, replacing what may be there, atomically."""

    @abc.abstractmethod
    def put_file(self, path: PurePosixPath, src: BinaryIO, size: int | None = None) -> None:
        """Store the rest of the readable binary stream *src* at *path*, streaming."""

    @abc.abstractmethod
    def get(self, path: PurePosixPath) -> bytes:
        """The whole payload; raises ``MissingPayloadError`` if absent."""

    @abc.abstractmethod
    def open(self, path: PurePosixPath) -> BinaryIO:
        """A readable binary stream of the payload (close it); ``MissingPayloadError`` if absent."""

    def create(self, path: PurePosixPath, data: bytes) -> bool:
        """Store *data* at *path* only if nothing is there; return whether it did.

        Atomic where the store can do it (a file store, S3's conditional write); this
        default checks and then writes.
        """
        if self.exists(path):
            return False
        self.put(path, data)
        return True

    def size(self, path: PurePosixPath) -> int | None:
        """The size of the payload at *path*, None if absent, -1 if present but unknown."""
        return -1 if self.exists(path) else None

    @abc.abstractmethod
    def exists(self, path: PurePosixPath) -> bool:
        """Whether a payload is at *path*."""

    @abc.abstractmethod
    def remove(self, path: PurePosixPath) -> None:
        """Delete the payload at *path*; no error if it is already gone."""

    def upload_file(self, path: PurePosixPath, src: Path) -> None:
        """Store the local file *src* at *path*, streaming."""
        with open(src, "rb") as f:
            self.put_file(path, f, os.fstat(f.fileno()).st_size)

    def download_file(self, path: PurePosixPath, dest: Path) -> None:
        """Write the payload at *path* to the local file *dest*, streaming.

        *dest* is created or truncated; the caller arranges atomicity (write to a
        temporary name, then rename). On failure *dest* is removed.
        """
        with self.open(path) as src:
            try:
                with open(dest, "wb") as out:
                    shutil.copyfileobj(src, out, COPY_CHUNK)
            except BaseException:
                _discard(Path(dest))
                raise

    def remove_many(self, paths: Iterable[PurePosixPath]) -> dict[PurePosixPath, str]:
        """Delete many payloads; return the ones that failed with the reason."""
        failed: dict[PurePosixPath, str] = {}
        for path in paths:
            try:
                self.remove(path)
            except Exception as exc:  # reported to the caller, who decides
                failed[path] = str(exc)
        return failed

    @abc.abstractmethod
    def list(self, prefix: PurePosixPath) -> Iterator[ObjectInfo]:
        """Every payload below *prefix* (a folder path), recursively, in no given order."""

    def cleanup(self, prefix: PurePosixPath) -> None:  # noqa: B027 - optional hook
        """Remove empty folders below *prefix* (file stores); a no-op elsewhere."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections and threads."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, location={self.location!r})"


def _discard(tmp: Path) -> None:
    """Remove a (partial) local file, if it is there and can be removed."""
    with contextlib.suppress(OSError):
        tmp.unlink()
