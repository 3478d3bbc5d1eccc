"""Helpers shared by the sweep, verify, race, fault and CLI tests."""

from __future__ import annotations

import datetime
import os
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import sqlalchemy as sa

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
