"""The cost of the first commit: what the hot path must not pay for."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
import zlib
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

import sa_djblob as djb
from sa_djblob import _codec, _framing, _layout, pack, unpack
from sa_djblob._externals import write as _write


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
    monkeypatch.setattr(_framing, "zlib", counting)
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
    assert _codec.COMPRESS_THRESHOLD < len(plain) <= _framing._SMALL
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


# -- the write path's per-row work ------------------------------------------------------


def test_one_statement_looks_up_its_store_once_and_builds_each_path_root_once(
    engine: sa.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """1,000 values of one store in one commit: the store and the area's root path are
    resolved once, not once per value (each lookup validates the settings, each root
    parses the location)."""
    location = tmp_path / "store"
    djb.config["stores"] = {"local": {"protocol": "file", "location": str(location)}}
    djb.install(engine)
    md = sa.MetaData()
    table = sa.Table(
        "rec",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("v", djb.Blob(store="local")),
    )
    md.create_all(engine)
    lookups = Counter[str]()
    real_get_store, real_store_root = _write.get_store, _layout.store_root

    def get_store(name: str) -> Any:
        lookups["get_store"] += 1
        return real_get_store(name)

    def store_root(location: str, protocol: str = "file") -> Any:
        lookups["store_root"] += 1
        return real_store_root(location, protocol)

    monkeypatch.setattr(_write, "get_store", get_store)
    monkeypatch.setattr(_layout, "store_root", store_root)
    rng = np.random.default_rng(14)
    values = [rng.random(128) for _ in range(1000)]
    with Session(engine) as session:
        session.execute(sa.insert(table), [{"id": i, "v": v} for i, v in enumerate(values)])
        session.commit()
    assert lookups["get_store"] <= 2, lookups  # binding the values, then their upload
    assert lookups["store_root"] <= 2, lookups
    with engine.connect() as conn:
        got = dict(conn.execute(sa.select(table.c.id, table.c.v)).all())
    assert len(got) == 1000
    for i in (0, 499, 999):
        np.testing.assert_array_equal(got[i], values[i])
    assert sum(1 for p in location.rglob("*") if p.is_file()) >= 1000


@pytest.mark.parametrize("protocol", ["file", "s3"])
@pytest.mark.parametrize(
    "location", ["", ".", "/", "/data/dj", "data//dj/", "f:\\data\\dj", "\\dj", "//server"]
)
@pytest.mark.parametrize("folds", [(), (1,), (2, 2), (3, 3, 3)])
def test_object_paths_are_unchanged(protocol: str, location: str, folds: tuple[int, ...]) -> None:
    key = uuid.UUID("0123456789abcdef0123456789abcdef")
    for schema in ("lab", "my_schema", ""):
        for name in (None, "data.csv", "x"):
            try:
                root = _layout.store_root(location, protocol)
            except djb.ConfigError:
                with pytest.raises(djb.ConfigError):
                    _layout.object_path(location, schema, key, name, folds, protocol=protocol)
                continue
            leaf = key.hex if name is None else f"{key.hex}.{name}"
            expected = PurePosixPath(root, schema, *_layout.subfold(key.hex, folds), leaf)
            got = _layout.object_path(location, schema, key, name, folds, protocol=protocol)
            assert got == expected
            assert str(got) == str(expected)


# -- the cold start ---------------------------------------------------------------------


def test_import_loads_no_store_client_cli_or_migration_tool() -> None:
    """``import sa_djblob`` is part of every cold start: what only some paths need (S3,
    fsspec, progress bars, the CLI, Alembic, the ORM, asyncio support) loads on use."""
    heavy = [
        "boto3",
        "botocore",
        "s3transfer",
        "fsspec",
        "tqdm",
        "click",
        "alembic",
        "sqlalchemy.orm",
        "sqlalchemy.ext.asyncio",
        "pymysql",
        "psycopg",
        "psycopg2",
    ]
    code = (
        "import sys, json, sa_djblob\n"
        f"print(json.dumps([m for m in {heavy!r} if m in sys.modules]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(out) == []
