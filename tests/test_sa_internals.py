"""Every SQLAlchemy internal that sa_djblob relies on (all used in sa_djblob._sa_internals),
checked on the installed SQLAlchemy: an upgrade that changes one fails here, loudly."""

from __future__ import annotations

import inspect
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine.cursor import CursorFetchStrategy

import sa_djblob as djb
from sa_djblob._sa_internals import (
    RowTransformingStrategy,
    dml_statement,
    install_strategy,
    result_columns,
    type_bound_foreign_key,
    type_bound_index,
)


def _engine() -> tuple[sa.Engine, sa.Table]:
    eng = sa.create_engine("sqlite://")
    md = sa.MetaData()
    t = sa.Table("t", md, sa.Column("id", sa.Integer, primary_key=True), sa.Column("v", sa.Integer))
    md.create_all(eng)
    with eng.begin() as conn:
        conn.execute(sa.insert(t), [{"id": i, "v": i} for i in range(25)])
    return eng, t


def test_result_columns_gives_positions_and_types() -> None:
    eng, t = _engine()
    marker = sa.Integer()
    seen: list[Any] = []

    @sa.event.listens_for(eng, "after_cursor_execute")
    def grab(conn: Any, cursor: Any, stmt: Any, params: Any, context: Any, many: bool) -> None:
        seen.append(result_columns(context))

    with eng.connect() as conn:
        conn.execute(sa.select(t.c.id, sa.type_coerce(t.c.v, marker))).all()
    ((first, second),) = seen
    assert first[0] == 0 and second == (1, marker)


def test_fetch_strategy_interface() -> None:
    """The methods the reader's strategy overrides, with the signatures it overrides."""
    expected = {
        "fetchone": ["self", "result", "dbapi_cursor", "hard_close"],
        "fetchmany": ["self", "result", "dbapi_cursor", "size"],
        "fetchall": ["self", "result", "dbapi_cursor"],
        "yield_per": ["self", "result", "dbapi_cursor", "num"],
        "soft_close": ["self", "result", "dbapi_cursor"],
        "hard_close": ["self", "result", "dbapi_cursor"],
    }
    for name, params in expected.items():
        got = list(inspect.signature(getattr(CursorFetchStrategy, name)).parameters)
        assert got == params, (name, got)


def test_a_strategy_installed_after_cursor_execute_serves_the_result() -> None:
    eng, t = _engine()
    chunks: list[int] = []

    def double(rows: list[Any]) -> list[Any]:
        chunks.append(len(rows))
        return [(r[0], r[1] * 2) for r in rows]

    @sa.event.listens_for(eng, "after_cursor_execute")
    def swap(conn: Any, cursor: Any, stmt: Any, params: Any, context: Any, many: bool) -> None:
        chunk = context.execution_options.get("yield_per")
        install_strategy(context, RowTransformingStrategy(double, chunk))

    q = sa.select(t.c.id, t.c.v).order_by(t.c.id)
    with eng.connect() as conn:
        assert [r.v for r in conn.execute(q)] == [2 * i for i in range(25)]
        assert chunks == [25]
        chunks.clear()
        result = conn.execution_options(yield_per=10).execute(q)
        assert result.fetchone() == (0, 0)
        assert chunks == [10]  # only the first partition was read and transformed
        assert len(result.fetchmany(10)) == 10
        assert chunks == [10, 10]
        assert len(result.all()) == 14  # all(): the rest at once
        assert chunks == [10, 10, 5]
        chunks.clear()
        parts = [len(p) for p in conn.execute(q).partitions(7)]
        assert sum(parts) == 25
        chunks.clear()
        with eng.connect() as c2:
            streamed = c2.execution_options(stream_results=True, yield_per=4).execute(q)
            assert next(iter(streamed)) == (0, 0) and chunks == [4]
            streamed.close()


def test_type_bound_constraints_are_not_copied_with_the_table() -> None:
    md = sa.MetaData()
    target = sa.Table("target", md, sa.Column("hash", sa.LargeBinary(16), primary_key=True))
    t = sa.Table(
        "t", md, sa.Column("id", sa.Integer, primary_key=True), sa.Column("h", sa.LargeBinary(16))
    )
    t.append_constraint(type_bound_foreign_key([t.c.h], [target.c.hash]))
    type_bound_index("ix_t_h", t.c.h)
    assert len(t.foreign_keys) == 1 and len(t.indexes) == 1
    copy = t.to_metadata(sa.MetaData())
    # the copy's column type makes its own: the index is skipped, the key not doubled
    assert len(copy.foreign_keys) == 1 and not copy.indexes
    assert not t.c.h._copy().foreign_keys  # a column copy leaves the type-bound key out


def test_a_type_learns_its_column_through_set_parent() -> None:
    md = sa.MetaData()
    t = sa.Table(
        "t", md, sa.Column("id", sa.Integer, primary_key=True), sa.Column("b", djb.Blob(store="s"))
    )
    # the type's hook ran: the DataJoint comment, the foreign key and its index are there
    assert t.c.b.comment == ":blob@s:"
    assert [fk.target_fullname for fk in t.c.b.foreign_keys] == ["~external_s.hash"]
    assert "_set_parent" in vars(sa.types.TypeDecorator) or hasattr(
        sa.types.TypeDecorator, "_set_parent"
    )


def test_dml_statement_sees_lambdas_and_ctes() -> None:
    eng, t = _engine()
    seen: list[Any] = []

    @sa.event.listens_for(eng, "before_cursor_execute")
    def grab(conn: Any, cursor: Any, stmt: Any, params: Any, context: Any, many: bool) -> None:
        seen.append(dml_statement(context))

    with eng.begin() as conn:
        conn.execute(sa.lambda_stmt(lambda: sa.insert(t).values(id=100, v=1)))
        conn.execute(sa.select(t.c.id).where(t.c.id == 1))
        conn.execute(sa.text("SELECT 1"))
    assert seen == [("write", t), ("read", None), ("text", None)]


def test_dialect_support_declares_only_what_is_used() -> None:
    """The registry maps SQLAlchemy's dialect names to classes; the classes do not
    repeat the names (an unused second list that could disagree)."""
    from sa_djblob._dialects.base import DialectSupport

    assert not hasattr(DialectSupport, "names")
