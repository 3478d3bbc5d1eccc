"""A store in a local or mounted folder (DataJoint's ``protocol="file"``)."""

from __future__ import annotations

import contextlib
import datetime
import errno
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import BinaryIO, ClassVar, TypeVar

from .._exceptions import MissingPayloadError, StoreError
from .base import (
    COMMON_SETTINGS,
    COPY_CHUNK,
    ObjectInfo,
    Setting,
    Store,
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
    into place, so a reader never sees a partial payload.
    """

    protocol = "file"
    settings: ClassVar[Mapping[str, Setting]] = {
        **COMMON_SETTINGS,
        "location": Setting(check_path, required=True, doc="the folder of the payloads"),
    }

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
            os.replace(tmp, dest)
        except BaseException as exc:
            _discard(tmp)
            if isinstance(exc, OSError):
                raise self._error("write", path, exc) from None
            raise

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
        top = os.fspath(prefix)
        if not os.path.isdir(top):
            return
        stack = [top]
        while stack:
            folder = stack.pop()
            try:
                entries = list(os.scandir(folder))
            except FileNotFoundError:
                continue  # removed while listing (cleanup)
            except OSError as exc:
                raise self._error("list", folder, exc) from None
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
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

    def cleanup(self, prefix: PurePosixPath) -> None:
        top = os.fspath(prefix)
        if not os.path.isdir(top):
            return
        for folder, _dirs, _files in os.walk(top, topdown=False):
            if folder == top:
                continue
            with contextlib.suppress(OSError):  # not empty (or written to meanwhile): keep it
                os.rmdir(folder)

    def __repr__(self) -> str:
        return f"FileStore(name={self.name!r}, location={self.location!r})"


def _discard(tmp: Path) -> None:
    """Remove a temporary file, if it is there and can be removed."""
    with contextlib.suppress(OSError):
        tmp.unlink()
