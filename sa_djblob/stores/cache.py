"""A content-addressed local cache of remote payloads.

Entries live at ``<root>/<h0h1>/<h2h3>/<hex>`` (``layout.cache_path``), are filled
atomically (a hidden temporary file in the same folder, then a rename) and verified
against their hash when read: a corrupt entry is dropped and reads as a miss. With a
``limit`` (bytes), the least recently used entries (oldest modification time; a hit
refreshes it) are deleted after a fill that pushes the total over the limit.

An entry may be evicted (by this or another process) at any moment, so readers take
its bytes (:meth:`Cache.get`) or an open handle (:meth:`Cache.open_verified`), never
a path to open later: an evicted entry then reads as a miss, and a handle opened
before the eviction keeps reading the whole entry (POSIX keeps unlinked files open).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from .._exceptions import StoreError
from .._layout import cache_path, content_hash, hash_stream
from .._util import discard as _discard
from .base import COPY_CHUNK, is_temp_name, temp_name

__all__ = ["Cache"]

log = logging.getLogger(__name__)

_STALE_TEMP = 3600.0  # seconds after which a leftover temporary file is removed


class Cache:
    """A local folder of verified payload copies, optionally bounded in size."""

    def __init__(self, root: str | os.PathLike[str], limit: int | None = None) -> None:
        if limit is not None and limit <= 0:
            raise ValueError("the cache limit must be a positive number of bytes")
        self.root = Path(root)
        self.limit = limit
        self._lock = threading.Lock()
        self._total: int | None = None  # bytes in the cache, known after the first scan
        self._warned = False  # a failed fill was logged

    def __repr__(self) -> str:
        return f"Cache(root={str(self.root)!r}, limit={self.limit!r})"

    def _entry(self, key: uuid.UUID) -> Path:
        return self.root / cache_path(key)

    # -- reading ---------------------------------------------------------------
    def path(self, key: uuid.UUID) -> Path | None:
        """The file of entry *key* if present (not verified; it may be evicted at once)."""
        entry = self._entry(key)
        return entry if entry.is_file() else None

    def get(self, key: uuid.UUID, algorithm: str = "md5", prefix: bytes = b"") -> bytes | None:
        """The cached payload of *key*, verified (``hash(prefix + data) == key``), or None."""
        entry = self._entry(key)
        try:
            data = entry.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("cache entry %s unreadable: %s", entry, exc.strerror)
            return None
        if content_hash(prefix, data, algorithm=algorithm) != key:
            self._drop_corrupt(entry)
            return None
        self._touch(entry)
        return data

    def open_verified(
        self, key: uuid.UUID, algorithm: str = "md5", prefix: bytes = b""
    ) -> BinaryIO | None:
        """Entry *key* opened for reading at its start, verified, or None (a miss).

        The entry is opened first and verified by a streaming hash through the same
        handle, so an eviction after the check cannot turn the hit into an error.
        The caller closes the handle.
        """
        entry = self._entry(key)
        try:
            f = open(entry, "rb")  # noqa: SIM115 - returned to the caller, or closed below
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("cache entry %s unreadable: %s", entry, exc.strerror)
            return None
        try:
            got, _ = hash_stream(f, prefix=prefix, algorithm=algorithm)
            f.seek(0)
        except OSError as exc:
            f.close()
            log.warning("cache entry %s unreadable: %s", entry, exc.strerror)
            return None
        except BaseException:
            f.close()
            raise
        if got != key:
            f.close()
            self._drop_corrupt(entry)
            return None
        self._touch(entry)
        return f

    def _drop_corrupt(self, entry: Path) -> None:
        log.warning("cache entry %s does not match its hash: removed", entry)
        try:
            size = entry.stat().st_size
            entry.unlink()
        except OSError:
            return
        self._account(-size)

    @staticmethod
    def _touch(entry: Path) -> None:
        with contextlib.suppress(OSError):  # removed meanwhile, or read-only: best effort
            os.utime(entry)

    # -- filling ---------------------------------------------------------------
    def put(self, key: uuid.UUID, data: bytes | memoryview) -> Path:
        """Store *data* as entry *key* (atomically); return the entry's file."""

        def write(f: BinaryIO) -> None:
            f.write(data)

        return self._fill(key, write)

    def put_file(self, key: uuid.UUID, src: str | os.PathLike[str]) -> Path:
        """Copy the file *src* in as entry *key* (atomically); return the entry's file."""

        def copy(f: BinaryIO) -> None:
            with open(src, "rb") as s:
                shutil.copyfileobj(s, f, COPY_CHUNK)

        return self._fill(key, copy)

    def offer(self, key: uuid.UUID, data: bytes | memoryview) -> None:
        """:meth:`put`, as the read path fills the cache: an entry that cannot be written
        (a full disk, a read-only folder) is left out, and the read goes on."""
        self._best_effort(lambda: self.put(key, data))

    def offer_file(self, key: uuid.UUID, src: str | os.PathLike[str]) -> None:
        """:meth:`put_file`, as the read path fills the cache (see :meth:`offer`)."""
        self._best_effort(lambda: self.put_file(key, src))

    def _best_effort(self, fill: Callable[[], Path]) -> None:
        try:
            fill()
        except StoreError as exc:
            self.note_write_failure(exc)

    def note_write_failure(self, exc: StoreError) -> None:
        """Log that an entry could not be written (WARNING once, then DEBUG): the read
        that wanted to fill it goes on from the store."""
        with self._lock:
            first, self._warned = not self._warned, True
        # the cache is an optimization: said once, not at every read
        log.log(
            logging.WARNING if first else logging.DEBUG,
            "%s; payloads are read from their stores without caching them%s",
            exc,
            " (further cache write failures are logged at DEBUG level)" if first else "",
        )

    def fill(self, key: uuid.UUID, write: Callable[[BinaryIO], None]) -> Path:
        """Make entry *key* of what *write* writes to a new file (atomically: if *write*
        raises, nothing is kept); return the entry's file."""
        return self._fill(key, write)

    def _fill(self, key: uuid.UUID, write: Callable[[BinaryIO], None]) -> Path:
        entry = self._entry(key)
        tmp = entry.with_name(temp_name(entry.name))
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "xb") as f:
                write(f)
                size = f.tell()
            try:
                old = entry.stat().st_size
            except FileNotFoundError:
                old = 0
            os.replace(tmp, entry)
        except OSError as exc:
            _discard(tmp)
            raise StoreError(
                f"cannot write cache entry {entry}: {exc.strerror or exc}"
                " (check djb.config['cache'])"
            ) from None
        except BaseException:
            _discard(tmp)
            raise
        self._account(size - old)
        if self.limit is not None:
            self._evict(keep=entry)
        return entry

    # -- size bound ------------------------------------------------------------
    def _account(self, delta: int) -> None:
        with self._lock:
            if self._total is not None:
                self._total = max(0, self._total + delta)

    def total_size(self) -> int:
        """Bytes held by the cache's entries (scanned once, then tracked)."""
        with self._lock:
            if self._total is None:
                self._total = sum(size for _, size, _ in self._scan())
            return self._total

    def _scan(self) -> list[tuple[float, int, Path]]:
        """(mtime, size, file) of every entry; removes stale temporary files."""
        found: list[tuple[float, int, Path]] = []
        now = time.time()
        for folder, _dirs, files in os.walk(self.root):
            for name in files:
                p = Path(folder, name)
                try:
                    st = p.stat()
                except OSError:
                    continue
                if is_temp_name(name):
                    if now - st.st_mtime > _STALE_TEMP:
                        p.unlink(missing_ok=True)
                    continue
                found.append((st.st_mtime, st.st_size, p))
        return found

    def _evict(self, keep: Path | None = None) -> None:
        """Delete least recently used entries until the total is within the limit."""
        assert self.limit is not None
        if self.total_size() <= self.limit:
            return
        with self._lock:
            entries = self._scan()  # the true state (other processes may share the folder)
            total = sum(size for _, size, _ in entries)
            entries.sort(key=lambda e: e[0])
            for _mtime, size, p in entries:
                if total <= self.limit:
                    break
                if p == keep:
                    continue  # the entry just written stays, even if it alone is too big
                try:
                    p.unlink()
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    log.warning("cannot evict cache entry %s: %s", p, exc.strerror)
                    continue
                total -= size
            self._total = total

    def evict(self) -> None:
        """Apply the size limit now (a no-op without a limit)."""
        if self.limit is not None:
            self._evict()

    def clear(self) -> None:
        """Delete every entry."""
        with self._lock:
            for _, _, p in self._scan():
                p.unlink(missing_ok=True)
            self._total = 0
