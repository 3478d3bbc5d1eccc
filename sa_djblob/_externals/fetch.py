"""Reading payloads: through the local cache for remote stores, verified on every read."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from .. import _attach
from .._bigvalues import Unpacked, read_value
from .._exceptions import IntegrityError
from .._kinds import verify
from .._layout import attachment_prefix, copy_hashed, file_matches
from .._pool import call
from ..stores import get_cache

if TYPE_CHECKING:
    from .._area import Area

__all__ = ["fetch_attachment", "fetch_blob", "fetch_bytes", "open_payload"]


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
        cache.put(key, data)
    return data


def fetch_blob(area: Area, key: uuid.UUID) -> bytes | Unpacked:
    """A blob payload read as a stream and verified as it arrives: a large numeric array
    straight into its final buffer (:class:`Unpacked`), anything else as its bytes. A
    remote store's payload is copied into the cache first (verified), then read from it."""
    store = area.store
    path = area.path(key)

    def corrupt() -> str:
        return (
            f"payload {key} in store {store.name!r} at {path} does not match its hash"
            f" ({store.hash}): it was changed or corrupted"
        )

    def read(f: BinaryIO, size: Callable[[], int | None]) -> bytes | Unpacked:
        return read_value(f, key, store.hash, corrupt, size)

    cache = get_cache() if store.is_remote else None
    if cache is None:
        with call(store.open, path) as f:
            return read(f, lambda: _size(f) or store.size(path))
    entry = cache.path(key)
    if entry is None:

        def fill(out: BinaryIO) -> None:
            with call(store.open, path) as src:
                if copy_hashed(src, out, algorithm=store.hash) != key:
                    raise IntegrityError(corrupt())

        entry = cache.fill(key, fill)
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
        cache.put_file(key, result)
    return result
