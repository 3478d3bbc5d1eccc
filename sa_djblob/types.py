"""Column types: ``Blob`` and ``Attach``, kept in the row or in an external store.

In-row values are converted here (pack / unpack, file name + contents). External
values are packed and uploaded by the write hook that ``djb.install(engine)`` adds;
the column itself holds the 16-byte content hash, a foreign key to the externals
table. Reading an external value goes through :mod:`sa_djblob._externals.read`.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any, BinaryIO, Self

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import mysql, postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.base import SchemaEventTarget
from sqlalchemy.types import TypeDecorator, TypeEngine

from . import _attach
from ._codec import pack, unpack
from ._exceptions import NotInstalledError

__all__ = ["Attach", "Blob", "ExternalRef", "HashType", "hash_impl", "inrow_impl"]


class ExternalRef(uuid.UUID):
    """A content hash put in place of an external value by the write hook."""


def inrow_impl(dialect: Dialect) -> TypeEngine[Any]:
    """The column type of in-row values on *dialect*."""
    if dialect.name in ("mysql", "mariadb"):
        return mysql.LONGBLOB()
    if dialect.name == "postgresql":
        return postgresql.BYTEA()
    return sa.LargeBinary()


def hash_impl(dialect: Dialect) -> TypeEngine[Any]:
    """The column type of content hashes on *dialect*: BINARY(16) or its equivalent."""
    if dialect.name in ("mysql", "mariadb"):
        return mysql.BINARY(16)
    if dialect.name == "postgresql":
        return postgresql.BYTEA()
    return sa.LargeBinary(16)


class HashType(TypeDecorator[uuid.UUID]):
    """A 16-byte content hash, a ``uuid.UUID`` in Python (the externals table's key)."""

    impl = sa.LargeBinary
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        return dialect.type_descriptor(hash_impl(dialect))

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


class _External(TypeDecorator[Any]):
    """Shared behaviour of ``Blob`` and ``Attach``."""

    impl = sa.LargeBinary
    cache_ok = True
    kind: str = ""

    def __init__(self, store: str | None = None, *, foreign_key: bool = True) -> None:
        """*foreign_key=False*: the column gets no foreign key to ``~external_<store>``, no
        index and no externals table on its MetaData; the DDL around it spells them out
        (a migration rendered by :mod:`sa_djblob.alembic_helpers`)."""
        if store is not None and (not isinstance(store, str) or not store.isidentifier()):
            raise ValueError(f"store must be a store name (an identifier), got {store!r}")
        if not isinstance(foreign_key, bool):
            raise TypeError(f"foreign_key must be True or False, got {foreign_key!r}")
        super().__init__()
        self.store = store
        self.foreign_key = foreign_key

    def __repr__(self) -> str:
        args = [f"store={self.store!r}"] if self.store is not None else []
        if not self.foreign_key:
            args.append("foreign_key=False")
        return f"{type(self).__name__}({', '.join(args)})"

    @property
    def python_type(self) -> type[Any]:
        return Path if self.kind == "attach" else object

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        impl = inrow_impl(dialect) if self.store is None else hash_impl(dialect)
        return dialect.type_descriptor(impl)

    def compare_values(self, x: Any, y: Any) -> bool:
        # Arrays compare elementwise; the ORM only needs to know "same object".
        return x is y

    @property
    def datajoint_comment(self) -> str:
        """DataJoint's type comment for this column (``:blob@store:`` ...)."""
        if self.store is None:
            return ":attach:" if self.kind == "attach" else ""
        return f":{self.kind}@{self.store}:"

    # -- hooks into the column and table it is attached to --------------------
    def _set_parent(self, parent: SchemaEventTarget, outer: bool = False, **kw: Any) -> None:
        super()._set_parent(parent, outer=outer, **kw)
        if not isinstance(parent, sa.Column):
            return
        comment = self.datajoint_comment
        if comment and not (parent.comment or "").startswith(comment):
            parent.comment = comment + (parent.comment or "")
        if self.store is None or not self.foreign_key:
            return
        table = getattr(parent, "table", None)
        if isinstance(table, sa.Table):
            self._on_table(parent, table)
        else:
            event.listen(parent, "after_parent_attach", self._on_table)

    _table_copy = False

    def copy(self, **kw: Any) -> Self:
        # Column._copy(schema=...) is how Table.to_metadata (and Alembic's batch mode) copy
        # a table: the copy gets the foreign key from the original's constraints.
        new = super().copy(**kw)
        new._table_copy = "schema" in kw
        return new

    def _on_table(self, column: sa.Column[Any], table: Any) -> None:
        if isinstance(table, sa.Table) and self.store is not None and self.foreign_key:
            from ._externals.table import attach_external

            attach_external(column, table, self.store, foreign_key=not self._table_copy)

    # -- values ---------------------------------------------------------------
    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if self.store is None:
            return self.encode_inrow(value)
        if isinstance(value, ExternalRef):
            return value.bytes
        raise NotInstalledError(
            f"an external {self.kind} value for store {self.store!r} reached the database"
            " without the sa_djblob write path: call sa_djblob.install(engine) once for"
            " the engine (or AsyncEngine) the session or connection uses, and pass values"
            " as execute() parameters or ORM attributes"
        )

    def column_expression(self, colexpr: Any) -> Any:
        if self.store is None:
            return colexpr
        from ._externals.read import external_column_expression

        return external_column_expression(colexpr, self)

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if self.store is None:
            return self.decode_inrow(bytes(value))
        # Reached only when the column expression was not applied (a text() query
        # typed with this type): the hash alone, with the schema the connection uses.
        from ._externals.read import read_external

        return read_external(self.kind, self.store, None, bytes(value), dialect)

    def encode_inrow(self, value: Any) -> bytes:
        raise NotImplementedError

    def decode_inrow(self, value: bytes) -> Any:
        raise NotImplementedError


class Blob(_External):
    """A numpy array or Python structure in DataJoint's blob format.

    ``Blob()`` keeps the packed bytes in the row (LONGBLOB / BYTEA / BLOB);
    ``Blob(store="name")`` keeps them in the named store and the hash in the row.
    """

    kind = "blob"
    cache_ok = True

    def encode_inrow(self, value: Any) -> bytes:
        return pack(value)

    def decode_inrow(self, value: bytes) -> Any:
        return unpack(value)


class Attach(_External):
    """A whole file with its name. Bind a path (str or PathLike); fetch a ``pathlib.Path``.

    Fetched files are written into ``djb.config["download_path"]``.
    """

    kind = "attach"
    cache_ok = True

    def encode_inrow(self, value: Any) -> bytes:
        if not isinstance(value, str | os.PathLike):
            raise TypeError(
                f"Attach values are file paths (str or PathLike), got {type(value).__name__}"
            )
        return _attach.encode_inrow(value)

    def decode_inrow(self, value: bytes) -> Path:
        name, contents = _attach.decode_inrow(value)

        def fill(f: BinaryIO) -> None:
            f.write(contents)

        return _attach.write_download(name, _attach.same_bytes(contents), fill)
