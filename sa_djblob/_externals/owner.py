"""Which database owns a store area ``<location>/<schema>/``.

A sweep collects as orphans the payloads of an area that its database does not know,
so two databases must never write into one area (two SQLite files both call their
schema ``main``, two PostgreSQL databases ``public``). The owner is recorded in a small
marker object beside the area, ``<location>/.sa_djblob-owner/<schema>``, by the first
writer or sweep; a writer or sweep of another database then stops with a clear error
instead of mixing its payloads into the area (the writer) or deleting the owner's
payloads (the sweep). Deleting the marker hands the area over.
"""

from __future__ import annotations

import threading
import weakref
from pathlib import PurePosixPath

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from .._exceptions import MissingPayloadError, StoreError
from ..stores import Store

__all__ = ["check_owner", "database_identity", "owner_marker"]

_identities: weakref.WeakKeyDictionary[Engine, str] = weakref.WeakKeyDictionary()
_checked: set[tuple[int, str, str, str]] = set()
_lock = threading.Lock()


def owner_marker(store: Store, schema: str) -> PurePosixPath:
    """Where the owner of ``<location>/<schema>/`` is recorded (outside the area)."""
    return PurePosixPath(store.location, ".sa_djblob-owner", schema)


def _identity(conn: Connection) -> str:
    name = conn.dialect.name
    if name == "postgresql":
        try:
            with conn.begin_nested():
                server = conn.execute(
                    sa.text("SELECT system_identifier::text FROM pg_control_system()")
                ).scalar_one()
        except sa.exc.DBAPIError:  # not allowed to read it: the address serves instead
            server = conn.execute(
                sa.text(
                    "SELECT coalesce(host(inet_server_addr()), 'local') || ':'"
                    " || coalesce(inet_server_port()::text, '')"
                )
            ).scalar_one()
        database = conn.execute(sa.text("SELECT current_database()")).scalar_one()
        return f"postgresql:{server}/{database}"
    if name in ("mysql", "mariadb"):
        host, port, datadir = conn.execute(sa.text("SELECT @@hostname, @@port, @@datadir")).one()
        return f"mysql:{host}:{port}:{datadir}"
    if name == "sqlite":
        files = {row[1]: row[2] for row in conn.exec_driver_sql("PRAGMA database_list")}
        return f"sqlite:{files.get('main') or ':memory:'}"
    url = conn.engine.url
    return f"{name}:{url.host}:{url.port}/{url.database}"


def database_identity(conn: Connection) -> str:
    """Which database *conn* talks to, as stably as the server can tell (cached per engine)."""
    engine = conn.engine
    found = _identities.get(engine)
    if found is None:
        found = _identities[engine] = _identity(conn)
    return found


def check_owner(conn: Connection, store: Store, schema: str, *, claim: bool = True) -> None:
    """Raise ``StoreError`` unless this database owns the area; claim it if unclaimed.

    Checked once per process for each store, schema and database.
    """
    me = database_identity(conn)
    key = (id(store), store.location, schema, me)
    if key in _checked:
        return
    marker = owner_marker(store, schema)
    try:
        recorded = store.get(marker).decode("utf-8", "replace").strip()
    except MissingPayloadError:
        if not claim:
            return
        try:
            store.put(marker, me.encode("utf-8") + b"\n")
        except StoreError as exc:
            raise StoreError(
                f"cannot record the owner of the store area in {marker}: {exc}"
            ) from None
        recorded = me
    if recorded != me:
        raise StoreError(
            f"the area {PurePosixPath(store.location, schema)} of store {store.name!r} belongs to"
            f" another database ({recorded}; this is {me}): give each database its own store"
            f" location, or delete {marker} to hand the area over"
        )
    with _lock:
        _checked.add(key)
