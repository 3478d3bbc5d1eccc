"""Statement forms whose bind processing packs a value but whose write path never runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

import sa_djblob as djb


def _tables(engine: sa.Engine, *, foreign_key: bool) -> sa.Table:
    md = sa.MetaData()
    t = sa.Table(
        "item",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("b", djb.Blob(store="shared", foreign_key=foreign_key), nullable=True),
    )
    # a column with the foreign key, so that ~external_shared exists on the MetaData
    sa.Table(
        "anchor",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("b", djb.Blob(store="shared"), nullable=True),
    )
    md.create_all(engine)
    djb.install(engine)
    return t


@pytest.fixture
def store(tmp_path: Path) -> None:
    djb.config["stores"] = {"shared": {"protocol": "file", "location": str(tmp_path / "store")}}


def test_lambda_stmt_insert_without_foreign_key_commits_dangling_reference(
    engine: sa.Engine, store: None
) -> None:
    """lambda_stmt: before_execute sees a StatementLambdaElement (not sa.Insert), so
    ``writes`` is False, the payload is never recorded, claimed nor uploaded."""
    t = _tables(engine, foreign_key=False)
    val = np.arange(7.0)
    with engine.begin() as conn:
        conn.execute(sa.lambda_stmt(lambda: sa.insert(t).values(id=1, b=val)))
    with engine.connect() as conn:
        got = conn.execute(sa.select(t.c.b).where(t.c.id == 1)).scalar_one()
    np.testing.assert_array_equal(got, val)


def test_lambda_stmt_insert_with_foreign_key_is_refused_by_the_database(
    engine: sa.Engine, store: None
) -> None:
    """Same with the foreign key: the database refuses it with a bare FK violation."""
    t = _tables(engine, foreign_key=True)
    val = np.arange(7.0)
    with engine.begin() as conn:
        conn.execute(sa.lambda_stmt(lambda: sa.insert(t).values(id=1, b=val)))
    with engine.connect() as conn:
        got = conn.execute(sa.select(t.c.b).where(t.c.id == 1)).scalar_one()
    np.testing.assert_array_equal(got, val)


def test_lambda_stmt_update_without_foreign_key(engine: sa.Engine, store: None) -> None:
    t = _tables(engine, foreign_key=False)
    with engine.begin() as conn:
        conn.execute(sa.insert(t).values(id=1, b=np.zeros(3)))
    val = np.arange(9.0)
    with engine.begin() as conn:
        conn.execute(sa.lambda_stmt(lambda: sa.update(t).where(t.c.id == 1).values(b=val)))
    with engine.connect() as conn:
        got = conn.execute(sa.select(t.c.b).where(t.c.id == 1)).scalar_one()
    np.testing.assert_array_equal(got, val)


@pytest.mark.backends("postgresql")
def test_data_modifying_cte_without_foreign_key(engine: sa.Engine, store: None) -> None:
    """PostgreSQL's INSERT inside a CTE of a SELECT: the statement is a Select, so
    ``writes`` is False and the payload is never stored."""
    t = _tables(engine, foreign_key=False)
    val = np.arange(11.0)
    ins = sa.insert(t).values(id=1, b=val).returning(t.c.id).cte("ins")
    with engine.begin() as conn:
        conn.execute(sa.select(ins.c.id).add_cte(ins)).all()
    with engine.connect() as conn:
        got = conn.execute(sa.select(t.c.b).where(t.c.id == 1)).scalar_one()
    np.testing.assert_array_equal(got, val)
