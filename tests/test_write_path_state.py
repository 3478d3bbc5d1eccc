"""The write path's per-statement state lives exactly as long as its statement: a statement
that never reaches the database (it fails to compile) leaves nothing that a later
statement, on another engine or an uninstalled one, could bind its values into."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from conftest import Database

import sa_djblob as djb
from sa_djblob._externals import write


def _table() -> tuple[sa.MetaData, sa.Table]:
    md = sa.MetaData()
    t = sa.Table(
        "rec",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("b", djb.Blob(store="shared"), nullable=True),
    )
    return md, t


@pytest.fixture
def table(engine: sa.Engine, shared_store: dict[str, Any]) -> Iterator[sa.Table]:
    md, t = _table()
    md.create_all(engine)
    yield t


def _fail_to_compile(conn: sa.Connection, t: sa.Table) -> None:
    """A statement that passes the installed engine's ``before_execute`` and then fails
    to compile (an unknown column), so neither ``after_execute`` nor ``handle_error``
    runs. Its transaction stays open: the caller handled the error."""
    with pytest.raises(sa.exc.CompileError, match="Unconsumed"):
        conn.execute(sa.insert(t).values(id=1, b=np.arange(3), no_such_column=1))


@pytest.mark.parametrize("store_kind", ["memory"])
def test_a_failed_statement_leaves_no_state_for_an_engine_never_installed(
    engine: sa.Engine, database: Database, table: sa.Table
) -> None:
    djb.install(engine)
    other = database.create_engine()  # never installed: SQLite has no foreign keys there
    try:
        with engine.begin() as conn:
            _fail_to_compile(conn, table)
            with other.begin() as conn2, pytest.raises(djb.NotInstalledError, match="install"):
                conn2.execute(sa.insert(table).values(id=2, b=np.arange(4)))
        with other.connect() as conn2:
            assert conn2.scalar(sa.select(sa.func.count()).select_from(table)) == 0
    finally:
        other.dispose()


@pytest.mark.parametrize("store_kind", ["memory"])
def test_a_failed_statement_leaves_no_state_for_its_engine_once_uninstalled(
    engine: sa.Engine, table: sa.Table
) -> None:
    djb.install(engine)
    with engine.begin() as conn:
        _fail_to_compile(conn, table)
        djb.uninstall(engine)
        with pytest.raises(djb.NotInstalledError, match="install"):
            conn.execute(sa.insert(table).values(id=2, b=np.arange(4)))


@pytest.mark.parametrize("store_kind", ["memory"])
def test_a_failed_statement_state_goes_when_its_transaction_ends(
    engine: sa.Engine, table: sa.Table
) -> None:
    djb.install(engine)
    with engine.begin() as conn:
        _fail_to_compile(conn, table)
    # nothing keeps the failed statement, its connection or its values alive
    assert write._current.get() is None
    # outside a transaction no event marks the end: the connection is not kept alive
    with engine.connect() as conn:
        _fail_to_compile(conn, table)
    ref = weakref.ref(conn)
    del conn
    gc.collect()
    assert ref() is None
    # and the engine writes as before
    with engine.begin() as conn:
        conn.execute(sa.insert(table).values(id=3, b=np.arange(5)))
    with engine.connect() as conn:
        np.testing.assert_array_equal(conn.scalar(sa.select(table.c.b)), np.arange(5))
