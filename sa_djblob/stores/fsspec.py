"""A store on any fsspec file system (``protocol="fsspec"``): GCS, Azure, memory, local...

Settings: ``url`` (where the payloads go, e.g. ``"gcs://bucket/prefix"``,
``"az://container/prefix"``, ``"memory://bucket/prefix"``, ``"file:///data/store"``),
``options`` (a dict passed to ``fsspec.filesystem``: credentials, project...) and the
common keys. Payload paths (``<location>/<schema>/...``) are placed below the URL's path.
Every option value (at any nesting level, e.g. inside ``client_kwargs``) and every query
value of the URL (a signed URL's signature), like a password in the URL, is masked in
reprs, messages and the command line, except the options of ``HARMLESS_OPTIONS``
(``anon``, ``project``, ``region_name``, ``endpoint_url``...): a credential under a name
nobody listed (paramiko's ``passphrase``, a header list) never shows.

Needs the ``fsspec`` extra (``pip install 'sa_djblob[fsspec]'``) and the file system's
own package (gcsfs, adlfs, ...).

Writes to local and in-memory file systems go to a hidden temporary name and are moved
into place; object stores (GCS, Azure, ...) publish an object only when its upload
completes. Listing takes each entry's modification time from what the file system
reports (``mtime``, ``LastModified``, ``last_modified``, ``updated``, ``created``...),
else from ``fs.modified``; an entry with no time at all is listed as modified now, so a
sweep's grace period keeps it rather than deleting a payload that may be being written.
"""

from __future__ import annotations

import builtins
import contextlib
import datetime
import os
import shutil
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, ClassVar, TypeVar

from .._exceptions import MissingPayloadError, StoreError
from .base import (
    COMMON_SETTINGS,
    COPY_CHUNK,
    MASK,
    ObjectInfo,
    Setting,
    Store,
    check_mapping,
    check_string,
    is_temp_name,
    mask_url,
    object_key,
    temp_name,
)

__all__ = ["HARMLESS_OPTIONS", "HARMLESS_QUERY", "FsspecStore", "is_secret_option"]

_T = TypeVar("_T")
_LOCAL = {"file", "local"}
_MOVE_INTO_PLACE = _LOCAL | {"memory"}
_TIME_KEYS = ("mtime", "LastModified", "last_modified", "updated", "modified", "created", "ctime")

HARMLESS_OPTIONS = frozenset(
    {
        # fsspec itself
        "auto_mkdir",
        "skip_instance_cache",
        "use_listings_cache",
        "listings_expiry_time",
        "max_paths",
        "asynchronous",
        # s3fs, gcsfs, adlfs: where and how, never who
        "anon",
        "project",
        "region_name",
        "endpoint_url",
        "use_ssl",
        "requester_pays",
        "version_aware",
        "default_block_size",
        "default_cache_type",
        "default_fill_cache",
        "cache_timeout",
        "consistency",
        "account_name",
        "timeout",
        # sftp, ftp, http: the server, the user's name
        "host",
        "port",
        "username",
    }
)
"""The fsspec options whose values are shown; every other option value is masked."""

HARMLESS_QUERY: frozenset[str] = frozenset()
"""The URL query parameters whose values are shown (none: a signed URL's are its key)."""


def is_secret_option(name: str) -> bool:
    """Whether the value of the fsspec option *name* is masked (not declared harmless)."""
    return name not in HARMLESS_OPTIONS


def _check_url(value: Any) -> str:
    text = check_string(value)
    if not text.strip():
        raise ValueError("must be a URL such as 'gcs://bucket/prefix' or 'file:///data/store'")
    return text


def _mask_url(url: str) -> str:
    """*url* without its password and its query values."""
    return mask_url(url, HARMLESS_QUERY)


def _to_utc(value: Any) -> datetime.datetime | None:
    """A UTC-aware time from what a file system reports (epoch seconds, datetime, ISO text)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return datetime.datetime.fromtimestamp(float(value), datetime.UTC)
    if isinstance(value, str):
        try:
            value = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    if isinstance(value, datetime.datetime):
        moment: datetime.datetime = value
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.UTC)
        return moment.astimezone(datetime.UTC)
    return None


class FsspecStore(Store):
    """Payloads on an fsspec file system, below the path of ``url``."""

    protocol = "fsspec"
    settings: ClassVar[Mapping[str, Setting]] = {
        **COMMON_SETTINGS,
        "url": Setting(
            _check_url, required=True, doc="e.g. gcs://bucket/prefix", harmless=HARMLESS_QUERY
        ),
        "options": Setting(
            check_mapping, default={}, doc="fsspec.filesystem options", harmless=HARMLESS_OPTIONS
        ),
    }

    def _setup(self, spec: dict[str, Any]) -> None:
        self.url: str = spec["url"]
        options = dict(spec.get("options", {}))
        self._secrets = self.secret_values(spec)
        try:
            import fsspec.core
        except ImportError:  # pragma: no cover - depends on the installation
            raise StoreError(
                f"store {self.name!r} uses fsspec: install it (pip install 'sa_djblob[fsspec]')"
            ) from None
        try:
            fs, root = fsspec.core.url_to_fs(self.url, **options)
        except (ImportError, ValueError, TypeError) as exc:
            raise StoreError(
                self._scrub(
                    f"store {self.name!r}: cannot open file system {_mask_url(self.url)}:"
                    f" {type(exc).__name__}: {exc} (fix 'url' or 'options' in"
                    f" djb.config['stores'][{self.name!r}], or install the file system's"
                    " package)"
                )
            ) from None
        self.fs: Any = fs
        self._root = str(root).rstrip("/")
        protocols = fs.protocol if isinstance(fs.protocol, tuple | list) else (fs.protocol,)
        self._protocols = {str(p) for p in protocols}
        self._lock = threading.Lock()

    # -- settings ------------------------------------------------------------------
    @classmethod
    def display_location(cls, spec: Mapping[str, Any]) -> str:
        url = _mask_url(str(spec.get("url", "")))
        location = str(spec.get("location", ""))
        return f"{url.rstrip('/')}/{location.lstrip('/')}" if location else url

    # -- helpers ---------------------------------------------------------------------
    @property
    def is_remote(self) -> bool:
        return not (self._protocols & _LOCAL)

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text

    def _path(self, path: PurePosixPath | str) -> str:
        key = object_key(path)
        if not key:
            return self._root
        return f"{self._root}/{key}" if self._root else key

    def _error(self, action: str, path: PurePosixPath | str, exc: BaseException) -> StoreError:
        if isinstance(exc, StoreError):
            return exc
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return StoreError(
            self._scrub(
                f"store {self.name!r}: cannot {action} {path} at {_mask_url(self.url)}:"
                f" {type(exc).__name__}: {reason}"
            )
        )

    def _missing(self, path: PurePosixPath) -> MissingPayloadError:
        return MissingPayloadError(
            f"store {self.name!r}: payload {path} is missing from {_mask_url(self.url)}"
        )

    @contextlib.contextmanager
    def _errors(
        self,
        action: str,
        path: PurePosixPath | str,
        *,
        missing: bool = False,
        expect: tuple[type[BaseException], ...] = (),
    ) -> Iterator[builtins.list[BaseException]]:
        """Map what the file system raises in the block to sa_djblob's errors: with
        *missing*, a missing file is a ``MissingPayloadError``; an error of a type in
        *expect* is kept in the yielded list for the caller to act on; anything else is
        a ``StoreError`` saying what *action* on *path* failed (no secrets in it)."""
        caught: builtins.list[BaseException] = []
        try:
            yield caught
        except expect as exc:
            caught.append(exc)
        except Exception as exc:
            if missing and isinstance(exc, FileNotFoundError):
                raise self._missing(PurePosixPath(path)) from None
            raise self._error(action, path, exc) from None

    def _read(self, path: PurePosixPath, action: Callable[[], _T]) -> _T:
        with self._errors("read", path, missing=True):
            return action()

    def _write(self, path: PurePosixPath, write: Callable[[str], None]) -> None:
        """Run *write* on a temporary name then move it into place (local, memory), or
        straight at the destination (object stores publish on completion)."""
        dest = self._path(path)
        with self._errors("write", path):
            if not (self._protocols & _MOVE_INTO_PLACE):
                try:
                    write(dest)
                except BaseException:
                    with contextlib.suppress(Exception):
                        self.fs.rm_file(dest)
                    raise
                return
            parent, _, name = dest.rpartition("/")
            tmp = f"{parent}/{temp_name(name)}" if parent else temp_name(name)
            if self._protocols & _LOCAL:
                self.fs.makedirs(parent or "/", exist_ok=True)
            try:
                write(tmp)
                self.fs.mv(tmp, dest)
            except BaseException:
                with contextlib.suppress(Exception):
                    self.fs.rm_file(tmp)
                raise

    # -- the Store interface ---------------------------------------------------------
    def put(self, path: PurePosixPath, data: bytes | memoryview) -> None:
        self._write(path, lambda p: self.fs.pipe_file(p, bytes(data)))

    def put_file(self, path: PurePosixPath, src: BinaryIO) -> None:
        def write(p: str) -> None:
            with self.fs.open(p, "wb") as out:
                shutil.copyfileobj(src, out, COPY_CHUNK)

        self._write(path, write)

    def upload_file(self, path: PurePosixPath, src: Path) -> None:
        if self._protocols & _MOVE_INTO_PLACE:
            super().upload_file(path, src)
            return
        self._write(path, lambda p: self.fs.put_file(os.fspath(src), p))

    def get(self, path: PurePosixPath) -> bytes:
        return self._read(path, lambda: bytes(self.fs.cat_file(self._path(path))))

    def open(self, path: PurePosixPath) -> BinaryIO:
        def do() -> BinaryIO:
            if not self.fs.isfile(self._path(path)):
                raise FileNotFoundError(str(path))
            f: BinaryIO = self.fs.open(self._path(path), "rb")
            return f

        return self._read(path, do)

    def exists(self, path: PurePosixPath) -> bool:
        with self._errors("check", path):
            return bool(self.fs.isfile(self._path(path)))

    def remove(self, path: PurePosixPath) -> None:
        with self._errors("delete", path, expect=(FileNotFoundError,)):
            self.fs.rm_file(self._path(path))

    def _modified(self, name: str, info: Mapping[str, Any]) -> datetime.datetime:
        for key in _TIME_KEYS:
            found = _to_utc(info.get(key))
            if found is not None:
                return found
        try:
            found = _to_utc(self.fs.modified(name))
        except Exception:  # not implemented by this file system
            found = None
        # unknown: "now" keeps it through any grace period rather than risk a live write
        return found or datetime.datetime.now(datetime.UTC)

    def list(self, prefix: PurePosixPath) -> Iterator[ObjectInfo]:
        top = self._path(prefix)
        lead = "/" if str(prefix).startswith("/") else ""
        start = f"{self._root}/" if self._root else ""
        with self._errors("list", prefix, expect=(FileNotFoundError,)) as absent:
            found = self.fs.find(top, detail=True, withdirs=False)
        if absent:
            return
        for name, info in sorted(found.items()):
            name = str(name)
            if info.get("type", "file") != "file" or is_temp_name(name.rpartition("/")[2]):
                continue
            if not name.startswith(start):
                continue
            key = name[len(start) :].lstrip("/")
            yield ObjectInfo(
                PurePosixPath(lead + key), int(info.get("size") or 0), self._modified(name, info)
            )

    def cleanup(self, prefix: PurePosixPath) -> None:
        top = self._path(prefix)
        if self._protocols & _LOCAL:
            if not os.path.isdir(top):
                return
            for folder, _dirs, _files in os.walk(top, topdown=False):
                if folder != top:
                    with contextlib.suppress(OSError):  # not empty: keep it
                        os.rmdir(folder)
        elif "memory" in self._protocols:
            try:
                found = self.fs.find(top, detail=True, withdirs=True)
            except Exception:
                return
            folders = [n for n, i in found.items() if i.get("type") == "directory" and n != top]
            for folder in sorted(folders, key=lambda n: n.count("/"), reverse=True):
                with contextlib.suppress(Exception):  # not empty: keep it
                    self.fs.rmdir(folder)
        # object stores have no folders to remove

    def presigned_url(
        self, path: PurePosixPath, expires_in: int = 3600, *, filename: str | None = None
    ) -> str:
        if isinstance(expires_in, bool) or not isinstance(expires_in, int) or expires_in < 1:
            raise StoreError(
                f"store {self.name!r}: expires_in must be a whole number of seconds >= 1,"
                f" got {expires_in!r}"
            )
        with self._errors("sign a URL for", path, expect=(NotImplementedError,)) as unsigned:
            url: str = self.fs.sign(self._path(path), expiration=expires_in)
        if unsigned:
            return super().presigned_url(path, expires_in)
        return url

    def __repr__(self) -> str:
        return (
            f"FsspecStore(name={self.name!r}, url={_mask_url(self.url)!r},"
            f" location={self.location!r})"
        )

    # -- ranged reads ------------------------------------------------------------------
    def read_ranges(
        self, path: PurePosixPath, ranges: Sequence[tuple[int, int]]
    ) -> builtins.list[bytes]:
        """``cat_ranges`` (concurrent on asynchronous file systems) or ``cat_file`` with
        start and end."""
        full = self._path(path)

        def do() -> builtins.list[bytes]:
            wanted = [(s, n) for s, n in ranges if n > 0]
            if len(wanted) > 1 and hasattr(self.fs, "cat_ranges"):
                got = self.fs.cat_ranges(
                    [full] * len(wanted),
                    [s for s, _ in wanted],
                    [s + n for s, n in wanted],
                    on_error="raise",
                )
            else:
                got = [self.fs.cat_file(full, start=s, end=s + n) for s, n in wanted]
            found = iter(got)
            return [bytes(next(found)) if n > 0 else b"" for _, n in ranges]

        return self._read(path, do)
