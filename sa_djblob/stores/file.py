"""A store in a local or mounted folder (DataJoint's ``protocol="file"``)."""

from __future__ import annotations

import contextlib
import datetime
import errno
import os
import shutil
import stat
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, ClassVar, TypeVar

from .._exceptions import MissingPayloadError, StoreError
from .._util import discard as _discard
from .base import (
    COMMON_SETTINGS,
    COPY_CHUNK,
    ObjectInfo,
    Setting,
    Store,
    check_bool,
    check_path,
    is_temp_name,
    temp_name,
)

__all__ = ["FileStore"]

_T = TypeVar("_T")
_MKDIR_RETRIES = 5  # a concurrent cleanup() may remove a folder we just made


class FileStore(Store):
    """Payloads as files below ``location``; paths given to it are file system paths.

    Writes go to a hidden temporary file in the destination folder and are renamed
    into place, so a reader never sees a partial payload. With ``fsync`` (the
    default), a write returns only once the payload and the folder entries that lead
    to it are on stable storage: the file is fsynced before the rename, its folder
    after it, and so is the parent of every folder between the payload and
    ``location`` (once per folder and store object). The write path uploads before
    the database transaction commits, so a committed row never points at a payload
    that a power loss can take away. ``fsync=False`` trades that for speed.
    """

    protocol = "file"
    max_object_name = 255
    settings: ClassVar[Mapping[str, Setting]] = {
        **COMMON_SETTINGS,
        "location": Setting(check_path, required=True, doc="the folder of the payloads"),
        "fsync": Setting(
            check_bool, default=True, doc="make each payload durable before the commit"
        ),
    }

    def _setup(self, spec: dict[str, Any]) -> None:
        self.fsync: bool = spec["fsync"]
        # folders whose own entry (in their parent) this object has made durable
        self._durable: set[str] = set()

    # -- helpers -------------------------------------------------------------
    def _error(self, action: str, path: PurePosixPath | Path | str, exc: OSError) -> StoreError:
        reason = exc.strerror or str(exc)
        return StoreError(f"store {self.name!r}: cannot {action} {os.fspath(path)}: {reason}")

    def _missing(self, path: PurePosixPath) -> MissingPayloadError:
        return MissingPayloadError(f"store {self.name!r}: payload {path} is missing (no such file)")

    def _write_atomic(self, path: PurePosixPath, write: Callable[[BinaryIO], None]) -> None:
        dest = Path(path)
        for attempt in range(_MKDIR_RETRIES):
            tmp = dest.with_name(temp_name(dest.name))
            try:
                dest.parent.mkdir(parents=True, exist_ok=True)
                f = open(tmp, "xb")  # noqa: SIM115 - closed below
            except (FileNotFoundError, FileExistsError):
                # a concurrent cleanup() removed the folder (mkdir(exist_ok=True) reports
                # that as FileExistsError when the folder vanishes between its two steps)
                if attempt + 1 < _MKDIR_RETRIES:
                    continue  # make it again
                raise self._error("write", path, OSError(errno.ENOENT, "folder vanished")) from None
            except OSError as exc:
                raise self._error("write", path, exc) from None
            break
        try:
            with f:
                write(f)
                if self.fsync:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, dest)
        except BaseException as exc:
            _discard(tmp)
            if isinstance(exc, OSError):
                raise self._error("write", path, exc) from None
            raise
        if self.fsync:
            try:
                self._sync_folders(dest.parent)
            except OSError as exc:
                raise self._error("sync the folder of", path, exc) from None

    def _sync_folders(self, folder: Path) -> None:
        """Make the new entry in *folder*, and *folder*'s own entries up to ``location``, durable.

        *folder* is always synced (it holds the renamed payload). Each ancestor up to the
        store's location is made durable by syncing its parent, unless this object did
        so before; a folder made by a concurrent writer is synced here too, so this
        write does not rely on that writer finishing first.
        """
        _sync_dir(folder)
        top = os.path.abspath(self.location or ".")
        d = os.path.abspath(folder)
        while d not in self._durable:
            parent = os.path.dirname(d)
            if parent == d:
                break  # the file system root
            _sync_dir(parent)
            self._durable.add(d)
            if d == top or os.path.commonpath((d, top)) != top:
                break  # reached (or outside of) the location: its parents existed before
            d = parent

    def _read(self, path: PurePosixPath, action: Callable[[], _T]) -> _T:
        try:
            return action()
        except FileNotFoundError:
            raise self._missing(path) from None
        except OSError as exc:
            raise self._error("read", path, exc) from None

    # -- the Store interface -------------------------------------------------
    def put(self, path: PurePosixPath, data: bytes | memoryview) -> None:
        def write(f: BinaryIO) -> None:
            f.write(data)

        self._write_atomic(path, write)

    def create(self, path: PurePosixPath, data: bytes) -> bool:
        dest = Path(path)
        tmp = dest.with_name(temp_name(dest.name))
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "xb") as f:
                f.write(data)
            os.link(tmp, dest)  # fails if the name exists: an atomic create-if-absent
        except FileExistsError:
            return False
        except OSError as exc:
            raise self._error("write", path, exc) from None
        finally:
            _discard(tmp)
        return True

    def put_file(self, path: PurePosixPath, src: BinaryIO) -> None:
        self._write_atomic(path, lambda f: shutil.copyfileobj(src, f, COPY_CHUNK))

    def upload_file(self, path: PurePosixPath, src: Path) -> None:
        def copy(f: BinaryIO) -> None:
            with open(src, "rb") as s:
                shutil.copyfileobj(s, f, COPY_CHUNK)

        self._write_atomic(path, copy)

    def get(self, path: PurePosixPath) -> bytes:
        return self._read(path, Path(path).read_bytes)

    def open(self, path: PurePosixPath) -> BinaryIO:
        return self._read(path, lambda: open(path, "rb"))

    def size(self, path: PurePosixPath) -> int | None:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._error("check", path, exc) from None
        return st.st_size if stat.S_ISREG(st.st_mode) else None

    def exists(self, path: PurePosixPath) -> bool:
        try:
            return os.path.isfile(path)
        except OSError as exc:  # pragma: no cover - isfile swallows most errors
            raise self._error("check", path, exc) from None

    def remove(self, path: PurePosixPath) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise self._error("delete", path, exc) from None

    def list(self, prefix: PurePosixPath) -> Iterator[ObjectInfo]:
        """Files below *prefix*, lazily, in path order: each folder's entries sorted by
        name, a subfolder's files listed where its name sorts. Memory holds the
        entries of one folder per level."""
        top = os.fspath(prefix)
        if not os.path.isdir(top):
            return
        stack = [self._sorted_entries(top)]
        while stack:
            entry = next(stack[-1], None)
            if entry is None:
                stack.pop()
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(self._sorted_entries(entry.path))
                    continue
                if is_temp_name(entry.name) or not entry.is_file():
                    continue
                st = entry.stat()
            except FileNotFoundError:
                continue  # removed while listing
            except OSError as exc:
                raise self._error("list", entry.path, exc) from None
            yield ObjectInfo(
                path=PurePosixPath(entry.path),
                size=st.st_size,
                modified=datetime.datetime.fromtimestamp(st.st_mtime, datetime.UTC),
            )

    def _sorted_entries(self, folder: str) -> Iterator[os.DirEntry[str]]:
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except FileNotFoundError:
            entries = []  # removed while listing (cleanup)
        except OSError as exc:
            raise self._error("list", folder, exc) from None
        return iter(entries)

    def cleanup(self, prefix: PurePosixPath) -> None:
        top = os.fspath(prefix)
        if not os.path.isdir(top):
            return
        self._durable.clear()  # folders removed below may be made again
        for folder, _dirs, _files in os.walk(top, topdown=False):
            if folder == top:
                continue
            with contextlib.suppress(OSError):  # not empty (or written to meanwhile): keep it
                os.rmdir(folder)

    def __repr__(self) -> str:
        return f"FileStore(name={self.name!r}, location={self.location!r})"


def _sync_dir(folder: Path | str) -> None:
    """fsync a folder, so entries created or renamed in it survive a power loss."""
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as exc:
        # some file systems (and platforms) cannot sync a folder: nothing more to do
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF, errno.EACCES):
            raise
    finally:
        os.close(fd)
