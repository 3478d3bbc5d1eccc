"""DataJoint's own bookkeeping tables, for schemas that sa_djblob creates.

A schema (MySQL / MariaDB database) that DataJoint 0.14 creates starts with its event log
table ``~log``. A schema that sa_djblob (or any SQLAlchemy code) creates has none, and
DataJoint cannot make it on the fly where it first needs it: ``Table.delete()`` logs its
``DELETE`` inside the transaction it opens, DataJoint then tries to declare ``~log``
there and fails with "Cannot declare new tables inside a transaction". sa_djblob never
creates DataJoint's tables on its own; to make a schema fully usable by DataJoint
(deletes, and ``schema.external[store].delete()`` included), declare them explicitly,
either on your models' MetaData, so ``create_all`` and Alembic autogenerate see them::

    from sa_djblob.datajoint import datajoint_tables

    datajoint_tables(metadata)          # adds the Table "~log"

or once per database, idempotently::

    from sa_djblob.datajoint import declare_datajoint_tables

    declare_datajoint_tables(engine)    # CREATE TABLE `~log` unless it exists

``~log`` is declared exactly as DataJoint 0.14 declares it (columns, types, defaults,
comments, ``ENGINE=InnoDB``, the table comment "event logging table for `<database>`").
DataJoint's other tables need nothing from sa_djblob: the job table ``~jobs`` is declared
by DataJoint when ``populate(reserve_jobs=True)`` first asks for it, outside any
transaction, and the externals tables ``~external_<store>`` are sa_djblob's own (they are
declared with the tables whose columns use the store).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Connection, Engine

from ._exceptions import SaDjblobError

__all__ = [
    "LOG_TABLE",
    "DataJointTablesError",
    "datajoint_tables",
    "declare_datajoint_tables",
    "log_table",
]

LOG_TABLE = "~log"
"""The name of DataJoint's event log table."""

_MYSQL = ("mysql", "mariadb")


class DataJointTablesError(SaDjblobError, ValueError):
    """DataJoint's tables were asked for where DataJoint cannot work (not MySQL/MariaDB)."""


def _log_comment(database: str) -> str:
    return f"event logging table for `{database}`"


def log_table(
    metadata: sa.MetaData, schema: str | None = None, *, database: str | None = None
) -> sa.Table:
    """DataJoint's ``~log`` as a Table of *metadata* (the existing one if already there).

    *schema* is the database the table lives in (None: the connection's default).
    The table comment names the database; with ``schema=None`` it is taken from
    *database* if given, else from the connection at ``CREATE TABLE`` time. Pass
    *database* when Alembic compares the table with a database, so the comment matches.
    """
    key = LOG_TABLE if schema is None else f"{schema}.{LOG_TABLE}"
    existing = metadata.tables.get(key)
    if existing is not None:
        return existing
    named = schema or database
    unsigned_int = sa.Integer().with_variant(mysql.INTEGER(unsigned=True), *_MYSQL)
    table = sa.Table(
        LOG_TABLE,
        metadata,
        sa.Column(
            "id",
            unsigned_int,
            primary_key=True,
            autoincrement=True,
            comment="event order id",
        ),
        sa.Column(
            "timestamp",
            sa.TIMESTAMP(),
            nullable=False,
            server_default=sa.text("CURRENT_TIMESTAMP"),
            comment="event timestamp",
        ),
        sa.Column("version", sa.String(12), nullable=False, comment="datajoint version"),
        sa.Column("user", sa.String(255), nullable=False, comment="user@host"),
        sa.Column(
            "host",
            sa.String(255),
            nullable=False,
            server_default="",
            comment="system hostname",
        ),
        sa.Column(
            "event",
            sa.String(255),
            nullable=False,
            server_default="",
            comment="event message",
        ),
        schema=schema,
        comment=None if named is None else _log_comment(named),
        mysql_engine="InnoDB",
        info={"sa_djblob": "datajoint"},
    )
    if named is None:
        sa.event.listen(table, "before_create", _name_the_database)
        sa.event.listen(table, "after_create", _forget_the_database)
    return table


def _name_the_database(table: sa.Table, connection: Connection, **_: Any) -> None:
    if connection.dialect.name not in _MYSQL:
        return
    database = connection.execute(sa.select(sa.func.database())).scalar()
    if database:
        table.comment = _log_comment(str(database))


def _forget_the_database(table: sa.Table, connection: Connection, **_: Any) -> None:
    table.comment = None


def datajoint_tables(
    metadata: sa.MetaData, schema: str | None = None, *, database: str | None = None
) -> list[sa.Table]:
    """Add DataJoint's own tables (today: ``~log``) to *metadata*; return them.

    They are ordinary tables: ``metadata.create_all`` creates them (with ``checkfirst``,
    never twice) and Alembic autogenerate renders them into migrations. See
    :func:`log_table` for *schema* and *database*. DataJoint runs on MySQL / MariaDB
    only; on other databases the tables are created but nothing uses them.
    """
    return [log_table(metadata, schema, database=database)]


def declare_datajoint_tables(bind: Engine | Connection, schema: str | None = None) -> list[str]:
    """Create DataJoint's own tables in *schema* (None: the connection's database) unless
    they exist; return the names of the tables created (``[]`` when there was nothing
    to do). Idempotent. MySQL / MariaDB only.

    With a Connection, the DDL runs on it (MySQL commits DDL on its own); with an
    Engine, in a transaction of its own.
    """
    if bind.dialect.name not in _MYSQL:
        raise DataJointTablesError(
            f"DataJoint 0.14 runs on MySQL / MariaDB only, not on {bind.dialect.name!r}:"
            " declare DataJoint's tables on the MySQL / MariaDB database DataJoint uses"
        )
    if isinstance(bind, Engine):
        with bind.begin() as conn:
            return declare_datajoint_tables(conn, schema)
    tables = datajoint_tables(sa.MetaData(), schema)
    inspector = sa.inspect(bind)
    missing = [t for t in tables if not inspector.has_table(t.name, schema=schema)]
    if missing:
        tables[0].metadata.create_all(bind, tables=missing, checkfirst=True)
    return [t.name for t in missing]
