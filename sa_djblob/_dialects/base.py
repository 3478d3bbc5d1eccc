"""What sa_djblob needs to know about a database: the interface each dialect implements."""

from __future__ import annotations

import abc
import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.types import TypeEngine

__all__ = ["INTERNAL", "DialectSupport"]

#: the execution option that marks sa_djblob's own statements (its listeners skip them)
INTERNAL = "sa_djblob_internal"


class DialectSupport(abc.ABC):
    """The SQL of one database for the write path, the read path and the sweep."""

    #: whether ``SELECT ... FOR SHARE`` / ``FOR UPDATE SKIP LOCKED`` lock rows; where they
    #: do not (SQLite), a write transaction excludes every other writer instead
    row_locks = True
    #: the isolation level of the sweep's transactions (None: the connection's own)
    sweep_isolation: str | None = "READ COMMITTED"

    # -- column types ---------------------------------------------------------
    @abc.abstractmethod
    def inrow_type(self) -> TypeEngine[Any]:
        """The column type of in-row values (a large binary)."""

    @abc.abstractmethod
    def hash_type(self) -> TypeEngine[Any]:
        """The column type of 16-byte content hashes."""

    # -- upserts ------------------------------------------------------------------
    @abc.abstractmethod
    def insert_missing(
        self, conn: Connection, table: sa.Table, rows: Sequence[dict[str, Any]], **options: Any
    ) -> set[uuid.UUID] | None:
        """Insert the *rows* (keyed by ``hash``) that are not in *table* yet.

        Returns the keys this call inserted, or None when the database cannot tell
        which (the caller then checks every payload).
        """

    # -- locks --------------------------------------------------------------------
    def lock_shared(self, select: sa.Select[Any]) -> sa.Select[Any]:
        """*select* locking its rows against deletion until the transaction ends."""
        return select.with_for_update(read=True)

    def begin_write(self, conn: Connection, table: sa.Table) -> None:  # noqa: B027
        """Start a sweep's batch: where rows cannot be locked, take the write lock now."""

    def is_retryable(self, exc: BaseException) -> bool:
        """Whether a database error is a deadlock, lock timeout or serialization failure."""
        return False

    # -- reading ----------------------------------------------------------------
    @abc.abstractmethod
    def attachment_ref_sql(self, hash_sql: str, name_sql: str) -> str:
        """SQL for ``hash || utf8(name)`` as bytes."""

    def digest_sql(self, expr_sql: str, algorithm: str) -> str | None:
        """SQL for the 16-byte key of the bytes *expr_sql* (a store's ``hash`` setting:
        ``md5`` or ``sha256``, the first 16 bytes), or None where the database has no such
        function (``djb.move`` then compares in Python)."""
        return None

    # -- where rows live ----------------------------------------------------------
    def table_schema(self, conn: Connection, name: str, **options: Any) -> str | None:
        """The schema an unqualified table *name* resolves to on *conn*, or None if the
        table does not exist. The default: the connection's default schema."""
        default = conn.dialect.default_schema_name
        return str(default) if default else None

    @abc.abstractmethod
    def database_identity(self, conn: Connection) -> str:
        """Which database *conn* talks to, as stably as the server can tell."""

    # -- engine set-up ------------------------------------------------------------
    def install(self, engine: Engine) -> None:  # noqa: B027
        """Add the dialect's own listeners to *engine* (idempotent)."""

    def uninstall(self, engine: Engine) -> None:  # noqa: B027
        """Remove what :meth:`install` added (idempotent)."""


def sqlstate_retryable(exc: BaseException, states: Sequence[str], codes: Sequence[int]) -> bool:
    """Walk *exc*, its causes and contexts for a DBAPI error with one of *states*/*codes*."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        orig = getattr(cur, "orig", cur)
        sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
        if sqlstate in states:
            return True
        args = getattr(orig, "args", ())
        if args and isinstance(args[0], int) and args[0] in codes:
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def insert_do_nothing_returning(
    conn: Connection,
    insert: Any,
    table: sa.Table,
    rows: Sequence[dict[str, Any]],
    options: dict[str, Any],
) -> set[uuid.UUID]:
    """``INSERT ... ON CONFLICT (hash) DO NOTHING RETURNING hash`` with *insert*, the
    dialect's insert construct (PostgreSQL's and SQLite's spell it alike). Executemany
    with RETURNING: SQLAlchemy batches it ("insertmanyvalues")."""
    stmt = (
        insert(table).on_conflict_do_nothing(index_elements=[table.c.hash]).returning(table.c.hash)
    )
    return set(conn.scalars(stmt, list(rows), execution_options=options))
