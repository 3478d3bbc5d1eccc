"""Attachments: encoding in-row values, safe names, and writing fetched files.

Fetched attachments go to ``djb.config["download_path"]`` under a safe base name of
their stored name. An identical file already there is reused; a different file of
the same name is never overwritten: the next free alias ``stem_0000.ext``,
``stem_0001.ext``, ... (DataJoint's hexadecimal counter) is used instead. Files are
written to a temp file and linked into place, so a reader never sees half a file and
two writers never clobber each other.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import os
import stat
import tempfile
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from ._exceptions import BlobFormatError, DownloadError, UnsupportedTypeError

__all__ = [
    "attachment_name",
    "check_name",
    "check_new_name",
    "decode_inrow",
    "encode_inrow",
    "safe_name",
    "same_bytes",
    "write_download",
]

_CHUNK = 1 << 20
_MAX_NAME_BYTES = 255


def attachment_name(path: str | os.PathLike[str]) -> str:
    """The name an attachment is stored under: the file's base name."""
    name = Path(os.fspath(path)).name
    if not name:
        raise UnsupportedTypeError(
            f"attachment {os.fspath(path)!r} has no file name: bind the path of a file"
        )
    return name


def check_name(name: str, *, max_object_name: int | None = None) -> None:
    """Refuse a name that the read path would refuse, or that the store cannot hold.

    The same rule on both paths: a name that is stored can always be read back.
    *max_object_name* is the store's limit on an object's file name, which is
    ``<32 hex digits>.<name>``.
    """
    if not name or name in (".", "..") or any(c in name for c in "/\\\0"):
        raise UnsupportedTypeError(
            f"attachment name {name[:60]!r} is not a plain file name (it must not be empty,"
            " '.' or '..', or hold '/', '\\' or NUL): rename the file"
        )
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise UnsupportedTypeError(
            f"attachment name {name.encode('utf-8', 'surrogateescape')[:60]!r} is not valid"
            " UTF-8 (the externals table and DataJoint store names as UTF-8): rename the file"
        ) from None
    limit = _MAX_NAME_BYTES
    if max_object_name is not None:
        limit = min(limit, max_object_name - 33)
    if size > limit:
        raise UnsupportedTypeError(
            f"attachment name {name[:40]!r}... is {size} bytes long; this store holds names of"
            f" at most {limit} bytes (its objects are named <hash>.<name>): rename the file"
        )


def check_new_name(name: str, *, max_object_name: int | None = None) -> None:
    """:func:`check_name` for a name being written, which must also hold no control
    character (CR, LF, tab...): S3 answers "404 Not Found" for such an object, and a
    download gets another name (:func:`safe_name` drops them). Names already stored are
    still read."""
    check_name(name, max_object_name=max_object_name)
    control = next((c for c in name if unicodedata.category(c) == "Cc"), None)
    if control is not None:
        raise UnsupportedTypeError(
            f"attachment name {name[:60]!r} holds the control character {control!r} (a line"
            " break, a tab...): stores refuse or alter such names and a download would get"
            " another name: rename the file"
        )


def safe_name(name: str) -> str:
    """Reduce a stored attachment name to a base name that stays inside a folder.

    Directory parts (``/`` and ``\\``), NUL and control characters are removed; an
    empty result, ``.`` and ``..`` become ``attachment``; the name is cut to 255 bytes
    keeping its extension.
    """
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch) not in ("Cc", "Cf", "Cs"))
    name = name.strip(" ")
    if name in ("", ".", ".."):
        name = "attachment"
    if len(name.encode("utf-8")) > _MAX_NAME_BYTES:
        stem, dot, ext = name.rpartition(".")
        ext = (dot + ext) if dot and len(ext.encode()) < 32 else ""
        stem = name[: len(name) - len(ext)] if ext else name
        budget = _MAX_NAME_BYTES - len(ext.encode("utf-8"))
        stem = stem.encode("utf-8")[:budget].decode("utf-8", "ignore")
        name = stem + ext
    return name


def encode_inrow(path: str | os.PathLike[str]) -> bytes:
    """``filename + b"\\0" + contents`` of the file at *path*."""
    p = Path(os.fspath(path))
    return attachment_name(p).encode("utf-8") + b"\0" + p.read_bytes()


def decode_inrow(value: bytes) -> tuple[str, memoryview]:
    """Split an in-row attachment into its stored name and contents."""
    sep = value.find(b"\0")
    if sep < 0:
        raise BlobFormatError("in-row attachment has no NUL between file name and contents")
    try:
        name = bytes(value[:sep]).decode("utf-8")
    except UnicodeDecodeError:
        raise BlobFormatError("in-row attachment name is not valid UTF-8") from None
    return name, memoryview(value)[sep + 1 :]


def _aliases(target: Path) -> Iterator[Path]:
    yield target
    for n in itertools.count():
        yield target.with_name(f"{target.stem}_{n:04x}{target.suffix}")


def write_download(
    name: str,
    is_same: Callable[[Path], bool],
    fill: Callable[[BinaryIO], None],
    folder: str | os.PathLike[str] | None = None,
) -> Path:
    """Write an attachment into *folder* (default ``download_path``) and return its path.

    ``is_same(path)`` tells whether an existing file holds these contents (it is reused);
    ``fill(f)`` writes the contents into the open binary file *f*.
    """
    if folder is None:
        from ._config import config

        folder = config["download_path"]
    base = Path(os.fspath(folder))
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _download_error(base, exc) from None
    target = base / safe_name(name)
    for candidate in _aliases(target):
        if not os.path.lexists(candidate):
            break
        if _reusable(candidate) and is_same(candidate):
            return candidate
    try:
        fd, tmp = tempfile.mkstemp(dir=base, prefix=".djb-download-")
    except OSError as exc:
        raise _download_error(base, exc) from None
    try:
        # (errors of reading the source pass as they are; of writing, they name the folder)
        with io.BufferedWriter(_FolderFile(os.fdopen(fd, "wb", buffering=0), base), _CHUNK) as f:
            fill(f)
        for candidate in _aliases(target):
            try:
                os.link(tmp, candidate)
                return candidate
            except FileExistsError:
                if _reusable(candidate) and is_same(candidate):
                    return candidate
            except OSError as exc:
                raise _download_error(base, exc) from None
        raise AssertionError("unreachable")  # pragma: no cover
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _download_error(folder: Path, exc: OSError) -> DownloadError:
    return DownloadError(
        f"cannot write into the download folder {str(folder)!r}: {exc.strerror or exc}"
        " (free space there, or write downloads elsewhere: djb.config['download_path'])"
    )


class _FolderFile(io.RawIOBase):
    """The temporary file of a download: a failed write raises a DownloadError that names
    the folder (a full disk fails a write, or the flush when the file is closed)."""

    def __init__(self, f: BinaryIO, folder: Path) -> None:
        self._f = f
        self._folder = folder

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        try:
            return self._f.write(b)
        except OSError as exc:
            raise _download_error(self._folder, exc) from None

    def close(self) -> None:
        if self.closed:
            return
        try:
            super().close()
        finally:
            self._f.close()


def _reusable(path: Path) -> bool:
    """Only a regular file of the folder itself is returned as a download: never a
    symbolic link (which may point anywhere outside the folder)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def same_bytes(data: bytes | memoryview) -> Callable[[Path], bool]:
    """An ``is_same`` test comparing a file with bytes in memory."""

    def check(path: Path) -> bool:
        try:
            if path.stat().st_size != len(data):
                return False
            with path.open("rb") as f:
                return memoryview(f.read()) == memoryview(data)
        except OSError:
            return False

    return check
