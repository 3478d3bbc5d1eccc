"""Column types: ``Blob`` and ``Attach``, kept in the row or in an external store, and
``Filepath``, a file of a store's stage folder kept in the store.

The types are thin: what a kind of value is (packed blob, named file) lives in
:mod:`sa_djblob._kinds`, every database difference in :mod:`sa_djblob._dialects`.
In-row values are converted here. An external value is packed or hashed here too
(pure work), and handed to the statement's write hook, which ``djb.install(engine)``
adds: before the statement reaches the database, the hook makes sure the payload is
in its store and holds the externals row (:mod:`sa_djblob._externals.write`). The
column holds the 16-byte content hash, a foreign key to the externals table.

This module is public: migrations name ``sa_djblob.types.HashType()``.
"""

from __future__ import annotations

from typing import Any, Self

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

from ._dialects import find_support
from ._externals.read import external_column_expression, read_external
from ._externals.table import HashType, attach_external
from ._externals.write import bind_external
from ._kinds import UNCOMPRESSED_BLOB, Kind, kind
from ._layout import is_store_name
from ._sa_internals import SchemaEventType

__all__ = ["Attach", "Blob", "ExternalType", "Filepath", "HashType"]


class ExternalType(SchemaEventType, TypeDecorator[Any]):
    """Shared behaviour of ``Blob`` and ``Attach``: in the row, or in a named store."""

    impl = sa.LargeBinary
    cache_ok = True
    kind_name = ""

    def __init__(self, store: str | None = None, *, foreign_key: bool = True) -> None:
        """*foreign_key=False*: the column gets no foreign key to ``~external_<store>``, no
        index and no externals table on its MetaData; the DDL around it spells them out
        (a migration rendered by :mod:`sa_djblob.alembic_helpers`)."""
        if store is not None and not is_store_name(store):
            raise ValueError(
                f"store must be a store name (a letter or _, then letters, digits, _ or -),"
                f" got {store!r}"
            )
        if not isinstance(foreign_key, bool):
            raise TypeError(f"foreign_key must be True or False, got {foreign_key!r}")
        super().__init__()
        self.store = store
        self.foreign_key = foreign_key

    @property
    def kind(self) -> Kind:
        return kind(self.kind_name)

    @property
    def sa_djblob_store(self) -> str | None:
        """The external store of the column (None: in the row)."""
        return self.store

    def read_options(self) -> dict[str, Any]:
        """Options of the kind's reader (``unpack``'s, for blobs)."""
        return {}

    def _args(self) -> list[str]:
        args = [f"store={self.store!r}"] if self.store is not None else []
        if not self.foreign_key:
            args.append("foreign_key=False")
        return args

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(self._args())})"

    @property
    def python_type(self) -> type[Any]:
        return self.kind.python_type

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        support = find_support(dialect)
        if support is None:  # DDL is refused by create_all; this is for str(statement)
            return dialect.type_descriptor(sa.LargeBinary(None if self.store is None else 16))
        impl = support.inrow_type() if self.store is None else support.hash_type()
        return dialect.type_descriptor(impl)

    def compare_values(self, x: Any, y: Any) -> bool:
        # Arrays compare elementwise; the ORM only needs to know "same object".
        return x is y

    @property
    def datajoint_comment(self) -> str:
        """DataJoint's type comment for this column (``:blob@store:`` ...)."""
        return self.kind.comment(self.store)

    # -- the column and table it is attached to ---------------------------------
    _table_copy = False

    def copy(self, **kw: Any) -> Self:
        # Column._copy(schema=...) is how Table.to_metadata (and Alembic's batch mode) copy
        # a table: the copy gets the foreign key from the original's constraints.
        new = super().copy(**kw)
        new._table_copy = "schema" in kw
        return new

    def on_column(self, column: sa.Column[Any]) -> None:
        comment = self.datajoint_comment
        if comment and not (column.comment or "").startswith(comment):
            column.comment = comment + (column.comment or "")
        if self.store is None or not self.foreign_key:
            return
        table = getattr(column, "table", None)
        if isinstance(table, sa.Table):
            self._on_table(column, table)
        else:
            sa.event.listen(column, "after_parent_attach", self._on_table)

    def _on_table(self, column: sa.Column[Any], table: Any) -> None:
        if isinstance(table, sa.Table) and self.store is not None and self.foreign_key:
            attach_external(column, table, self.store, foreign_key=not self._table_copy)

    # -- values -------------------------------------------------------------------
    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if self.store is None:
            return self.kind.encode_inrow(value)
        return bind_external(self.kind, self.store, value, dialect)

    def column_expression(self, colexpr: Any) -> Any:
        if self.store is None:
            return colexpr
        return external_column_expression(colexpr, self)

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if self.store is None:
            return self.kind.decode_inrow(bytes(value), self.read_options())
        # Reached only when the column expression was not applied (a text() query
        # typed with this type): the hash alone, with the schema the connection uses.
        return read_external(self.kind, self.store, None, value, dialect, self.read_options())


class Blob(ExternalType):
    """A numpy array or Python structure in DataJoint's blob format.

    ``Blob()`` keeps the packed bytes in the row (LONGBLOB / BYTEA / BLOB);
    ``Blob(store="name")`` keeps them in the named store and the hash in the row.
    ``legacy_u32=True`` reads 32-bit mYm blobs of old MATLAB builds (default:
    ``djb.config["legacy_u32"]``). ``compress=False`` never compresses the column's
    values (DataJoint reads them as usual): every slice of such a value can be read by
    range through :func:`sa_djblob.lazy`.
    """

    kind_name = "blob"
    cache_ok = True

    def __init__(
        self,
        store: str | None = None,
        *,
        foreign_key: bool = True,
        legacy_u32: bool | None = None,
        compress: bool = True,
    ) -> None:
        super().__init__(store, foreign_key=foreign_key)
        if legacy_u32 is not None and not isinstance(legacy_u32, bool):
            raise TypeError(f"legacy_u32 must be True, False or None, got {legacy_u32!r}")
        if not isinstance(compress, bool):
            raise TypeError(f"compress must be True or False, got {compress!r}")
        self.legacy_u32 = legacy_u32
        self.compress = compress

    @property
    def kind(self) -> Kind:
        return super().kind if self.compress else UNCOMPRESSED_BLOB

    def read_options(self) -> dict[str, Any]:
        return {} if self.legacy_u32 is None else {"legacy_u32": self.legacy_u32}

    def _args(self) -> list[str]:
        args = super()._args()
        if self.legacy_u32 is not None:
            args.append(f"legacy_u32={self.legacy_u32!r}")
        if not self.compress:
            args.append("compress=False")
        return args


class Attach(ExternalType):
    """A whole file with its name. Bind a path (str or PathLike), or ``(name, bytes)``, or
    ``(name, binary file object)`` (read once from its current position, hashed as it is
    read; FastAPI's ``UploadFile`` is ``(f.filename, f.file)``); fetch a ``pathlib.Path``.

    Names are checked as those of paths: a plain file name, no ``/``, ``\\`` or control
    characters. Fetched files are written into ``djb.config["download_path"]``.
    """

    kind_name = "attach"
    cache_ok = True


class Filepath(ExternalType):
    """DataJoint's ``filepath@store``: a file inside the store's ``stage`` folder.

    Bind the local path of a file inside ``djb.get_store(store).stage`` (str or
    PathLike); a path outside the stage raises ``UnsupportedTypeError``, a store without
    a ``stage`` setting ``ConfigError``. The file is uploaded to ``<store
    root>/<relative path>`` (not content-addressed, not below the schema: DataJoint's
    layout); the column holds the hash of the relative path, and the externals row the
    path and the hash of the contents. Placing a different version of a path that is
    already placed raises ``StoreError``.

    Fetching returns the ``pathlib.Path`` of the file in the stage folder, downloaded
    from the store and verified when it is missing there or its contents differ
    (``IntegrityError`` if the store's copy does not match the recorded hash).

    Both hashes use the store's ``hash`` setting: DataJoint's values with the default
    ``md5``. An unused entry's object is removed by the sweep; like DataJoint's, filepath
    objects are not kept per schema, so two schemas that place the same relative path in
    one store share (and a sweep of either removes) the object.
    """

    kind_name = "filepath"
    cache_ok = True

    def __init__(self, store: str, *, foreign_key: bool = True) -> None:
        if store is None:
            raise ValueError("Filepath needs a store: Filepath(store='name')")
        super().__init__(store, foreign_key=foreign_key)
