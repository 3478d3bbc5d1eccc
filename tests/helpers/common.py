"""Helpers shared by the sweep, verify, race, fault and CLI tests, the ORM models of
the externals and configuration tests, and a stream that answers in pieces."""

from __future__ import annotations

import datetime
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import sa_djblob as djb


def make_table(engine: sa.Engine, name: str = "item") -> sa.Table:
    """``name(id, b blob@shared NULL, a attach@shared NULL)``, created."""
    md = sa.MetaData()
    t = sa.Table(
        name,
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("b", djb.Blob(store="shared"), nullable=True),
        sa.Column("a", djb.Attach(store="shared"), nullable=True),
    )
    md.create_all(engine)
    return t


def make_models(schema: str | None = None) -> tuple[type[Any], sa.MetaData]:
    """A fresh ORM model ``Rec(id, b blob@shared, a attach@shared, inrow blob)`` in
    *schema*, and its metadata (not created)."""

    class Base(DeclarativeBase):
        pass

    class Rec(Base):
        __tablename__ = "rec"
        __table_args__ = ({"schema": schema},)
        id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
        b: Mapped[Any] = mapped_column(djb.Blob(store="shared"), nullable=True)
        a: Mapped[Path | None] = mapped_column(djb.Attach(store="shared"), nullable=True)
        inrow: Mapped[Any] = mapped_column(djb.Blob(), nullable=True)

    return Rec, Base.metadata


def value(i: int, size: int = 50) -> np.ndarray:
    """A distinct array per *i*."""
    return np.arange(size, dtype=np.float64) + i


def store_paths(ext: djb.ExternalTable) -> set[PurePosixPath]:
    """Every payload path below the schema's area of the store."""
    store = ext.store
    return {o.path for o in store.list(PurePosixPath(store.location, ext.schema))}


def backdate(store: djb.Store, path: PurePosixPath, age: datetime.timedelta) -> None:
    """Make a payload look *age* old (file and memory stores)."""
    when = datetime.datetime.now(datetime.UTC) - age
    if isinstance(store, djb.MemoryStore):
        store.set_modified(path, when)
    elif isinstance(store, djb.FileStore):
        ts = when.timestamp()
        os.utime(path, (ts, ts))
    else:
        raise TypeError(f"cannot backdate in {store!r}")


def ids_and_values(engine: sa.Engine, table: sa.Table) -> dict[int, Any]:
    with engine.connect() as conn:
        return {r.id: r.b for r in conn.execute(sa.select(table.c.id, table.c.b))}


def url_with_password(engine: sa.Engine) -> str:
    """The engine's URL for a helper subprocess (the test database's, password included)."""
    return engine.url.render_as_string(hide_password=False)


def run_until(args: list[str], marker: str, timeout: float = 60) -> subprocess.Popen[str]:
    """Start a helper script (with this checkout's sa_djblob) and wait until it prints *marker*."""
    root = str(Path(__file__).resolve().parent.parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, *sys.path])}
    proc = subprocess.Popen(
        [sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith(marker):
            return proc
        if not line and proc.poll() is not None:
            break
    proc.kill()
    _, err = proc.communicate(timeout=10)
    raise AssertionError(f"{args[0]} never printed {marker!r}: {err[-2000:]}")


def kill(proc: subprocess.Popen[str]) -> None:
    """SIGKILL a helper started by ``run_until`` and close its pipes."""
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    for stream in (proc.stdout, proc.stderr):
        if stream:
            stream.close()


class Trickle(io.RawIOBase):
    """An unbuffered stream of *data* that answers at most *piece* bytes a read, as a pipe
    or a socket may: a short read is not its end."""

    def __init__(self, data: bytes, piece: int = 1000) -> None:
        self._src = io.BytesIO(data)
        self._piece = piece

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        chunk = self._src.read(min(len(b), self._piece))
        b[: len(chunk)] = chunk
        return len(chunk)
