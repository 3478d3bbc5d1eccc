"""``djb.externals(engine)``: the externals tables of every configured store, sync or async."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, overload

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .._config import config
from .._exceptions import StoreNotConfiguredError
from .aio import AsyncExternalTable
from .maintenance import ExternalTable

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["externals"]


class _Externals(dict[str, Any]):
    def __missing__(self, key: str) -> Any:
        raise StoreNotConfiguredError(
            f"store {key!r} is not configured (configured: {', '.join(sorted(self)) or 'none'}):"
            f" set djb.config['stores'][{key!r}]"
        )


@overload
def externals(
    engine: Engine, schema: str | None = None, *, metadata: sa.MetaData | None = None
) -> Mapping[str, ExternalTable]: ...
@overload
def externals(
    engine: AsyncEngine, schema: str | None = None, *, metadata: sa.MetaData | None = None
) -> Mapping[str, AsyncExternalTable]: ...
def externals(
    engine: Engine | AsyncEngine,
    schema: str | None = None,
    *,
    metadata: sa.MetaData | None = None,
) -> Mapping[str, ExternalTable] | Mapping[str, AsyncExternalTable]:
    """One :class:`ExternalTable` per configured store, for *schema* (default: the
    connection's default schema); *metadata* adds its tables' external columns to the
    references the sweep respects. For an ``AsyncEngine``, one
    :class:`~sa_djblob._externals.aio.AsyncExternalTable` (awaitable methods)."""
    if not isinstance(engine, Engine):
        return _Externals(
            {name: AsyncExternalTable(engine, name, schema, metadata) for name in config["stores"]}
        )
    return _Externals(
        {name: ExternalTable(engine, name, schema, metadata) for name in config["stores"]}
    )
