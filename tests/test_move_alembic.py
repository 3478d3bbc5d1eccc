"""``op.move_payloads``: djb.move as an Alembic operation, up and down, and what autogenerate
renders when a model's Blob or Attach column changes store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from alembic.autogenerate import produce_migrations, render_python_code
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from helpers.common import value

import sa_djblob as djb
from sa_djblob import alembic_helpers


@pytest.fixture
def stores(tmp_path: Path) -> None:
    djb.config["stores"] = {
        "a": {"protocol": "file", "location": str(tmp_path / "store-a")},
        "b": {"protocol": "file", "location": str(tmp_path / "store-b")},
    }


def rec(metadata: sa.MetaData, trace: str | None, doc: str | None) -> sa.Table:
    return sa.Table(
        "rec",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("trace", djb.Blob(store=trace), nullable=True),
        sa.Column("doc", djb.Attach(store=doc), nullable=True),
    )


def setup_rows(engine: sa.Engine, tmp_path: Path) -> dict[int, tuple[Any, bytes]]:
    djb.install(engine)
    table = rec(sa.MetaData(), "a", "a")
    table.metadata.create_all(engine)
    rows, expected = [], {}
    for i in range(8):
        doc = tmp_path / f"d{i}.txt"
        doc.write_bytes(b"doc %d" % i)
        rows.append({"id": i, "trace": value(i), "doc": doc})
        expected[i] = (value(i), b"doc %d" % i)
    with engine.begin() as conn:
        conn.execute(sa.insert(table), rows)
    return expected


def check(engine: sa.Engine, table: sa.Table, expected: dict[int, tuple[Any, bytes]]) -> None:
    with engine.connect() as conn:
        got = {r.id: r for r in conn.execute(sa.select(table))}
    assert sorted(got) == sorted(expected)
    for i, (trace, doc) in expected.items():
        np.testing.assert_array_equal(got[i].trace, trace)
        assert Path(got[i].doc).read_bytes() == doc


def test_move_payloads_operation_moves_up_and_back_down(
    engine: sa.Engine, stores: None, tmp_path: Path
) -> None:
    expected = setup_rows(engine, tmp_path)
    with engine.begin() as conn:
        op = Operations(MigrationContext.configure(conn))
        op.move_payloads("rec", "trace", to_store="b", from_store="a")  # type: ignore[attr-defined]
        op.move_payloads("rec", "doc", to_store=None, from_store="a", kind="attach")  # type: ignore[attr-defined]
    check(engine, rec(sa.MetaData(), "b", None), expected)
    from sa_djblob._alembic_move import MovePayloadsOp

    with engine.begin() as conn:
        op = Operations(MigrationContext.configure(conn))
        for forward in (
            MovePayloadsOp("rec", "trace", to_store="b", from_store="a"),
            MovePayloadsOp("rec", "doc", to_store=None, from_store="a", kind="attach"),
        ):
            op.invoke(forward.reverse())
    check(engine, rec(sa.MetaData(), "a", "a"), expected)


def test_autogenerate_renders_a_store_change_as_move_payloads_that_runs_both_ways(
    engine: sa.Engine, stores: None, tmp_path: Path
) -> None:
    expected = setup_rows(engine, tmp_path)
    assert alembic_helpers.register_plugin()
    target = sa.MetaData()
    rec(target, "b", None)
    sa.Table("~external_a", target)  # still used by nothing, kept (a sweep empties it)
    opts: dict[str, Any] = {
        "render_item": alembic_helpers.render_item,
        "autogenerate_plugins": ["alembic.autogenerate.*", alembic_helpers.PLUGIN_NAME],
        "target_metadata": target,
        "render_as_batch": engine.dialect.name == "sqlite",
        "include_object": lambda obj, name, type_, reflected, compare_to: name != "~external_a",
    }
    with engine.begin() as conn:
        ctx = MigrationContext.configure(conn, opts=opts)
        script = produce_migrations(ctx, target)
        assert script.upgrade_ops is not None and script.downgrade_ops is not None
        up, down = (
            render_python_code(
                ops,
                render_item=alembic_helpers.render_item,
                migration_context=ctx,
                render_as_batch=engine.dialect.name == "sqlite",
            )
            for ops in (script.upgrade_ops, script.downgrade_ops)
        )
    assert "op.move_payloads('rec', 'trace', to_store='b', from_store='a', kind='blob')" in up, up
    assert "op.move_payloads('rec', 'doc', to_store=None, from_store='a', kind='attach')" in up
    assert "foreign_key" not in up and "drop_constraint" not in up, up
    assert "to_store='a', from_store='b'" in down and "to_store='a', from_store=None" in down
    from sqlalchemy.dialects import mysql

    namespace: dict[str, Any] = {"sa": sa, "sa_djblob": djb, "mysql": mysql}
    exec("def upgrade():\n" + up, namespace)
    exec("def downgrade():\n" + down, namespace)
    with engine.begin() as conn:
        namespace["op"] = Operations(MigrationContext.configure(conn))
        namespace["upgrade"]()
    check(engine, rec(sa.MetaData(), "b", None), expected)
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts=opts)
        assert produce_migrations(ctx, target).upgrade_ops.is_empty()  # type: ignore[union-attr]
    with engine.begin() as conn:
        namespace["op"] = Operations(MigrationContext.configure(conn))
        namespace["downgrade"]()
    check(engine, rec(sa.MetaData(), "a", "a"), expected)
