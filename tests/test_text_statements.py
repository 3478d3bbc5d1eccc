"""A text() SELECT that compares an external column with a value is treated as a write."""

from __future__ import annotations

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
        conn.execute(sa.insert(t).values(id=1, b=np.arange(3.0)))
    return t


QUERY = sa.text("SELECT id FROM item WHERE b = :v").bindparams(
    sa.bindparam("v", type_=djb.Blob(store="shared"))
)


@pytest.mark.backends("postgresql", "mysql")
def test_text_select_works_in_a_read_only_transaction(engine: sa.Engine, table: sa.Table) -> None:
    """The SELECT's value is claimed (INSERT into ~external_shared) and uploaded as if it
    were written: a read-only transaction (a replica, a read-only role) refuses it."""
    with engine.connect() as conn:
        conn.execute(sa.text("SET TRANSACTION READ ONLY"))
        got = conn.execute(QUERY, {"v": np.arange(3.0)}).scalars().all()
    assert got == [1]


def test_text_select_leaves_no_externals_rows_or_payloads(
    engine: sa.Engine, table: sa.Table
) -> None:
    with engine.begin() as conn:
        assert conn.execute(QUERY, {"v": np.arange(99.0)}).scalars().all() == []
    ext = djb.externals(engine)["shared"]
    assert len(ext.paths()) == 1  # only the inserted row's value
