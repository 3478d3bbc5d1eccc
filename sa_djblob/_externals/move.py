"""``djb.move(engine, column, to_store)``: move a column's values to another store, into the
row, or from the row into a store, while the application keeps writing.

The database decides where the column is now (its foreign key to ``~external_<store>``,
none: in the row); the column object passed in names the table, the column and the kind.
So a move that is run again after it finished finds nothing to do, and a move that was
killed finds where it stopped.

Store to store (the key is the same in both stores: they must use one ``hash`` setting):

1. copy, one transaction per batch of distinct keys (keyset-paged): claim the
   destination's externals rows as a writer does (insert if missing, ``FOR SHARE``), so no
   sweep of the destination deletes them meanwhile, and lock the source's rows of the batch
   ``FOR SHARE`` too, so no sweep of the source deletes a payload being read; copy each
   payload that is missing or of the wrong size there, reading the source verified against
   its key and reading the copy back verified against its key (never an ETag); commit;
2. switch: copy the keys written since (same as 1, only keys without a destination row),
   then swap the column's foreign key and its DataJoint comment in ONE statement
   (MySQL/MariaDB: one ``ALTER TABLE``; PostgreSQL: one transaction). The database checks
   the new foreign key against every row as it adds it: if a writer committed a key the
   catch-up has not copied, the statement fails, and the catch-up runs again. So at no
   moment does a committed row reference a key without a destination row. SQLite: the
   catch-up and the swap run in one write transaction (writers wait), the swap edits the
   table's DDL (SQLite cannot alter a constraint) and ``foreign_key_check`` confirms it.

Row to store and store to row change the values, and on MySQL the column type:

- MySQL/MariaDB and PostgreSQL: a shadow column ``<column>__djb_move`` of the destination
  type (with its foreign key to the destination) is added and filled in batches, each row
  compare-and-set against the value it was converted from; a row that a writer changed
  afterwards is found by comparing the database's own digest of the bytes with the key,
  and converted again. The switch locks the table against writers (``LOCK TABLE ... SHARE
  ROW EXCLUSIVE`` / ``LOCK TABLES ... WRITE``), converts what changed since, drops the old
  column and renames the shadow in its place (one ``ALTER TABLE`` on MySQL, one
  transaction on PostgreSQL).
- SQLite: the values are converted in place in one write transaction, and the foreign
  key added to or removed from the table's DDL.

Source payloads are never deleted: they stay until a sweep of the source, so a move is
undone by moving back. Writers must be redeployed with the model that names the new
place when the switch is done; until then (docs/design.md) a writer with the old model
is refused by the database (the new foreign key, or the new column type) unless its
value is already in the new place.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from .._area import Area, check_owner, resolve_schema
from .._attach import decode_inrow
from .._codec import DJ0, MYM
from .._dialects import dialect_support
from .._dialects.base import INTERNAL
from .._exceptions import ConfigError, IntegrityError, SaDjblobError
from .._framing import ZL123
from .._layout import attachment_prefix, content_hash, copy_hashed, hash_stream
from .._pool import run_all
from .._util import discard
from ..stores import Store, get_store
from .progress import bar as _bar
from .table import EXTERNAL_PREFIX, _index_name, external_table
from .write import claim_rows

__all__ = ["SHADOW_SUFFIX", "MoveReport", "move"]

SHADOW_SUFFIX = "__djb_move"
DEFAULT_BATCH = 500
_ATTEMPTS = 20
_T = TypeVar("_T")
_IN_MEMORY = 16 << 20  # larger payloads are copied through a temporary file

# A test hook: called with the batch number after each committed copy batch.
_after_batch: Any = None


@dataclass
class MoveReport:
    """What ``djb.move`` did (or, with ``dry_run``, would do)."""

    table: str
    column: str
    source: str | None
    destination: str | None
    dry_run: bool = False
    #: values considered: distinct keys (store to store) or rows (into or out of the row)
    values: int = 0
    #: payloads written to the destination (or rows converted)
    copied: int = 0
    #: payloads already in the destination (a rerun, or shared content)
    present: int = 0
    #: bytes written (dry run: bytes to write)
    bytes: int = 0
    #: the column now uses the destination
    switched: bool = False
    #: the column was already there: nothing was done
    already: bool = False
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def __str__(self) -> str:
        def where(store: str | None) -> str:
            return "row" if store is None else repr(store)

        head = f"{self.table}.{self.column}: {where(self.source)} -> {where(self.destination)}"
        if self.already:
            return f"{head}: already there, nothing to do"
        if self.dry_run:
            return f"{head} (dry run): {self.values} value(s), {self.bytes:,} bytes to copy"
        return (
            f"{head}: {self.values} value(s), {self.copied} copied ({self.bytes:,} bytes),"
            f" {self.present} already present, switched={self.switched},"
            f" {self.seconds:.1f} s"
        )


def _resolve_column(column: Any) -> sa.Column[Any]:
    prop = getattr(column, "property", None)
    cols = getattr(prop, "columns", None)
    if cols:
        column = cols[0]
    if not isinstance(column, sa.Column) or not isinstance(column.table, sa.Table):
        raise TypeError(
            "move needs a column of a table: an ORM attribute (Recording.trace) or a Core"
            f" Column (table.c.trace), got {column!r}"
        )
    kind = getattr(getattr(column.type, "kind", None), "name", None)
    if kind not in ("blob", "attach"):
        raise TypeError(
            f"move moves Blob and Attach columns; {column.table.name}.{column.name} is"
            f" {column.type!r}"
        )
    return column


@dataclass
class _State:
    """Where the column is now, read from the database."""

    store: str | None
    fk_name: str | None
    nullable: bool
    comment: str | None
    col_type: Any
    shadow: bool
    shadow_store: str | None


class _Mover:
    def __init__(
        self,
        bind: Engine | Connection,
        column: sa.Column[Any],
        to_store: str | None,
        *,
        dry_run: bool,
        progress: bool | None,
        batch: int,
    ) -> None:
        if batch < 1:
            raise ValueError(f"batch must be a positive number, got {batch}")
        self.bind = bind
        self.dialect = bind.dialect
        self.support = dialect_support(self.dialect)
        self.name = column.table.name
        self.schema = column.table.schema
        self.cname = column.name
        self.shadow = column.name + SHADOW_SUFFIX
        self.kind: str = column.type.kind.name  # type: ignore[attr-defined]
        self.dst = to_store
        self.dry_run = dry_run
        self.progress = progress
        self.batch = batch
        self.pk: list[str] = []
        self.opts = {INTERNAL: True}
        self.q = self.dialect.identifier_preparer

    # -- connections ---------------------------------------------------------------
    @contextlib.contextmanager
    def tx(self) -> Iterator[Connection]:
        """One transaction: its own on an Engine; the caller's on a Connection (Alembic)."""
        if isinstance(self.bind, Connection):
            if self.bind.in_transaction():
                yield self.bind
            else:
                with self.bind.begin():
                    yield self.bind
            return
        with self.bind.connect() as conn:
            if self.support.sweep_isolation:
                conn.execution_options(isolation_level=self.support.sweep_isolation)
            with conn.begin():
                yield conn

    def in_tx(self, conn: Connection | None, fn: Callable[[Connection], _T]) -> _T:
        """``fn(connection)`` on *conn*, or in a transaction of its own, retried when the
        database picks it as a deadlock victim (a sweep or a writer won)."""
        if conn is not None:
            return fn(conn)
        for attempt in range(_ATTEMPTS):
            try:
                with self.tx() as c:
                    return fn(c)
            except sa.exc.DBAPIError as exc:
                last = attempt + 1 == _ATTEMPTS or isinstance(self.bind, Connection)
                if last or not self.support.is_retryable(exc):
                    raise
                time.sleep(min(0.01 * 2**attempt, 1.0))
        raise AssertionError("unreachable")

    def x(self, conn: Connection, stmt: Any, params: Any = None) -> Any:
        return conn.execute(stmt, params, execution_options=self.opts)

    def ddl(self, conn: Connection, sql: str) -> None:
        conn.exec_driver_sql(sql, execution_options=self.opts)

    # -- names ---------------------------------------------------------------------
    def qt(self, name: str | None = None) -> str:
        t = sa.table(name or self.name, schema=self.schema)
        return str(self.q.format_table(t))

    def qc(self, name: str) -> str:
        return str(self.q.quote(name))

    def literal(self, value: str) -> str:
        return str(
            sa.literal(value, sa.String()).compile(
                dialect=self.dialect, compile_kwargs={"literal_binds": True}
            )
        )

    _table: tuple[tuple[str, ...], sa.TableClause] | None = None

    @property
    def table(self) -> sa.TableClause:
        """The table as the move sees it: primary key, column, shadow (one object per key)."""
        if self._table is not None and self._table[0] == tuple(self.pk):
            return self._table[1]
        cols: list[sa.ColumnClause[Any]] = [sa.column(c) for c in self.pk]
        t = sa.table(
            self.name,
            *cols,
            sa.column(self.cname, sa.LargeBinary()),
            sa.column(self.shadow, sa.LargeBinary()),
            schema=self.schema,
        )
        self._table = (tuple(self.pk), t)
        return t

    def ext(self, store: str) -> sa.Table:
        return external_table(sa.MetaData(), store, self.schema)

    def area(self, conn: Connection, store: str) -> Area:
        return Area(get_store(store), resolve_schema(conn, self.schema, self.ext(store).name))

    # -- where the column is -------------------------------------------------------
    def state(self, conn: Connection) -> _State:
        insp = sa.inspect(conn)
        cols = {c["name"]: c for c in insp.get_columns(self.name, schema=self.schema)}
        if self.cname not in cols:
            raise SaDjblobError(f"table {self.name!r} has no column {self.cname!r}")
        self.pk = list(insp.get_pk_constraint(self.name, schema=self.schema)["constrained_columns"])

        def stores(column: str) -> list[tuple[str, str | None]]:
            return [
                (fk["referred_table"][len(EXTERNAL_PREFIX) :], fk.get("name"))
                for fk in insp.get_foreign_keys(self.name, schema=self.schema)
                if fk["constrained_columns"] == [column]
                and fk["referred_table"].startswith(EXTERNAL_PREFIX)
            ]

        mine = stores(self.cname)
        if len(mine) > 1:
            raise SaDjblobError(
                f"{self.name}.{self.cname} has foreign keys to {len(mine)} externals tables:"
                " drop the one of the store it does not use"
            )
        shadow = stores(self.shadow) if self.shadow in cols else []
        col = cols[self.cname]
        return _State(
            store=mine[0][0] if mine else None,
            fk_name=mine[0][1] if mine else None,
            nullable=bool(col.get("nullable", True)),
            comment=col.get("comment"),
            col_type=col["type"],
            shadow=self.shadow in cols,
            shadow_store=shadow[0][0] if shadow else None,
        )

    def comment(self, old: str | None, src: str | None, dst: str | None) -> str | None:
        """The column's comment with DataJoint's tag of the new place."""
        from .._kinds import kind

        k = kind(self.kind)
        text = old or ""
        tag = k.comment(src)
        if tag and text.startswith(tag):
            text = text[len(tag) :]
        new = k.comment(dst) + text
        return new or None

    # -- the move ------------------------------------------------------------------
    def run(self) -> MoveReport:
        start = time.monotonic()
        if self.dst is not None:
            get_store(self.dst)  # StoreNotConfiguredError if not configured
        with self.tx() as conn:
            st = self.state(conn)
        report = MoveReport(self.name, self.cname, st.store, self.dst, dry_run=self.dry_run)
        self.report = report
        if st.shadow and (st.store == self.dst or st.shadow_store != self.dst) and not self.dry_run:
            # an interrupted move elsewhere: the column still holds every value
            with self.tx() as conn:
                self.drop_shadow(conn)
            st.shadow = False
        if st.store == self.dst:
            report.already = True
            return report
        src = st.store
        if src is not None and self.dst is not None:
            a, b = get_store(src), get_store(self.dst)
            if a.hash != b.hash:
                raise ConfigError(
                    f"stores {src!r} ({a.hash}) and {self.dst!r} ({b.hash}) hash differently,"
                    " so the column's keys would change: move through the row (to_store=None,"
                    " then to the store), or give both stores the same 'hash' setting"
                )
        if self.dst is not None and not self.dry_run:
            with self.tx() as conn:
                self.ext(self.dst).create(conn, checkfirst=True)
        if self.dry_run:
            self.estimate(st)
            report.seconds = time.monotonic() - start
            return report
        with self.tx() as conn:
            self.src_area = self.area(conn, src) if src is not None else None
            self.dst_area = self.area(conn, self.dst) if self.dst is not None else None
            if self.dst_area is not None:
                check_owner(conn, self.dst_area)
        if src is not None and self.dst is not None:
            self.store_to_store(st)
        elif self.support.row_locks:
            self.shadowed(st)
        else:
            self.sqlite_row_move(st)
        report.seconds = time.monotonic() - start
        return report

    # -- dry run -------------------------------------------------------------------
    def estimate(self, st: _State) -> None:
        t = self.table
        col = t.c[self.cname]
        with self.tx() as conn:
            if st.store is not None and self.dst is not None:
                a, b = self.ext(st.store), self.ext(self.dst)
                q = sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(a.c.size), 0)).where(
                    sa.exists().where(col == a.c.hash)
                )
                if sa.inspect(conn).has_table(b.name, schema=self.schema):
                    q = q.where(~sa.exists().where(b.c.hash == a.c.hash))
            elif st.store is not None:
                a = self.ext(st.store)
                q = sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(a.c.size), 0))
                q = q.select_from(t.join(a, a.c.hash == col))
            else:
                q = sa.select(
                    sa.func.count(), sa.func.coalesce(sa.func.sum(sa.func.length(col)), 0)
                )
                q = q.select_from(t).where(col.isnot(None))
            n, size = self.x(conn, q).one()
        self.report.values = int(n)
        self.report.bytes = int(size)

    # -- payloads ------------------------------------------------------------------
    def _verify_copy(self, store: Store, path: Any, key: uuid.UUID, prefix: bytes) -> None:
        with store.open(path) as f:
            got, _ = hash_stream(f, prefix=prefix, algorithm=store.hash)
        if got != key:
            raise IntegrityError(
                f"the copy of {key} in store {store.name!r} at {path} does not match its hash"
                f" ({store.hash}): the store changed the bytes; nothing was switched, run the"
                " move again"
            )

    def _read_source(self, key: uuid.UUID, name: str | None) -> bytes:
        assert self.src_area is not None
        store = self.src_area.store
        path = self.src_area.path(key, name)
        data = store.get(path)
        prefix = attachment_prefix(name) if name is not None else b""
        if content_hash(prefix, data, algorithm=store.hash) != key:
            raise IntegrityError(
                f"payload {key} in store {store.name!r} at {path} does not match its hash"
                f" ({store.hash}): it was changed or corrupted; restore it, then move again"
            )
        return data

    def _ensure(self, item: tuple[uuid.UUID, str | None, int, bool, bytes | None]) -> int:
        """Make sure payload *key* is at the destination, verified: the bytes written."""
        key, name, size, created, data = item
        assert self.dst_area is not None
        dst = self.dst_area.store
        path = self.dst_area.path(key, name)
        prefix = attachment_prefix(name) if name is not None else b""
        if not created:
            got = dst.size(path)
            if got is not None and (got < 0 or got == size):
                return -1
        if data is None and size > _IN_MEMORY:
            self._copy_large(key, name, path)
            self._verify_copy(dst, path, key, prefix)  # streamed: read back and hashed
            return size
        if data is None:
            data = self._read_source(key, name)  # verified against the key
        elif content_hash(prefix, data, algorithm=dst.hash) != key:
            raise IntegrityError(f"value {key} changed while it was moved: run the move again")
        dst.put_verified(path, data)  # the store holds exactly these bytes
        return size

    def _copy_large(self, key: uuid.UUID, name: str | None, path: Any) -> None:
        assert self.src_area is not None and self.dst_area is not None
        src = self.src_area.store
        prefix = attachment_prefix(name) if name is not None else b""
        fd, tmp = tempfile.mkstemp(prefix=".djb-move-")
        try:
            with os.fdopen(fd, "wb") as out, src.open(self.src_area.path(key, name)) as f:
                got = copy_hashed(f, out, prefix=prefix, algorithm=src.hash)
            if got != key:
                raise IntegrityError(
                    f"payload {key} in store {src.name!r} does not match its hash: it was"
                    " changed or corrupted; restore it, then move again"
                )
            self.dst_area.store.upload_file(path, Path(tmp))
        finally:
            discard(Path(tmp))

    def put_batch(
        self, conn: Connection, items: dict[uuid.UUID, tuple[str | None, int, bytes | None]]
    ) -> None:
        """Claim the destination rows of *items* and make sure their payloads are there."""
        assert self.dst is not None
        rows = {
            k: {"size": size, "attachment_name": name, "filepath": None, "contents_hash": None}
            for k, (name, size, _) in items.items()
        }
        created = claim_rows(conn, self.ext(self.dst), rows)
        todo = [(k, name, size, k in created, data) for k, (name, size, data) in items.items()]
        for n in run_all(self._ensure, todo):
            if n < 0:
                self.report.present += 1
            else:
                self.report.copied += 1
                self.report.bytes += n

    # -- store to store --------------------------------------------------------------
    def copy_pass(self, st: _State, conn: Connection | None, *, missing_only: bool) -> int:
        """Copy the column's keys (*missing_only*: those without a destination row) in
        batches; each batch in its own transaction unless *conn* is given."""
        assert st.store is not None and self.dst is not None
        a, b = self.ext(st.store), self.ext(self.dst)
        col = self.table.c[self.cname]
        base = sa.select(a.c.hash, a.c.size, a.c.attachment_name).where(
            sa.exists().where(col == a.c.hash)
        )
        if missing_only:
            base = base.where(~sa.exists().where(b.c.hash == a.c.hash))
        last: uuid.UUID | None = None
        total = 0
        bar = _bar(self.progress if not missing_only else False, None, f"move {self.cname}")
        try:
            while True:
                q = base if last is None else base.where(a.c.hash > last)
                # The source rows locked as a writer locks the rows it uses: a sweep of the
                # source skips them until the batch is copied (a row whose last reference
                # a writer replaced meanwhile would otherwise be swept under the copy).
                q = self.support.lock_shared(q.order_by(a.c.hash).limit(self.batch))

                def one(c: Connection, q: Any = q) -> Sequence[Any]:
                    rows = self.x(c, q).all()
                    self.put_batch(c, {r[0]: (r[2], int(r[1]), None) for r in rows})
                    return rows  # type: ignore[no-any-return]

                rows = self.in_tx(conn, one)
                if not rows:
                    break
                total += len(rows)
                bar.update(len(rows))
                last = rows[-1][0]
                if _after_batch is not None:
                    _after_batch(total)
        finally:
            bar.close()
        return total

    def store_to_store(self, st: _State) -> None:
        self.report.values = self.copy_pass(st, None, missing_only=False)
        self.copy_pass(st, None, missing_only=True)  # what writers added meanwhile
        for attempt in range(_ATTEMPTS):
            try:
                if self.support.row_locks:
                    self.swap_fk(st)
                else:
                    self.sqlite_swap_fk(st)
            except sa.exc.DBAPIError as exc:
                last = attempt + 1 == _ATTEMPTS or isinstance(self.bind, Connection)
                if last or not self.support.is_retryable(exc):
                    raise
                time.sleep(min(0.01 * 2**attempt, 1.0))
                continue  # a deadlock with a writer or a sweep
            self.report.switched = True
            return

    def swap_fk(self, st: _State) -> None:
        """Writers of the table wait while the last keys they added are copied and the
        foreign key is swapped (readers wait too on MySQL)."""
        assert st.store is not None and self.dst is not None
        comment = self.comment(st.comment, st.store, self.dst)
        fk = (
            f"FOREIGN KEY ({self.qc(self.cname)}) REFERENCES {self.qt(self.ext(self.dst).name)}"
            " (hash) ON UPDATE RESTRICT ON DELETE RESTRICT"
        )
        src = st.store
        with self.tx() as conn:
            st = self.state(conn)
            assert st.fk_name is not None
            if self.dialect.name in ("mysql", "mariadb"):
                coldef = self.column_def(st.col_type, st.nullable, comment)
                with self.mysql_locked(conn, [src, self.dst]):
                    self.copy_pass(st, conn, missing_only=True)
                    self.ddl(
                        conn,
                        f"ALTER TABLE {self.qt()} DROP FOREIGN KEY {self.qc(st.fk_name)},"
                        f" ADD {fk}, MODIFY {self.qc(self.cname)} {coldef}",
                    )
            else:
                # every lock the ALTER needs, taken up front in one order: no upgrade
                # later can deadlock with a writer (table, then externals row) or a sweep
                old_ext, new_ext = (
                    self.qt(self.ext(src).name),
                    self.qt(self.ext(self.dst).name),
                )
                self.ddl(conn, f"LOCK TABLE {self.qt()}, {old_ext} IN ACCESS EXCLUSIVE MODE")
                self.ddl(conn, f"LOCK TABLE {new_ext} IN SHARE ROW EXCLUSIVE MODE")
                self.copy_pass(st, conn, missing_only=True)
                self.ddl(
                    conn,
                    f"ALTER TABLE {self.qt()} DROP CONSTRAINT {self.qc(st.fk_name)}, ADD {fk}",
                )
                self.set_comment(conn, self.cname, comment)

    @contextlib.contextmanager
    def mysql_locked(self, conn: Connection, stores: Sequence[str | None]) -> Iterator[None]:
        """``LOCK TABLES`` on the table and the externals tables of *stores*: writers and
        sweeps wait until the ``ALTER TABLE`` at the end is done."""
        locks = [f"{self.qt()} WRITE"]
        locks += [f"{self.qt(self.ext(s).name)} WRITE" for s in dict.fromkeys(stores) if s]
        self.ddl(conn, f"LOCK TABLES {', '.join(locks)}")
        try:
            yield
        finally:
            self.ddl(conn, "UNLOCK TABLES")

    def column_def(self, type_: Any, nullable: bool, comment: str | None) -> str:
        out = f"{type_.compile(dialect=self.dialect)} {'NULL' if nullable else 'NOT NULL'}"
        if comment is not None:
            out += f" COMMENT {self.literal(comment)}"
        return out

    def set_comment(self, conn: Connection, column: str, comment: str | None) -> None:
        value = "NULL" if comment is None else self.literal(comment)
        self.ddl(conn, f"COMMENT ON COLUMN {self.qt()}.{self.qc(column)} IS {value}")

    # -- SQLite: the DDL text --------------------------------------------------------
    def _sqlite_fk(self, store: str) -> re.Pattern[str]:
        c = re.escape(self.cname)
        e = re.escape(EXTERNAL_PREFIX + store)
        return re.compile(
            rf",\s*(?:CONSTRAINT\s+\S+\s+)?FOREIGN\s+KEY\s*\(\s*[\"`\[]?{c}[\"`\]]?\s*\)\s*"
            rf"REFERENCES\s*[\"`\[]?{e}[\"`\]]?\s*\(\s*\"?hash\"?\s*\)"
            r"(?:\s+ON\s+(?:DELETE|UPDATE)\s+(?:RESTRICT|CASCADE|NO\s+ACTION|SET\s+NULL))*",
            re.I,
        )

    def _sqlite_fk_clause(self, store: str) -> str:
        return (
            f", FOREIGN KEY({self.qc(self.cname)}) REFERENCES"
            f" {self.qc(EXTERNAL_PREFIX + store)} (hash) ON DELETE RESTRICT ON UPDATE RESTRICT"
        )

    # -- the guard of an in-row blob column --------------------------------------------
    @property
    def check_name(self) -> str:
        """The CHECK that keeps 16-byte keys out of a blob column moved into the row."""
        name = _index_name(sa.Table(self.name, sa.MetaData()), sa.Column(self.cname))
        return "ck" + name[2:] + "_blob" if len(name) < 58 else "ck" + name[2:]

    def check_sql(self) -> str:
        """Every value is a blob: DataJoint's headers, exactly what ``unpack`` accepts. A
        writer still running the model of the store would store a 16-byte key here."""
        c = self.qc(self.cname)
        name = self.dialect.name
        if name == "postgresql":
            head4, head6 = f"substring({c} from 1 for 4)", f"substring({c} from 1 for 6)"
            lit = "'\\x{}'::bytea"
        else:
            fn = "LEFT" if name in ("mysql", "mariadb") else "substr"
            pos = "" if fn == "LEFT" else "1, "
            head4, head6 = f"{fn}({c}, {pos}4)", f"{fn}({c}, {pos}6)"
            lit = "X'{}'"
        mym, dj0, zl = (lit.format(h.hex()) for h in (MYM, DJ0, ZL123))
        return f"{c} IS NULL OR {head4} IN ({mym}, {dj0}) OR {head6} = {zl}"

    def sqlite_check_clause(self) -> str:
        return f", CONSTRAINT {self.qc(self.check_name)} CHECK ({self.check_sql()})"

    def sqlite_edit(
        self,
        conn: Connection,
        src: str | None,
        dst: str | None,
        *,
        add_check: bool = False,
        drop_check: bool = False,
    ) -> None:
        """Replace the column's foreign key (or its in-row guard) in the table's DDL
        (SQLite's documented way to change constraints without rebuilding the table),
        then check every row."""
        sql = conn.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (self.name,)
        ).scalar_one()
        new = sql
        if drop_check:
            new = new.replace(self.sqlite_check_clause(), "")
        if add_check:
            end = new.rstrip().rstrip(";").rstrip()
            new = end[:-1].rstrip() + self.sqlite_check_clause() + ")"
        if src is not None:
            new, n = self._sqlite_fk(src).subn("", new)
            if n != 1:
                raise SaDjblobError(
                    f"cannot find the foreign key of {self.name}.{self.cname} to"
                    f" {EXTERNAL_PREFIX}{src} in the table's DDL: move it with Alembic's batch"
                    " mode instead"
                )
        if dst is not None:
            end = new.rstrip().rstrip(";").rstrip()
            if not end.endswith(")"):
                raise SaDjblobError(f"cannot read the DDL of table {self.name!r}")
            new = end[:-1].rstrip() + self._sqlite_fk_clause(dst) + ")"
        version = conn.exec_driver_sql("PRAGMA schema_version").scalar_one()
        conn.exec_driver_sql("PRAGMA writable_schema=ON")
        try:
            conn.exec_driver_sql(
                "UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = ?",
                (new, self.name),
            )
            conn.exec_driver_sql(f"PRAGMA schema_version={int(version) + 1}")
        finally:
            conn.exec_driver_sql("PRAGMA writable_schema=OFF")
        index = _index_name(sa.Table(self.name, sa.MetaData()), sa.Column(self.cname))
        if src is not None and dst is None:
            self.ddl(conn, f"DROP INDEX IF EXISTS {self.qc(index)}")
        if dst is not None and src is None:
            self.ddl(
                conn,
                f"CREATE INDEX IF NOT EXISTS {self.qc(index)}"
                f" ON {self.qt()} ({self.qc(self.cname)})",
            )
        if add_check:
            t = self.qt()
            bad_values = conn.exec_driver_sql(
                f"SELECT count(*) FROM {t} WHERE NOT ({self.check_sql()})"
            ).scalar_one()
            if bad_values:
                raise SaDjblobError(f"{bad_values} value(s) of {self.name} are not blobs")
        bad = conn.exec_driver_sql(f"PRAGMA foreign_key_check({self.qc(self.name)})").all()
        if bad:
            raise SaDjblobError(
                f"{len(bad)} row(s) of {self.name} would reference missing externals rows;"
                " nothing was switched"
            )

    def sqlite_swap_fk(self, st: _State) -> None:
        assert st.store is not None and self.dst is not None
        with self.tx() as conn:
            self.support.begin_write(conn, self.ext(self.dst))  # writers wait from here
            self.copy_pass(st, conn, missing_only=True)
            self.sqlite_edit(conn, st.store, self.dst)

    # -- row <-> store: values change ------------------------------------------------
    def _pk_order(self) -> list[Any]:
        t = self.table
        return [t.c[c] for c in self.pk]

    def _after(self, last: tuple[Any, ...] | None) -> Any:
        cols = self._pk_order()
        if last is None:
            return sa.true()
        if len(cols) == 1:
            return cols[0] > last[0]
        return sa.tuple_(*cols) > sa.tuple_(*last)

    def convert_rows(
        self, conn: Connection | None, src: str | None, target: str, *, pending: Any
    ) -> int:
        """Convert the rows matching *pending* in batches: ``target`` (the shadow column,
        or the column itself on SQLite) gets the destination's value, compare-and-set
        against the value converted. Returns the rows converted."""
        if not self.pk:
            raise SaDjblobError(
                f"table {self.name!r} has no primary key: move needs one to convert its rows"
            )
        t = self.table
        col = t.c[self.cname]
        pks = self._pk_order()
        if src is not None:
            a = self.ext(src)
            base = sa.select(*pks, col, a.c.attachment_name, a.c.size).select_from(
                t.join(a, a.c.hash == col)
            )
        else:
            base = sa.select(*pks, col).where(col.isnot(None))
        base = base.where(pending)
        where = [t.c[c] == sa.bindparam(f"pk_{c}") for c in self.pk]
        where.append(col == sa.bindparam("old", type_=sa.LargeBinary()))
        upd = (
            sa.update(t).where(*where).values({target: sa.bindparam("new", type_=sa.LargeBinary())})
        )
        last: tuple[Any, ...] | None = None
        done = 0
        bar = _bar(self.progress, None, f"move {self.cname}")
        try:
            while True:
                q = base.where(self._after(last)).order_by(*pks).limit(self.batch)

                def one(c: Connection, q: Any = q) -> Sequence[Any]:
                    rows = self.x(c, q).all()
                    if rows:
                        n = len(self.pk)
                        params = self._convert(c, src, [(tuple(r[:n]), *r[n:]) for r in rows])
                        self.x(c, upd, params)
                    return rows  # type: ignore[no-any-return]

                rows = self.in_tx(conn, one)
                if not rows:
                    break
                done += len(rows)
                bar.update(len(rows))
                last = tuple(rows[-1][: len(self.pk)])
                if _after_batch is not None:
                    _after_batch(done)
        finally:
            bar.close()
        return done

    def _convert(
        self, conn: Connection, src: str | None, rows: Sequence[tuple[Any, ...]]
    ) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if src is None:  # row -> store: the key of the bytes
            assert self.dst_area is not None
            algorithm = self.dst_area.store.hash
            items: dict[uuid.UUID, tuple[str | None, int, bytes | None]] = {}
            for pk, old in rows:
                raw = bytes(old)
                if self.kind == "attach":
                    name, contents = decode_inrow(raw)
                    key = content_hash(raw, algorithm=algorithm)
                    items[key] = (name, len(contents), bytes(contents))
                else:
                    key = content_hash(raw, algorithm=algorithm)
                    items[key] = (None, len(raw), raw)
                out.append({**self._pk_params(pk), "old": raw, "new": key.bytes})
            self.put_batch(conn, items)
            self.report.values += len(rows)
            return out
        # store -> row: the verified bytes
        refs = [(pk, bytes(old), name) for pk, old, name, _size in rows]
        datas = run_all(lambda r: self._read_source(uuid.UUID(bytes=r[1]), r[2]), refs)
        for (pk, old, name), data in zip(refs, datas, strict=True):
            new = data if name is None else attachment_prefix(name) + data
            out.append({**self._pk_params(pk), "old": old, "new": new})
            self.report.copied += 1
            self.report.bytes += len(data)
        self.report.values += len(rows)
        return out

    def _pk_params(self, pk: tuple[Any, ...]) -> dict[str, Any]:
        return {f"pk_{c}": v for c, v in zip(self.pk, pk, strict=True)}

    # SQLite: one write transaction, in place
    def sqlite_row_move(self, st: _State) -> None:
        src = st.store
        with self.tx() as conn:
            lock = self.ext(self.dst if self.dst is not None else src)  # type: ignore[arg-type]
            self.support.begin_write(conn, lock)  # writers wait from here
            if src is not None:
                self.sqlite_edit(conn, src, None)  # values stop being keys first
            else:
                self.sqlite_edit(conn, None, None, drop_check=True)
            self.convert_rows(conn, src, self.cname, pending=sa.true())
            if self.dst is not None:
                self.sqlite_edit(conn, None, self.dst)
            elif self.kind == "blob":
                self.sqlite_edit(conn, None, None, add_check=True)
        self.report.switched = True

    # MySQL/MariaDB, PostgreSQL: a shadow column
    def add_shadow(self, conn: Connection) -> None:
        sh = self.qc(self.shadow)
        if self.dst is None:
            type_sql = self.support.inrow_type().compile(dialect=self.dialect)
            self.ddl(conn, f"ALTER TABLE {self.qt()} ADD COLUMN {sh} {type_sql} NULL")
            return
        type_sql = self.support.hash_type().compile(dialect=self.dialect)
        index = self.qc(_index_name(sa.Table(self.name, sa.MetaData()), sa.Column(self.shadow)))
        fk = (
            f"FOREIGN KEY ({sh}) REFERENCES {self.qt(self.ext(self.dst).name)} (hash)"
            " ON UPDATE RESTRICT ON DELETE RESTRICT"
        )
        if self.dialect.name in ("mysql", "mariadb"):
            self.ddl(
                conn,
                f"ALTER TABLE {self.qt()} ADD COLUMN {sh} {type_sql} NULL,"
                f" ADD INDEX {index} ({sh}), ADD {fk}",
            )
        else:
            self.ddl(conn, f"ALTER TABLE {self.qt()} ADD COLUMN {sh} {type_sql} NULL, ADD {fk}")
            self.ddl(conn, f"CREATE INDEX {index} ON {self.qt()} ({sh})")

    def drop_shadow(self, conn: Connection) -> None:
        if self.dialect.name in ("mysql", "mariadb"):
            fks = [
                fk["name"]
                for fk in sa.inspect(conn).get_foreign_keys(self.name, schema=self.schema)
                if fk["constrained_columns"] == [self.shadow]
            ]
            drops = [f"DROP FOREIGN KEY {self.qc(n)}" for n in fks if n]
            drops.append(f"DROP COLUMN {self.qc(self.shadow)}")
            self.ddl(conn, f"ALTER TABLE {self.qt()} {', '.join(drops)}")
        else:
            self.ddl(conn, f"ALTER TABLE {self.qt()} DROP COLUMN {self.qc(self.shadow)}")

    def stale(self, src: str | None) -> sa.ColumnElement[bool]:
        """Shadow values that no longer match the column (a writer changed the row)."""
        t = self.table
        col, sh = t.c[self.cname], t.c[self.shadow]
        if src is None:
            assert self.dst_area is not None
            hash_side, bytes_side, algorithm = self.shadow, self.cname, self.dst_area.store.hash
        else:
            assert self.src_area is not None
            hash_side, bytes_side, algorithm = self.cname, self.shadow, self.src_area.store.hash
        digest = self.support.digest_sql(f"{self.qc(bytes_side)}", algorithm)
        assert digest is not None
        differs = sa.text(f"{self.qc(hash_side)} <> {digest}")
        return sa.and_(sh.isnot(None), sa.or_(col.is_(None), differs))

    def refresh(self, conn: Connection | None, src: str | None) -> int:
        """Forget stale shadow values, then convert every row without one."""
        t = self.table
        self.in_tx(
            conn,
            lambda c: self.x(c, sa.update(t).where(self.stale(src)).values({self.shadow: None})),
        )
        return self.convert_rows(conn, src, self.shadow, pending=t.c[self.shadow].is_(None))

    def shadowed(self, st: _State) -> None:
        src = st.store
        if not st.shadow:
            with self.tx() as conn:
                self.add_shadow(conn)
        with self.tx() as conn:
            self.state(conn)
        self.refresh(None, src)
        self.refresh(None, src)  # what writers changed meanwhile
        comment = self.comment(st.comment, src, self.dst)
        index_old = _index_name(sa.Table(self.name, sa.MetaData()), sa.Column(self.shadow))
        index_new = _index_name(sa.Table(self.name, sa.MetaData()), sa.Column(self.cname))
        if self.dialect.name in ("mysql", "mariadb"):
            self._switch_mysql(st, comment, index_old, index_new)
        else:
            with self.tx() as conn:
                exclusive = [self.qt()] + ([self.qt(self.ext(src).name)] if src else [])
                self.ddl(conn, f"LOCK TABLE {', '.join(exclusive)} IN ACCESS EXCLUSIVE MODE")
                if self.dst is not None:
                    new_ext = self.qt(self.ext(self.dst).name)
                    self.ddl(conn, f"LOCK TABLE {new_ext} IN SHARE ROW EXCLUSIVE MODE")
                self.refresh(conn, src)
                self.ddl(conn, f"ALTER TABLE {self.qt()} DROP COLUMN {self.qc(self.cname)}")
                self.ddl(
                    conn,
                    f"ALTER TABLE {self.qt()} RENAME COLUMN {self.qc(self.shadow)}"
                    f" TO {self.qc(self.cname)}",
                )
                if not st.nullable:
                    self.ddl(
                        conn,
                        f"ALTER TABLE {self.qt()} ALTER COLUMN {self.qc(self.cname)} SET NOT NULL",
                    )
                self.set_comment(conn, self.cname, comment)
                if self.dst is None and self.kind == "blob":
                    self.ddl(
                        conn,
                        f"ALTER TABLE {self.qt()} ADD CONSTRAINT {self.qc(self.check_name)}"
                        f" CHECK ({self.check_sql()})",
                    )
                if self.dst is not None:
                    where = f"{self.qc(self.schema)}." if self.schema else ""
                    self.ddl(
                        conn,
                        f"ALTER INDEX {where}{self.qc(index_old)} RENAME TO {self.qc(index_new)}",
                    )
        self.report.switched = True

    def _switch_mysql(
        self, st: _State, comment: str | None, index_old: str, index_new: str
    ) -> None:
        src = st.store
        with self.tx() as conn:
            st = self.state(conn)
            with self.mysql_locked(conn, [src, self.dst]):
                self.refresh(conn, src)
                type_sql = (
                    self.support.inrow_type() if self.dst is None else self.support.hash_type()
                )
                parts = []
                checks = sa.inspect(conn).get_check_constraints(self.name, schema=self.schema)
                if any(ck.get("name") == self.check_name for ck in checks):
                    parts.append(f"DROP CONSTRAINT {self.qc(self.check_name)}")
                if st.fk_name is not None:
                    parts.append(f"DROP FOREIGN KEY {self.qc(st.fk_name)}")
                parts.append(f"DROP COLUMN {self.qc(self.cname)}")
                parts.append(
                    f"CHANGE COLUMN {self.qc(self.shadow)} {self.qc(self.cname)}"
                    f" {self.column_def(type_sql, st.nullable, comment)}"
                )
                if self.dst is not None:
                    parts.append(f"RENAME INDEX {self.qc(index_old)} TO {self.qc(index_new)}")
                elif self.kind == "blob":
                    parts.append(
                        f"ADD CONSTRAINT {self.qc(self.check_name)} CHECK ({self.check_sql()})"
                    )
                self.ddl(conn, f"ALTER TABLE {self.qt()} {', '.join(parts)}")


def move(
    engine: Engine | Connection,
    column: Any,
    to_store: str | None,
    *,
    dry_run: bool = False,
    progress: bool | None = None,
    batch: int = DEFAULT_BATCH,
) -> MoveReport:
    """Move the values of *column* (an ORM attribute or a Core ``Column`` of a ``Blob`` or
    ``Attach``) to store *to_store*, or into the row (``to_store=None``), and switch the
    column in the database (its foreign key, type and DataJoint comment).

    Every payload written is read back and verified against its key. Source payloads stay
    until a sweep of the source, so moving back undoes a move. Safe to run again after a
    crash or a kill: it finishes the job; on a column already there it does nothing.
    ``dry_run=True`` only counts the values and bytes to copy. *progress*: a tqdm bar on
    stderr (None: only when stderr is a terminal). Redeploy the models that name the new
    place once it returns (docs/design.md, "Moving values").

    *engine* may also be a Connection (an Alembic migration's): then every step runs on
    it, inside its transaction.
    """
    col = _resolve_column(column)
    if not isinstance(engine, Engine | Connection):
        raise TypeError(f"move needs an Engine or a Connection, got {type(engine).__name__}")
    return _Mover(engine, col, to_store, dry_run=dry_run, progress=progress, batch=batch).run()
