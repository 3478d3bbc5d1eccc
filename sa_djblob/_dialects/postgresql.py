"""PostgreSQL: ``ON CONFLICT DO NOTHING RETURNING``, ``FOR SHARE``, ``search_path``."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Connection
from sqlalchemy.types import TypeEngine

from .base import DialectSupport, insert_do_nothing_returning, sqlstate_retryable

__all__ = ["support"]

_WHERE = sa.text(
    "SELECT n.nspname FROM pg_catalog.pg_class c"
    " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
    " WHERE c.oid = to_regclass(:name)"
)


class PostgreSQLSupport(DialectSupport):
    def inrow_type(self) -> TypeEngine[Any]:
        return postgresql.BYTEA()

    def digest_sql(self, expr_sql: str, algorithm: str) -> str | None:
        if algorithm == "md5":
            return f"decode(md5({expr_sql}), 'hex')"
        return f"substring(sha256({expr_sql}) from 1 for 16)"

    def hash_type(self) -> TypeEngine[Any]:
        return postgresql.BYTEA()

    def insert_missing(
        self, conn: Connection, table: sa.Table, rows: Sequence[dict[str, Any]], **options: Any
    ) -> set[uuid.UUID] | None:
        return insert_do_nothing_returning(conn, pg_insert, table, rows, options)

    def is_retryable(self, exc: BaseException) -> bool:
        # serialization failure, deadlock, lock not available
        return sqlstate_retryable(exc, ("40001", "40P01", "55P03"), ())

    def attachment_ref_sql(self, hash_sql: str, name_sql: str) -> str:
        return f"({hash_sql} || convert_to({name_sql}, 'UTF8'))"

    def table_schema(self, conn: Connection, name: str, **options: Any) -> str | None:
        # An unqualified name is found through search_path, which may name several
        # schemas: ask the server where this one resolves.
        quoted = '"' + name.replace('"', '""') + '"'
        found = conn.execute(_WHERE, {"name": quoted}, execution_options=options).scalar()
        return None if found is None else str(found)

    def database_identity(self, conn: Connection) -> str:
        try:
            with conn.begin_nested():
                server = conn.execute(
                    sa.text("SELECT system_identifier::text FROM pg_control_system()")
                ).scalar_one()
        except sa.exc.DBAPIError:  # not allowed to read it: the address serves instead
            server = conn.execute(
                sa.text(
                    "SELECT coalesce(host(inet_server_addr()), 'local') || ':'"
                    " || coalesce(inet_server_port()::text, '')"
                )
            ).scalar_one()
        database = conn.execute(sa.text("SELECT current_database()")).scalar_one()
        return f"postgresql:{server}/{database}"


support = PostgreSQLSupport()
