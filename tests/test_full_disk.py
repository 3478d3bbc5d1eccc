"""A full disk under the local cache or ``download_path``.

The cache is an optimization: when it cannot be written, reads still succeed from the
store (logged once). A download folder that cannot be written is an error that names
the folder. A full disk is simulated by making every write into the folder fail with
``ENOSPC`` (opening files there works, as on a real full disk).
"""

from __future__ import annotations

import builtins
import errno
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from conftest import S3Server
from helpers.common import make_table, value

import sa_djblob as djb


class _FullFile:
    """An open file on a full disk: writes fail with ENOSPC."""

    def __init__(self, f: Any) -> None:
        self._f = f

    def write(self, data: Any) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)

    def __enter__(self) -> _FullFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._f.close()


@pytest.fixture
def full_disk(monkeypatch: pytest.MonkeyPatch) -> Callable[[Path], None]:
    """``full_disk(folder)``: from now on every write of a file below *folder* fails."""
    full: list[Path] = []
    real_open, real_fdopen = builtins.open, os.fdopen

    def on_full_disk(path: Any, mode: str) -> bool:
        if not any(c in mode for c in "wxa+"):
            return False
        where = Path(os.path.abspath(os.fsdecode(path)))
        return any(where.is_relative_to(f) for f in full)

    def fake_open(file: Any, mode: str = "r", *args: Any, **kw: Any) -> Any:
        f = real_open(file, mode, *args, **kw)
        if isinstance(file, str | bytes | os.PathLike) and on_full_disk(file, mode):
            return _FullFile(f)
        return f

    def fake_fdopen(fd: int, mode: str = "r", *args: Any, **kw: Any) -> Any:
        f = real_fdopen(fd, mode, *args, **kw)
        if on_full_disk(os.readlink(f"/proc/self/fd/{fd}"), mode):
            return _FullFile(f)
        return f

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(os, "fdopen", fake_fdopen)
    return lambda folder: full.append(folder.resolve())


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def test_a_full_cache_disk_never_fails_a_read_of_an_intact_payload(
    engine: sa.Engine,
    s3_server: S3Server,
    s3_bucket: str,
    tmp_path: Path,
    full_disk: Callable[[Path], None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    djb.config["stores"] = {"shared": s3_server.store_spec(s3_bucket)}
    cache = tmp_path / "cache"
    djb.config["cache"] = str(cache)
    djb.install(engine)
    table = make_table(engine)
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"kept in S3\n" * 1000)
    with engine.begin() as conn:
        conn.execute(sa.insert(table), [{"id": i, "b": value(i)} for i in range(4)])
        conn.execute(sa.insert(table), [{"id": 9, "a": str(notes)}])
    full_disk(cache)
    query = sa.select(table.c.id, table.c.b, table.c.a).order_by(table.c.id)
    with caplog.at_level(logging.WARNING, logger="sa_djblob"):
        for _ in range(2):
            with engine.connect() as conn:
                rows = conn.execute(query).all()
            for r in rows[:4]:
                np.testing.assert_array_equal(r.b, value(r.id))
            assert Path(rows[4].a).read_bytes() == notes.read_bytes()
            with engine.connect() as conn:  # one row: a read without the concurrent path
                one = conn.execute(sa.select(table.c.b).where(table.c.id == 2)).scalar_one()
            np.testing.assert_array_equal(one, value(2))
    warned = [r.getMessage() for r in caplog.records if str(cache) in r.getMessage()]
    assert len(warned) == 1, warned  # logged once
    assert "No space left on device" in warned[0]
    assert _files(cache) == []  # no partial entries left behind


@pytest.mark.parametrize("store_kind", ["memory"])
def test_a_full_download_path_is_an_error_that_names_the_folder(
    engine: sa.Engine,
    shared_store: dict[str, Any],
    tmp_path: Path,
    full_disk: Callable[[Path], None],
) -> None:
    djb.install(engine)
    table = make_table(engine)
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"an attachment\n" * 1000)
    with engine.begin() as conn:
        conn.execute(sa.insert(table), [{"id": 1, "a": str(notes)}])
    downloads = Path(djb.config["download_path"])
    full_disk(downloads)
    with engine.connect() as conn, pytest.raises(djb.DownloadError) as info:
        conn.execute(sa.select(table.c.a)).scalar_one()
    message = str(info.value)
    assert str(downloads) in message and "No space left on device" in message
    assert "download_path" in message
    assert isinstance(info.value, OSError)  # what callers catching OSError expect
    assert _files(downloads) == []
    with engine.connect() as conn:
        obj = conn.execute(sa.select(djb.stored(table.c.a))).scalar_one()
    served = tmp_path / "served"
    full_disk(served)
    with pytest.raises(djb.DownloadError, match=str(served)):
        obj.download(served)
    assert _files(served) == []
