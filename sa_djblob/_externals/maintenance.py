"""``djb.externals(engine)``: the externals tables of a schema, and their upkeep."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, overload

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from .._config import config
from .._exceptions import SaDjblobError
from .._layout import object_path
from ..stores import Store, get_store
from .table import external_table, external_table_name
from .write import sync_engine

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from .aio import AsyncExternalTable

__all__ = ["ExternalTable", "Reference", "SweepReport", "VerifyReport", "externals"]


@dataclass(frozen=True)
class Reference:
    """A column that references an externals table (found in the database's FK metadata)."""

    schema: str | None
    table: str
    column: str


@dataclass
class SweepReport:
    """What a sweep removed (or, with ``dry_run``, would remove)."""

    dry_run: bool = False
    rows_deleted: int = 0
    payloads_deleted: int = 0
    orphans_deleted: int = 0
    bytes_freed: int = 0
    skipped_referenced: int = 0
    orphans_kept: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass
class VerifyReport:
    """What ``verify`` found: payloads that are missing or do not match their hash."""

    checked: int = 0
    missing: list[tuple[uuid.UUID, PurePosixPath]] = field(default_factory=list)
    corrupt: list[tuple[uuid.UUID, PurePosixPath]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.corrupt or self.errors)


class ExternalTable:
    """The externals table of one store in one schema."""

    def __init__(self, engine: Engine | AsyncEngine, store: str, schema: str | None = None) -> None:
        self.engine = sync_engine(engine)
        self.store_name = store
        self._schema = schema
        self.table = external_table(sa.MetaData(), store, schema)

    def __repr__(self) -> str:
        return f"ExternalTable(store={self.store_name!r}, schema={self.schema!r})"

    @property
    def store(self) -> Store:
        return get_store(self.store_name)

    @property
    def schema(self) -> str:
        """The schema whose objects this table tracks (the default schema if none given)."""
        if self._schema:
            return self._schema
        with self.engine.connect() as conn:
            name = conn.dialect.default_schema_name
        if not name:
            raise SaDjblobError("cannot tell the connection's default schema")
        return str(name)

    @property
    def name(self) -> str:
        return external_table_name(self.store_name)

    def exists(self, conn: Connection | None = None) -> bool:
        if conn is None:
            with self.engine.connect() as c:
                return self.exists(c)
        return sa.inspect(conn).has_table(self.name, schema=self._schema)

    def object_path(self, key: uuid.UUID, attachment_name: str | None = None) -> PurePosixPath:
        store = self.store
        return object_path(store.location, self.schema, key, attachment_name, store.subfolding)

    # -- the references -----------------------------------------------------
    def references(self, conn: Connection | None = None) -> list[Reference]:
        """Every column of the schema with a foreign key to this externals table."""
        if conn is None:
            with self.engine.connect() as c:
                return self.references(c)
        insp = sa.inspect(conn)
        default = conn.dialect.default_schema_name
        mine = self._schema or default
        found: list[Reference] = []
        for tname in insp.get_table_names(schema=self._schema):
            for fk in insp.get_foreign_keys(tname, schema=self._schema):
                target_schema = fk.get("referred_schema") or mine
                if fk["referred_table"] == self.name and target_schema in (mine, None):
                    found.extend(
                        Reference(self._schema, tname, col) for col in fk["constrained_columns"]
                    )
        return found

    def _referenced_clause(self, refs: list[Reference]) -> list[sa.ColumnElement[bool]]:
        clauses: list[sa.ColumnElement[bool]] = []
        for ref in refs:
            t = sa.table(ref.table, sa.column(ref.column), schema=ref.schema)
            clauses.append(sa.exists().where(t.c[ref.column] == self.table.c.hash))
        return clauses

    def used_clause(self, refs: list[Reference]) -> sa.ColumnElement[bool]:
        clauses = self._referenced_clause(refs)
        return sa.or_(*clauses) if clauses else sa.false()

    def unused_clause(self, refs: list[Reference]) -> sa.ColumnElement[bool]:
        clauses = self._referenced_clause(refs)
        return sa.and_(*(sa.not_(c) for c in clauses)) if clauses else sa.true()

    # -- DataJoint's queries ----------------------------------------------------
    def _rows(self, where: sa.ColumnElement[bool] | None = None) -> Iterator[Any]:
        with self.engine.connect() as conn:
            if not self.exists(conn):
                return
            q = sa.select(self.table.c.hash, self.table.c.attachment_name)
            if where is not None:
                q = q.where(where)
            yield from conn.execute(q.order_by(self.table.c.hash))

    def paths(self) -> list[tuple[uuid.UUID, PurePosixPath]]:
        """``(hash, object path)`` of every entry (DataJoint's ``fetch_external_paths``)."""
        store = self.store
        schema = self.schema
        return [
            (h, object_path(store.location, schema, h, name, store.subfolding))
            for h, name in self._rows()
        ]

    def _hashes(self, used: bool) -> list[uuid.UUID]:
        with self.engine.connect() as conn:
            if not self.exists(conn):
                return []
            refs = self.references(conn)
            where = self.used_clause(refs) if used else self.unused_clause(refs)
            q = sa.select(self.table.c.hash).where(where).order_by(self.table.c.hash)
            return list(conn.scalars(q))

    def used(self) -> list[uuid.UUID]:
        """Hashes referenced by at least one row."""
        return self._hashes(used=True)

    def unused(self) -> list[uuid.UUID]:
        """Hashes that no row references (what a sweep removes)."""
        return self._hashes(used=False)

    def sweep(self, **kw: Any) -> SweepReport:
        from .sweep import sweep

        return sweep(self, **kw)

    def verify(self, **kw: Any) -> VerifyReport:
        from .sweep import verify

        return verify(self, **kw)


@overload
def externals(engine: Engine, schema: str | None = None) -> Mapping[str, ExternalTable]: ...
@overload
def externals(
    engine: AsyncEngine, schema: str | None = None
) -> Mapping[str, AsyncExternalTable]: ...
def externals(
    engine: Engine | AsyncEngine, schema: str | None = None
) -> Mapping[str, ExternalTable] | Mapping[str, AsyncExternalTable]:
    """One :class:`ExternalTable` per configured store, for *schema* (default: the
    connection's default schema). For an ``AsyncEngine``, one
    :class:`~sa_djblob._externals.aio.AsyncExternalTable` (awaitable methods)."""
    if not isinstance(engine, Engine):
        from .aio import AsyncExternalTable

        return {name: AsyncExternalTable(engine, name, schema) for name in config["stores"]}
    return {name: ExternalTable(engine, name, schema) for name in config["stores"]}
