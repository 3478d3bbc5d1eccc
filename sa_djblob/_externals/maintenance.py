"""``djb.externals(engine)``: the externals tables of a schema, and their upkeep."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Iterator, Mapping
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from .._area import Area, resolve_schema
from .._kinds import KINDS, Kind
from ..stores import Store, get_store
from .reports import SweepReport, VerifyReport
from .sweep import DEFAULT_BATCH, DEFAULT_GRACE, sweep
from .table import Reference, external_store, external_table, external_table_name
from .verify import verify
from .write import sync_engine

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from .relocate import CopyReport

__all__ = ["DEFAULT_PAGE", "EntryPager", "ExternalTable"]

DEFAULT_PAGE = 1000
"""Rows per query of the iterators and the sweep's table reads."""

Window = tuple[uuid.UUID | None, uuid.UUID | None]
"""``(after, end)``: the hashes ``> after`` and ``<= end`` (None: unbounded)."""


class ExternalTable:
    """The externals table of one store in one schema, and its upkeep.

    *metadata*: tables whose external columns point at this store are references too
    (besides every column with a foreign key to the externals table, and every column
    whose DataJoint comment names the store), so a table whose foreign key the database
    dropped (MyISAM) still protects its payloads from the sweep.
    """

    def __init__(
        self,
        engine: Engine | AsyncEngine,
        store: str,
        schema: str | None = None,
        metadata: sa.MetaData | None = None,
    ) -> None:
        self.engine = sync_engine(engine)
        self.store_name = store
        self._schema = schema
        self._metadata = metadata
        self._resolved: str | None = None
        self.table = external_table(sa.MetaData(), store, schema)

    def __repr__(self) -> str:
        return f"ExternalTable(store={self.store_name!r}, schema={self._schema!r})"

    @property
    def store(self) -> Store:
        return get_store(self.store_name)

    def resolve(self, conn: Connection) -> str:
        """The schema whose payloads this table tracks (resolved once)."""
        if self._resolved is None:
            self._resolved = resolve_schema(conn, self._schema, self.name)
        return self._resolved

    @property
    def schema(self) -> str:
        """The schema whose objects this table tracks (the default schema if none given)."""
        if self._resolved is None:
            with self.engine.connect() as conn:
                self.resolve(conn)
        assert self._resolved is not None
        return self._resolved

    def area(self, conn: Connection | None = None) -> Area:
        """The store area of this table's payloads."""
        if conn is not None:
            self.resolve(conn)
        return Area(self.store, self.schema)

    @property
    def name(self) -> str:
        return external_table_name(self.store_name)

    def _reflected_schema(self, conn: Connection) -> str | None:
        translate = conn.get_execution_options().get("schema_translate_map") or {}
        found = translate.get(self._schema, self._schema)
        return None if found is None else str(found)

    def exists(self, conn: Connection | None = None) -> bool:
        if conn is None:
            with self.engine.connect() as c:
                return self.exists(c)
        return sa.inspect(conn).has_table(self.name, schema=self._reflected_schema(conn))

    def object_path(self, key: uuid.UUID, attachment_name: str | None = None) -> PurePosixPath:
        return self.area().path(key, attachment_name)

    # -- the references -----------------------------------------------------
    def references(self, conn: Connection | None = None) -> list[Reference]:
        """Every column of the schema that references this externals table: by a foreign
        key, by DataJoint's column comment, or as an external column of *metadata*."""
        if conn is None:
            with self.engine.connect() as c:
                return self.references(c)
        schema = self._reflected_schema(conn)
        insp = sa.inspect(conn)
        default = conn.dialect.default_schema_name
        mine = schema or default
        names = [n for n in insp.get_table_names(schema=schema) if n != self.name]
        found: dict[tuple[str, str], None] = {}
        for tname in names:
            for fk in insp.get_foreign_keys(tname, schema=schema):
                target_schema = fk.get("referred_schema") or mine
                if fk["referred_table"] == self.name and target_schema in (mine, None):
                    found.update(dict.fromkeys((tname, c) for c in fk["constrained_columns"]))
        tags = tuple(f":{k}@{self.store_name}:" for k in KINDS)
        for tname in names:
            for col in insp.get_columns(tname, schema=schema):
                if str(col.get("comment") or "").startswith(tags):
                    found[(tname, col["name"])] = None
        if self._metadata is not None:
            existing = set(names)
            for table in self._metadata.tables.values():
                if table.schema != self._schema or table.name not in existing:
                    continue
                for column in table.columns:
                    if external_store(column) == self.store_name:
                        found[(table.name, column.name)] = None
        return [Reference(schema, t, c) for t, c in found]

    def _referenced_clause(
        self, refs: list[Reference], window: Window = (None, None)
    ) -> list[sa.ColumnElement[bool]]:
        clauses: list[sa.ColumnElement[bool]] = []
        for ref in refs:
            t = sa.table(
                ref.table, sa.column(ref.column, self.table.c.hash.type), schema=ref.schema
            )
            col = t.c[ref.column]
            clauses.append(sa.exists().where(col == self.table.c.hash, *_in_window(col, window)))
        return clauses

    def used_clause(
        self, refs: list[Reference], window: Window = (None, None)
    ) -> sa.ColumnElement[bool]:
        """Referenced by a row. With a *window* (see :meth:`window_end`), the subqueries
        are bounded to it too, so a database that materializes them (MariaDB) reads the
        window's references, not every reference, per page."""
        clauses = self._referenced_clause(refs, window)
        return sa.or_(*clauses) if clauses else sa.false()

    def unused_clause(
        self, refs: list[Reference], window: Window = (None, None)
    ) -> sa.ColumnElement[bool]:
        clauses = self._referenced_clause(refs, window)
        return sa.and_(*(sa.not_(c) for c in clauses)) if clauses else sa.true()

    def window_end(self, conn: Connection, after: uuid.UUID | None, size: int) -> uuid.UUID | None:
        """The hash *size* rows after *after* (keyset order), None if fewer rows follow:
        the window ``(after, end]`` holds at most *size* rows (an index range read)."""
        t = self.table
        q = sa.select(t.c.hash).order_by(t.c.hash).offset(size - 1).limit(1)
        if after is not None:
            q = q.where(t.c.hash > after)
        found: uuid.UUID | None = conn.scalar(q)
        return found

    def in_window(self, window: Window) -> list[sa.ColumnElement[bool]]:
        """The conditions that keep the table's rows to *window* ``(after, end]``."""
        return _in_window(self.table.c.hash, window)

    # -- DataJoint's queries ----------------------------------------------------
    def pager(self, which: str, batch: int = DEFAULT_PAGE) -> EntryPager:
        """The entries of :meth:`iter_paths` (*which* ``"paths"``), :meth:`iter_used`
        (``"used"``) or :meth:`iter_unused` (``"unused"``), a page at a time."""
        return EntryPager(self, which, batch)

    def iter_paths(self, *, batch: int = DEFAULT_PAGE) -> Iterator[tuple[uuid.UUID, PurePosixPath]]:
        """``(hash, object path)`` of every entry in hash order, read *batch* rows per query
        (keyset pagination): memory stays bounded at any number of entries."""
        pager = self.pager("paths", batch)
        while (page := pager.next_page()) is not None:
            yield from page

    def iter_used(self, *, batch: int = DEFAULT_PAGE) -> Iterator[uuid.UUID]:
        """Hashes referenced by at least one row, in hash order, *batch* per query."""
        pager = self.pager("used", batch)
        while (page := pager.next_page()) is not None:
            yield from page

    def iter_unused(self, *, batch: int = DEFAULT_PAGE) -> Iterator[uuid.UUID]:
        """Hashes that no row references, in hash order, *batch* per query."""
        pager = self.pager("unused", batch)
        while (page := pager.next_page()) is not None:
            yield from page

    def paths(self) -> list[tuple[uuid.UUID, PurePosixPath]]:
        """``(hash, object path)`` of every entry (DataJoint's ``fetch_external_paths``:
        a filepath entry's object is ``<store root>/<relative path>``); a list of
        :meth:`iter_paths`."""
        return list(self.iter_paths())

    def used(self) -> list[uuid.UUID]:
        """Hashes referenced by at least one row (a list of :meth:`iter_used`)."""
        return list(self.iter_used())

    def unused(self) -> list[uuid.UUID]:
        """Hashes that no row references, what a sweep removes (a list of :meth:`iter_unused`)."""
        return list(self.iter_unused())

    def sweep(
        self,
        *,
        dry_run: bool = False,
        grace: datetime.timedelta = DEFAULT_GRACE,
        progress: bool | None = None,
        batch: int = DEFAULT_BATCH,
    ) -> SweepReport:
        """Remove the unused entries and their payloads, then the orphan payloads older than
        *grace*, in batches of *batch*, under the locking protocol (docs/design.md);
        *dry_run* only counts. *progress*: bars on stderr (None: when it is a terminal)."""
        return sweep(self, dry_run=dry_run, grace=grace, progress=progress, batch=batch)

    def verify(
        self, *, progress: bool | None = None, include_unused: bool = False, chunk: int = 256
    ) -> VerifyReport:
        """Check that every referenced payload (every payload, with *include_unused*) is in
        the store and matches its hash, *chunk* payloads at a time."""
        return verify(self, progress=progress, include_unused=include_unused, chunk=chunk)

    def copy_to(
        self,
        new_settings: Mapping[str, Any],
        *,
        dry_run: bool = False,
        progress: bool | None = None,
        batch: int = DEFAULT_BATCH,
        verify_existing: bool = False,
        include_unused: bool = True,
    ) -> CopyReport:
        """Copy every payload (every referenced one, without *include_unused*) to the
        location *new_settings* describe (this store's new settings), verified by hash; a
        rerun copies only what is missing there (and, with *verify_existing*, what does not
        match). *dry_run* only counts; *progress*: a bar on a terminal."""
        from .relocate import copy_to

        return copy_to(
            self,
            new_settings,
            dry_run=dry_run,
            progress=progress,
            batch=batch,
            verify_existing=verify_existing,
            include_unused=include_unused,
        )


def _in_window(col: sa.ColumnElement[Any], window: Window) -> list[sa.ColumnElement[bool]]:
    after, end = window
    out = []
    if after is not None:
        out.append(col > after)
    if end is not None:
        out.append(col <= end)
    return out


class EntryPager:
    """The entries of an externals table in hash order, one page (one query) at a time.

    Keyset pagination on the hash: each page is ``... WHERE hash > <last hash of the page
    before> ORDER BY hash LIMIT batch`` on a connection of its own, so no transaction or
    cursor stays open between pages and memory holds one page. The references and the
    area are resolved once, by the first page. The async twin awaits :meth:`next_page`.
    """

    def __init__(self, ext: ExternalTable, which: str, batch: int) -> None:
        if which not in ("paths", "used", "unused"):
            raise ValueError(f"which must be 'paths', 'used' or 'unused', got {which!r}")
        if batch < 1:
            raise ValueError(f"batch must be a positive number of entries, got {batch}")
        self.ext = ext
        self.which = which
        self.batch = batch
        self._query: sa.Select[Any] | None = None
        self._refs: list[Reference] | None = None
        self._area: Area | None = None
        self._after: uuid.UUID | None = None
        self._done = False

    def _start(self, conn: Connection) -> bool:
        ext, t = self.ext, self.ext.table
        if not ext.exists(conn):
            return False
        if self.which == "paths":
            self._area = ext.area(conn)
            self._query = sa.select(t.c.hash, t.c.attachment_name, t.c.filepath)
        else:
            self._refs = ext.references(conn)
            self._query = sa.select(t.c.hash)
        return True

    def next_page(self) -> list[Any] | None:
        """The next page of entries, None once there are no more."""
        if self._done:
            return None
        t = self.ext.table
        with self.ext.engine.connect() as conn:
            if self._query is None and not self._start(conn):
                self._done = True
                return None
            assert self._query is not None
            q = self._query
            if self._refs is None:  # every entry: a plain keyset page
                if self._after is not None:
                    q = q.where(t.c.hash > self._after)
                rows = conn.execute(q.order_by(t.c.hash).limit(self.batch)).all()
                self._done = len(rows) < self.batch
                self._after = rows[-1][0] if rows else None
            else:  # the used or unused entries of the next window of the table
                while True:
                    end = self.ext.window_end(conn, self._after, self.batch)
                    window = (self._after, end)
                    used = self.ext.used_clause(self._refs, window)
                    where = used if self.which == "used" else sa.not_(used)
                    q = self._query.where(where, *self.ext.in_window(window))
                    rows = conn.execute(q.order_by(t.c.hash)).all()
                    self._after, self._done = end, end is None
                    if rows or self._done:
                        break
        if not rows:
            return None
        if self._area is None:
            return [r[0] for r in rows]
        area = self._area
        return [
            (
                h,
                Kind.for_entry(name, fp).entry_path(
                    area, h, {"attachment_name": name, "filepath": fp}
                ),
            )
            for h, name, fp in rows
        ]
