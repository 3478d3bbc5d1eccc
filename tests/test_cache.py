"""The content-addressed local cache of remote payloads."""

from __future__ import annotations

import concurrent.futures
import io
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any, BinaryIO

import pytest

import sa_djblob as djb
from sa_djblob._exceptions import StoreError
from sa_djblob._layout import content_hash
from sa_djblob.stores import Cache, get_cache


def key_of(data: bytes, algorithm: str = "md5") -> uuid.UUID:
    return content_hash(data, algorithm=algorithm)


def verified_entry(
    cache: Cache, key: uuid.UUID, algorithm: str = "md5", prefix: bytes = b""
) -> Path | None:
    """The file of entry *key* as the public, verified read opens it (None: a miss)."""
    f = cache.open_verified(key, algorithm, prefix)
    if f is None:
        return None
    with f:
        return Path(f.name)


def test_cache_offers_only_verified_reads() -> None:
    """No path-returning read that the eviction could invalidate before the caller
    opens it: entries are read through open_verified (or get/path)."""
    assert not hasattr(Cache, "get_file")


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_miss_then_hit(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    data = b"some payload"
    key = key_of(data)
    assert cache.get(key) is None
    assert cache.path(key) is None
    assert verified_entry(cache, key) is None
    entry = cache.put(key, data)
    h = key.hex
    assert entry == tmp_path / "cache" / h[:2] / h[2:4] / h
    assert entry.read_bytes() == data
    assert cache.get(key) == data
    assert cache.path(key) == entry
    assert verified_entry(cache, key) == entry
    assert files_under(tmp_path / "cache") == [entry]  # no temporary files left


def test_sha256_keys(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    data = os.urandom(5000)
    key = key_of(data, "sha256")
    cache.put(key, data)
    assert cache.get(key, "sha256") == data
    assert verified_entry(cache, key, "sha256") is not None
    # read with the wrong algorithm, the entry does not verify and is dropped
    assert cache.get(key, "md5") is None
    assert cache.path(key) is None


def test_corrupt_entry_is_removed(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    data = b"the real bytes"
    key = key_of(data)
    entry = cache.put(key, data)
    entry.write_bytes(b"the rea1 bytes")
    assert cache.get(key) is None
    assert not entry.exists()
    cache.put(key, data)
    entry.write_bytes(b"truncated")
    assert verified_entry(cache, key) is None
    assert not entry.exists()


def test_attachment_entries_verify_with_prefix(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "c")
    contents = os.urandom(3 << 20)
    prefix = b"photo.png\0"
    key = content_hash(prefix, contents)  # DataJoint's attachment hash
    src = tmp_path / "photo.png"
    src.write_bytes(contents)
    entry = cache.put_file(key, src)
    assert entry.read_bytes() == contents
    assert verified_entry(cache, key, prefix=prefix) == entry
    assert cache.get(key, prefix=prefix) == contents
    assert verified_entry(cache, key) is None  # without the name it does not match: dropped


def test_failed_fill_leaves_nothing(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    data = b"x" * 100
    key = key_of(data)

    class Broken(io.RawIOBase):
        def __init__(self) -> None:
            self.sent = False

        def readable(self) -> bool:
            return True

        def readinto(self, b: Any) -> int:
            if self.sent:
                raise OSError(5, "Input/output error")
            self.sent = True
            b[:10] = data[:10]
            return 10

    def fill(f: BinaryIO) -> None:
        f.write(io.BufferedReader(Broken()).read())

    with pytest.raises(StoreError, match="cache"):
        cache._fill(key, fill)
    assert cache.path(key) is None
    assert files_under(tmp_path) == []


def test_readers_never_see_a_partial_entry(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    data = os.urandom(4 << 20)
    key = key_of(data)
    stop = threading.Event()
    seen: list[bytes | None] = []

    def read() -> None:
        while not stop.is_set():
            seen.append(cache.get(key))

    def fill() -> None:
        for _ in range(10):
            cache.put(key, data)

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        readers = [pool.submit(read) for _ in range(2)]
        writers = [pool.submit(fill) for _ in range(2)]
        for w in writers:
            w.result()
        stop.set()
        for r in readers:
            r.result()
    assert all(s is None or s == data for s in seen)
    assert any(s == data for s in seen) or cache.get(key) == data
    assert files_under(tmp_path) == [cache.path(key)]


def _put_aged(cache: Cache, data: bytes, age: float) -> uuid.UUID:
    key = key_of(data)
    entry = cache.put(key, data)
    t = time.time() - age
    os.utime(entry, (t, t))
    return key


def test_lru_eviction_under_limit(tmp_path: Path) -> None:
    cache = Cache(tmp_path, limit=3500)
    a = _put_aged(cache, b"a" * 1000, 400)
    b = _put_aged(cache, b"b" * 1000, 300)
    c = _put_aged(cache, b"c" * 1000, 200)
    assert cache.total_size() == 3000
    assert cache.get(a) is not None  # a hit makes 'a' the most recently used
    d = key_of(b"d" * 1000)
    cache.put(d, b"d" * 1000)  # 4000 > 3500: the least recently used ('b') goes
    assert cache.path(b) is None
    assert all(cache.path(k) is not None for k in (a, c, d))
    assert cache.total_size() == 3000
    big = b"e" * 3000
    e = key_of(big)
    cache.put(e, big)  # everything else goes to make room
    assert [cache.path(k) for k in (a, c, d)] == [None, None, None]
    assert cache.path(e) is not None
    assert cache.total_size() == 3000
    assert sum(p.stat().st_size for p in files_under(tmp_path)) <= 3500


def test_entry_larger_than_limit_is_kept_until_next_fill(tmp_path: Path) -> None:
    cache = Cache(tmp_path, limit=100)
    key = key_of(b"z" * 500)
    cache.put(key, b"z" * 500)
    assert cache.get(key) == b"z" * 500  # usable right after the fill
    other = key_of(b"y")
    cache.put(other, b"y")
    assert cache.path(key) is None and cache.get(other) == b"y"


def test_limit_applies_to_existing_contents(tmp_path: Path) -> None:
    unbounded = Cache(tmp_path)
    old = [_put_aged(unbounded, bytes([i]) * 1000, 1000 - i) for i in range(5)]
    stale = tmp_path / "00" / ".leftover.tmp-abcdef"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"x" * 10_000)
    bounded = Cache(tmp_path, limit=2500)
    assert bounded.total_size() == 5000  # the temporary file does not count
    new = key_of(b"new")
    bounded.put(new, b"new")
    kept = [k for k in old if bounded.path(k) is not None]
    assert kept == old[-2:]  # the two most recent old entries fit with the new one
    assert bounded.path(new) is not None
    assert bounded.total_size() <= 2500


def test_clear(tmp_path: Path) -> None:
    cache = Cache(tmp_path, limit=10_000)
    k = key_of(b"1")
    cache.put(k, b"1")
    cache.clear()
    assert cache.path(k) is None and cache.total_size() == 0


def test_invalid_limit(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Cache(tmp_path, limit=0)


def test_unwritable_cache_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    cache = Cache(blocker / "cache")
    with pytest.raises(StoreError) as info:
        cache.put(key_of(b"x"), b"x")
    assert "djb.config['cache']" in str(info.value)
    assert cache.get(key_of(b"x")) is None


def test_get_cache_follows_config(tmp_path: Path) -> None:
    djb.config["cache"] = None
    assert get_cache() is None
    djb.config["cache"] = str(tmp_path / "c1")
    c1 = get_cache()
    assert isinstance(c1, Cache) and c1.root == tmp_path / "c1" and c1.limit is None
    assert get_cache() is c1
    djb.config["cache_limit"] = 1 << 20
    c2 = get_cache()
    assert c2 is not c1 and c2 is not None and c2.limit == 1 << 20
    assert get_cache() is c2
    djb.config["cache"] = str(tmp_path / "c2")
    c3 = get_cache()
    assert c3 is not None and c3.root == tmp_path / "c2"
    del djb.config["cache"]
    assert get_cache() is None
