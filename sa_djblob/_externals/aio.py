"""``djb.externals(async_engine)``: the upkeep of externals tables, awaitable.

:class:`AsyncExternalTable` wraps the sync :class:`ExternalTable` of the
``AsyncEngine``'s sync engine and runs each of its methods through SQLAlchemy's
``greenlet_spawn``, the way ``AsyncConnection.run_sync`` does: database calls go
through the async driver and are awaited on the event loop, store requests are handed
to sa_djblob's thread pool and awaited (see ``_pool``). A thread
(``asyncio.to_thread``) would not do: the sync side of an ``AsyncEngine`` can only
talk to its driver from the event loop's greenlet (``MissingGreenlet`` elsewhere).
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.util import greenlet_spawn

from .maintenance import DEFAULT_PAGE, ExternalTable
from .reports import SweepReport, VerifyReport
from .sweep import DEFAULT_BATCH, DEFAULT_GRACE
from .table import Reference

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from ..stores import Store
    from .relocate import CopyReport

__all__ = ["AsyncExternalTable"]

R = TypeVar("R")


class AsyncExternalTable:
    """The externals table of one store in one schema, for an ``AsyncEngine``.

    The same queries and upkeep as :class:`ExternalTable`, awaited::

        ext = djb.externals(async_engine)["shared"]
        unused = await ext.unused()
        report = await ext.sweep(grace=datetime.timedelta(hours=1))

    ``sync`` is the underlying :class:`ExternalTable` (for ``run_sync`` callers).
    """

    def __init__(
        self,
        engine: AsyncEngine,
        store: str,
        schema: str | None = None,
        metadata: sa.MetaData | None = None,
    ) -> None:
        self.async_engine = engine
        self.sync = ExternalTable(engine, store, schema, metadata)

    def __repr__(self) -> str:
        return f"AsyncExternalTable(store={self.store_name!r}, schema={self.sync._schema!r})"

    async def _run(self, fn: Callable[..., R], *args: Any, **kw: Any) -> R:
        return await greenlet_spawn(fn, *args, **kw)

    @property
    def store_name(self) -> str:
        return self.sync.store_name

    @property
    def store(self) -> Store:
        return self.sync.store

    @property
    def name(self) -> str:
        return self.sync.name

    @property
    def table(self) -> Any:
        return self.sync.table

    async def schema(self) -> str:
        """The schema whose objects this table tracks (the default schema if none given)."""
        return await self._run(lambda: self.sync.schema)

    async def exists(self) -> bool:
        return await self._run(self.sync.exists)

    async def references(self) -> list[Reference]:
        """Every column of the schema with a foreign key to this externals table."""
        return await self._run(self.sync.references)

    async def _pages(self, which: str, batch: int) -> AsyncIterator[Any]:
        pager = self.sync.pager(which, batch)
        while (page := await self._run(pager.next_page)) is not None:
            for item in page:
                yield item

    def iter_paths(
        self, *, batch: int = DEFAULT_PAGE
    ) -> AsyncIterator[tuple[uuid.UUID, PurePosixPath]]:
        """``(hash, object path)`` of every entry in hash order, *batch* rows per query
        (``async for``); memory stays bounded at any number of entries."""
        return self._pages("paths", batch)

    def iter_used(self, *, batch: int = DEFAULT_PAGE) -> AsyncIterator[uuid.UUID]:
        """Hashes referenced by at least one row, in hash order (``async for``)."""
        return self._pages("used", batch)

    def iter_unused(self, *, batch: int = DEFAULT_PAGE) -> AsyncIterator[uuid.UUID]:
        """Hashes that no row references, in hash order (``async for``)."""
        return self._pages("unused", batch)

    async def paths(self) -> list[tuple[uuid.UUID, PurePosixPath]]:
        """``(hash, object path)`` of every entry."""
        return await self._run(self.sync.paths)

    async def used(self) -> list[uuid.UUID]:
        """Hashes referenced by at least one row."""
        return await self._run(self.sync.used)

    async def unused(self) -> list[uuid.UUID]:
        """Hashes that no row references (what a sweep removes)."""
        return await self._run(self.sync.unused)

    async def sweep(
        self,
        *,
        dry_run: bool = False,
        grace: datetime.timedelta = DEFAULT_GRACE,
        progress: bool | None = None,
        batch: int = DEFAULT_BATCH,
    ) -> SweepReport:
        """:meth:`ExternalTable.sweep`, awaited."""
        return await self._run(
            self.sync.sweep, dry_run=dry_run, grace=grace, progress=progress, batch=batch
        )

    async def verify(
        self, *, progress: bool | None = None, include_unused: bool = False, chunk: int = 256
    ) -> VerifyReport:
        """:meth:`ExternalTable.verify`, awaited."""
        return await self._run(
            self.sync.verify, progress=progress, include_unused=include_unused, chunk=chunk
        )

    async def copy_to(
        self,
        new_settings: Mapping[str, Any],
        *,
        dry_run: bool = False,
        progress: bool | None = None,
        batch: int = DEFAULT_BATCH,
        verify_existing: bool = False,
        include_unused: bool = True,
    ) -> CopyReport:
        """:meth:`ExternalTable.copy_to`, awaited."""
        return await self._run(
            self.sync.copy_to,
            new_settings,
            dry_run=dry_run,
            progress=progress,
            batch=batch,
            verify_existing=verify_existing,
            include_unused=include_unused,
        )
