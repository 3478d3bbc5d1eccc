"""A cache entry evicted under a reader is a miss, never an error."""

from __future__ import annotations

import concurrent.futures
import os
import uuid
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

import sa_djblob as djb
from sa_djblob._area import Area
from sa_djblob._fetch import fetch_attachment, fetch_bytes
from sa_djblob._layout import attachment_prefix, content_hash, object_path
from sa_djblob.stores import Cache, MemoryStore, get_cache


class RemoteMemoryStore(MemoryStore):
    """A memory store that reads through the cache, like S3."""

    @property
    def is_remote(self) -> bool:
        return True


READERS = 4
ROUNDS = 150


@pytest.fixture
def remote(tmp_path: Path) -> Iterator[RemoteMemoryStore]:
    location = "race-" + uuid.uuid4().hex[:8]
    store = RemoteMemoryStore("remote", location=location)
    # room for about two of the payloads below: every fill evicts someone's entry
    djb.config["cache"] = str(tmp_path / "cache")
    djb.config["cache_limit"] = 150_000
    yield store
    MemoryStore.clear(location)


def _hammer(job: Any, items: list[list[Any]]) -> list[BaseException]:
    """Each of READERS threads runs *job* ROUNDS times over its own list of items."""
    errors: list[BaseException] = []

    def reader(mine: list[Any]) -> None:
        for i in range(ROUNDS):
            try:
                job(mine[i % len(mine)])
            except BaseException as exc:  # counted by the test
                errors.append(exc)

    with concurrent.futures.ThreadPoolExecutor(READERS) as pool:
        for f in [pool.submit(reader, items[n]) for n in range(READERS)]:
            f.result()
    return errors


def test_attachment_reads_survive_eviction(remote: RemoteMemoryStore, tmp_path: Path) -> None:
    # each reader its own attachment names (its downloads are removed after each read,
    # so every read goes to the cache), all sharing one tiny cache
    items: list[list[Any]] = []
    for r in range(READERS):
        mine = []
        for n in range(2):
            name = f"part{r}-{n}.bin"
            data = os.urandom(60_000 + n)
            key = content_hash(attachment_prefix(name), data, algorithm=remote.hash)
            path = object_path(remote.location, "main", key, name, remote.subfolding)
            remote.put(path, data)
            mine.append((key, path, name, data))
        items.append(mine)

    def job(item: tuple[uuid.UUID, PurePosixPath, str, bytes]) -> None:
        key, _path, name, data = item
        got = fetch_attachment(Area(remote, "main"), key, name)
        try:
            assert got.read_bytes() == data
        finally:
            got.unlink()

    errors = _hammer(job, items)
    assert errors == [], f"{len(errors)} of {READERS * ROUNDS} reads failed: {errors[:3]!r}"
    cache = get_cache()
    assert cache is not None and cache.total_size() > 0


def test_blob_reads_survive_eviction(remote: RemoteMemoryStore) -> None:
    items = []
    for n in range(6):
        data = os.urandom(60_000 + n)
        key = content_hash(data, algorithm=remote.hash)
        path = object_path(remote.location, "main", key, None, remote.subfolding)
        remote.put(path, data)
        items.append((key, path, data))

    def job(item: tuple[uuid.UUID, PurePosixPath, bytes]) -> None:
        key, _path, data = item
        assert fetch_bytes(Area(remote, "main"), key) == data

    assert _hammer(job, [items[n:] + items[:n] for n in range(READERS)]) == []


def test_open_verified(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    data = os.urandom(10_000)
    key = content_hash(data)
    assert cache.open_verified(key) is None  # a miss
    entry = cache.put(key, data)
    f = cache.open_verified(key)
    assert f is not None
    with f:
        entry.unlink()  # evicted while open: the handle still reads the whole entry
        assert f.read() == data
    entry = cache.put(key, data)
    entry.write_bytes(bytes([data[0] ^ 0xFF]) + data[1:])  # corrupt: dropped, a miss
    assert cache.open_verified(key) is None
    assert cache.path(key) is None
    prefix = attachment_prefix("a.txt")
    key2 = content_hash(prefix, data)
    cache.put(key2, data)
    f = cache.open_verified(key2, prefix=prefix)
    assert f is not None
    with f:
        assert f.read() == data
