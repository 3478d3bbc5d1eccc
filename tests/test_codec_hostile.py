"""Hostile blobs within the size limits: hash flooding, object and zlib bombs; the
``legacy_u32`` and ``max_expansion`` settings."""

from __future__ import annotations

import contextlib
import struct
import time
import tracemalloc
import uuid
import zlib
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import numpy as np
import pytest

import sa_djblob as djb
from sa_djblob import BlobFormatError, ConfigError, pack, unpack

U64 = struct.Struct("<Q")
U32 = struct.Struct("<I")
#: on 64-bit CPython, ints that differ by a multiple of this share one hash value
MODULUS = 2**61 - 1


def _item(value: Any) -> bytes:
    """The packed item of ``value`` (without header), with its u64 length prefix."""
    body = pack(value, compress=False)[4:]
    return U64.pack(len(body)) + body


def _dict_blob(keys: list[Any]) -> bytes:
    none = _item(None)
    return b"dj0\0\x04" + U64.pack(len(keys)) + b"".join(_item(k) + none for k in keys)


def _set_blob(keys: list[Any]) -> bytes:
    return b"dj0\0\x03" + U64.pack(len(keys)) + b"".join(_item(k) for k in keys)


COLLIDING: dict[str, Callable[[int], Any]] = {
    "int": lambda k: k * MODULUS,
    "tuple": lambda k: (k * MODULUS, 1),
    "Decimal": lambda k: Decimal(k * MODULUS),
    "UUID": lambda k: uuid.UUID(int=k * MODULUS),
    "np.uint64": lambda k: np.uint64(k * MODULUS % 2**64) if k * MODULUS < 2**64 else k * MODULUS,
}


# ------------------------------------------------------------------------------------------
# hash flooding


@pytest.mark.parametrize("kind", sorted(COLLIDING))
@pytest.mark.parametrize("build", [_dict_blob, _set_blob], ids=["dict", "set"])
def test_keys_sharing_one_hash_are_refused(kind: str, build: Callable[[list[Any]], bytes]) -> None:
    keys = [COLLIDING[kind](k) for k in range(3000)]
    assert len({hash(k) for k in keys[:100]}) == 1
    with pytest.raises(BlobFormatError, match=r"share one hash value.*hash flooding"):
        unpack(build(keys))
    # compressed: the same
    with pytest.raises(BlobFormatError, match="hash flooding"):
        unpack(b"ZL123\0" + U64.pack(len(build(keys))) + zlib.compress(build(keys)))


def _best_time(blob: bytes, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        with contextlib.suppress(BlobFormatError):
            unpack(blob)
        best = min(best, time.perf_counter() - start)
    return best


def test_hostile_dict_decoding_time_grows_linearly() -> None:
    """4x the colliding keys take less than 10x the time (quadratic would be 16x).

    Best of five runs each, on inputs large enough (0.1 and 0.4 MB) that timer noise
    does not matter; the old reader took 16x here (and 3.9 s for 1.15 MB)."""
    small = _dict_blob([k * MODULUS for k in range(4000)])
    large = _dict_blob([k * MODULUS for k in range(16000)])
    ratio = _best_time(large) / _best_time(small)
    assert ratio < 10, f"4x input took {ratio:.1f}x the time"


def test_large_ordinary_dicts_and_sets_still_decode() -> None:
    value = {k: None for k in range(200_000)}
    assert unpack(pack(value)) == value
    words = {f"w{k}" for k in range(50_000)}
    assert unpack(pack(words)) == words
    # the most collisions allowed: 16 keys on each hash value
    crowded = {k * MODULUS + j: j for k in range(16) for j in range(500)}
    assert max(list(map(hash, crowded)).count(h) for h in range(3)) <= 16
    assert unpack(pack(crowded)) == crowded
    # and a set with -1 and -2 (both hash to -2) among others
    assert unpack(pack({-1, -2, *range(100)})) == {-1, -2, *range(100)}


# ------------------------------------------------------------------------------------------
# memory: max_expansion


def _peak(fn: Callable[[], Any]) -> tuple[int, Any]:
    tracemalloc.start()
    try:
        try:
            result: Any = fn()
        except BlobFormatError as exc:
            result = exc
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, result


def _object_bomb(n: int) -> bytes:
    """A compressed list of ``n`` empty sets: 17 plain bytes, ~250 bytes of memory each."""
    empty_set = _item(set())
    plain = b"dj0\0\x02" + U64.pack(n) + empty_set * n
    return b"ZL123\0" + U64.pack(len(plain)) + zlib.compress(plain, 9)


def test_object_bomb_is_bounded_by_max_expansion() -> None:
    bomb = _object_bomb(300_000)
    stored = len(bomb)
    limit = int(djb.config["max_expansion"])
    peak, result = _peak(lambda: unpack(bomb))
    assert isinstance(result, BlobFormatError)
    assert "max_expansion=1100" in str(result) and "djb.config['max_expansion']" in str(result)
    # the plain buffer (at most limit x stored) plus the objects (at most limit x stored)
    assert peak < 2.5 * limit * stored, f"peak {peak} for {stored} stored bytes"
    # a trusted blob reads with a raised limit
    with djb.config.override(max_expansion=100_000):
        assert len(unpack(bomb)) == 300_000


def test_zlib_bomb_is_refused_before_inflating_by_max_expansion() -> None:
    zeros = np.zeros(2_000_000)  # 16 MB of zeros: DataJoint's level 6 gets ~1000:1
    with djb.config.override(compression="datajoint"):
        blob = pack(zeros)
    ratio = U64.unpack_from(blob, 6)[0] / len(blob)
    assert 900 < ratio < 1100
    # legitimate: read with the default limit, as DataJoint wrote it
    assert np.array_equal(unpack(blob), zeros)
    peak, result = _peak(lambda: unpack(blob, max_expansion=100))
    assert isinstance(result, BlobFormatError)
    assert "max_expansion=100 times" in str(result)
    assert peak < 1 << 20  # nothing was inflated
    with (
        djb.config.override(max_expansion=100),
        pytest.raises(BlobFormatError, match=r"raise djb.config\['max_expansion'\]"),
    ):
        unpack(blob)


def test_arrays_are_charged_before_allocation() -> None:
    # a 2-D char array reads as 4-byte U1 from 2 bytes per element: the decompressed
    # bytes fit a limit of 300x, the array built from them would not, and is refused at
    # its header, before it is allocated
    chars = np.full((1000, 1000), b"a", dtype="S1")
    blob = pack(chars)
    ratio = U64.unpack_from(blob, 6)[0] / len(blob)
    assert ratio < 300 < 2 * ratio
    peak, result = _peak(lambda: unpack(blob, max_expansion=300))
    assert isinstance(result, BlobFormatError)
    assert "max_expansion=300" in str(result)
    assert "at byte 4 of the decompressed blob" in str(result)
    # the 2 MB plain buffer (twice while zlib grows it), not the 4 MB array on top
    assert peak < 6 << 20
    assert unpack(blob, max_expansion=1000).shape == (1000, 1000)


def test_max_expansion_setting_is_validated() -> None:
    for bad in (0, -1, 1.5, "10", True):
        with pytest.raises(ConfigError, match="max_expansion"):
            djb.config["max_expansion"] = bad
    assert djb.config["max_expansion"] == 1100


# ------------------------------------------------------------------------------------------
# legacy 32-bit mym blobs


def test_legacy_u32_setting() -> None:
    blob = b"mYm\0A" + U32.pack(2) + U32.pack(1) + U32.pack(2) + U32.pack(6) + U32.pack(0)
    blob += np.array([1.5, 2.5]).tobytes()
    want = np.array([[1.5, 2.5]])
    with pytest.raises(BlobFormatError):
        unpack(blob)
    with djb.config.override(legacy_u32=True):
        assert np.array_equal(unpack(blob), want)
        assert np.array_equal(unpack(blob, legacy_u32=None), want)
        with pytest.raises(BlobFormatError):
            unpack(blob, legacy_u32=False)  # an explicit argument wins (per column)
        # u64 blobs are not readable in this mode
        with pytest.raises(BlobFormatError):
            unpack(pack(want))
    assert np.array_equal(unpack(blob, legacy_u32=True), want)
    with pytest.raises(ConfigError, match="legacy_u32"):
        djb.config["legacy_u32"] = 1


def test_cells_of_text_are_charged_before_numpy_widens_them() -> None:
    # a cell reads as np.array(items): 100,000 empty strings and one of 100,000
    # characters would make 100,001 elements of 400 KB each (40 GB) from a 2 MB blob
    n = 100_000
    items = _item("") * n + _item("x" * 100_000)
    blob = b"dj0\0C" + U64.pack(1) + U64.pack(n + 1) + items
    peak, result = _peak(lambda: unpack(blob))
    assert isinstance(result, BlobFormatError)
    assert "max_expansion=1100" in str(result)
    assert peak < 64 << 20
    # the same strings of one width are one unicode array, as DataJoint reads them
    even = b"dj0\0C" + U64.pack(1) + U64.pack(n) + _item("ab") * n
    assert unpack(even).dtype == np.dtype("<U2")
