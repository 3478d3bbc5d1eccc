"""MySQL and MariaDB: ``INSERT IGNORE``, ``FOR SHARE`` locks, and ``max_allowed_packet``."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.types import TypeEngine

from .._exceptions import SaDjblobError
from .base import DialectSupport, sqlstate_retryable

__all__ = ["support"]

_PACKET_KEY = "sa_djblob.max_allowed_packet"


def _raise_if_too_big(size: int, limit: int) -> None:
    # PyMySQL sends binary values escaped inside the SQL text; allow for that.
    wire = 2 * size + 1024
    if wire > limit:
        raise SaDjblobError(
            f"a value of {size:,} bytes would exceed the MySQL server's max_allowed_packet"
            f" of {limit:,} bytes on the wire (PyMySQL sends binary values escaped, up to"
            " twice their size): keep large values in an external store"
            " (djb.Blob(store=...)) or raise max_allowed_packet on the server"
        )


def _check_packet(
    conn: Connection, cursor: Any, statement: Any, parameters: Any, context: Any, executemany: bool
) -> None:
    """Refuse a statement whose binary values the server would drop the connection over."""
    info = conn.connection.info  # the pooled DBAPI connection's: lives as long as it
    limit = info.get(_PACKET_KEY)
    if limit is None:
        cur = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cur.execute("SELECT @@max_allowed_packet")
            row = cur.fetchone()
            limit = info[_PACKET_KEY] = int(row[0]) if row else 1 << 30
        finally:
            cur.close()
    if parameters is None:
        return
    rows = parameters if executemany else [parameters]
    for row in rows:
        values = row.values() if isinstance(row, Mapping) else row
        if isinstance(values, Iterable) and not isinstance(values, str | bytes):
            size = sum(len(v) for v in values if isinstance(v, bytes | bytearray | memoryview))
            if size:
                _raise_if_too_big(size, limit)


class MySQLSupport(DialectSupport):
    def inrow_type(self) -> TypeEngine[Any]:
        return mysql.LONGBLOB()

    def digest_sql(self, expr_sql: str, algorithm: str) -> str | None:
        if algorithm == "md5":
            return f"UNHEX(MD5({expr_sql}))"
        return f"LEFT(UNHEX(SHA2({expr_sql}, 256)), 16)"

    def hash_type(self) -> TypeEngine[Any]:
        return mysql.BINARY(16)

    def insert_missing(
        self, conn: Connection, table: sa.Table, rows: Sequence[dict[str, Any]], **options: Any
    ) -> set[uuid.UUID] | None:
        # executemany: PyMySQL sends one multi-row INSERT and reports the rows added. All
        # of them new: this call created them all; otherwise it cannot tell which.
        stmt = sa.insert(table).prefix_with("IGNORE")
        result = conn.execute(stmt, list(rows), execution_options=options)
        if result.rowcount == len(rows):
            return {r["hash"] for r in rows}
        return None

    def is_retryable(self, exc: BaseException) -> bool:
        # 1205 lock wait timeout, 1213 deadlock (MySQL then ends the whole transaction,
        # so a later "SAVEPOINT does not exist" carries it as its context)
        return sqlstate_retryable(exc, ("40001",), (1205, 1213))

    def table_schema(self, conn: Connection, name: str, **options: Any) -> str | None:
        # the connection's current database (USE may have changed it since connect)
        found = conn.execute(sa.text("SELECT DATABASE()"), execution_options=options).scalar()
        return None if found is None else str(found)

    def attachment_ref_sql(self, hash_sql: str, name_sql: str) -> str:
        return f"CONCAT({hash_sql}, CAST({name_sql} AS BINARY))"

    def database_identity(self, conn: Connection) -> str:
        host, port, datadir = conn.execute(sa.text("SELECT @@hostname, @@port, @@datadir")).one()
        return f"mysql:{host}:{port}:{datadir}"

    def install(self, engine: Engine) -> None:
        if not event.contains(engine, "before_cursor_execute", _check_packet):
            event.listen(engine, "before_cursor_execute", _check_packet)

    def uninstall(self, engine: Engine) -> None:
        if event.contains(engine, "before_cursor_execute", _check_packet):
            event.remove(engine, "before_cursor_execute", _check_packet)


support = MySQLSupport()
