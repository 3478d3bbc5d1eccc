"""Sweeping a DataJoint 2.x store: delete the hash-addressed objects of the given schemas
that no row references, safely while sa_djblob writers run (docs/dj2.md).

1. list ``_hash/<schema>/`` of every schema given (only names of 26 base32 characters)
   and read every reference: each JSON value of every codec or JSON column of those
   schemas. Candidates: objects older than the grace period that no pointer names.
   If a listing or a reference scan fails, nothing is deleted.
2. per batch, in one transaction (READ COMMITTED): take the candidates' claims
   ``FOR UPDATE`` (inserting them, which waits for writers that are still uploading),
   scan the references again, now that every writer of those objects has committed or
   rolled back, delete the objects still unreferenced and their claims, commit.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import random
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from .._dialects import dialect_support
from .._dialects.base import INTERNAL
from .._exceptions import SaDjblobError, StoreError
from .._pool import call
from .._util import chunks
from ..stores import Store, get_store
from ..stores.base import is_temp_name
from .claims import CLAIMS, claims_table, lock_for_delete, release
from .layout import HASH_NAME, hash_area, object_key

__all__ = ["SweepReport", "references", "sweep"]

log = logging.getLogger("sa_djblob")

_CODEC_COMMENT = re.compile(r":<[^>]*>:")
_ATTEMPTS = 20

#: test hook: called after a batch's objects are deleted, before its commit
_after_delete: Callable[[list[str]], None] | None = None


@dataclass
class SweepReport:
    """What a sweep of a DataJoint 2.x store found and did; paths relative to the store."""

    store: str
    schemas: list[str]
    dry_run: bool
    listed: int = 0
    #: unreferenced and older than the grace period when listed
    candidates: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    #: candidates a writer referenced before the sweep took their claims: kept
    kept: list[str] = field(default_factory=list)
    #: objects whose deletion failed, with the reason
    failed: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class References:
    """Every store path the scanned rows point at, by store (None: the default store)."""

    paths: dict[str | None, set[str]]

    def names(self, store: str, path: str) -> bool:
        return path in self.paths.get(store, ()) or path in self.paths.get(None, ())


def _columns(conn: Connection, schema: str) -> list[tuple[str, str]]:
    """(table, column) of every column of *schema* that may hold a pointer: DataJoint's
    codec columns (``:<...>:`` comments) and every JSON column."""
    inspector = sa.inspect(conn)
    found = []
    for table in inspector.get_table_names(schema=schema):
        if table == CLAIMS:
            continue
        for col in inspector.get_columns(table, schema=schema):
            comment = col.get("comment") or ""
            if _CODEC_COMMENT.match(comment) or isinstance(col["type"], sa.JSON):
                found.append((table, col["name"]))
    return found


def _pointers(value: Any) -> Iterable[dict[str, Any]]:
    if isinstance(value, bytes | bytearray | memoryview):
        value = bytes(value).decode("utf-8", "replace")
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return ()
    if isinstance(value, dict):
        return (value,)
    return ()


def references(conn: Connection, schemas: Sequence[str]) -> References:
    """Every pointer of *schemas*' rows. Raises if any table cannot be read."""
    paths: dict[str | None, set[str]] = {}
    opts = {INTERNAL: True}
    for schema in schemas:
        for table, column in _columns(conn, schema):
            col: sa.ColumnClause[Any] = sa.column(column)
            q = sa.select(col).select_from(sa.table(table, schema=schema)).where(col.is_not(None))
            for (value,) in conn.execute(q, execution_options=opts):
                for ptr in _pointers(value):
                    path = ptr.get("path")
                    if isinstance(path, str):
                        store = ptr.get("store")
                        paths.setdefault(store if isinstance(store, str) else None, set()).add(path)
    return References(paths)


def _list(store: Store, schema: str) -> list[tuple[str, dt.datetime]]:
    """(store-relative path, modified) of every hash-addressed object of *schema*."""
    root = store.root
    prefix = object_key(store, hash_area(schema))
    out = []
    for info in call(lambda: list(store.list(prefix))):
        name = info.path.name
        if is_temp_name(name) or not HASH_NAME.fullmatch(name):
            continue
        rel = PurePosixPath(info.path).relative_to(root).as_posix()
        out.append((rel, info.modified))
    return out


def _connect(engine: Engine) -> Connection:
    conn = engine.connect().execution_options(**{INTERNAL: True})
    iso = dialect_support(engine.dialect).sweep_isolation
    if iso:
        conn = conn.execution_options(isolation_level=iso)
    return conn


def sweep(
    engine: Engine,
    store: str,
    schemas: Sequence[str] | None = None,
    *,
    grace: dt.timedelta = dt.timedelta(hours=1),
    dry_run: bool = False,
    batch: int = 1000,
) -> SweepReport:
    """Delete the objects of *store* below ``_hash/<schema>/`` of each of *schemas*
    (default: the engine's default schema) that no row of those schemas references and
    that are older than *grace*. Give every schema whose rows may point there.

    Safe while sa_djblob writers run. DataJoint's own writers take no claims: an object
    they reuse may be deleted between their check and their commit (the race of
    DataJoint's own collector); sweep when no DataJoint writer runs, or keep *grace*
    longer than any DataJoint transaction for new objects.
    """
    if not isinstance(engine, Engine):
        raise TypeError(
            f"dj2.sweep takes an Engine, got {type(engine).__name__}: for an AsyncEngine,"
            " create an Engine with the synchronous driver for the sweep"
        )
    sync = engine
    st = get_store(store)
    if schemas is None:
        with sync.connect() as conn:
            schemas = [str(conn.dialect.default_schema_name)]
    names = list(dict.fromkeys(schemas))
    report = SweepReport(store, names, dry_run)
    now = dt.datetime.now(dt.UTC)
    # 1. everything is listed and scanned before anything is deleted
    listed: dict[str, list[tuple[str, dt.datetime]]] = {s: _list(st, s) for s in names}
    report.listed = sum(len(v) for v in listed.values())
    with _connect(sync) as conn:
        known = set(sa.inspect(conn).get_schema_names())
        missing = [n for n in names if n not in known]
        if missing:
            raise SaDjblobError(
                f"schema(s) {', '.join(map(repr, missing))} do not exist in this database:"
                " with no rows to scan, every object of their areas would look unused;"
                " check the names (nothing was deleted)"
            )
        refs = references(conn, names)
        conn.rollback()
    candidates: dict[str, list[str]] = {}
    for schema, objects in listed.items():
        old = [rel for rel, modified in objects if now - modified >= grace]
        found = [rel for rel in old if not refs.names(store, rel)]
        candidates[schema] = sorted(found)
        report.candidates.extend(found)
    if dry_run or not report.candidates:
        return report
    # 2. under the claims' locks: scan again, delete what is still unreferenced
    for schema, found in candidates.items():
        if not found:
            continue
        ct = claims_table(sa.MetaData(), schema)
        ct.create(sync, checkfirst=True)
        for part in chunks(found, batch):
            _delete_batch(sync, st, ct, names, list(part), report)
    return report


def _delete_batch(
    engine: Engine,
    store: Store,
    ct: sa.Table,
    schemas: Sequence[str],
    part: list[str],
    report: SweepReport,
) -> None:
    dialect = dialect_support(engine.dialect)
    keys = [(store.name, PurePosixPath(rel).name) for rel in part]
    for attempt in range(_ATTEMPTS):
        try:
            with _connect(engine) as conn, conn.begin():
                lock_for_delete(conn, ct, keys)
                refs = references(conn, schemas)
                dead = [rel for rel in part if not refs.names(store.name, rel)]
                failed = call(store.remove_many, [object_key(store, rel) for rel in dead])
                if _after_delete is not None:
                    _after_delete(dead)
                root = store.root
                failures = {p.relative_to(root).as_posix(): why for p, why in failed.items()}
                gone = [rel for rel in dead if rel not in failures]
                release(conn, ct, [(store.name, PurePosixPath(rel).name) for rel in gone])
            break
        except sa.exc.DBAPIError as exc:
            if attempt + 1 < _ATTEMPTS and dialect.is_retryable(exc):
                # a deadlock with a writer or another sweep: back off, then again
                log.info("sweep of %s: retrying a batch after %s", store.name, exc.orig)
                time.sleep(random.uniform(0, 0.02 * (attempt + 1)))
                continue
            raise
    report.deleted.extend(gone)
    report.kept.extend(rel for rel in part if rel not in dead)
    report.failed.update(failures)
    if failures:
        raise StoreError(
            f"{len(failures)} object(s) of store {store.name!r} could not be deleted (the"
            f" first: {next(iter(failures.items()))}); the sweep can be run again"
        )
