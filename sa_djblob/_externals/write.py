"""The write path of external values, following the locking protocol (docs/design.md,
"The write path", whose step numbers these are):

1. ``before_execute`` notes the statement (its connection and execution options) for the
   values about to be bound;
2. pack (blob) or stream-hash (attach, filepath) the value: key H. This happens where
   SQLAlchemy converts the statement's values (the type's bind processing), so every
   statement form that binds a value reaches it: ``values()`` and multi-row
   ``values([...])``, executemany parameters, ``bindparam()``, upserts' ``set_``, ORM
   flushes and ORM bulk statements;
3. before the statement is sent (``before_cursor_execute``), for each store: insert
   the externals rows that are missing and hold a shared lock on all of them;
4. upload the payloads whose row this transaction created, and those found missing
   (or of the wrong size) in the store;
5. the statement runs and carries H; the foreign key makes the database enforce it.

All of it runs on the caller's connection, inside the caller's transaction, with the
statement's own execution options (a ``schema_translate_map`` reaches the externals
table and the object paths alike). ``install(engine)`` adds the listeners.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import uuid
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Dialect, Engine

from .._area import Area, check_filepath_owner, check_owner, resolve_schema
from .._dialects import dialect_support
from .._dialects.base import INTERNAL
from .._exceptions import NotInstalledError, SaDjblobError, StoreError, TransactionRequiredError
from .._kinds import Kind, Payload
from .._pool import call, run_all, serial_for
from .._sa_internals import dml_statement
from .._util import chunks as _chunks
from ..stores import Store, get_store
from .table import external_table

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = [
    "bind_external",
    "claim_rows",
    "current_statement",
    "install",
    "installed",
    "sync_engine",
    "uninstall",
]

log = logging.getLogger("sa_djblob")

_BATCH = 500
_CLAIM_ATTEMPTS = 50


@dataclass
class _Statement:
    """A statement executing on an installed engine, and the external values it binds."""

    #: its connection, weakly: a statement's state never keeps its connection alive
    ref: weakref.ReferenceType[Connection]
    dialect: Dialect
    options: dict[str, Any]
    payloads: dict[str, dict[uuid.UUID, Payload]] = field(default_factory=dict)
    #: the stores its values name, looked up once per statement rather than per value
    stores: dict[str, Store] = field(default_factory=dict)
    #: the table an INSERT or UPDATE names, known before its values are bound
    table: sa.Table | None = None
    #: other layouts' writes (sa_djblob.dj2), run with the statement's table before it is sent
    later: dict[str, Callable[[sa.Table | None], None]] = field(default_factory=dict)


_current: contextvars.ContextVar[_Statement | None] = contextvars.ContextVar(
    "sa_djblob_statement", default=None
)

#: the engines the write path is installed on, by dialect (an Engine and the engines
#: derived from it with ``execution_options()`` share one dialect and one set of listeners)
_installed: weakref.WeakKeyDictionary[Dialect, weakref.WeakSet[Engine]] = (
    weakref.WeakKeyDictionary()
)


def _statement(dialect: Dialect) -> _Statement | None:
    """The statement whose values are being bound through *dialect*, if the write path
    is installed there.

    The state is set by ``before_execute`` and cleared when its statement ends, fails,
    or its transaction ends. A statement can still end without any of these (one that
    fails to compile raises between ``before_execute`` and the execution, maybe
    outside any transaction): its state belongs to its connection, which it does not
    keep alive, and to that connection's dialect while an engine of it is installed, so
    it never takes the values of a statement on another engine, or on its own once
    uninstalled.
    """
    st = _current.get()
    if st is None or st.dialect is not dialect or not _installed.get(dialect):
        return None
    return st if st.ref() is not None else None


def current_statement(dialect: Dialect) -> _Statement | None:
    """The statement whose values are being bound through *dialect* (None: none, or the
    write path is not installed there); other layouts' types (sa_djblob.dj2) add their
    writes to its ``later``."""
    return _statement(dialect)


def bind_external(kind: Kind, store_name: str, value: Any, dialect: Dialect) -> bytes:
    """Step 1 for one value of a statement: its key, which the column will hold."""
    st = _statement(dialect)
    if st is None:
        raise NotInstalledError(
            f"an external {kind.name} value for store {store_name!r} reached the database"
            " without the sa_djblob write path: call sa_djblob.install(engine) once for"
            " the engine (or AsyncEngine) the session or connection uses"
        )
    store = st.stores.get(store_name)
    if store is None:
        store = st.stores[store_name] = get_store(store_name)
    payload = call(kind.prepare, value, store)
    # kept until the statement is about to be sent: then it is known whether it writes
    st.payloads.setdefault(store_name, {}).setdefault(payload.key, payload)
    return payload.key.bytes


# -- step 3: upsert and lock the externals rows ------------------------------


def _check_stored_name(ext: sa.Table, key: uuid.UUID, wanted: Any, stored: Any) -> None:
    """The row must name the attachment exactly as its object path does.

    MySQL's INSERT IGNORE turns "incorrect string value" into a warning: a table whose
    character set cannot hold the name would silently store ``?`` in its place.
    """
    if wanted is not None and stored != wanted:
        raise StoreError(
            f"{ext.name} holds attachment {key} under the name {stored!r}, not {wanted!r}:"
            " the table's character set cannot store this file name (use utf8mb4),"
            " or the row was changed by hand"
        )


def _check_stored_contents(
    ext: sa.Table, key: uuid.UUID, wanted: Mapping[str, Any], stored_path: Any, stored: Any
) -> None:
    """A filepath's row must record its path exactly (MySQL's INSERT IGNORE cuts a value too
    long for the column, with a warning only: two rows would name one object) and the
    contents being written (DataJoint refuses a different version of a placed file)."""
    path = wanted.get("filepath")
    if path is None:
        return
    if stored_path != path:
        raise StoreError(
            f"{ext.name} records the path of filepath {key} as {str(stored_path)[:60]!r},"
            f" not {path[:60]!r}...: its filepath column cannot hold this path (DataJoint's"
            " is VARCHAR(1000) in utf8mb4), or the row was changed by hand; nothing was"
            " stored: use a shorter path, or fix the column"
        )
    if stored != wanted["contents_hash"]:
        raise StoreError(
            f"a different version of {path!r} has already been placed in"
            f" {ext.name} (contents hash {stored}, this file's {wanted['contents_hash']}):"
            " give the new version a new file name, or delete the rows that reference the"
            " old one and sweep the store first"
        )


def claim_rows(
    conn: Connection,
    ext: sa.Table,
    rows: Mapping[uuid.UUID, Mapping[str, Any]],
    options: Mapping[str, Any] | None = None,
) -> set[uuid.UUID]:
    """Make sure an externals row exists for every key and hold a shared lock on it.

    *rows* maps each key to the row's other columns. Returns the keys whose row this
    call inserted (their payloads need no existence check before upload).
    """
    dialect = dialect_support(conn.dialect)
    opts = {**(options or {}), INTERNAL: True}
    created: set[uuid.UUID] = set()
    pending = sorted(rows)  # one order for every writer: fewer deadlocks
    select = sa.select(ext.c.hash, ext.c.attachment_name, ext.c.filepath, ext.c.contents_hash)
    for _ in range(_CLAIM_ATTEMPTS):
        for chunk in _chunks(pending, _BATCH):
            values = [{"hash": k, **rows[k]} for k in chunk]
            created.update(dialect.insert_missing(conn, ext, values, **opts) or ())
        if not dialect.row_locks:
            # the write transaction already excludes sweepers; existing filepath rows
            # must still record the same contents
            known = [k for k in pending if rows[k].get("filepath") and k not in created]
            for chunk in _chunks(known, _BATCH):
                plain = select.where(ext.c.hash.in_(chunk))
                for key, _, stored_path, stored in conn.execute(plain, execution_options=opts):
                    _check_stored_contents(ext, key, rows[key], stored_path, stored)
            return created
        locked: set[uuid.UUID] = set()
        for chunk in _chunks(pending, _BATCH):
            q = dialect.lock_shared(select.where(ext.c.hash.in_(chunk)))
            for key, stored_name, stored_path, stored_contents in conn.execute(
                q, execution_options=opts
            ):
                _check_stored_name(ext, key, rows[key].get("attachment_name"), stored_name)
                _check_stored_contents(ext, key, rows[key], stored_path, stored_contents)
                locked.add(key)
        # A row that a sweeper deleted between our insert and our lock: insert it again.
        pending = [k for k in pending if k not in locked]
        if not pending:
            return created
        created.difference_update(pending)
    raise StoreError(
        f"could not claim {len(pending)} row(s) of {ext.name} after {_CLAIM_ATTEMPTS} attempts"
        " (a sweep keeps deleting them): retry the transaction"
    )


# -- step 4: make sure the payloads are in their stores ------------------------


def _serial(items: list[tuple[Area, Payload]]) -> bool:
    return serial_for(any(area.store.is_remote for area, _ in items), sum(p.size for _, p in items))


def _present(item: tuple[Area, Payload]) -> bool:
    area, p = item
    size = area.store.size(p.path(area))
    # a payload of the wrong size (a torn or tampered file) is written again
    return size is not None and (size < 0 or size == p.size)


def _upload(item: tuple[Area, Payload]) -> None:
    item[1].upload(item[0])


def _flush(
    st: _Statement,
    conn: Connection,
    table: sa.Table,
    payloads: dict[str, dict[uuid.UUID, Payload]],
) -> None:
    _require_transaction(conn)
    metadata = table.metadata
    table_schema = table.schema
    upload: list[tuple[Area, Payload]] = []
    check: list[tuple[Area, Payload]] = []
    own: list[tuple[Area, Payload]] = []
    for store_name, items in payloads.items():
        store = st.stores[store_name]  # looked up when its values were bound
        ext = external_table(metadata, store_name, table_schema)
        area = Area(store, resolve_schema(conn, ext.schema, ext.name, st.options))
        for p in items.values():
            p.check(area)
        check_owner(conn, area)
        if any(p.filepath is not None for p in items.values()):
            check_filepath_owner(conn, store, area.schema, claim=True)
        try:
            created = claim_rows(conn, ext, {k: p.row() for k, p in items.items()}, st.options)
        except sa.exc.DBAPIError as exc:
            _explain_missing_table(conn, ext, st.options, exc)
            raise
        for key, p in items.items():
            (upload if key in created else check).append((area, p))
            if p.filepath is not None and p.is_own_object(area):
                own.append((area, p))
    if own:
        _check_at_commit(conn, own)
    if check:
        present = run_all(_present, check, serial=_serial(check))
        upload.extend(item for item, ok in zip(check, present, strict=True) if not ok)
    if upload:
        try:
            with contextlib.ExitStack() as durable:
                # group commit: the stores make the statement's payloads durable
                # together when the block ends, before the statement is sent
                for store in {id(area.store): area.store for area, _ in upload}.values():
                    durable.enter_context(store.durable_batch())
                run_all(_upload, upload, serial=_serial(upload))
        except SaDjblobError:
            raise
        except Exception as exc:
            raise StoreError(f"upload failed: {exc}") from exc
        log.debug("uploaded %d payload(s)", len(upload))


# -- files that are their own object: checked again at the commit -------------------

_OWN_OBJECTS = "sa_djblob.own_objects"

#: what the current transaction noted, in order: a file as (store, payload), or the name
#: of a savepoint begun after some file was noted (a savepoint rolled back forgets the
#: files noted since it began; a released one keeps them)
_Noted = list[tuple[Store, Payload] | str]


def _noted(conn: Connection, *, create: bool) -> _Noted | None:
    """The files noted in *conn*'s current transaction (none: a fresh list, or None)."""
    if conn.closed or conn.invalidated:  # (an invalidated connection has no info)
        return None
    info = conn.connection.info
    txn = conn.get_transaction()
    held = info.get(_OWN_OBJECTS)
    if held is None or held[0] is not txn:
        if not create:
            return None
        held = info[_OWN_OBJECTS] = (txn, [])
    noted: _Noted = held[1]
    return noted


def _check_at_commit(conn: Connection, items: list[tuple[Area, Payload]]) -> None:
    """Note filepath files that are their own stored object (a file store whose location
    is the stage) for :func:`_commit`: nothing copies them, so an edit after the statement
    would be committed as the stored version."""
    noted = _noted(conn, create=True)
    if noted is not None:
        noted.extend((area.store, p) for area, p in items)


def _commit(conn: Connection) -> None:
    """Refuse the commit if a file noted by :func:`_check_at_commit` changed since it was
    hashed (the caller then rolls back, as after any failed commit)."""
    _end_transaction(conn)
    noted = _noted(conn, create=False)
    if not noted:
        return
    conn.connection.info.pop(_OWN_OBJECTS, None)
    files = {(str(n[1].file), n[1].contents_hash): n for n in noted if not isinstance(n, str)}
    for store, p in files.values():
        if not call(p.unchanged, store.hash):
            raise StoreError(
                f"file {p.file} changed after it was stored, before the commit: store"
                f" {store.name!r} keeps filepath {p.filepath!r} in place (its location is"
                " the stage), so the changed file would have been committed; nothing was"
                " committed. Roll back and store it again once the file is complete, and"
                " give later versions new file names"
            )


def _rollback(conn: Connection) -> None:
    _end_transaction(conn)
    if _noted(conn, create=False) is not None:
        conn.connection.info.pop(_OWN_OBJECTS, None)


def _savepoint(conn: Connection, name: str) -> None:
    noted = _noted(conn, create=False)
    if noted:  # none noted yet: a rollback to it that finds no mark forgets them all
        noted.append(name)


def _end_savepoint(noted: _Noted, name: str) -> int | None:
    """The index of savepoint *name*'s mark, removed (None: begun before any file)."""
    marks = [i for i, n in enumerate(noted) if n == name]
    if not marks:
        return None
    del noted[marks[-1]]
    return marks[-1]


def _rollback_savepoint(conn: Connection, name: str, context: Any) -> None:
    noted = _noted(conn, create=False)
    if noted:
        at = _end_savepoint(noted, name)
        del noted[at or 0 :]


def _release_savepoint(conn: Connection, name: str, context: Any) -> None:
    noted = _noted(conn, create=False)
    if noted:
        _end_savepoint(noted, name)


def _explain_missing_table(
    conn: Connection, ext: sa.Table, options: Mapping[str, Any], exc: BaseException
) -> None:
    """Turn the database's "no such table" into what to do about it."""
    translate = (options or {}).get("schema_translate_map") or {}
    schema = translate.get(ext.schema, ext.schema)
    if not _table_exists(conn, ext.name, schema):
        where = f" in schema {schema!r}" if schema else ""
        raise SaDjblobError(
            f"the externals table {ext.name!r} does not exist{where}: create it with"
            " metadata.create_all(engine) (it is on the MetaData of every table with an"
            " external column) or run your Alembic migrations"
        ) from exc


def _table_exists(conn: Connection, name: str, schema: str | None) -> bool:
    try:
        with conn.begin_nested():
            return sa.inspect(conn).has_table(name, schema=schema)
    except Exception:
        pass
    try:
        with conn.engine.connect() as other:
            return sa.inspect(other).has_table(name, schema=schema)
    except Exception:  # cannot tell: say nothing more than the database did
        return True


def _require_transaction(conn: Connection) -> None:
    """The claim's row lock must last until the user's statement commits."""
    detect = getattr(conn.dialect, "detect_autocommit_setting", None)
    if detect is None:
        return
    try:
        autocommit = bool(detect(conn.connection.dbapi_connection))
    except Exception:  # a driver that cannot tell: nothing to check
        return
    if autocommit:
        raise TransactionRequiredError(
            "external values need a transaction, but this connection is in AUTOCOMMIT mode:"
            " the externals row and its lock would be committed before your statement runs,"
            " and a concurrent sweep could delete the payload in between. Write through a"
            " transaction (engine.begin(), a Session) without isolation_level='AUTOCOMMIT'"
        )


# -- the listeners -------------------------------------------------------------


def _before_execute(
    conn: Connection,
    clauseelement: Any,
    multiparams: Any,
    params: Any,
    execution_options: Mapping[str, Any],
) -> None:
    if not execution_options.get(INTERNAL):
        table = getattr(clauseelement, "table", None)
        table = table if isinstance(table, sa.Table) else None
        _current.set(
            _Statement(weakref.ref(conn), conn.dialect, dict(execution_options), table=table)
        )


_READ_ONLY = re.compile(
    r"\s*(?:--[^\n]*\n\s*|/\*.*?\*/\s*)*(SELECT|VALUES|SHOW|EXPLAIN)\b", re.I | re.S
)


def _written_table(context: Any, statement: str) -> sa.Table | None:
    """The table a statement writes external values into; None if it only reads them
    (``where(col == value)`` in a SELECT or DELETE: the values are only hashed)."""
    what, table = dml_statement(context)
    if what == "read" or (what == "text" and _READ_ONLY.match(statement)):
        return None
    if isinstance(table, sa.Table):
        return table
    raise SaDjblobError(
        "external values in a statement whose target table sa_djblob cannot tell (a text()"
        " INSERT or UPDATE, or one into a non-table): it cannot store their payloads in the"
        " right place. Write them with insert() / update() on the Table (or the ORM);"
        " text() may still compare them in a SELECT"
    )


def _before_cursor_execute(
    conn: Connection, cursor: Any, statement: Any, parameters: Any, context: Any, executemany: bool
) -> None:
    st = _current.get()
    if st is None or st.ref() is not conn or not (st.payloads or st.later):
        return
    if context is None or context.execution_options.get(INTERNAL):
        return
    payloads, st.payloads = st.payloads, {}
    later, st.later = st.later, {}
    table = _written_table(context, str(statement))
    if table is not None:
        if payloads:
            _flush(st, conn, table, payloads)
        for run in later.values():
            run(table)


def _after_execute(
    conn: Connection, clauseelement: Any, multiparams: Any, params: Any, options: Any, result: Any
) -> None:
    if not options.get(INTERNAL):
        _current.set(None)


def _handle_error(context: Any) -> None:
    st = _current.get()
    if st is not None and st.ref() is context.connection:
        ctx = context.execution_context
        if ctx is None or not ctx.execution_options.get(INTERNAL):
            _current.set(None)


def _end_transaction(conn: Connection) -> None:
    """The transaction ended: no statement of its connection is running any more (one
    that failed to compile left its state behind)."""
    st = _current.get()
    if st is not None and st.ref() is conn:
        _current.set(None)


def sync_engine(engine: Engine | AsyncEngine) -> Engine:
    """The sync Engine of an Engine or AsyncEngine."""
    sync = getattr(engine, "sync_engine", engine)
    if not isinstance(sync, Engine):
        raise TypeError(f"expected an Engine or AsyncEngine, got {type(engine).__name__}")
    return sync


_LISTENERS: list[tuple[str, Any]] = [
    ("before_execute", _before_execute),
    ("before_cursor_execute", _before_cursor_execute),
    ("after_execute", _after_execute),
    ("handle_error", _handle_error),
    ("commit", _commit),
    ("rollback", _rollback),
    ("savepoint", _savepoint),
    ("rollback_savepoint", _rollback_savepoint),
    ("release_savepoint", _release_savepoint),
]


def install(engine: Engine | AsyncEngine) -> None:
    """Activate the write path of external values on *engine* (idempotent).

    Refuses a database sa_djblob has no SQL for. On SQLite it also turns foreign keys
    on for every connection; on MySQL it reads the server's ``max_allowed_packet`` so
    oversized in-row values fail before sending.
    """
    sync = sync_engine(engine)
    dialect = dialect_support(sync.dialect)
    for name, fn in _LISTENERS:
        if not event.contains(sync, name, fn):
            event.listen(sync, name, fn)
    _installed.setdefault(sync.dialect, weakref.WeakSet()).add(sync)
    dialect.install(sync)
    from .read import install_reader

    install_reader(sync)


def uninstall(engine: Engine | AsyncEngine) -> None:
    """Remove everything ``install`` added to *engine* (idempotent)."""
    sync = sync_engine(engine)
    for name, fn in _LISTENERS:
        if event.contains(sync, name, fn):
            event.remove(sync, name, fn)
    _installed.get(sync.dialect, weakref.WeakSet()).discard(sync)
    with contextlib.suppress(SaDjblobError):
        dialect_support(sync.dialect).uninstall(sync)
    from .read import uninstall_reader

    uninstall_reader(sync)


def installed(engine: Engine | AsyncEngine) -> bool:
    """Whether ``install`` is active on *engine*."""
    return event.contains(sync_engine(engine), "before_execute", _before_execute)
