"""``djb.stored(column)``: where an external value is kept, instead of the value.

``select(djb.stored(Document.file))`` yields a :class:`StoredObject` per row (the store,
the key, the attachment name, the size and the object path, from the same correlated
subquery on the externals table the read path uses) and downloads nothing. A web app
serves it streamed (:meth:`StoredObject.open`, verified against the hash while it is
read), by redirect (:meth:`StoredObject.url`, a presigned GET URL of an S3 store), or
as a local file (:meth:`StoredObject.download`).
"""

from __future__ import annotations

import contextlib
import functools
import io
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

from .. import _attach
from .._area import Area
from .._dialects import concat_ref
from .._exceptions import IntegrityError, SaDjblobError
from .._fetch import open_payload
from .._kinds import Kind, kind
from .._layout import attachment_prefix, file_matches
from .._pool import call
from .._verify import VerifyingReader
from ..stores import Store, get_store
from ..stores.base import COPY_CHUNK, MAX_URL_EXPIRY
from .read import Resolved, _base_table
from .table import external_table

__all__ = ["StoredObject", "stored"]


@dataclass(frozen=True)
class StoredObject:
    """An external value as it is kept in its store.

    ``store``: the store name; ``key``: the content hash (the externals table's key);
    ``name``: the attachment's file name (None for blobs); ``size``: the payload's size
    in bytes; ``path``: the object path in the store. Blobs are the serialized payload
    (DataJoint's blob format), not the array.
    """

    store: str
    key: uuid.UUID
    name: str | None
    size: int | None
    path: PurePosixPath
    hash: str = "md5"
    schema: str = ""

    def _store(self) -> Store:
        return get_store(self.store)

    def _prefix(self) -> bytes:
        return b"" if self.name is None else attachment_prefix(self.name)

    def open(self) -> BinaryIO:
        """A readable binary stream of the payload (use it as a context manager).

        Its contents are hashed as they are read, and the last byte is handed out only
        after the whole object matched its key and size: a stream of an object that
        does not verify raises :class:`~sa_djblob.IntegrityError` before its reader has
        every byte (``f.read(size)`` raises too), so a response sent with
        ``Content-Length: size`` ends short, an error its client sees. Closing a partly
        read stream checks nothing. Remote stores are read through the local cache when
        it holds the object. Blocking: under asyncio, open and read it in a thread (Starlette's
        ``StreamingResponse`` iterates sync iterators in its thread pool).
        """
        store = self._store()
        stack = contextlib.ExitStack()
        try:
            src = stack.enter_context(open_payload(Area(store, self.schema), self.key, self.name))
        except BaseException:
            stack.close()
            raise
        raw = VerifyingReader(
            src,
            key=self.key,
            algorithm=store.hash,
            prefix=self._prefix(),
            size=self.size,
            error=lambda: IntegrityError(
                f"payload {self.key} in store {self.store!r} at {self.path} does not match"
                f" its hash ({store.hash}): it was changed or corrupted"
            ),
            on_close=stack.close,
        )
        return io.BufferedReader(raw, COPY_CHUNK)

    def url(self, expires_in: int = 3600) -> str:
        """A presigned GET URL of the object, valid for *expires_in* seconds (S3 stores).

        Attachments are served with ``Content-Disposition: attachment`` and their file
        name. Anyone with the URL can read the object until it expires; the content is
        not verified against the hash on the way. Other stores raise
        :class:`~sa_djblob.StoreError`: serve those with :meth:`open`.
        """
        if (
            not isinstance(expires_in, int)
            or isinstance(expires_in, bool)
            or not 1 <= expires_in <= MAX_URL_EXPIRY
        ):
            raise ValueError(
                f"expires_in must be a whole number of seconds from 1 to {MAX_URL_EXPIRY}"
                f" (7 days, the S3 limit), got {expires_in!r}"
            )
        store = self._store()
        return call(
            functools.partial(store.presigned_url, filename=self.name), self.path, expires_in
        )

    def download(self, folder: str | Path | None = None) -> Path:
        """Write the verified payload into *folder* (default ``djb.config["download_path"]``)
        and return the file: an attachment under its name (an identical file there is
        reused), a blob's payload under its key."""
        store = self._store()
        prefix = self._prefix()

        def fill(out: BinaryIO) -> None:
            with self.open() as src:
                shutil.copyfileobj(src, out, COPY_CHUNK)

        return _attach.write_download(
            self.name if self.name is not None else str(self.key),
            lambda p: file_matches(p, self.key, prefix=prefix, algorithm=store.hash),
            fill,
            folder,
        )


class StoredResult(TypeDecorator[Any]):
    """The result type of :func:`stored`: ``hash || "<size>/<name>"`` -> StoredObject."""

    impl = sa.types.NullType
    cache_ok = True
    wants_area = True  # the reader resolves the statement's schema for it

    def __init__(self, kind: str, store: str, schema: str | None = None) -> None:
        super().__init__()
        self.kind = kind
        self.store = store
        self.schema = schema

    def process_result_value(self, value: Any, dialect: Dialect) -> StoredObject | None:
        if value is None:
            return None
        schema = self.schema or dialect.default_schema_name
        if isinstance(value, Resolved):  # the reader found the schema of the statement
            value, schema = value.raw, value.area.schema
        raw = bytes(value)
        if len(raw) < 17:
            raise SaDjblobError(
                f"djb.stored() read {len(raw)} bytes: expected a hash and the object's size"
            )
        key = uuid.UUID(bytes=raw[:16])
        try:
            size_text, _, name = raw[16:].decode("utf-8").partition("/")
            size = int(size_text)
        except ValueError:
            raise SaDjblobError(f"djb.stored(): unreadable size or name of {key}") from None
        named = kind(self.kind).named
        if named:
            _attach.check_name(name)
        if not schema:
            raise SaDjblobError("cannot tell the schema of an external value's object path")
        attachment = name if named else None
        area = Area(get_store(self.store), str(schema))
        path = area.path(key, attachment)
        return StoredObject(self.store, key, attachment, size, path, area.store.hash, area.schema)


def stored(column: Any) -> sa.ColumnElement[Any]:
    """A SQL expression for ``select()``: the :class:`StoredObject` of an external
    ``Blob(store=...)`` or ``Attach(store=...)`` column, instead of its value.

    ``select(djb.stored(Document.file)).where(Document.id == 1)`` reads the key, size
    and attachment name from the externals table in the same query; nothing is fetched
    from the store until you call ``open()``, ``url()`` or ``download()``. NULL values
    give None. Label it (``.label("file")``) to name the result column.
    """
    colexpr = column.__clause_element__() if hasattr(column, "__clause_element__") else column
    typ = getattr(colexpr, "type", None)
    k: Kind | None = getattr(typ, "kind", None) if hasattr(type(typ), "sa_djblob_store") else None
    store = getattr(typ, "store", None)
    if k is None or not k.stored_object or not isinstance(store, str):
        raise SaDjblobError(
            f"djb.stored() takes a column of type Blob(store=...) or Attach(store=...),"
            f" got {colexpr!r} of type {typ!r}: values kept in the row have no stored object"
        )
    table = _base_table(colexpr)
    if table is None:
        raise SaDjblobError(
            f"djb.stored({colexpr!r}): select the column through its table (the size and"
            " name come from the externals table of its schema)"
        )
    ext = external_table(table.metadata, store, table.schema)
    info = sa.cast(ext.c.size, sa.String) + "/" + sa.func.coalesce(ext.c.attachment_name, "")
    subquery = sa.select(info).where(ext.c.hash == colexpr).scalar_subquery()
    expr = concat_ref(colexpr, subquery)
    expr.type = StoredResult(k.name, store, table.schema)
    return expr
