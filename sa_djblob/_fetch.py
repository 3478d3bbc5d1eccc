"""Reading payloads, verified on every read: blobs and attachments through the local cache
for remote stores, and filepath objects into their stage folder.

This layer sits under the kinds (``_kinds`` asks it to load a value) and over the stores;
it knows nothing of SQL.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, BinaryIO

from . import _attach
from ._bigvalues import Unpacked, read_value
from ._exceptions import (
    ConfigError,
    IntegrityError,
    MissingPayloadError,
    SaDjblobError,
    StageError,
    StoreError,
)
from ._layout import attachment_prefix, content_hash, copy_hashed, file_matches
from ._pool import call
from ._util import discard as _unlink
from .stores import FileStore, Store, get_cache

if TYPE_CHECKING:
    from ._area import Area

__all__ = [
    "FileRef",
    "fetch_attachment",
    "fetch_blob",
    "fetch_bytes",
    "fetch_filepath",
    "filepath_object",
    "open_payload",
    "same_file",
    "stage_folder",
    "verify",
]


def fetch_bytes(area: Area, key: uuid.UUID) -> bytes:
    """The verified bytes of a blob payload, through the cache for remote stores."""
    store = area.store
    cache = get_cache() if store.is_remote else None
    if cache is not None:
        hit = cache.get(key, store.hash)
        if hit is not None:
            return hit
    path = area.path(key)
    data = verify(store, key, path, call(store.get, path))
    if cache is not None:
        cache.offer(key, data)
    return data


def fetch_blob(area: Area, key: uuid.UUID) -> bytes | Unpacked:
    """A blob payload read as a stream and verified as it arrives: a large numeric array
    straight into its final buffer (:class:`Unpacked`), anything else as its bytes. A
    remote store's payload is copied into the cache first (verified), then read from it."""
    store = area.store
    cache = get_cache() if store.is_remote else None
    # a file store opens the name as it is: a path object per row cost as much as a
    # small file's read
    name = area.object_name(key) if isinstance(store, FileStore) and cache is None else None
    path = area.path(key) if name is None else None

    def corrupt() -> str:
        return (
            f"payload {key} in store {store.name!r} at {name or path} does not match its"
            f" hash ({store.hash}): it was changed or corrupted"
        )

    def read(f: BinaryIO, size: Callable[[], int | None]) -> bytes | Unpacked:
        return read_value(f, key, store.hash, corrupt, size)

    if name is not None and isinstance(store, FileStore):
        with call(store.open, name) as f:
            return read(f, lambda: _size(f) or store.size(name))
    assert path is not None
    if cache is None:
        with call(store.open, path) as f:
            return read(f, lambda: _size(f) or store.size(path))
    entry = cache.path(key)
    if entry is None:

        def fill(out: BinaryIO) -> None:
            with call(store.open, path) as src:
                if copy_hashed(src, out, algorithm=store.hash) != key:
                    raise IntegrityError(corrupt())

        try:
            entry = cache.fill(key, fill)
        except (MissingPayloadError, IntegrityError):
            raise
        except StoreError as exc:  # the cache cannot be written (a full disk): no cache
            cache.note_write_failure(exc)
            with call(store.open, path) as f:
                return read(f, lambda: _size(f) or store.size(path))
    try:
        with open(entry, "rb") as f:
            return read(f, lambda: os.fstat(f.fileno()).st_size)
    except OSError:
        pass  # evicted meanwhile: read the store
    except IntegrityError:
        cache._drop_corrupt(entry)  # damaged on disk: dropped, the store is read
    with call(store.open, path) as f:
        return read(f, lambda: None)


def _size(f: BinaryIO) -> int | None:
    """The size of an open payload, if the stream can tell (seeking to its end)."""
    try:
        if not f.seekable():
            return None
        at = f.tell()
        end = f.seek(0, os.SEEK_END)
        f.seek(at)
    except (OSError, ValueError):
        return None
    return end


@contextlib.contextmanager
def open_payload(area: Area, key: uuid.UUID, name: str | None) -> Iterator[BinaryIO]:
    """A readable stream of a payload (not verified: the caller hashes what it reads)."""
    store = area.store
    cache = get_cache() if store.is_remote else None
    if cache is not None:
        prefix = b"" if name is None else attachment_prefix(name)
        cached = cache.open_verified(key, store.hash, prefix=prefix)
        if cached is not None:
            with cached:
                yield cached
            return
    with call(store.open, area.path(key, name)) as f:
        yield f


def fetch_attachment(area: Area, key: uuid.UUID, name: str) -> Path:
    """Write a verified external attachment into ``download_path``; return its path."""
    _attach.check_name(name)
    store = area.store
    prefix = attachment_prefix(name)

    def fill(out: BinaryIO) -> None:
        with open_payload(area, key, name) as src:
            got = copy_hashed(src, out, prefix=prefix, algorithm=store.hash)
        if got != key:
            raise IntegrityError(
                f"attachment {key} in store {store.name!r} at {area.path(key, name)} does not"
                f" match its hash ({store.hash}): it was changed or corrupted"
            )
        out.flush()

    result = _attach.write_download(
        name, lambda p: file_matches(p, key, prefix=prefix, algorithm=store.hash), fill
    )
    cache = get_cache() if store.is_remote else None
    if cache is not None and cache.path(key) is None:
        cache.offer_file(key, result)
    return result


def verify(store: Store, key: uuid.UUID, where: object, data: bytes) -> bytes:
    """*data* if it hashes to *key* with the store's algorithm, else ``IntegrityError``."""
    if content_hash(data, algorithm=store.hash) != key:
        raise IntegrityError(
            f"payload {key} in store {store.name!r} at {where} does not match its hash"
            f" ({store.hash}): it was changed or corrupted"
        )
    return data


@dataclass(frozen=True)
class FileRef:
    """What the reader selects for a filepath: the relative path and the contents hash
    (None: DataJoint recorded none, its checksum size limit)."""

    filepath: str
    contents_hash: uuid.UUID | None


def filepath_object(store: Store, relpath: str) -> PurePosixPath:
    """The object of a filepath: ``<store root>/<relative path>`` (DataJoint's
    ``_make_external_filepath``), refusing a path that would leave the root."""
    rel = PurePosixPath(relpath)
    if not relpath or rel.is_absolute() or any(p in ("..", ".") for p in relpath.split("/")):
        raise SaDjblobError(
            f"filepath {relpath!r} of store {store.name!r} is not a plain relative path: the"
            " externals row was changed by hand; fix or delete it"
        )
    return store.root / rel


def stage_folder(store: Store) -> Path:
    """The local stage folder of *store* (Filepath columns), absolute."""
    if not store.stage:
        raise ConfigError(
            f"store {store.name!r} has no 'stage' setting: Filepath columns need the"
            f" local stage folder, set djb.config['stores'][{store.name!r}]['stage']"
        )
    return Path(os.path.abspath(store.stage))


def fetch_filepath(store: Store, ref: FileRef) -> Path:
    """The file of *ref* in the stage folder: kept if it matches the contents hash,
    otherwise downloaded from the store (to a temporary file, verified, linked into place).

    A file that is there and differs (edited after it was stored) is never replaced: the
    user's edits are kept and ``StageError`` says so. Nothing is written through a folder
    that leads out of the stage (a symbolic link)."""
    source = filepath_object(store, ref.filepath)
    stage = stage_folder(store)
    local = stage / ref.filepath
    _check_inside(store, stage, local)
    if os.path.lexists(local):
        return _existing(store, ref, local, source)
    local.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{local.name[:40]}.", suffix=".djb-part", dir=local.parent)
    try:
        with os.fdopen(fd, "wb") as out, store.open(source) as src:
            got = copy_hashed(src, out, algorithm=store.hash)
            out.flush()
            os.fsync(out.fileno())
        if ref.contents_hash is not None and got != ref.contents_hash:
            raise _corrupt(store, ref, source)
        try:
            os.link(tmp, local)  # never over a file that appeared meanwhile
        except FileExistsError:
            return _existing(store, ref, local, source)
        except OSError:  # a file system without hard links
            if os.path.lexists(local):
                return _existing(store, ref, local, source)
            os.replace(tmp, local)
    finally:
        _unlink(Path(tmp))
    return local


def _check_inside(store: Store, stage: Path, local: Path) -> None:
    """Refuse a stage file whose folder resolves outside the stage (a symbolic link)."""
    real_stage = os.path.realpath(stage)
    real = os.path.realpath(local.parent)
    if os.path.commonpath([real_stage, real]) != real_stage:
        raise StageError(
            f"{local} leads outside the stage folder {stage} of store {store.name!r} (to"
            f" {real}, through a symbolic link): nothing was written there; read it with the"
            " link removed, or point the stage setting at the folder the link leads to"
        )


def _existing(store: Store, ref: FileRef, local: Path, source: PurePosixPath) -> Path:
    """*local*, which exists: returned if it holds the stored version, else an error."""
    if local.is_file() and (
        ref.contents_hash is None or file_matches(local, ref.contents_hash, algorithm=store.hash)
    ):
        return local
    if store.local_paths and same_file(Path(source), local):
        raise _corrupt(store, ref, source)  # the stage is the store: its object changed
    raise StageError(
        f"{local} differs from the stored version of filepath {ref.filepath!r} in store"
        f" {store.name!r}: it was changed after it was stored and is kept as it is. Move or"
        " delete it to read the stored version, or store your edits under a new file name"
    )


def _corrupt(store: Store, ref: FileRef, source: PurePosixPath) -> IntegrityError:
    return IntegrityError(
        f"file {ref.filepath!r} in store {store.name!r} at {source} does not match"
        f" its contents hash ({store.hash}): it was changed or corrupted"
    )


def same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
