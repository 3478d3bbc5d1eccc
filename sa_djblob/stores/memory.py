"""An in-process store: a thread-safe dict, shared by every store with the same location.

Stores built from the same settings see the same objects, like clients of one
server. ``MemoryStore.clear()`` empties it (tests).
"""

from __future__ import annotations

import datetime
import io
import threading
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Any, BinaryIO, ClassVar

from .._exceptions import MissingPayloadError
from .base import COPY_CHUNK, ObjectInfo, Store, object_key

__all__ = ["MemoryStore"]


class _Space:
    """The contents behind one location: path -> (bytes, modified)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.objects: dict[str, tuple[bytes, datetime.datetime]] = {}


class MemoryStore(Store):
    """Payloads in memory, in a registry shared by stores of the same ``location``."""

    protocol = "memory"
    _spaces: ClassVar[dict[str, _Space]] = {}
    _registry_lock: ClassVar[threading.Lock] = threading.Lock()

    def _setup(self, spec: dict[str, Any]) -> None:
        with self._registry_lock:
            self._space = self._spaces.setdefault(self.location, _Space())

    @classmethod
    def clear(cls, location: str | None = None) -> None:
        """Empty the objects of one location, or of every location."""
        with cls._registry_lock:
            spaces = (
                list(cls._spaces.values())
                if location is None
                else ([cls._spaces[location]] if location in cls._spaces else [])
            )
        for space in spaces:
            with space.lock:
                space.objects.clear()

    def _missing(self, path: PurePosixPath) -> MissingPayloadError:
        return MissingPayloadError(f"store {self.name!r}: payload {path} is missing")

    def put(self, path: PurePosixPath, data: bytes | memoryview) -> None:
        value = (bytes(data), datetime.datetime.now(datetime.UTC))
        with self._space.lock:
            self._space.objects[object_key(path)] = value

    def create(self, path: PurePosixPath, data: bytes) -> bool:
        value = (bytes(data), datetime.datetime.now(datetime.UTC))
        with self._space.lock:
            return self._space.objects.setdefault(object_key(path), value) is value

    def put_file(self, path: PurePosixPath, src: BinaryIO) -> None:
        buf = bytearray()
        while chunk := src.read(COPY_CHUNK):
            buf += chunk
        self.put(path, bytes(buf))

    def get(self, path: PurePosixPath) -> bytes:
        with self._space.lock:
            found = self._space.objects.get(object_key(path))
        if found is None:
            raise self._missing(path)
        return found[0]

    def open(self, path: PurePosixPath) -> BinaryIO:
        return io.BytesIO(self.get(path))

    def size(self, path: PurePosixPath) -> int | None:
        with self._space.lock:
            found = self._space.objects.get(object_key(path))
        return None if found is None else len(found[0])

    def exists(self, path: PurePosixPath) -> bool:
        with self._space.lock:
            return object_key(path) in self._space.objects

    def remove(self, path: PurePosixPath) -> None:
        with self._space.lock:
            self._space.objects.pop(object_key(path), None)

    def list(self, prefix: PurePosixPath) -> Iterator[ObjectInfo]:
        top = object_key(prefix)
        lead = "/" if str(prefix).startswith("/") else ""
        start = top + "/" if top else ""
        with self._space.lock:
            items = [(k, v) for k, v in self._space.objects.items() if k.startswith(start)]
        items.sort(key=lambda kv: kv[0])
        for key, (data, modified) in items:
            yield ObjectInfo(PurePosixPath(lead + key), len(data), modified)

    def set_modified(self, path: PurePosixPath, modified: datetime.datetime) -> None:
        """Backdate (or move) an object's modification time (tests of grace periods)."""
        with self._space.lock:
            data, _ = self._space.objects[object_key(path)]
            self._space.objects[object_key(path)] = (data, modified)

    def __repr__(self) -> str:
        return f"MemoryStore(name={self.name!r}, location={self.location!r})"
