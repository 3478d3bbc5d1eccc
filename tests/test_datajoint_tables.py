"""``sa_djblob.datajoint``: DataJoint 0.14's ``~log``, declared exactly as DataJoint does.

The expected columns are what MariaDB reports (``SHOW FULL COLUMNS``) for the ``~log``
that DataJoint 0.14.10 itself creates with a new schema; the interop test
``test_datajoint_deletes_in_a_schema_sa_djblob_made`` shows DataJoint using the table.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from conftest import Database

from sa_djblob.datajoint import (
    LOG_TABLE,
    DataJointTablesError,
    datajoint_tables,
    declare_datajoint_tables,
    log_table,
)

# Field, Type, Null, Key, Default, Extra, Comment
DATAJOINT_LOG_COLUMNS = [
    ("id", "int(10) unsigned", "NO", "PRI", None, "auto_increment", "event order id"),
    ("timestamp", "timestamp", "NO", "", "current_timestamp()", "", "event timestamp"),
    ("version", "varchar(12)", "NO", "", None, "", "datajoint version"),
    ("user", "varchar(255)", "NO", "", None, "", "user@host"),
    ("host", "varchar(255)", "NO", "", "", "", "system hostname"),
    ("event", "varchar(255)", "NO", "", "", "", "event message"),
]


def _shape(engine: sa.Engine, database: str) -> tuple[list[tuple[Any, ...]], str, str]:
    with engine.connect() as conn:
        cols = conn.exec_driver_sql(f"SHOW FULL COLUMNS FROM `{LOG_TABLE}` IN `{database}`")
        columns = [(r.Field, r.Type, r.Null, r.Key, r.Default, r.Extra, r.Comment) for r in cols]
        status = conn.exec_driver_sql(
            f"SHOW TABLE STATUS FROM `{database}` WHERE name = '{LOG_TABLE}'"
        ).one()
    return columns, status.Engine, status.Comment


def _normal(columns: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """MySQL 8 spells ``int unsigned`` / ``CURRENT_TIMESTAMP``; MariaDB as DataJoint's."""
    out = []
    for c in columns:
        typ = "int(10) unsigned" if c[1] == "int unsigned" else c[1]
        default = "current_timestamp()" if c[4] == "CURRENT_TIMESTAMP" else c[4]
        extra = "" if c[5] == "DEFAULT_GENERATED" else c[5]
        out.append((c[0], typ, c[2], c[3], default, extra, c[6]))
    return out


@pytest.mark.backends("mysql")
def test_declare_makes_datajoints_log_table(database: Database, engine: sa.Engine) -> None:
    name = database.url.database
    assert name
    assert declare_datajoint_tables(engine) == [LOG_TABLE]
    columns, engine_name, comment = _shape(engine, name)
    assert _normal(columns) == DATAJOINT_LOG_COLUMNS
    assert engine_name == "InnoDB"
    assert comment == f"event logging table for `{name}`"
    # idempotent, also through a Connection and with the schema named
    with engine.connect() as conn:
        assert declare_datajoint_tables(conn) == []
        assert declare_datajoint_tables(conn, name) == []
    # DataJoint's Log inserts rows like this one
    with engine.begin() as conn:
        conn.exec_driver_sql(
            f"INSERT INTO `{LOG_TABLE}` (version, user, host, event)"
            " VALUES ('0.14.10py', 'u@h', 'node', 'Declared x')"
        )
        assert conn.exec_driver_sql(f"SELECT id, event FROM `{LOG_TABLE}`").one() == (
            1,
            "Declared x",
        )


@pytest.mark.backends("mysql")
def test_declare_in_another_schema(database: Database, engine: sa.Engine) -> None:
    other = database.make_schema("dj")
    assert declare_datajoint_tables(engine, other) == [LOG_TABLE]
    assert declare_datajoint_tables(engine, other) == []
    _, _, comment = _shape(engine, other)
    assert comment == f"event logging table for `{other}`"
    assert not sa.inspect(engine).has_table(LOG_TABLE)  # not in the default database


@pytest.mark.backends("mysql")
def test_metadata_table_is_created_by_create_all(database: Database, engine: sa.Engine) -> None:
    name = database.url.database
    assert name
    md = sa.MetaData()
    (log,) = datajoint_tables(md)
    assert datajoint_tables(md) == [log] and log_table(md) is log  # once per MetaData
    md.create_all(engine)
    md.create_all(engine)  # checkfirst
    columns, _, comment = _shape(engine, name)
    assert _normal(columns) == DATAJOINT_LOG_COLUMNS
    assert comment == f"event logging table for `{name}`"
    assert log.comment is None  # named from the connection at CREATE time only
    named = log_table(sa.MetaData(), database="lab")
    assert named.comment == "event logging table for `lab`"


def test_other_databases_are_refused(database: Database, engine: sa.Engine) -> None:
    if engine.dialect.name in ("mysql", "mariadb"):
        pytest.skip("MySQL / MariaDB are the databases DataJoint runs on")
    with pytest.raises(DataJointTablesError, match="MySQL / MariaDB only"):
        declare_datajoint_tables(engine)
    # On the MetaData the table is an ordinary table (nothing uses it there).
    md = sa.MetaData()
    datajoint_tables(md)
    md.create_all(engine)
    assert sa.inspect(engine).has_table(LOG_TABLE)
