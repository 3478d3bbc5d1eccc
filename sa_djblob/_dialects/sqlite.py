"""SQLite: no row locks (a write transaction excludes other writers), foreign keys on."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.types import TypeEngine

from .base import DialectSupport, insert_do_nothing_returning

__all__ = ["support"]


def _foreign_keys_on(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


class SQLiteSupport(DialectSupport):
    row_locks = False
    sweep_isolation = None

    def inrow_type(self) -> TypeEngine[Any]:
        return sa.LargeBinary()

    def hash_type(self) -> TypeEngine[Any]:
        return sa.LargeBinary(16)

    def insert_missing(
        self, conn: Connection, table: sa.Table, rows: Sequence[dict[str, Any]], **options: Any
    ) -> set[uuid.UUID] | None:
        return insert_do_nothing_returning(conn, sqlite_insert, table, rows, options)

    def lock_shared(self, select: sa.Select[Any]) -> sa.Select[Any]:
        return select  # the write transaction already excludes sweepers

    def begin_write(self, conn: Connection, table: sa.Table) -> None:
        # a write starts SQLite's write transaction: every writer waits from here on
        conn.execute(sa.delete(table).where(table.c.hash.is_(None)))

    def is_retryable(self, exc: BaseException) -> bool:
        seen: set[int] = set()
        cur: BaseException | None = exc
        while cur is not None and id(cur) not in seen:
            seen.add(id(cur))
            if "database is locked" in str(getattr(cur, "orig", cur)):
                return True
            cur = cur.__cause__ or cur.__context__
        return False

    def attachment_ref_sql(self, hash_sql: str, name_sql: str) -> str:
        return f"CAST({hash_sql} || {name_sql} AS BLOB)"

    def database_identity(self, conn: Connection) -> str:
        files = {row[1]: row[2] for row in conn.exec_driver_sql("PRAGMA database_list")}
        return f"sqlite:{files.get('main') or ':memory:'}"

    def install(self, engine: Engine) -> None:
        if not event.contains(engine.pool, "checkout", _foreign_keys_on):
            event.listen(engine.pool, "checkout", _foreign_keys_on)

    def uninstall(self, engine: Engine) -> None:
        if event.contains(engine.pool, "checkout", _foreign_keys_on):
            event.remove(engine.pool, "checkout", _foreign_keys_on)


support = SQLiteSupport()
