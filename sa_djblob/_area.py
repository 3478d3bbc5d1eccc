"""A store area: one store's payloads of one database schema, ``<location>/<schema>/``.

Every object path of the write path, the read path and the sweep is built here, from
the schema a statement actually writes to or reads from (``resolve_schema``: the
table's schema through the connection's ``schema_translate_map``, or, for an
unqualified table, the schema the database resolves it to, e.g. through PostgreSQL's
``search_path``). The schema is resolved once per statement.

An area has one owner, a (database, store) pair: a sweep takes the payloads of its area
that its externals table does not know for orphans, so neither another database (two
SQLite files both call their schema ``main``) nor another store name configured on the
same location may write there. The first writer or sweep records the owner in a marker
beside the area, ``<location>/.sa_djblob-owner/<schema>``, created only if absent (an
atomic create where the store has one); other writers and sweeps stop with a
``StoreError`` that says how to fix it. Deleting the marker hands the area over. A marker
of sa_djblob 0.1 names the database alone, no store: it is refused, with the line to
write into it once the user knows which store name owns the area.
"""

from __future__ import annotations

import threading
import time
import uuid
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from sqlalchemy.engine import Connection, Engine

from ._dialects import dialect_support
from ._dialects.base import INTERNAL
from ._exceptions import MissingPayloadError, SaDjblobError, StoreError
from ._layout import OWNER_FOLDER, object_name, object_path
from ._pool import call
from .stores import Store

__all__ = [
    "FILEPATHS",
    "Area",
    "check_filepath_owner",
    "check_owner",
    "database_identity",
    "resolve_schema",
]

_identities: weakref.WeakKeyDictionary[Engine, str] = weakref.WeakKeyDictionary()
#: areas found owned by this process, with when (time.monotonic()) the marker was read: a
#: marker is read again after OWNER_RECHECK seconds, so an area handed over (its marker
#: deleted or rewritten) is noticed by a long-running process too
_owned: dict[tuple[str, str, str, str], float] = {}
OWNER_RECHECK = 60.0
_lock = threading.Lock()


@dataclass(frozen=True)
class Area:
    """The payloads of *store* for database schema *schema*."""

    store: Store
    schema: str

    def path(self, key: uuid.UUID, attachment_name: str | None = None) -> PurePosixPath:
        """The object path of a payload (DataJoint's layout)."""
        store = self.store
        return object_path(
            store.location,
            self.schema,
            key,
            attachment_name,
            store.subfolding,
            protocol=store.protocol,
        )

    def object_name(self, key: uuid.UUID) -> str:
        """:meth:`path` of a blob as a string (built faster: see ``_layout.object_name``)."""
        store = self.store
        return object_name(
            store.location, self.schema, key, None, store.subfolding, protocol=store.protocol
        )

    @property
    def prefix(self) -> PurePosixPath:
        """The folder (key prefix) that holds every payload of the area."""
        return self.store.root / self.schema

    @property
    def marker(self) -> PurePosixPath:
        """Where the owner of the area is recorded (outside the area)."""
        root = self.store.root
        return root / OWNER_FOLDER / self.schema

    def __str__(self) -> str:
        return f"{self.prefix} of store {self.store.name!r}"


FILEPATHS = ".filepath"
"""The pseudo-schema of a store's filepath objects (``<root>/<relative path>``): they live
outside every schema's area, so one (database, schema, store) owns them all."""


def check_filepath_owner(
    conn: Connection, store: Store, schema: str, *, claim: bool, fresh: bool = False
) -> None:
    """Raise ``StoreError`` unless this database's *schema* owns *store*'s filepath objects:
    two schemas placing the same relative path would sweep each other's files away."""
    check_owner(conn, Area(store, FILEPATHS), claim=claim, holder=f"schema={schema}", fresh=fresh)


def resolve_schema(
    conn: Connection,
    table_schema: str | None,
    table_name: str,
    options: Mapping[str, Any] | None = None,
) -> str:
    """The schema a statement on table *table_name* (declared in *table_schema*) reaches.

    *options* are the statement's execution options (with the connection's): a
    ``schema_translate_map`` applies first; an unqualified table is looked up where
    the database finds it.
    """
    opts = dict(conn.get_execution_options())
    if options:
        opts.update(options)
    translate = opts.get("schema_translate_map") or {}
    schema = translate.get(table_schema, table_schema)
    if schema:
        return str(schema)
    # Where an unqualified table resolves can change between transactions (SET
    # search_path, USE db): asked once per transaction, on the statement's connection.
    cache = _transaction_cache(conn)
    found = cache.get(table_name)
    if found is None:
        found = dialect_support(conn.dialect).table_schema(conn, table_name, **{INTERNAL: True})
        if found:
            cache[table_name] = found
    if not found:
        raise SaDjblobError(
            f"the externals table {table_name!r} does not exist in the schemas this connection"
            " searches: create it with metadata.create_all(engine) (it is on the MetaData of"
            " every table with an external column) or run your Alembic migrations"
        )
    return found


_CACHE_KEY = "sa_djblob.schemas"


def _transaction_cache(conn: Connection) -> dict[str, str]:
    """A dict that lives as long as *conn*'s current transaction (none: a fresh one)."""
    txn = conn.get_transaction()
    if txn is None:
        return {}
    info = conn.connection.info
    held = info.get(_CACHE_KEY)
    if held is None or held[0] is not txn:
        held = info[_CACHE_KEY] = (txn, {})
    cache: dict[str, str] = held[1]
    return cache


def database_identity(conn: Connection) -> str:
    """Which database *conn* talks to (cached per engine)."""
    engine = conn.engine
    found = _identities.get(engine)
    if found is None:
        found = _identities[engine] = dialect_support(conn.dialect).database_identity(conn)
    return found


def _owner_line(identity: str, store: Store) -> str:
    return f"{identity} store={store.name}"


def check_owner(
    conn: Connection,
    area: Area,
    *,
    claim: bool = True,
    holder: str | None = None,
    fresh: bool = False,
) -> None:
    """Raise ``StoreError`` unless this (database, store) owns *area*; claim it if unclaimed
    (with *claim*). *holder* narrows the owner further (the filepath objects of a store
    belong to one schema). Writers read the marker at most every ``OWNER_RECHECK``
    seconds per area and database; *fresh* (sweeps, which delete) reads it every time."""
    me = database_identity(conn)
    store = area.store
    mine = _owner_line(me, store) + (f" {holder}" if holder else "")
    key = (repr(store), area.schema, store.name, mine)
    seen = _owned.get(key)
    if not fresh and seen is not None and time.monotonic() - seen < OWNER_RECHECK:
        return
    try:
        recorded = call(store.get, area.marker).decode("utf-8", "replace").strip()
    except MissingPayloadError:
        if not claim:
            return
        try:
            created = call(store.create, area.marker, mine.encode("utf-8") + b"\n")
        except StoreError as exc:
            raise StoreError(f"cannot record the owner of {area} in {area.marker}: {exc}") from None
        # not created: somebody else claimed it just now
        recorded = (
            mine if created else call(store.get, area.marker).decode("utf-8", "replace").strip()
        )
    if recorded == me:
        # sa_djblob 0.1 recorded the database alone: that names no store, and taking it
        # for this one would let every store name of the database onto one location
        raise StoreError(
            f"the owner marker {area.marker} of {area} was written by an older sa_djblob and"
            f" names no store ({recorded}): nothing was written or deleted. If store"
            f" {store.name!r} is the only store name of this database that uses this"
            f" location, replace the marker's contents with the line '{mine}'; otherwise"
            " give each store name its own 'location' (two store names on one location"
            " would delete each other's payloads in a sweep)"
        )
    if recorded != mine:
        raise StoreError(
            f"{area} belongs to another owner ({recorded}; this is {mine}): each database"
            " and each store name needs its own store location (two store names on one"
            " location would delete each other's payloads in a sweep); give this one its own"
            f" 'location', or delete {area.marker} to hand the area over"
        )
    with _lock:
        _owned[key] = time.monotonic()
