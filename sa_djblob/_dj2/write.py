"""Writing DataJoint 2.x pointers: hash and point while the statement's values are bound,
store before the statement is sent.

Binding a value (the type's bind processing) packs it, hashes it and returns its
pointer ``{"hash", "path", "schema", "store", "size"}``; the schema is the one the
statement's table resolves to (DataJoint's "schema" is the table's database). Just
before the statement is sent, the write hook of :mod:`sa_djblob._externals.write` runs
:class:`Flush`: it claims every object in the schema's claims table (inserted if missing,
locked ``FOR SHARE``), then uploads the objects that are missing from the store or of the
wrong size. All of it on the statement's connection, inside its transaction.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from .._area import resolve_schema
from .._exceptions import NotInstalledError, SaDjblobError, StoreError
from .._externals.write import _require_transaction, _table_exists, current_statement
from .._pool import call, run_all, serial_for
from ..stores import Store, get_store
from .claims import claim, claims_table
from .layout import Pointer, dj2_hash, hash_path, object_key

__all__ = ["bind_hashed", "bind_object", "statement_schema"]

_KEY = "sa_djblob.dj2"


@dataclass
class _Object:
    store: Store
    path: PurePosixPath
    data: bytes
    #: (store, hash) of a hash-addressed object: claimed before it is uploaded
    claim: tuple[str, str] | None


@dataclass
class Flush:
    """The DataJoint 2.x objects of one statement, stored just before it is sent."""

    conn: sa.Connection
    options: dict[str, Any]
    objects: dict[tuple[str, PurePosixPath], _Object] = field(default_factory=dict)

    def __call__(self, table: sa.Table | None) -> None:
        if table is None or not self.objects:
            return  # a statement that only reads: values are compared, not written
        _require_transaction(self.conn)
        claims = sorted({o.claim for o in self.objects.values() if o.claim is not None})
        if claims:
            ct = claims_table(table.metadata, table.schema)
            try:
                claim(self.conn, ct, claims, self.options)
            except sa.exc.DBAPIError as exc:
                translate = self.options.get("schema_translate_map") or {}
                schema = translate.get(ct.schema, ct.schema)
                if not _table_exists(self.conn, ct.name, schema):
                    raise SaDjblobError(
                        f"the claims table {ct.name!r} does not exist"
                        f"{f' in schema {schema!r}' if schema else ''}: create it with"
                        " metadata.create_all(engine) (it is on the MetaData of every table"
                        " with a stored dj2 column; create_all leaves existing tables alone)"
                        " or run your Alembic migrations"
                    ) from exc
                raise
        items = list(self.objects.values())
        serial = serial_for(any(o.store.is_remote for o in items), sum(len(o.data) for o in items))
        present = run_all(_present, items, serial=serial)
        missing = [o for o, ok in zip(items, present, strict=True) if not ok]
        try:
            run_all(_upload, missing, serial=serial)
        except SaDjblobError:
            raise
        except Exception as exc:
            raise StoreError(f"upload failed: {exc}") from exc


def _present(o: _Object) -> bool:
    size = o.store.size(o.path)
    return size is not None and (size < 0 or size == len(o.data))


def _upload(o: _Object) -> None:
    o.store.put(o.path, o.data)


def _flush(what: str, store_name: str, dialect: Dialect) -> tuple[Flush, Store]:
    st = current_statement(dialect)
    if st is None:
        raise NotInstalledError(
            f"a DataJoint 2.x {what} value for store {store_name!r} reached the database"
            " without the sa_djblob write path: call sa_djblob.install(engine) once for"
            " the engine (or AsyncEngine) the session or connection uses"
        )
    flush = st.later.get(_KEY)
    if not isinstance(flush, Flush):
        conn = st.ref()
        assert conn is not None  # current_statement() gives only live ones
        flush = Flush(conn, st.options)
        st.later[_KEY] = flush
    store = st.stores.get(store_name)
    if store is None:
        store = st.stores[store_name] = get_store(store_name)
    return flush, store


def statement_schema(dialect: Dialect) -> tuple[str, str | None]:
    """The schema (DataJoint's "schema") of the table the current statement writes, and
    the table's name (None for a statement that names no table)."""
    st = current_statement(dialect)
    conn = st.ref() if st is not None else None
    if st is None or conn is None:
        raise NotInstalledError("no statement is executing: call sa_djblob.install(engine)")
    table = st.table
    if table is None:
        return str(conn.dialect.default_schema_name or ""), None
    return resolve_schema(conn, table.schema, table.name, st.options), table.name


def bind_hashed(what: str, store_name: str, data: bytes, dialect: Dialect) -> Pointer:
    """The pointer of a hash-addressed object (``<hash@>``, ``<blob@>``, ``<attach@>``),
    recording the object for the statement's write hook."""
    flush, store = _flush(what, store_name, dialect)
    schema, _ = statement_schema(dialect)
    content_hash = dj2_hash(data)
    rel = hash_path(schema, content_hash)
    key = object_key(store, rel)
    flush.objects.setdefault(
        (store_name, key), _Object(store, key, data, (store_name, content_hash))
    )
    return {
        "hash": content_hash,
        "path": rel,
        "schema": schema,
        "store": store_name,
        "size": len(data),
    }


def bind_object(what: str, store_name: str, rel: str, data: bytes, dialect: Dialect) -> None:
    """Record a schema-addressed object (``<npy@>``, ``<object@>``) at *rel* (a fresh
    path of its own: nothing else ever writes it, so it needs no claim)."""
    flush, store = _flush(what, store_name, dialect)
    key = object_key(store, rel)
    flush.objects[(store_name, key)] = _Object(store, key, data, None)


def hash_uuid(content_hash: str) -> uuid.UUID:
    """The 16 MD5 bytes of a DataJoint 2.x hash, as sa_djblob's cache keys them."""
    return uuid.UUID(bytes=base64.b32decode(content_hash.upper() + "======"))


def read_hashed(ptr: Mapping[str, Any], store_name: str | None) -> bytes:
    """The verified bytes a hash-addressed pointer names (through the cache for remote
    stores). The pointer's own store and path are followed, never rebuilt."""
    from .._exceptions import IntegrityError
    from ..stores import get_cache

    name = ptr.get("store") or store_name
    if not isinstance(name, str):
        raise SaDjblobError(f"a DataJoint 2.x pointer names no store: {dict(ptr)!r}")
    store = get_store(name)
    expected = ptr.get("hash")
    if not isinstance(expected, str):
        raise SaDjblobError(f"a DataJoint 2.x pointer has no hash: {dict(ptr)!r}")
    key = object_key(store, ptr["path"])
    cache = get_cache() if store.is_remote else None
    ckey = hash_uuid(expected) if cache is not None and len(expected) == 26 else None
    if cache is not None and ckey is not None:
        hit = cache.get(ckey, "md5")
        if hit is not None:
            return hit
    data = call(store.get, key)
    if dj2_hash(data) != expected:
        raise IntegrityError(
            f"object {ptr['path']!r} in store {store.name!r} does not match its hash"
            f" {expected!r}: it was changed or corrupted"
        )
    if cache is not None and ckey is not None:
        cache.put(ckey, data)
    return data


_TOKEN = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def schema_path(codec: str, ext: str | None, dialect: Dialect) -> str:
    """A fresh schema-addressed path for the current statement's table:
    ``_schema/<schema>/<table>/<codec>_<random token>[<ext>]``."""
    import secrets

    from .layout import SCHEMA_PREFIX

    schema, table = statement_schema(dialect)
    token = "".join(secrets.choice(_TOKEN) for _ in range(8))
    return f"{SCHEMA_PREFIX}/{schema}/{table or '_'}/{codec}_{token}{ext or ''}"


def placed_size(store_name: str, rel: str) -> int:
    """The size of the file a ``<filepath@>`` value names, which must be in the store."""
    from .._exceptions import MissingPayloadError

    store = get_store(store_name)
    size = call(store.size, object_key(store, rel))
    if size is None:
        raise MissingPayloadError(
            f"filepath {rel!r} is not in store {store_name!r}: put the file into the store"
            " first (a <filepath@> value names a file already there)"
        )
    return int(size)
