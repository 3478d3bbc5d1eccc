"""The one reader that checks a payload's bytes against its key as they pass."""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable
from typing import Any, BinaryIO

from ._layout import new_hasher

__all__ = ["VerifyingReader"]


class VerifyingReader(io.RawIOBase):
    """The bytes of *src*, hashed on the way (after *prefix*) with *algorithm*.

    The last byte is held back until the source has ended and the hash (and the *size*,
    if given) matched *key*: a reader never receives the whole of an object that does not
    verify, however it reads; it gets the exception *error()* instead, again on every
    later read. With *stop_at_size*, the source ends after *size* bytes (a file that grew
    after it was hashed gives the bytes that were hashed). *on_close* runs when the
    reader is closed.
    """

    def __init__(
        self,
        src: BinaryIO,
        *,
        key: uuid.UUID,
        algorithm: str,
        error: Callable[[], Exception],
        prefix: bytes = b"",
        size: int | None = None,
        stop_at_size: bool = False,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        if stop_at_size and size is None:
            raise ValueError("stop_at_size needs a size")
        self._src = src
        self._key = key
        self._error = error
        self._size = size
        self._stop = stop_at_size
        self._on_close = on_close
        self._hasher = new_hasher(algorithm)
        self._hasher.update(prefix)
        self._read = 0
        self._held = b""  # the last byte read from the source, not handed out yet
        self._ended = False  # verified, and every byte handed out
        self._failed: Exception | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._failed is not None:
            raise self._failed
        view = memoryview(buffer).cast("B")
        if self._ended or not view:
            return 0
        while True:
            want = len(view)
            if self._stop:
                assert self._size is not None
                want = min(want, self._size - self._read)
            data = self._src.read(want) if want else b""
            if not data:
                self._verify()
                n = len(self._held)
                view[:n] = self._held
                self._held = b""
                self._ended = True
                return n
            self._hasher.update(data)
            self._read += len(data)
            if self._size is not None and self._read > self._size:
                self._fail()
            held = len(self._held)
            n = held + len(data) - 1  # <= len(view): at most one byte was held
            if n:
                view[:held] = self._held
                view[held:n] = memoryview(data)[:-1]
                self._held = data[-1:]
                return n
            self._held = data  # the first byte: keep it, read on

    def _verify(self) -> None:
        key = uuid.UUID(bytes=self._hasher.digest()[:16])
        if key != self._key or (self._size is not None and self._read != self._size):
            self._fail()

    def _fail(self) -> None:
        self._held = b""
        self._failed = self._error()
        raise self._failed

    def close(self) -> None:
        if self.closed:
            return
        try:
            super().close()
        finally:
            if self._on_close is not None:
                self._on_close()
