"""Rows and payloads must agree on the schema (docs/design.md: "Rows and payloads
therefore always agree, for multi-tenant schemas too")."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

import sa_djblob as djb


def _metadata(
    schema: str | None = None, *, foreign_key: bool = True
) -> tuple[sa.MetaData, sa.Table]:
    md = sa.MetaData(schema=schema)
    t = sa.Table(
        "item",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("b", djb.Blob(store="shared", foreign_key=foreign_key), nullable=True),
    )
    sa.Table(
        "anchor",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("b", djb.Blob(store="shared"), nullable=True),
    )
    return md, t


@pytest.fixture
def store(tmp_path: Path) -> None:
    djb.config["stores"] = {"shared": {"protocol": "file", "location": str(tmp_path / "store")}}


@pytest.mark.backends("postgresql")
def test_set_search_path_after_connect_puts_payloads_in_another_schemas_area(
    engine: sa.Engine,
    database: Any,
    store: None,
) -> None:
    """PostgreSQL caches where ~external_shared resolves per DBAPI connection; after
    ``SET search_path`` the row and externals row go to schema B, the payload to area A.
    A reader on B finds no payload; a sweep of A would take it for an orphan."""
    a = database.default_schema
    b = database.make_schema("b")
    md, _ = _metadata()
    md.create_all(engine)
    with engine.connect() as conn:
        conn.execute(sa.text(f'SET search_path TO "{b}"'))
        md.create_all(conn)
        conn.execute(sa.text(f'SET search_path TO "{a}"'))
        conn.commit()
    djb.install(engine)
    _, t = _metadata()
    val = np.arange(13.0)
    with engine.connect() as conn:
        conn.execute(sa.insert(t).values(id=1, b=np.zeros(2)))  # caches schema a
        conn.commit()
        conn.execute(sa.text(f'SET search_path TO "{b}"'))
        conn.execute(sa.insert(t).values(id=1, b=val))  # goes to b.item
        conn.commit()
    reader = sa.create_engine(database.url.update_query_dict({"options": f"-csearch_path={b}"}))
    djb.install(reader)
    try:
        with reader.connect() as conn:
            got = conn.execute(sa.select(t.c.b).where(t.c.id == 1)).scalar_one()
        np.testing.assert_array_equal(got, val)
        # and a sweep of schema a must not delete what b's committed row references
        report = djb.externals(engine, a)["shared"].sweep(
            grace=datetime.timedelta(0), progress=False
        )
        with reader.connect() as conn:
            got = conn.execute(sa.select(t.c.b).where(t.c.id == 1)).scalar_one()
        np.testing.assert_array_equal(got, val)
        assert report.orphans_deleted == 0
    finally:
        djb.uninstall(reader)
        reader.dispose()


@pytest.mark.backends("mysql", "postgresql")
def test_text_insert_with_external_values_is_refused(
    engine: sa.Engine,
    database: Any,
    store: None,
) -> None:
    """A text() statement has no target table: claiming in the connection's default
    schema would put the payload in the wrong area, so such writes are refused."""
    other = database.make_schema("t")
    md_default, _ = _metadata()
    md_other, t_other = _metadata(other)
    md_default.create_all(engine)
    md_other.create_all(engine)
    djb.install(engine)
    q = engine.dialect.identifier_preparer.quote
    val = np.arange(5.0)
    stmt = sa.text(f"INSERT INTO {q(other)}.item (id, b) VALUES (1, :b)").bindparams(
        sa.bindparam("b", type_=djb.Blob(store="shared"))
    )
    with pytest.raises(djb.SaDjblobError, match="insert"), engine.begin() as conn:
        conn.execute(stmt, {"b": val})
    with engine.connect() as conn:
        assert conn.execute(sa.select(t_other.c.id)).all() == []


@pytest.mark.backends("mysql")
def test_use_database_puts_payloads_in_the_urls_databases_area(
    engine: sa.Engine,
    database: Any,
    store: None,
) -> None:
    """MySQL: an unqualified table resolves through the connection's current database
    (``USE``), but the area comes from ``dialect.default_schema_name`` (the URL's)."""
    b = database.make_schema("b")
    md, _ = _metadata()
    md.create_all(engine)
    md_b, _ = _metadata(b)
    md_b.create_all(engine)
    djb.install(engine)
    _, t = _metadata()
    val = np.arange(17.0)
    with engine.connect() as conn:
        conn.execute(sa.text(f"USE `{b}`"))
        conn.execute(sa.insert(t).values(id=1, b=val))  # goes to b.item
        conn.commit()
        conn.execute(sa.text(f"USE `{database.default_schema}`"))
        conn.commit()
    reader = sa.create_engine(database.url.set(database=b))
    djb.install(reader)
    try:
        with reader.connect() as conn:
            got = conn.execute(sa.select(t.c.b).where(t.c.id == 1)).scalar_one()
        np.testing.assert_array_equal(got, val)
    finally:
        djb.uninstall(reader)
        reader.dispose()
