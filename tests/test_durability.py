"""File stores make new payloads durable (fsync) before the user's transaction commits."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import sa_djblob as djb
from sa_djblob._exceptions import ConfigError
from sa_djblob.stores import FileStore, build_store


class Base(DeclarativeBase):
    pass


class Rec(Base):
    __tablename__ = "durable_rec"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    b: Mapped[Any] = mapped_column(djb.Blob(store="local"), nullable=True)
    a: Mapped[Path | None] = mapped_column(djb.Attach(store="local"), nullable=True)


Events = list[tuple[str, str, int]]


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> Events:
    """Every os.fsync as ("fsync", <path of the fd>, <inode>), in call order (any thread).

    A payload is synced under its temporary name, then renamed: the inode identifies it.
    """
    got: Events = []
    real: Callable[[int], None] = os.fsync

    def fsync(fd: int) -> None:
        got.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"), os.fstat(fd).st_ino))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return got


@pytest.fixture
def local_engine(
    engine: sa.Engine, tmp_path: Path, events: Events, request: pytest.FixtureRequest
) -> Iterator[sa.Engine]:
    fsync = getattr(request, "param", True)
    djb.config["stores"] = {
        "local": {"protocol": "file", "location": str(tmp_path / "store"), "fsync": fsync}
    }
    Base.metadata.create_all(engine)
    djb.install(engine)

    @sa.event.listens_for(engine, "commit")
    def _commit(conn: sa.Connection) -> None:  # fires before the DBAPI commit
        events.append(("commit", "", 0))

    yield engine
    sa.event.remove(engine, "commit", _commit)


pytestmark = pytest.mark.skipif(
    not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd to name fsynced files"
)


def _payload_files(root: Path) -> list[Path]:
    """Payload files (not the store's hidden owner marker)."""
    return [
        p
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    ]


def _synced_before_commit(events: Events) -> tuple[set[str], set[int]]:
    """The paths and inodes fsynced before the first COMMIT."""
    first_commit = next(i for i, e in enumerate(events) if e[0] == "commit")
    before = [e for e in events[:first_commit] if e[0] == "fsync"]
    return {path for _, path, _ in before}, {ino for _, _, ino in before}


@pytest.mark.backends("sqlite", "mysql")
def test_blob_payload_and_folders_synced_before_commit(
    local_engine: sa.Engine, tmp_path: Path, events: Events
) -> None:
    root = tmp_path / "store"
    events.clear()
    with Session(local_engine) as s:
        s.add(Rec(id=1, b=np.arange(1000.0)))
        s.commit()
    (payload,) = _payload_files(root)
    synced, inodes = _synced_before_commit(events)
    assert payload.stat().st_ino in inodes, events  # the file's data
    # the folder holding the renamed file, and every folder made on the way there
    # (each made durable by syncing its parent), up to the location's parent
    folder = payload.parent
    while folder != root.parent:
        assert str(folder) in synced, (folder, events)
        folder = folder.parent
    assert str(root.parent) in synced


@pytest.mark.backends("sqlite", "mysql")
def test_attachment_payload_synced_before_commit(
    local_engine: sa.Engine, tmp_path: Path, events: Events
) -> None:
    src = tmp_path / "report.csv"
    src.write_bytes(b"a,b\n" * 10_000)
    events.clear()
    with Session(local_engine) as s:
        s.add(Rec(id=2, a=src))
        s.commit()
    (payload,) = _payload_files(tmp_path / "store")
    assert payload.name.endswith(".report.csv")
    synced, inodes = _synced_before_commit(events)
    assert payload.stat().st_ino in inodes, events
    assert str(payload.parent) in synced


def test_file_synced_before_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The data is synced under its temporary name, the folder after the rename."""
    order: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        order.append("fsync " + os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        order.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    store = FileStore("local", location=str(tmp_path / "s"))
    store.put(PurePosixPath(tmp_path / "s" / "x" / "y" / "payload"), b"data")
    assert order[0].startswith("fsync .payload.tmp-")
    assert order[1] == "rename"
    assert order[2:] == ["fsync y", "fsync x", "fsync s", f"fsync {tmp_path.name}"]
    order.clear()  # a second payload in the same folder: only its file and folder
    store.put(PurePosixPath(tmp_path / "s" / "x" / "y" / "other"), b"data")
    assert order[1:] == ["rename", "fsync y"]


@pytest.mark.backends("sqlite")
@pytest.mark.parametrize("local_engine", [False], indirect=True)
def test_fsync_off(local_engine: sa.Engine, events: Events) -> None:
    events.clear()
    with Session(local_engine) as s:
        s.add(Rec(id=3, b=np.arange(10)))
        s.commit()
    assert not [e for e in events if e[0] == "fsync"]


def test_fsync_setting_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'fsync' must be true or false"):
        build_store("local", {"protocol": "file", "location": str(tmp_path), "fsync": "no"})
    assert build_store("local", {"protocol": "file", "location": str(tmp_path)}).fsync is True
