"""A reader whose rows were read in a consistent snapshot meets a sweep.

A known limit, documented (README, Guarantees): rows deleted and committed by others
while a reader's snapshot (a streamed cursor, a REPEATABLE READ transaction) still shows
them may lose their payloads to a concurrent sweep. The reader must get a clear
``MissingPayloadError`` for exactly those rows, and every other row intact."""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

import sa_djblob as djb


@pytest.fixture
def table(engine: sa.Engine, tmp_path: Path) -> sa.Table:
    djb.config["stores"] = {"shared": {"protocol": "file", "location": str(tmp_path / "store")}}
    md = sa.MetaData()
    t = sa.Table(
        "item",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("b", djb.Blob(store="shared"), nullable=True),
    )
    md.create_all(engine)
    djb.install(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(t), [{"id": i, "b": np.arange(100.0) + i} for i in range(40)])
    return t


def _delete_and_sweep(engine: sa.Engine, t: sa.Table) -> None:
    with engine.begin() as conn:
        conn.execute(sa.delete(t).where(t.c.id >= 20))
    djb.externals(engine)["shared"].sweep(grace=datetime.timedelta(0), progress=False)


@pytest.mark.backends("postgresql", "mysql")
def test_streamed_result_reports_payloads_swept_from_its_snapshot(
    engine: sa.Engine, table: sa.Table
) -> None:
    """yield_per: the rows of later partitions are in the cursor's snapshot but their
    payloads are only fetched when reached; a delete + sweep in between removes them."""
    # The error leaves the result open (it may be read on): closing it closes the cursor,
    # a server-side one on PostgreSQL, an unbuffered one on MySQL.
    with (
        engine.connect() as conn,
        conn.execution_options(yield_per=10).execute(
            sa.select(table.c.id, table.c.b).order_by(table.c.id)
        ) as result,
    ):
        first = next(result.partitions())
        assert len(first) == 10
        _delete_and_sweep(engine, table)
        with pytest.raises(djb.MissingPayloadError):
            for part in result.partitions():
                for r in part:
                    assert r.id < 20  # rows still referenced read intact
                    np.testing.assert_array_equal(r.b, np.arange(100.0) + r.id)


@pytest.mark.backends("postgresql", "mysql")
def test_repeatable_read_transaction_reports_a_swept_payload(
    engine: sa.Engine, table: sa.Table
) -> None:
    """REPEATABLE READ (MySQL's default): a transaction's snapshot still holds the
    committed row, the sweep (READ COMMITTED) removed its payload meanwhile."""
    with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn:
        conn.execute(sa.select(sa.func.count()).select_from(table)).scalar()  # snapshot
        _delete_and_sweep(engine, table)
        got = conn.execute(sa.select(table.c.b).where(table.c.id == 5)).scalar_one()
        np.testing.assert_array_equal(got, np.arange(100.0) + 5)
        with pytest.raises(djb.MissingPayloadError):
            conn.execute(sa.select(table.c.b).where(table.c.id == 25)).scalar_one()
