"""Streaming results in bounded memory: with ``yield_per`` / ``stream_results`` /
``partitions()`` the payloads of a partition are fetched when that partition is read,
never the whole result's up front."""

from __future__ import annotations

import threading
import uuid
from typing import Any, ClassVar

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import sa_djblob as djb

ROWS = 60


class CountingStore(djb.MemoryStore):
    """A remote-looking memory store that counts payload reads."""

    protocol = "counting-memory"  # registers the kind
    reads = 0
    lock: ClassVar[threading.Lock] = threading.Lock()

    @property
    def is_remote(self) -> bool:
        return True

    def get(self, path: Any) -> bytes:
        with CountingStore.lock:
            CountingStore.reads += 1
        return super().get(path)


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "item"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    b: Mapped[Any] = mapped_column(djb.Blob(store="counted"))


@pytest.fixture
def items(engine: sa.Engine) -> sa.Engine:
    djb.config["stores"] = {
        "counted": {"protocol": "counting-memory", "location": "c-" + uuid.uuid4().hex[:8]}
    }
    Base.metadata.create_all(engine)
    djb.install(engine)
    with Session(engine) as s:
        s.add_all(Item(id=i, b=np.full(100, i)) for i in range(ROWS))
        s.commit()
    CountingStore.reads = 0
    return engine


def _reset() -> None:
    CountingStore.reads = 0


def test_plain_result_prefetches_everything(items: sa.Engine) -> None:
    with items.connect() as conn:
        result = conn.execute(sa.select(Item.id, Item.b).order_by(Item.id))
        row = result.fetchone()
        assert row is not None and row.b[0] == 0
        assert CountingStore.reads == ROWS  # one concurrent round for the whole result
        assert [r.b[0] for r in result] == list(range(1, ROWS))


@pytest.mark.parametrize("per", [1, 10, 25])
def test_yield_per_fetches_one_partition_at_a_time(items: sa.Engine, per: int) -> None:
    with items.connect() as conn:
        result = conn.execution_options(yield_per=per).execute(
            sa.select(Item.id, Item.b).order_by(Item.id)
        )
        first = next(iter(result))
        assert first.b[0] == 0
        assert CountingStore.reads <= per
        seen = [first.b[0]] + [r.b[0] for r in result]
    assert seen == list(range(ROWS))
    assert CountingStore.reads == ROWS


def test_partitions_fetch_per_partition(items: sa.Engine) -> None:
    with items.connect() as conn:
        result = conn.execution_options(stream_results=True).execute(
            sa.select(Item.id, Item.b).order_by(Item.id)
        )
        parts = result.partitions(7)
        first = next(parts)
        assert [r.b[0] for r in first] == list(range(7))
        assert CountingStore.reads <= 7
        rest = [r.b[0] for part in parts for r in part]
    assert rest == list(range(7, ROWS))


def test_orm_yield_per(items: sa.Engine) -> None:
    with Session(items) as s:
        result = s.scalars(sa.select(Item).order_by(Item.id).execution_options(yield_per=12))
        first = next(iter(result))
        assert first.b[0] == 0
        assert CountingStore.reads <= 12
        assert [it.b[0] for it in result] == list(range(1, ROWS))
