"""The externals table ``~external_<store>``: an ordinary Table on the user's MetaData."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

from .._config import config
from .._dialects import dialect_support, find_support
from .._exceptions import StoreNotConfiguredError
from .._sa_internals import type_bound_foreign_key, type_bound_index

__all__ = [
    "Reference",
    "EXTERNAL_PREFIX",
    "HashType",
    "attach_external",
    "external_store",
    "external_table",
    "external_table_name",
]

EXTERNAL_PREFIX = "~external_"
_INFO_STORE = "sa_djblob_store"

_HASH_COMMENT = (
    ":uuid:hash of contents (blob), of filename + contents (attach), or relative filepath"
    " (filepath)"
)


class HashType(TypeDecorator[uuid.UUID]):
    """A 16-byte content hash, a ``uuid.UUID`` in Python (the externals table's key)."""

    impl = sa.LargeBinary
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        support = find_support(dialect)
        impl = sa.LargeBinary(16) if support is None else support.hash_type()
        return dialect.type_descriptor(impl)

    def process_bind_param(self, value: Any, dialect: Dialect) -> bytes | None:
        if value is None:
            return None
        if isinstance(value, uuid.UUID):
            return value.bytes
        if isinstance(value, bytes | bytearray | memoryview) and len(value) == 16:
            return bytes(value)
        return uuid.UUID(str(value)).bytes

    def process_result_value(self, value: Any, dialect: Dialect) -> uuid.UUID | None:
        if value is None:
            return None
        return uuid.UUID(bytes=bytes(value))

    def __repr__(self) -> str:
        return "HashType()"


def external_table_name(store: str) -> str:
    return f"{EXTERNAL_PREFIX}{store}"


def external_table(metadata: sa.MetaData, store: str, schema: str | None = None) -> sa.Table:
    """The externals table of *store* in *schema* on *metadata*, created on first use."""
    name = external_table_name(store)
    key = f"{schema}.{name}" if schema else name
    existing = metadata.tables.get(key)
    if existing is not None:
        return existing
    table = sa.Table(
        name,
        metadata,
        sa.Column("hash", HashType(), primary_key=True, comment=_HASH_COMMENT),
        sa.Column(
            "size",
            sa.BigInteger().with_variant(mysql.BIGINT(unsigned=True), "mysql", "mariadb"),
            nullable=False,
            comment="size of object in bytes",
        ),
        sa.Column(
            "attachment_name",
            sa.String(255),
            nullable=True,
            comment="the filename of an attachment",
        ),
        sa.Column(
            "filepath",
            sa.String(1000),
            nullable=True,
            comment="relative filepath or attachment filename",
        ),
        sa.Column(
            "contents_hash",
            HashType(),
            nullable=True,
            comment=":uuid:used for the filepath datatype",
        ),
        sa.Column(
            "timestamp",
            sa.TIMESTAMP(),
            nullable=False,
            server_default=sa.func.current_timestamp(),
            comment="automatic timestamp",
        ),
        schema=schema,
        comment="external storage tracking",
        info={_INFO_STORE: store},
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
    )
    sa.event.listen(table, "before_create", _refuse_unsupported)
    return table


def _refuse_unsupported(target: sa.Table, connection: Any, **kw: Any) -> None:
    """``create_all`` of an externals table on a database without support, or for a store
    that is not configured: refused before anything is created."""
    dialect_support(connection.dialect)
    store = target.info[_INFO_STORE]
    configured = config["stores"]
    if store not in configured:
        raise StoreNotConfiguredError(
            f"a column names store {store!r} ({target.name!r} tracks it),"
            f" which is not configured (configured: {', '.join(sorted(configured)) or 'none'}):"
            f" set djb.config['stores'][{store!r}] before create_all"
        )


def _index_name(table: sa.Table, column: sa.Column[Any]) -> str:
    name = f"ix_{table.name}_{column.name}"
    if len(name) > 60:
        digest = hashlib.sha1(name.encode(), usedforsecurity=False).hexdigest()[:8]
        name = f"{name[:51]}_{digest}"
    return name


def attach_external(
    column: sa.Column[Any], table: sa.Table, store: str, *, foreign_key: bool = True
) -> None:
    """Give an external column its FK to the externals table (and an index)."""
    if table.name.startswith(EXTERNAL_PREFIX):
        return
    ext = external_table(table.metadata, store, table.schema)
    has_fk = any(fk.target_fullname == f"{ext.fullname}.hash" for fk in column.foreign_keys)
    if foreign_key and not has_fk:
        # Type-bound, like the CHECK constraint of a Boolean: a copy of the column
        # (Table.to_metadata, Alembic's operations) makes it anew, so copies skip it.
        table.append_constraint(
            type_bound_foreign_key([column], [ext.c.hash], onupdate="RESTRICT", ondelete="RESTRICT")
        )
    indexed = (
        column.primary_key
        or column.index
        or column.unique
        or any(list(ix.columns) == [column] for ix in table.indexes)
    )
    if not indexed:
        # Flagged like the index of ``Column(index=True)``: table copies skip it, since the
        # type makes it again on the copied column.
        type_bound_index(_index_name(table, column), column)


def external_store(column: Any) -> str | None:
    """The store of a column with an external type (``Blob(store=...)`` ...), else None."""
    store = getattr(getattr(column, "type", None), "sa_djblob_store", None)
    return store if isinstance(store, str) else None


@dataclass(frozen=True)
class Reference:
    """A column that references an externals table (found in the database's FK metadata)."""

    schema: str | None
    table: str
    column: str
