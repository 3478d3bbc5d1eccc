"""The claims table ``~sa_djblob_claims``: how sa_djblob's writers and the sweep of a
DataJoint 2.x store meet (docs/dj2.md).

DataJoint 2.x keeps no table of payloads and no foreign keys: a hash-addressed object is
live only because some JSON pointer names it. A writer therefore takes a *claim* on each
object it is about to reference: a row ``(store, hash)`` of the schema's claims table,
inserted if missing and locked ``FOR SHARE`` in the writer's transaction, before it
checks and uploads the object. The sweep takes the same row ``FOR UPDATE`` (inserting it
itself, which waits for an uncommitted writer's insert), then looks for references
again, and only then deletes the object. Whichever comes second sees the other's work:
a writer after the sweep finds the object gone and uploads it again; a sweep after the
writer sees its committed row.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from .._dialects import dialect_support
from .._dialects.base import INTERNAL
from .._exceptions import StoreError
from .._util import chunks

__all__ = ["CLAIMS", "claim", "claims_table", "lock_for_delete", "release"]

CLAIMS = "~sa_djblob_claims"
_BATCH = 500
_ATTEMPTS = 50

Key = tuple[str, str]  # (store, hash)


def claims_table(metadata: sa.MetaData, schema: str | None = None) -> sa.Table:
    """The claims table of *schema* on *metadata*, added on first use (so ``create_all``
    and Alembic see it, as they see the externals tables)."""
    key = f"{schema}.{CLAIMS}" if schema else CLAIMS
    found = metadata.tables.get(key)
    if found is not None:
        return found
    return sa.Table(
        CLAIMS,
        metadata,
        sa.Column("store", sa.String(64), primary_key=True),
        sa.Column("hash", sa.String(26), primary_key=True),
        sa.Column(
            "timestamp",
            sa.DateTime(),
            nullable=False,
            server_default=sa.func.current_timestamp(),
        ),
        schema=schema,
        comment="sa_djblob: payloads being written to DataJoint 2.x stores (see docs/dj2.md)",
    )


def _insert_missing(conn: Connection, table: sa.Table, keys: Sequence[Key], opts: Any) -> None:
    rows = [{"store": s, "hash": h} for s, h in keys]
    name = conn.dialect.name
    stmt: Any
    if name in ("mysql", "mariadb"):
        stmt = sa.insert(table).prefix_with("IGNORE")
    else:
        insert = pg_insert if name == "postgresql" else sqlite_insert
        stmt = insert(table).on_conflict_do_nothing(index_elements=["store", "hash"])
    conn.execute(stmt, rows, execution_options=opts)


def _where(table: sa.Table, keys: Iterable[Key]) -> Any:
    return sa.tuple_(table.c.store, table.c.hash).in_(list(keys))


def claim(
    conn: Connection, table: sa.Table, keys: Iterable[Key], options: Mapping[str, Any] | None = None
) -> None:
    """Insert the claims of *keys* that are missing and hold a shared lock on each until
    the transaction ends (SQLite: its write transaction excludes the sweep instead)."""
    dialect = dialect_support(conn.dialect)
    opts = {**(options or {}), INTERNAL: True}
    pending = sorted(set(keys))  # one order for every writer: fewer deadlocks
    for _ in range(_ATTEMPTS):
        for chunk in chunks(pending, _BATCH):
            _insert_missing(conn, table, chunk, opts)
        if not dialect.row_locks:
            return
        locked: set[Key] = set()
        for chunk in chunks(pending, _BATCH):
            q = dialect.lock_shared(
                sa.select(table.c.store, table.c.hash).where(_where(table, chunk))
            )
            locked.update((s, h) for s, h in conn.execute(q, execution_options=opts))
        # a claim that a sweep deleted between our insert and our lock: insert it again
        pending = [k for k in pending if k not in locked]
        if not pending:
            return
    raise StoreError(
        f"could not claim {len(pending)} payload(s) in {table.name} after {_ATTEMPTS}"
        " attempts (a sweep keeps deleting them): retry the transaction"
    )


def lock_for_delete(conn: Connection, table: sa.Table, keys: Iterable[Key]) -> None:
    """The sweep's side: insert the claims of *keys* (waiting for any writer that has
    inserted one and not committed) and lock them ``FOR UPDATE`` (waiting for writers
    that hold them ``FOR SHARE``). A claim that another sweep deleted while this one
    waited for it is inserted and locked again: every key is held on return."""
    opts = {INTERNAL: True}
    pending = sorted(set(keys))
    row_locks = dialect_support(conn.dialect).row_locks
    for _ in range(_ATTEMPTS):
        for chunk in chunks(pending, _BATCH):
            _insert_missing(conn, table, chunk, opts)
        if not row_locks:
            return
        locked: set[Key] = set()
        for chunk in chunks(pending, _BATCH):
            q = sa.select(table.c.store, table.c.hash).where(_where(table, chunk))
            rows = conn.execute(q.with_for_update(), execution_options=opts)
            locked.update((s, h) for s, h in rows)
        pending = [k for k in pending if k not in locked]
        if not pending:
            return
    raise StoreError(
        f"could not lock {len(pending)} claim(s) in {table.name} after {_ATTEMPTS} attempts"
        " (other sweeps keep deleting them): run the sweep again"
    )


def release(conn: Connection, table: sa.Table, keys: Iterable[Key]) -> None:
    """Delete the claims of *keys* (the sweep, once their objects are gone)."""
    for chunk in chunks(sorted(set(keys)), _BATCH):
        conn.execute(
            sa.delete(table).where(_where(table, chunk)), execution_options={INTERNAL: True}
        )
