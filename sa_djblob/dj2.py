"""Column types for DataJoint 2.x's layout (``<blob>``, ``<attach>``, ``<blob@store>``,
``<attach@store>``, ``<hash@store>``, ``<npy@store>``).

DataJoint 2.x keeps in-row values as before (``name + NUL + contents`` for attachments),
and a stored value as a JSON pointer ``{"hash", "path", "schema", "store", "size"}`` to
an object at ``_hash/<schema>/<hash>`` of the store, the hash being the base32 of the MD5
of the stored bytes. Columns are declared as DataJoint declares them (type and
``:<codec@store>:`` comment), so DataJoint reads the tables these types create, and these
types read DataJoint's.

    from sa_djblob import dj2
    class Recording(Base):
        __tablename__ = "recording"
        id: Mapped[int] = mapped_column(primary_key=True)
        trace: Mapped[Any] = mapped_column(dj2.Blob(store="shared"))

Writes go through the write path of ``djb.install(engine)``: the object is claimed and
uploaded before the statement is sent. :func:`sweep` removes the objects of a store
that no row references, safely while sa_djblob writers run (docs/dj2.md).
"""

from __future__ import annotations

from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

from ._dialects import find_support
from ._dj2.claims import claims_table
from ._dj2.layout import HASH_PREFIX, SCHEMA_PREFIX, pointer
from ._dj2.refs import NpyRef, ObjectRef
from ._dj2.sweep import SweepReport, sweep
from ._dj2.write import bind_hashed, bind_object, placed_size, read_hashed, schema_path
from ._exceptions import UnsupportedTypeError
from ._kinds import kind
from ._layout import is_store_name
from ._sa_internals import SchemaEventType

__all__ = [
    "Attach",
    "Blob",
    "Filepath",
    "Hash",
    "Npy",
    "NpyRef",
    "Object",
    "ObjectRef",
    "SweepReport",
    "sweep",
]


def _json_type(dialect: Dialect) -> TypeEngine[Any]:
    """DataJoint 2.x's ``json``: JSON on MySQL/MariaDB, JSONB on PostgreSQL; SQL NULL for None."""
    if dialect.name == "postgresql":
        return postgresql.JSONB(none_as_null=True)
    if dialect.name in ("mysql", "mariadb"):
        return mysql.JSON(none_as_null=True)
    return sa.JSON(none_as_null=True)


class Dj2Type(SchemaEventType, TypeDecorator[Any]):
    """A DataJoint 2.x codec column: in the row (bytes), or a JSON pointer into a store."""

    impl = sa.LargeBinary
    cache_ok = True
    codec: ClassVar[str] = ""
    #: whether the codec may keep values in the row
    inrow: ClassVar[bool] = True

    def __init__(self, store: str | None = None) -> None:
        if store is not None and not is_store_name(store):
            raise ValueError(
                f"store must be a store name (a letter or _, then letters, digits, _ or -),"
                f" got {store!r}"
            )
        if store is None and not self.inrow:
            raise ValueError(f"dj2.{type(self).__name__} needs a store: store='name'")
        super().__init__()
        self.store = store

    def __repr__(self) -> str:
        args = "" if self.store is None else f"store={self.store!r}"
        return f"dj2.{type(self).__name__}({args})"

    @property
    def datajoint_comment(self) -> str:
        """DataJoint 2.x's type comment (``:<blob@store>:`` ...)."""
        return f":<{self.codec}>:" if self.store is None else f":<{self.codec}@{self.store}>:"

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if self.store is not None:
            return dialect.type_descriptor(_json_type(dialect))
        support = find_support(dialect)
        impl = sa.LargeBinary() if support is None else support.inrow_type()
        return dialect.type_descriptor(impl)

    def compare_values(self, x: Any, y: Any) -> bool:
        return x is y

    def on_column(self, column: sa.Column[Any]) -> None:
        comment = self.datajoint_comment
        if not (column.comment or "").startswith(comment):
            column.comment = comment + (column.comment or "")
        if self.store is None:
            return
        table = getattr(column, "table", None)
        if isinstance(table, sa.Table):
            claims_table(table.metadata, table.schema)
        else:
            sa.event.listen(column, "after_parent_attach", _add_claims)

    # -- values -------------------------------------------------------------------
    def encode(self, value: Any) -> bytes:
        """The stored bytes of *value* (in the row, or the object's contents)."""
        raise NotImplementedError

    def decode(self, data: bytes) -> Any:
        """The value of stored bytes."""
        raise NotImplementedError

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        data = self.encode(value)
        if self.store is None:
            return data
        return bind_hashed(self.codec, self.store, data, dialect)

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if self.store is None:
            return self.decode(bytes(value))
        return self.decode(read_hashed(pointer(value, f"<{self.codec}>"), self.store))


def _add_claims(column: sa.Column[Any], table: Any) -> None:
    if isinstance(table, sa.Table):
        claims_table(table.metadata, table.schema)


class Blob(Dj2Type):
    """``<blob>`` / ``<blob@store>``: a numpy array or Python structure in DataJoint's blob
    format (the same bytes as ``djb.Blob``)."""

    codec = "blob"
    cache_ok = True

    def encode(self, value: Any) -> bytes:
        return kind("blob").encode_inrow(value)

    def decode(self, data: bytes) -> Any:
        return kind("blob").decode_inrow(data, {})


class Attach(Dj2Type):
    """``<attach>`` / ``<attach@store>``: a file with its name, ``name + NUL + contents``
    in the row or as the stored object. Bind a path; fetch a ``pathlib.Path`` in
    ``djb.config["download_path"]``."""

    codec = "attach"
    cache_ok = True

    @property
    def python_type(self) -> type[Any]:
        from pathlib import Path

        return Path

    def encode(self, value: Any) -> bytes:
        return kind("attach").encode_inrow(value)

    def decode(self, data: bytes) -> Any:
        return kind("attach").decode_inrow(data, {})


class Hash(Dj2Type):
    """``<hash@store>``: raw bytes in a store, hash-addressed."""

    codec = "hash"
    inrow = False
    cache_ok = True

    @property
    def python_type(self) -> type[Any]:
        return bytes

    def encode(self, value: Any) -> bytes:
        if not isinstance(value, bytes | bytearray | memoryview):
            raise UnsupportedTypeError(
                f"dj2.Hash values are bytes, got {type(value).__name__}: use dj2.Blob for"
                " Python objects"
            )
        return bytes(value)

    def decode(self, data: bytes) -> Any:
        return data


def _now() -> str:
    import datetime as dt

    return dt.datetime.now(dt.UTC).isoformat()


class _Referenced(Dj2Type):
    """A codec whose reads return a reference (no I/O until it is used)."""

    inrow = False
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        assert self.store is not None
        return self.pointer(value, self.store, dialect)

    def pointer(self, value: Any, store: str, dialect: Dialect) -> dict[str, Any]:
        raise NotImplementedError

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        return self.reference(pointer(value, f"<{self.codec}>"))

    def reference(self, ptr: Any) -> Any:
        return ObjectRef(ptr, self.store)


class Npy(_Referenced):
    """``<npy@store>``: a numpy array kept as a ``.npy`` file at a fresh schema-addressed
    path (``_schema/<schema>/<table>/npy_<token>.npy``). Reads give a :class:`NpyRef`:
    shape and dtype without I/O; indexing reads only the rows it selects."""

    codec = "npy"
    cache_ok = True

    @property
    def python_type(self) -> type[Any]:
        return NpyRef

    def pointer(self, value: Any, store: str, dialect: Dialect) -> dict[str, Any]:
        import io

        import numpy as np

        if not isinstance(value, np.ndarray) or value.dtype.hasobject:
            what = f"{value.dtype} array" if isinstance(value, np.ndarray) else type(value).__name__
            raise UnsupportedTypeError(
                f"dj2.Npy values are numpy arrays without Python objects, got a {what}"
            )
        buffer = io.BytesIO()
        np.save(buffer, value, allow_pickle=False)
        rel = schema_path(self.codec, ".npy", dialect)
        bind_object(self.codec, store, rel, buffer.getvalue(), dialect)
        return {"path": rel, "store": store, "dtype": str(value.dtype), "shape": list(value.shape)}

    def reference(self, ptr: Any) -> Any:
        return NpyRef(ptr, self.store)


class Object(_Referenced):
    """``<object@store>``: a file (a path), or bytes, or ``(extension, bytes or binary
    file)``, kept at a fresh schema-addressed path. Reads give an :class:`ObjectRef`
    (``read()``, ``open()``, ``download(folder)``, ``fsmap()``). Folders are not written
    (DataJoint's folder objects are read: ``fsmap()``)."""

    codec = "object"
    cache_ok = True

    @property
    def python_type(self) -> type[Any]:
        return ObjectRef

    def pointer(self, value: Any, store: str, dialect: Dialect) -> dict[str, Any]:
        import os
        from pathlib import Path

        ext: str | None = None
        if isinstance(value, bytes | bytearray | memoryview):
            data = bytes(value)
        elif isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
            ext, content = value
            data = content.read() if hasattr(content, "read") else bytes(content)
            ext = ext if not ext or ext.startswith(".") else "." + ext
        elif isinstance(value, str | os.PathLike):
            path = Path(os.fspath(value))
            if path.is_dir():
                raise UnsupportedTypeError(
                    f"dj2.Object writes files, and {path} is a folder: write its files, or"
                    " write the folder with DataJoint (sa_djblob reads it: fsmap())"
                )
            try:
                data = path.read_bytes()
            except OSError as exc:
                from ._kinds import unreadable_file

                raise unreadable_file(exc, path, "object") from None
            ext = path.suffix or None
        else:
            raise UnsupportedTypeError(
                f"dj2.Object values are bytes, a file path or (extension, bytes), got"
                f" {type(value).__name__}"
            )
        rel = schema_path(self.codec, ext, dialect)
        bind_object(self.codec, store, rel, data, dialect)
        return {
            "path": rel,
            "store": store,
            "size": len(data),
            "ext": ext,
            "is_dir": False,
            "item_count": None,
            "timestamp": _now(),
        }


class Filepath(_Referenced):
    """``<filepath@store>``: a file already in the store, named by its path relative to
    the store's root (outside ``_hash/`` and ``_schema/``). Binding checks that it is
    there and records its size; reads give an :class:`ObjectRef`. Nothing is uploaded,
    and sweeps never touch these files."""

    codec = "filepath"
    cache_ok = True

    @property
    def python_type(self) -> type[Any]:
        return ObjectRef

    def pointer(self, value: Any, store: str, dialect: Dialect) -> dict[str, Any]:
        import os
        from pathlib import PurePosixPath

        if not isinstance(value, str | os.PathLike):
            raise UnsupportedTypeError(
                f"dj2.Filepath values are paths relative to the store, got {type(value).__name__}"
            )
        rel = PurePosixPath(os.fspath(value)).as_posix().lstrip("/")
        top = rel.split("/", 1)[0]
        if top in (HASH_PREFIX, SCHEMA_PREFIX):
            raise UnsupportedTypeError(
                f"filepath {rel!r} is in the store's {top}/ section, which DataJoint manages:"
                " place the file elsewhere in the store"
            )
        size = placed_size(store, rel)
        return {"path": rel, "store": store, "size": size, "is_dir": False, "timestamp": _now()}
