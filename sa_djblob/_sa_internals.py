"""The few places where sa_djblob relies on SQLAlchemy internals, all in this module.

Each has no public equivalent in SQLAlchemy 2.0-2.1; ``tests/test_sa_internals.py``
checks every one of them on the installed SQLAlchemy, so an upgrade that changes
one fails there, loudly, not somewhere in a user's result.

- ``result_columns``: the types of a compiled SELECT's result columns, by position
  (``SQLCompiler._result_columns``), so the read path knows which raw cells are
  external references before the result is built.
- ``RowTransformingStrategy``: a ``CursorFetchStrategy`` (set as the execution
  context's ``cursor_fetch_strategy`` in ``after_cursor_execute``) that hands the
  result its rows in chunks after a function has seen each chunk: the read path
  prefetches a chunk's payloads concurrently, a partition at a time for
  ``yield_per`` / ``stream_results``, and no row is lost to an error.
- ``type_bound_foreign_key`` and ``type_bound_index``: a column type's own foreign
  key and index, flagged as SQLAlchemy flags the CHECK constraint of a ``Boolean``
  and the index of ``Column(index=True)``, so table copies (``Table.to_metadata``,
  Alembic's batch mode) do not double them.
- ``dml_statement``: the statement a context executes, lambdas resolved
  (``StatementLambdaElement._resolved``), to find the table an INSERT or UPDATE (also
  one inside a CTE) writes to.
- ``SchemaEventType``: ``TypeDecorator._set_parent``, the hook SQLAlchemy's own
  schema types (``Enum``, ``Boolean``) use to act when their column joins a table.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine.cursor import CursorFetchStrategy
from sqlalchemy.sql import visitors
from sqlalchemy.sql.base import SchemaEventTarget

__all__ = [
    "RowTransformingStrategy",
    "SchemaEventType",
    "dml_statement",
    "install_strategy",
    "result_columns",
    "type_bound_foreign_key",
    "type_bound_index",
]


def result_columns(context: Any) -> list[tuple[int, Any]]:
    """``(position, type)`` of each result column of the statement *context* executed."""
    compiled = getattr(context, "compiled", None)
    columns = getattr(compiled, "_result_columns", None)
    if not columns:
        return []
    return [(i, entry[3]) for i, entry in enumerate(columns)]


Transform = Callable[[list[Any]], list[Any]]
Check = Callable[[list[Any]], tuple[int, BaseException] | None]


class RowTransformingStrategy(CursorFetchStrategy):
    """Fetch rows from the DBAPI cursor in chunks and pass each chunk through a function.

    *chunk* is the partition size (``yield_per``), None for none. Without one, a plain
    result is read whole at the first fetch, and a streamed one (*stream*) in chunks that
    grow from 5 rows up to *max_buffer*, as SQLAlchemy's own buffered strategy does.
    Rows transformed but not yet handed out wait in a buffer.

    No row is lost to an error. If *transform* raises, the chunk's raw rows are kept and
    the next fetch transforms them again. Before rows are handed out, *check* sees them:
    it may raise (nothing is handed out, the rows stay), or return ``(i, error)`` for a
    row that cannot be read: that row is taken out and *error* raised for it alone, so
    that it never fails a batch (``fetchmany``, ``partitions``, ``all``) that SQLAlchemy
    would then drop whole.
    """

    __slots__ = ("_buffer", "_check", "_chunk", "_done", "_grow", "_max", "_pending", "_transform")

    def __init__(
        self,
        transform: Transform,
        chunk: int | None,
        *,
        stream: bool = False,
        max_buffer: int = 1000,
        check: Check | None = None,
    ) -> None:
        self._transform = transform
        self._check = check
        self._chunk = chunk
        self._grow: int | None = 5 if stream else None
        self._max = max_buffer
        self._buffer: collections.deque[Any] = collections.deque()
        self._pending: list[Any] = []  # raw rows whose transform failed: tried again first
        self._done = False

    @property
    def _exhausted(self) -> bool:
        return self._done and not self._pending

    def _fill(self, result: Any, dbapi_cursor: Any, want: int | None) -> None:
        if not self._pending:
            if self._done:
                return
            try:
                if want is None:
                    raw = dbapi_cursor.fetchall()
                    self._done = True
                else:
                    raw = dbapi_cursor.fetchmany(want)
                    if len(raw) < want:
                        self._done = True
            except BaseException as e:
                self.handle_exception(result, dbapi_cursor, e)
            self._pending = list(raw)
        if self._pending:
            # raises: the raw rows stay pending, the next fetch transforms them again
            self._buffer.extend(self._transform(self._pending))
            self._pending = []

    def _take(self, size: int) -> list[Any]:
        """The next *size* buffered rows (fewer at the end), checked, taken out."""
        rows = list(itertools.islice(self._buffer, size))
        if rows and self._check is not None:
            bad = self._check(rows)
            if bad is not None:
                i, error = bad
                del self._buffer[i]
                raise error
        for _ in rows:
            self._buffer.popleft()
        return rows

    def prefill(self, dbapi_cursor: Any) -> None:
        """Read and transform every row now (before the result exists)."""
        raw = dbapi_cursor.fetchall()
        self._done = True
        if raw:
            self._buffer.extend(self._transform(list(raw)))

    def _next_size(self) -> int | None:
        if self._chunk:
            return self._chunk
        if self._grow is None:
            return None
        size = self._grow
        self._grow = min(self._grow * 2, self._max)
        return size

    def soft_close(self, result: Any, dbapi_cursor: Any) -> None:
        self._buffer.clear()
        self._pending = []
        super().soft_close(result, dbapi_cursor)

    def hard_close(self, result: Any, dbapi_cursor: Any) -> None:
        self._buffer.clear()
        self._pending = []
        super().hard_close(result, dbapi_cursor)

    def yield_per(self, result: Any, dbapi_cursor: Any, num: int) -> None:
        self._chunk = num

    def fetchone(self, result: Any, dbapi_cursor: Any, hard_close: bool = False) -> Any:
        if not self._buffer:
            self._fill(result, dbapi_cursor, self._next_size())
        if not self._buffer:
            result._soft_close(hard=hard_close)
            return None
        return self._take(1)[0]

    def fetchmany(self, result: Any, dbapi_cursor: Any, size: int | None = None) -> Any:
        if size is None:
            size = self._chunk or getattr(dbapi_cursor, "arraysize", 1) or 1
        while len(self._buffer) < size and not self._exhausted:
            # whole partitions, so that no prefetch is smaller than one
            self._fill(result, dbapi_cursor, max(size - len(self._buffer), self._chunk or 0))
        rows = self._take(size)
        if not rows:
            result._soft_close()
        return rows

    def fetchall(self, result: Any, dbapi_cursor: Any) -> Any:
        while not self._exhausted:
            self._fill(result, dbapi_cursor, None)
        rows = self._take(len(self._buffer))
        result._soft_close()
        return rows


def dml_statement(context: Any) -> tuple[str, Any]:
    """What an executing statement is, for the write path: ``("text", None)`` for a
    text() statement, ``("write", table)`` for an INSERT or UPDATE (at the top, or
    inside a CTE) and the table it writes to, ``("read", None)`` for anything else."""
    compiled = getattr(context, "compiled", None)
    stmt = getattr(compiled, "statement", None)
    if stmt is None or isinstance(stmt, sa.TextClause):
        return "text", None
    stmt = getattr(stmt, "_resolved", stmt)  # a lambda_stmt(): the statement it made
    if isinstance(stmt, sa.Insert | sa.Update):
        return "write", stmt.table
    for element in visitors.iterate(stmt):
        if isinstance(element, sa.Insert | sa.Update):
            return "write", element.table
    return "read", None


def install_strategy(context: Any, strategy: RowTransformingStrategy) -> None:
    """Make the result of *context* fetch its rows through *strategy*."""
    context.cursor_fetch_strategy = strategy


def type_bound_foreign_key(
    columns: Sequence[sa.Column[Any]], refcolumns: Sequence[sa.Column[Any]], **kw: Any
) -> sa.ForeignKeyConstraint:
    """A foreign key made by a column's type: table copies do not copy it (the type
    makes it again on the copy)."""
    return sa.ForeignKeyConstraint(columns, refcolumns, _type_bound=True, **kw)


def type_bound_index(name: str, column: sa.Column[Any]) -> sa.Index:
    """An index made by a column's type, flagged like ``Column(index=True)``'s index."""
    return sa.Index(name, column, _column_flag=True)


class SchemaEventType:
    """Mixin for a TypeDecorator that acts when its column is attached (``on_column``)."""

    def _set_parent(self, parent: SchemaEventTarget, outer: bool = False, **kw: Any) -> None:
        super()._set_parent(parent, outer=outer, **kw)  # type: ignore[misc]
        if isinstance(parent, sa.Column):
            self.on_column(parent)

    def on_column(self, column: sa.Column[Any]) -> None:
        """Called when a column of this type is created."""
