"""The cost of the first commit (issue finding 9): what the hot path must not pay for."""

from __future__ import annotations

import zlib
from collections import Counter
from typing import Any

import numpy as np
import pytest

import sa_djblob as djb
from sa_djblob import _codec, pack, unpack


class _CountingZlib:
    """``zlib`` with its compressors counted (the decompressor is left alone)."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    def compress(self, *args: Any, **kw: Any) -> bytes:
        self.calls["compress"] += 1
        return zlib.compress(*args, **kw)

    def compressobj(self, *args: Any, **kw: Any) -> Any:
        self.calls["compressobj"] += 1
        return zlib.compressobj(*args, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(zlib, name)


@pytest.fixture
def counting_zlib(monkeypatch: pytest.MonkeyPatch) -> _CountingZlib:
    counting = _CountingZlib()
    monkeypatch.setattr(_codec, "zlib", counting)
    return counting


def test_small_random_arrays_do_not_call_zlib(counting_zlib: _CountingZlib) -> None:
    rng = np.random.default_rng(11)
    values = [rng.random(128) for _ in range(1000)]  # 1 KB of float64 each: over 1000 bytes
    blobs = [pack(v) for v in values]
    assert sum(counting_zlib.calls.values()) == 0, counting_zlib.calls
    for value, blob in zip(values[:20], blobs[:20], strict=True):
        assert len(blob) > _codec.COMPRESS_THRESHOLD
        assert blob == pack(value, compress=False)
        np.testing.assert_array_equal(unpack(blob), value)


@pytest.mark.parametrize(
    "value",
    [
        np.zeros(200),
        np.arange(200.0),
        np.linspace(0.0, 1.0, 200),  # high byte entropy, but repeats: deflate shrinks it
        np.tile(np.random.default_rng(1).integers(0, 256, 256, dtype=np.uint8), 8),
        np.round(np.random.default_rng(2).random(200), 2),
        np.arange(10**12, 10**12 + 200),
        (np.random.default_rng(3).standard_normal(1000) * 300).astype(np.int16),
        {"k": ["spam"] * 100},
        "hello world " * 200,
    ],
    ids=["zeros", "arange", "linspace", "tiled", "rounded", "counter", "int16", "list", "text"],
)
def test_small_compressible_values_are_still_compressed(value: Any) -> None:
    plain = pack(value, compress=False)
    assert _codec.COMPRESS_THRESHOLD < len(plain) <= _codec._SMALL
    blob = pack(value)
    assert blob.startswith(_codec.ZL123)
    assert zlib.decompress(blob[14:]) == plain
    assert len(blob) < len(plain)


def test_small_random_values_of_other_types_stay_plain(counting_zlib: _CountingZlib) -> None:
    rng = np.random.default_rng(12)
    values = [
        rng.integers(0, 256, 2000, dtype=np.uint8),
        rng.integers(-(2**62), 2**62, 200),
        rng.standard_normal(500),
    ]
    for value in values:
        assert pack(value) == pack(value, compress=False)
    assert counting_zlib.calls["compressobj"] == 0


def test_datajoint_mode_still_compresses_like_datajoint(counting_zlib: _CountingZlib) -> None:
    rng = np.random.default_rng(13)
    values = [rng.random(128) for _ in range(50)]
    with djb.config.override(compression="datajoint"):
        blobs = [pack(v) for v in values]
    assert counting_zlib.calls["compress"] == 50  # DataJoint tries every blob over 1000 bytes
    for value, blob in zip(values, blobs, strict=True):
        plain = pack(value, compress=False)
        framed = _codec.ZL123 + len(plain).to_bytes(8, "little") + zlib.compress(plain)
        assert blob == (framed if len(framed) < len(plain) else plain)
