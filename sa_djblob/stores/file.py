"""A store in a local or mounted folder (DataJoint's ``protocol="file"``)."""

from __future__ import annotations

import builtins
import contextlib
import contextvars
import ctypes
import datetime
import errno
import functools
import os
import shutil
import stat
import sys
import threading
import types
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, ClassVar, TypeVar

from .._exceptions import MissingPayloadError, StoreError
from .._pool import run_all
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

__all__ = ["FileStore", "pread_ranges"]

_T = TypeVar("_T")
_MKDIR_RETRIES = 5  # a concurrent cleanup() may remove a folder we just made
# In a batch, a file this large is fsynced as soon as it is written (by the thread that
# wrote it, so its flush to disk overlaps the next writes); smaller ones wait for the
# batch's concurrent fsyncs. One fsync per MiB or more costs little either way.
_SYNC_AT_ONCE = 1 << 20
# A batch of at least this many files is made durable with syncfs(2) where the file
# system is known to honour it (below): one call instead of an fsync per file and folder.
_SYNCFS_FROM = 16
# File systems whose syncfs(2) writes and waits for all their dirty data and metadata.
# Others (FUSE mounts before Linux 5.15, network file systems) may not: they get fsyncs.
_MOUNTINFO = "/proc/self/mountinfo"
_SYNCFS_FILE_SYSTEMS = frozenset({"ext3", "ext4", "xfs", "btrfs", "f2fs", "tmpfs"})


class _Batch:
    """The writes a ``durable_batch`` block holds back: (temporary file, destination)."""

    def __init__(self) -> None:
        self.written: list[tuple[Path, Path]] = []
        self.synced: set[Path] = set()  # temporary files already fsynced
        self._lock = threading.Lock()  # uploads run on several threads
        # A folder of each file system written to, opened before the batch's first file
        # there, by device. syncfs(2) on it reports every write-back error of that file
        # system since it was opened; a descriptor opened later would miss an error that
        # another caller's sync (another process's `sync -f`, background write-back) has
        # already been told of, and the batch's payloads would be trusted.
        self.watched: dict[int, int] = {}
        self.unwatched = False  # a folder could not be watched: fsyncs for this batch
        self.devices: dict[str, int] = {}  # the device of each folder written to

    def watch(self, folder: Path) -> None:
        """Before a file is written into *folder*: keep its file system's folder open."""
        if self.unwatched or not _syncfs_trusted():
            return
        try:
            dev = os.stat(folder).st_dev
            with self._lock:
                self.devices[os.fspath(folder)] = dev
                if dev not in self.watched:
                    self.watched[dev] = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except OSError:
            self.unwatched = True

    def close(self) -> None:
        with self._lock:
            fds, self.watched = list(self.watched.values()), {}
        for fd in fds:
            os.close(fd)

    def add(self, tmp: Path, dest: Path, synced: bool) -> None:
        with self._lock:
            self.written.append((tmp, dest))
            if synced:
                self.synced.add(tmp)


# The open batches of the current context, by store object. The write path's worker
# threads run in a copy of the caller's context, so they see its batches.
_batches: contextvars.ContextVar[Mapping[int, _Batch]] = contextvars.ContextVar(
    "sa_djblob_file_batches", default=types.MappingProxyType({})
)


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

    Inside :meth:`durable_batch` (the write path opens one per statement) the same
    steps are taken for all the block's writes together: every file is written, their
    fsyncs are issued concurrently, each is renamed into place, then the folders are
    fsynced concurrently, each once. The file system commits concurrent fsyncs in
    shared journal transactions, so this costs a fraction of one write after another.
    """

    protocol = "file"
    local_paths = True
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

    def _missing(self, path: PurePosixPath | str) -> MissingPayloadError:
        return MissingPayloadError(f"store {self.name!r}: payload {path} is missing (no such file)")

    def _write_atomic(self, path: PurePosixPath, write: Callable[[BinaryIO], None]) -> None:
        dest = Path(path)
        batch = _batches.get().get(id(self)) if self.fsync else None
        for attempt in range(_MKDIR_RETRIES):
            tmp = dest.with_name(temp_name(dest.name))
            try:
                self._make_folder(dest.parent)
                if batch is not None:
                    batch.watch(dest.parent)
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
                synced = self.fsync and (batch is None or f.tell() >= _SYNC_AT_ONCE)
                if synced:
                    f.flush()
                    os.fsync(f.fileno())
            if batch is not None:
                batch.add(tmp, dest, synced)  # renamed (and synced) when the batch ends
                return
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

    def _make_folder(self, folder: Path) -> None:
        """``mkdir -p`` *folder* (one ``stat`` if it is there). With ``fsync``, a folder
        made now (again, maybe, after another process's cleanup() removed it) and its
        parents up to the location are to be made durable again: forgotten *before* it
        is made, so that a writer on another thread that finds it there also finds it
        not durable."""
        if os.path.isdir(folder):
            return
        if self.fsync:
            self._forget(folder)
        folder.mkdir(parents=True, exist_ok=True)

    def _top(self) -> str:
        return os.path.abspath(self.location or ".")

    def _forget(self, folder: Path) -> None:
        """*folder* and its parents up to the location are no longer known to be durable."""
        top = self._top()
        d = os.path.abspath(folder)
        while True:
            self._durable.discard(d)
            parent = os.path.dirname(d)
            if d == top or parent == d or not _inside(d, top):
                return
            d = parent

    def _sync_folders(self, folder: Path) -> None:
        """Make the new entry in *folder*, and its own entries up to ``location``, durable."""
        sync, made = self._folders_to_sync([folder])
        for d in sync:
            _sync_dir(d)
        self._durable.update(made)

    def _folders_to_sync(self, folders: Iterable[Path]) -> tuple[list[str], list[str]]:
        """The folders to fsync, bottom-up, so that new entries in *folders* are durable;
        and the folders whose own entry that makes durable (to remember).

        Each of *folders* is synced (it holds a renamed payload). Each ancestor up to the
        store's location is made durable by syncing its parent, unless this object did
        so before; a folder made by a concurrent writer is synced here too, so this
        write does not rely on that writer finishing first.
        """
        top = self._top()
        sync: dict[str, None] = {}  # ordered and each folder once
        made: dict[str, None] = {}
        for folder in folders:
            d = os.path.abspath(folder)
            sync[d] = None
            while d not in self._durable and d not in made:
                parent = os.path.dirname(d)
                if parent == d:
                    break  # the file system root
                sync[parent] = None
                made[d] = None
                if d == top or not _inside(d, top):
                    break  # reached (or outside of) the location: its parents existed before
                d = parent
        return list(sync), list(made)

    @contextlib.contextmanager
    def durable_batch(self) -> Iterator[None]:
        """Hold the block's writes back, then make them durable together (group commit).

        Without ``fsync``, or inside an open batch of this store, writes go on as usual.
        """
        if not self.fsync or id(self) in _batches.get():
            yield
            return
        batch = _Batch()
        token = _batches.set({**_batches.get(), id(self): batch})
        try:
            try:
                yield
            except BaseException:
                _batches.reset(token)
                for tmp, _ in batch.written:
                    _discard(tmp)
                raise
            _batches.reset(token)
            self._make_durable(batch)
        finally:
            batch.close()

    def _make_durable(self, batch: _Batch) -> None:
        """Sync every file's data, rename each into place, then sync their folders.

        Many files on a file system whose ``syncfs`` can be trusted: one ``syncfs`` for
        the data, one for the renames (Linux waits for both to reach stable storage, the
        guarantee of an fsync of every file and folder). Otherwise each step's fsyncs are
        issued concurrently, so they share journal commits."""
        written = batch.written
        if not written:
            return
        done = 0
        try:
            fds = None
            if len(written) >= _SYNCFS_FROM and not batch.unwatched:
                fds = _syncfs_fds(
                    batch.watched, (dest.parent for _, dest in written), batch.devices
                )
            if fds is None:
                run_all(_sync_file, [tmp for tmp, _ in written if tmp not in batch.synced])
            else:
                run_all(_syncfs, list(fds.values()))  # the data, under the temporary names
            for tmp, dest in written:
                os.replace(tmp, dest)
                done += 1
        except BaseException as exc:
            for tmp, _ in written[done:]:
                _discard(tmp)
            if isinstance(exc, OSError):
                what = f"{len(written) - done} payload(s) such as"
                raise self._error(f"write {what}", written[done][1], exc) from None
            raise
        sync, made = self._folders_to_sync(dest.parent for _, dest in written)
        try:
            if fds is not None:
                # the renames and new folders; a folder's parent outside these file
                # systems (the location's, once) is fsynced
                run_all(_syncfs, list(fds.values()))
                known = {os.path.abspath(f): dev for f, dev in batch.devices.items()}

                def synced(d: str) -> bool:
                    dev = known.get(d)
                    return (_device(d) if dev is None else dev) in fds

                sync = [d for d in sync if not synced(d)]
            run_all(_sync_dir, sync)
        except OSError as exc:
            raise self._error("sync the folders of", written[0][1].parent, exc) from None
        self._durable.update(made)

    def _read(self, path: PurePosixPath | str, action: Callable[[], _T]) -> _T:
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
        return self._read(path, lambda: _read_file(path))

    def open(self, path: PurePosixPath | str) -> BinaryIO:
        # (a string too: the read path opens ``Area.object_name``)
        return self._read(path, lambda: open(path, "rb"))

    def size(self, path: PurePosixPath | str) -> int | None:
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

    # -- ranged reads --------------------------------------------------------------
    def read_ranges(
        self, path: PurePosixPath, ranges: Sequence[tuple[int, int]]
    ) -> builtins.list[bytes]:
        """Positioned reads (``os.pread``) on one open file."""
        return self._read(path, lambda: pread_ranges(path, ranges))


def _pread(fd: int, length: int, start: int) -> bytes:
    if hasattr(os, "pread"):
        return os.pread(fd, length, start)
    os.lseek(fd, start, os.SEEK_SET)  # pragma: no cover - Windows
    return os.read(fd, length)  # pragma: no cover


def pread_ranges(
    path: PurePosixPath | Path | str, ranges: Sequence[tuple[int, int]]
) -> list[bytes]:
    """The bytes of each ``(start, length)`` of the file at *path* (fewer at its end)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        out: list[bytes] = []
        for start, length in ranges:
            parts: list[bytes] = []
            while length > 0:
                got = _pread(fd, min(length, 1 << 30), start)
                if not got:
                    break
                parts.append(got)
                start += len(got)
                length -= len(got)
            out.append(parts[0] if len(parts) == 1 else b"".join(parts))
        return out
    finally:
        os.close(fd)


def _read_file(path: PurePosixPath) -> bytes:
    """The whole file, in as few system calls as can be (most payloads are small, and a
    payload file never changes once it is in place)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        size = os.fstat(fd).st_size
        data = os.read(fd, size + 1)
        if len(data) == size:
            return data
        parts = [data]  # a short read (or a file that grew): read on to the end
        while chunk := os.read(fd, COPY_CHUNK):
            parts.append(chunk)
        return b"".join(parts)
    finally:
        os.close(fd)


@functools.cache
def _libc_syncfs() -> Callable[[int], int] | None:
    """Linux's ``syncfs(2)`` (glibc, musl), or None where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


def _mounts() -> dict[int, str]:
    """The type of each mounted file system, by device number (/proc/self/mountinfo).

    Read again for every batch (a fraction of a millisecond): a device number freed by an
    unmount may be given to a mount of another type (a FUSE mount taking a former tmpfs's
    anonymous device), and a stale answer would trust its syncfs."""
    found: dict[int, str] = {}
    try:
        with open(_MOUNTINFO, encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split()
                if "-" not in fields:
                    continue
                major, _, minor = fields[2].partition(":")
                fstype = fields[fields.index("-") + 1]
                found[os.makedev(int(major), int(minor))] = fstype
    except (OSError, ValueError):
        return {}
    return found


def _device(folder: str | Path) -> int:
    return os.stat(folder).st_dev


def _inside(path: str, top: str) -> bool:
    """Whether the absolute normalized *path* is *top* or below it."""
    return path == top or path.startswith(top if top.endswith(os.sep) else top + os.sep)


def _syncfs_fds(
    watched: Mapping[int, int], folders: Iterable[Path], devices: Mapping[str, int] | None = None
) -> dict[int, int] | None:
    """The batch's watched descriptor of each file system that holds *folders*, by device
    (*devices*: those already known, by folder); None unless each of them was watched (so
    ``syncfs`` reports errors there: Linux 5.8+) and is of a type known to honour
    ``syncfs`` (then fsyncs are used)."""
    mounts = _mounts()
    fds: dict[int, int] = {}
    for folder in {os.fspath(f) for f in folders}:
        dev = devices.get(folder) if devices else None
        if dev is None:
            dev = _device(folder)
        if dev not in fds:
            if dev not in watched or mounts.get(dev) not in _SYNCFS_FILE_SYSTEMS:
                return None
            fds[dev] = watched[dev]
    return fds


@functools.cache
def _syncfs_trusted() -> bool:
    """Whether ``syncfs(2)`` is there and reports write-back errors (Linux 5.8 and
    later; earlier kernels returned 0 whatever happened)."""
    if _libc_syncfs() is None:
        return False
    release = os.uname().release
    try:
        major, minor = (int(x) for x in release.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (5, 8)


def _syncfs(fd: int) -> None:
    """``syncfs(2)`` of the file system of the open folder *fd*: on Linux it returns once
    all of that file system's dirty data and metadata are on stable storage, and reports a
    write-back error that happened since *fd* was opened."""
    syncfs = _libc_syncfs()
    assert syncfs is not None
    if syncfs(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _sync_file(path: Path) -> None:
    """fsync a file written (and closed) before, so its data survives a power loss."""
    fd = os.open(path, os.O_RDWR | getattr(os, "O_BINARY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
