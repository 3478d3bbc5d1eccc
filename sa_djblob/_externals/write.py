"""The write path: ``install`` hooks a Connection ``before_execute`` listener that turns
external values of INSERT / UPDATE parameter rows into content hashes, after making
sure each payload is in its store, following DESIGN.md's locking protocol:

1. pack (blob) or stream-hash (attach) the value: key H;
2. upsert the externals row for H and hold a shared lock on it;
3. upload the payload if this transaction created the row, else upload it if absent;
4. the user's statement carries H; the foreign key makes the database enforce it.

All of it runs on the caller's connection, inside the caller's transaction. ORM
flushes (add, merge, attribute changes, bulk inserts) reach the same listener.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from .. import _attach
from .._codec import pack
from .._exceptions import SaDjblobError, StoreError
from .._layout import attachment_prefix, content_hash, hash_stream, object_path
from .._pool import run_all
from ..stores import Store, get_store
from ..types import ExternalRef, _External
from .owner import check_owner
from .table import external_columns, external_table

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["Payload", "claim_rows", "install", "installed", "prepare_payload", "uninstall"]

log = logging.getLogger("sa_djblob")

_BATCH = 500
_CLAIM_ATTEMPTS = 50


@dataclass
class Payload:
    """One value to keep in a store."""

    store: Store
    key: uuid.UUID
    path: PurePosixPath
    size: int
    attachment_name: str | None = None
    data: bytes | None = None
    file: Path | None = None

    def upload(self) -> None:
        if self.data is not None:
            self.store.put(self.path, self.data)
            return
        assert self.file is not None
        if not self.file.is_file():
            raise StoreError(f"cannot read attachment {self.file}: it is gone")
        self.store.upload_file(self.path, self.file)


def prepare_payload(kind: str, value: Any, store: Store, schema: str) -> Payload:
    """Pack or hash one external value."""
    if kind == "blob":
        data = pack(value)
        key = content_hash(data, algorithm=store.hash)
        path = object_path(
            store.location, schema, key, None, store.subfolding, protocol=store.protocol
        )
        return Payload(store, key, path, len(data), data=data)
    if not isinstance(value, str | os.PathLike):
        raise TypeError(
            f"Attach values are file paths (str or PathLike), got {type(value).__name__}"
        )
    file = Path(os.fspath(value))
    name = _attach.attachment_name(file)
    if len(name) > 255:
        raise ValueError(f"attachment name {name[:40]!r}... is longer than 255 characters")
    try:
        with file.open("rb") as f:
            key, total = hash_stream(f, prefix=attachment_prefix(name), algorithm=store.hash)
    except OSError as exc:
        raise FileNotFoundError(
            exc.errno, f"cannot read attachment: {exc.strerror}", str(file)
        ) from None
    size = total - len(name.encode("utf-8")) - 1
    path = object_path(store.location, schema, key, name, store.subfolding, protocol=store.protocol)
    return Payload(store, key, path, size, attachment_name=name, file=file)


# -- step 2: upsert and lock the externals rows ------------------------------


def _chunks(seq: Sequence[Any], n: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


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


def claim_rows(
    conn: Connection, ext: sa.Table, rows: Mapping[uuid.UUID, Mapping[str, Any]]
) -> set[uuid.UUID]:
    """Make sure an externals row exists for every key and hold a shared lock on it.

    *rows* maps each key to the row's other columns. Returns the keys whose row this
    call inserted (their payloads need no existence check before upload).
    """
    name = conn.dialect.name
    is_mysql = name in ("mysql", "mariadb")
    created: set[uuid.UUID] = set()
    pending = sorted(rows)  # one order for every writer: fewer deadlocks
    for _ in range(_CLAIM_ATTEMPTS):
        for chunk in _chunks(pending, _BATCH):
            values = [{"hash": k, **rows[k]} for k in chunk]
            if is_mysql:
                # executemany: PyMySQL sends one multi-row INSERT and reports the rows added.
                # All of them new: this call created them all; otherwise check them all.
                stmt = sa.insert(ext).prefix_with("IGNORE")
                if conn.execute(stmt, values).rowcount == len(chunk):
                    created.update(chunk)
            else:
                dialect_insert: Any
                if name == "postgresql":
                    from sqlalchemy.dialects.postgresql import insert as dialect_insert
                else:
                    from sqlalchemy.dialects.sqlite import insert as dialect_insert
                stmt = (
                    dialect_insert(ext)
                    .on_conflict_do_nothing(index_elements=[ext.c.hash])
                    .returning(ext.c.hash)
                )
                # executemany with RETURNING: SQLAlchemy batches it ("insertmanyvalues")
                created.update(conn.scalars(stmt, values))
        if name == "sqlite":
            return created  # the write transaction already excludes sweepers
        locked: set[uuid.UUID] = set()
        for chunk in _chunks(pending, _BATCH):
            q = (
                sa.select(ext.c.hash, ext.c.attachment_name)
                .where(ext.c.hash.in_(chunk))
                .with_for_update(read=True)
            )
            for key, stored_name in conn.execute(q):
                _check_stored_name(ext, key, rows[key].get("attachment_name"), stored_name)
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


# -- step 3: make sure the payloads are in their stores ------------------------


def _local_and_small(payloads: list[Payload]) -> bool:
    """Local stores answer in microseconds: threads only pay off for large payloads."""
    if any(p.store.is_remote for p in payloads):
        return False
    return sum(p.size for p in payloads) < _PARALLEL_BYTES


def _ensure_payloads(
    conn: Connection, table: sa.Table, payloads: dict[str, dict[uuid.UUID, Payload]]
) -> None:
    upload: list[Payload] = []
    check: list[Payload] = []
    for store_name, items in payloads.items():
        ext = external_table(table.metadata, store_name, table.schema)
        created = claim_rows(
            conn,
            ext,
            {k: {"size": p.size, "attachment_name": p.attachment_name} for k, p in items.items()},
        )
        for key, p in items.items():
            (upload if key in created else check).append(p)
    if check:
        present = run_all(lambda p: p.store.exists(p.path), check, serial=_local_and_small(check))
        upload.extend(p for p, ok in zip(check, present, strict=True) if not ok)
    if upload:
        try:
            run_all(Payload.upload, upload, serial=_local_and_small(upload))
        except SaDjblobError:
            raise
        except Exception as exc:
            raise StoreError(f"upload failed: {exc}") from exc
        log.debug("uploaded %d payload(s)", len(upload))


# -- the listener ----------------------------------------------------------


def _default_schema(conn: Connection) -> str:
    schema = conn.dialect.default_schema_name
    if not schema:
        raise SaDjblobError("cannot tell the connection's default schema for the object paths")
    return str(schema)


_PARALLEL_BYTES = 4 << 20


def _approx_size(value: Any) -> int:
    """A cheap estimate of a value's packed size (files count as large)."""
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, bytes | bytearray | str):
        return len(value)
    if isinstance(value, str | os.PathLike):
        return _PARALLEL_BYTES
    return 64


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
        raise SaDjblobError(
            "external values need a transaction, but this connection is in AUTOCOMMIT mode:"
            " the externals row and its lock would be committed before your statement runs,"
            " and a concurrent sweep could delete the payload in between. Write through a"
            " transaction (engine.begin(), a Session) without isolation_level='AUTOCOMMIT'"
        )


def _rewrite_rows(
    conn: Connection,
    table: sa.Table,
    cols: list[tuple[str, Any, Any]],
    rows: Sequence[Mapping[str, Any]],
) -> list[dict[str, Any]] | None:
    todo: list[tuple[int, str, _External, Any]] = []
    for i, row in enumerate(rows):
        for key, _col, typ in cols:
            value = row.get(key)
            if value is not None and not isinstance(value, ExternalRef):
                todo.append((i, key, typ, value))
    if not todo:
        return None
    _require_transaction(conn)
    schema = table.schema or _default_schema(conn)
    stores = {str(typ.store): get_store(str(typ.store)) for _, _, typ, _ in todo}
    # Packing and hashing hold the GIL for small values: threads only pay off for big ones.
    big = sum(_approx_size(v) for *_, v in todo) > _PARALLEL_BYTES
    prepared = run_all(
        lambda t: prepare_payload(t[2].kind, t[3], stores[str(t[2].store)], schema),
        todo,
        serial=not big,
    )
    for store in stores.values():
        check_owner(conn, store, schema)
    payloads: dict[str, dict[uuid.UUID, Payload]] = {}
    new_rows = [dict(r) for r in rows]
    for (i, key, typ, _), p in zip(todo, prepared, strict=True):
        assert typ.store is not None
        payloads.setdefault(typ.store, {}).setdefault(p.key, p)
        new_rows[i][key] = ExternalRef(bytes=p.key.bytes)
    _ensure_payloads(conn, table, payloads)
    return new_rows


def _rewrite_values(conn: Connection, stmt: Any, cols: list[tuple[str, Any, Any]]) -> Any:
    """``insert(t).values(col=value)``: the values are inside the statement."""
    values = getattr(stmt, "_values", None)
    if not values:
        return stmt
    by_key = {key: typ for key, _, typ in cols}
    inline: dict[str, Any] = {}
    for k, v in values.items():
        key = k if isinstance(k, str) else getattr(k, "key", None)
        if key in by_key and isinstance(v, sa.BindParameter):
            inline[key] = v.value
    if not inline:
        return stmt
    new = _rewrite_rows(conn, stmt.table, cols, [inline])
    return stmt if new is None else stmt.values(**new[0])


def _raise_if_too_big(size: int, limit: int) -> None:
    # PyMySQL sends binary values escaped inside the SQL text; allow for that.
    wire = 2 * size + 1024
    if wire > limit:
        raise SaDjblobError(
            f"a value of {size:,} bytes would exceed the MySQL server's max_allowed_packet"
            f" of {limit:,} bytes on the wire (PyMySQL sends binary values escaped, up to"
            " twice their size): keep large values in an external store"
            " (djb.Blob(store=...)) or raise max_allowed_packet on the server"
        )


def _before_execute(
    conn: Connection,
    clauseelement: Any,
    multiparams: Any,
    params: Any,
    execution_options: Any,
) -> tuple[Any, Any, Any]:
    if not isinstance(clauseelement, sa.Insert | sa.Update):
        return clauseelement, multiparams, params
    table = clauseelement.table
    if not isinstance(table, sa.Table):
        return clauseelement, multiparams, params
    cols = external_columns(table)
    if not cols:
        return clauseelement, multiparams, params
    clauseelement = _rewrite_values(conn, clauseelement, cols)
    if multiparams:
        new = _rewrite_rows(conn, table, cols, multiparams)
        if new is not None:
            multiparams = new
    elif params:
        new = _rewrite_rows(conn, table, cols, [params])
        if new is not None:
            params = new[0]
    return clauseelement, multiparams, params


def _sqlite_fk(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def sync_engine(engine: Engine | AsyncEngine) -> Engine:
    """The sync Engine of an Engine or AsyncEngine."""
    sync = getattr(engine, "sync_engine", engine)
    if not isinstance(sync, Engine):
        raise TypeError(f"expected an Engine or AsyncEngine, got {type(engine).__name__}")
    return sync


_LISTENERS: list[tuple[str, Any, dict[str, Any]]] = [
    ("before_execute", _before_execute, {"retval": True}),
]


def install(engine: Engine | AsyncEngine) -> None:
    """Activate the write path of external values on *engine* (idempotent).

    On SQLite it also turns foreign keys on for every connection; on MySQL it reads
    the server's ``max_allowed_packet`` so oversized in-row values fail before sending.
    """
    sync = sync_engine(engine)
    for name, fn, kw in _LISTENERS:
        if not event.contains(sync, name, fn):
            event.listen(sync, name, fn, **kw)
    name = sync.dialect.name
    if name == "sqlite" and not event.contains(sync.pool, "checkout", _sqlite_checkout):
        event.listen(sync.pool, "checkout", _sqlite_checkout)
    mysql = name in ("mysql", "mariadb")
    if mysql and not event.contains(sync, "before_cursor_execute", _mysql_before_cursor):
        event.listen(sync, "before_cursor_execute", _mysql_before_cursor)
    from .read import install_prefetch

    install_prefetch(sync)


def uninstall(engine: Engine | AsyncEngine) -> None:
    """Remove everything ``install`` added to *engine* (idempotent)."""
    sync = sync_engine(engine)
    for name, fn, _kw in _LISTENERS:
        if event.contains(sync, name, fn):
            event.remove(sync, name, fn)
    if event.contains(sync.pool, "checkout", _sqlite_checkout):
        event.remove(sync.pool, "checkout", _sqlite_checkout)
    if event.contains(sync, "before_cursor_execute", _mysql_before_cursor):
        event.remove(sync, "before_cursor_execute", _mysql_before_cursor)
    from .read import uninstall_prefetch

    uninstall_prefetch(sync)


def installed(engine: Engine | AsyncEngine) -> bool:
    """Whether ``install`` is active on *engine*."""
    return event.contains(sync_engine(engine), "before_execute", _before_execute)


def _sqlite_checkout(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
    _sqlite_fk(dbapi_conn, _record)


_PACKET_KEY = "sa_djblob.max_allowed_packet"


def _mysql_before_cursor(
    conn: Connection, cursor: Any, statement: Any, parameters: Any, context: Any, executemany: bool
) -> None:
    info = conn.connection.info  # the pooled DBAPI connection's info: lives as long as it
    limit = info.get(_PACKET_KEY)
    if limit is None:
        cur = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cur.execute("SELECT @@max_allowed_packet")
            row = cur.fetchone()
            limit = info[_PACKET_KEY] = int(row[0]) if row else 1 << 30
        finally:
            cur.close()
    if parameters is None:
        return
    rows = parameters if executemany else [parameters]
    for row in rows:
        values = row.values() if isinstance(row, Mapping) else row
        if isinstance(values, Iterable) and not isinstance(values, str | bytes):
            size = sum(len(v) for v in values if isinstance(v, bytes | bytearray | memoryview))
            if size:
                _raise_if_too_big(size, limit)
