"""Streaming results in bounded memory: with ``yield_per`` / ``stream_results`` /
``partitions()`` the payloads of a partition are fetched when that partition is read,
never the whole result's up front."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import sa_djblob as djb

ROWS = 60


class CountingStore(djb.MemoryStore):
    """A memory store that counts payload reads (remote-looking unless ``remote`` is
    False) and fails the reads whose numbers are in ``failing``, once each."""

    protocol = "counting-memory"  # registers the kind
    reads = 0
    remote = True
    failing: ClassVar[set[int]] = set()
    lock: ClassVar[threading.Lock] = threading.Lock()

    @property
    def is_remote(self) -> bool:
        return CountingStore.remote

    def get(self, path: Any) -> bytes:
        with CountingStore.lock:
            CountingStore.reads += 1
            fail = CountingStore.reads in CountingStore.failing
            CountingStore.failing.discard(CountingStore.reads)
        if fail:
            raise djb.StoreError(f"store 'counted': connection reset while reading {path}")
        return super().get(path)


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "item"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    b: Mapped[Any] = mapped_column(djb.Blob(store="counted"))


@pytest.fixture
def items(engine: sa.Engine) -> Iterator[sa.Engine]:
    djb.config["stores"] = {
        "counted": {"protocol": "counting-memory", "location": "c-" + uuid.uuid4().hex[:8]}
    }
    Base.metadata.create_all(engine)
    djb.install(engine)
    with Session(engine) as s:
        s.add_all(Item(id=i, b=np.full(100, i)) for i in range(ROWS))
        s.commit()
    CountingStore.reads = 0
    try:
        yield engine
    finally:
        CountingStore.remote = True
        CountingStore.failing = set()


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


# -- errors never lose rows -------------------------------------------------------------


def _read_one_by_one(result: sa.CursorResult[Any]) -> list[Any]:
    row = result.fetchone()
    return [] if row is None else [row]


def _read_fetchmany(result: sa.CursorResult[Any]) -> list[Any]:
    return list(result.fetchmany(10))


def _read_partitions(result: sa.CursorResult[Any]) -> list[Any]:
    return list(next(result.partitions(), []))


def _read_all(result: sa.CursorResult[Any]) -> list[Any]:
    return list(result.all())


READERS: dict[str, Callable[[sa.CursorResult[Any]], list[Any]]] = {
    "fetchone": _read_one_by_one,
    "fetchmany": _read_fetchmany,
    "partitions": _read_partitions,
    "all": _read_all,
}


def _read_on_through_errors(
    result: sa.CursorResult[Any], read: Callable[[sa.CursorResult[Any]], list[Any]]
) -> tuple[list[Any], list[djb.StoreError]]:
    """What a consumer that catches each error and keeps reading gets: rows and errors."""
    rows: list[Any] = []
    errors: list[djb.StoreError] = []
    while len(errors) < 5:
        try:
            got = read(result)
        except djb.StoreError as exc:
            errors.append(exc)
            continue
        if not got:
            break
        rows.extend(got)
    return rows, errors


@pytest.mark.parametrize("how", sorted(READERS))
def test_a_failed_partition_fetch_loses_no_rows(items: sa.Engine, how: str) -> None:
    """A store error while a partition's payloads are fetched raises once; the next
    read fetches that partition again, and every row comes out, in order."""
    CountingStore.failing = {15}  # a read of the second partition
    with items.connect() as conn:
        result = conn.execution_options(yield_per=10).execute(
            sa.select(Item.id, Item.b).order_by(Item.id)
        )
        rows, errors = _read_on_through_errors(result, READERS[how])
    assert len(errors) == 1 and "connection reset" in str(errors[0])
    assert [r.id for r in rows] == list(range(ROWS))
    assert all(r.b[0] == r.id for r in rows)


def _corrupt_payload_of(engine: sa.Engine, row_id: int) -> None:
    with engine.connect() as conn:
        obj = conn.execute(sa.select(djb.stored(Item.b)).where(Item.id == row_id)).scalar_one()
    store = djb.get_store("counted")
    data = bytearray(store.get(obj.path))
    data[-1] ^= 0xFF  # same size, other bytes
    store.put(obj.path, bytes(data))


@pytest.mark.parametrize("remote", [True, False], ids=["remote", "local"])
@pytest.mark.parametrize("how", sorted(READERS))
def test_a_corrupt_payload_raises_for_its_row_and_no_other_row_is_lost(
    items: sa.Engine, how: str, remote: bool
) -> None:
    """Reading through a payload that does not verify raises IntegrityError for that
    row alone; a consumer that catches it and reads on gets every other row."""
    CountingStore.remote = remote
    _corrupt_payload_of(items, 13)
    with items.connect() as conn:
        result = conn.execution_options(yield_per=10).execute(
            sa.select(Item.id, Item.b).order_by(Item.id)
        )
        rows, errors = _read_on_through_errors(result, READERS[how])
    assert len(errors) == 1 and isinstance(errors[0], djb.IntegrityError)
    assert [r.id for r in rows] == [i for i in range(ROWS) if i != 13]
    assert all(r.b[0] == r.id for r in rows)


@pytest.mark.parametrize("how", ["fetchmany", "all"])
def test_a_plain_result_loses_no_rows_after_a_corrupt_payload(items: sa.Engine, how: str) -> None:
    """Without yield_per too: the rows read in one batch with the corrupt one are kept."""
    _corrupt_payload_of(items, 3)
    with items.connect() as conn:
        result = conn.execute(sa.select(Item.id, Item.b).order_by(Item.id))
        rows, errors = _read_on_through_errors(result, READERS[how])
    assert len(errors) == 1 and isinstance(errors[0], djb.IntegrityError)
    assert [r.id for r in rows] == [i for i in range(ROWS) if i != 3]
