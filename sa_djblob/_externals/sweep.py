"""``ExternalTable.sweep`` and ``ExternalTable.verify``: safe upkeep of an externals table.

The invariant (docs/design.md): a committed row never references a payload that is missing
from its store, and a payload that a committed row references is never deleted. The
sweep keeps it while the application goes on writing, because it only deletes a payload
while it holds the lock that every writer of that payload needs, and only after the
database itself has agreed that the payload is unreferenced.

Phase 0, before anything is deleted: read every referencing column (a table that cannot
be read aborts the sweep) and read the first page of the store's ``<location>/<schema>/``
listing (a store whose listing fails aborts the sweep). Nothing has been deleted when
either fails. The listing that phase 2 works through is read after phase 1, so that the
payloads phase 1 removes are not listed; if it fails, phase 2 stops there.

Memory holds a batch, never the listing or the table: phase 1 pages through the table by
hash, phase 2 reads the listing lazily, ``batch`` objects at a time, in path order (so in
hash order: the folders are the hash's first digits), and merges it against the
externals table read in hash order, ``batch`` hashes per query (keyset pagination). A
store that lists in another order is swept as well, with a lookup of each chunk's keys.

Phase 1, unused rows, one transaction per batch, READ COMMITTED on MySQL/MariaDB and
PostgreSQL (so every check sees the latest committed rows, not a snapshot), keyset-paged
by hash so a sweep always ends:

1. lock a batch of candidates: ``SELECT ... WHERE <no reference in any column> ORDER BY
   hash LIMIT n FOR UPDATE SKIP LOCKED``. Writers hold ``FOR SHARE`` on the rows they use
   and a referencing INSERT's foreign key check locks the row too, so a row somebody is
   about to reference is skipped, and once we hold the lock nobody can add a reference
   until we commit. (SQLite has no row locks: the batch starts with a write, which takes
   the database's write lock and so excludes every writer.)
2. delete the rows, re-checking ``NOT EXISTS`` in the DELETE itself: a writer may have
   committed a reference between the locking SELECT's snapshot and the lock (PostgreSQL
   does not re-check a row that was only locked, not updated). The foreign key refuses
   any row that is still referenced; if the batch DELETE trips it, the rows are deleted
   one by one in savepoints and the refused ones are counted as ``skipped_referenced``.
   The rows that really went are read back (those still there were not deleted).
3. remove the payloads of exactly those rows (``Store.remove_many``: DeleteObjects
   batches on S3). The rows are removed first and the payloads second, so that a
   payload is never removed on the strength of a check the database has not confirmed.
4. rows whose payload could not be removed are inserted again, as they were, in the
   same transaction (we still hold their locks), and the failure is reported;
5. commit.

If the process dies or the commit fails between 3 and 5, the transaction rolls back: the
rows come back, still unreferenced (we held their locks), now without payloads. That
breaks nothing: no committed row references them, the next writer of the same content
finds the row, checks the store, and uploads the payload again (write path step 4), and
``verify(include_unused=True)`` lists them meanwhile. A writer that raced with the batch
waited on the row lock, and after the commit creates the row again and uploads again.

Phase 2, orphans: payloads in the listing with a name of 32 hex digits (optionally
``.<attachment name>``) at exactly the path the layout gives that name, with no externals
row, older than ``grace``. A filepath's object (``<root>/<relative path>``) is never one: a
listed object counts only if the key a filepath entry of its path would have (the hash of
its path relative to the root) has no row either, and the batch claims that key too, so a
filepath writer of the same object waits for the batch, or the batch for the writer. The key
is also looked up in the externals table of the schema that owns the store's filepaths, if
that is another one of this database; if it is another database, no such object is an orphan.
Phase 1 removes an unused filepath entry's object at ``<root>/<relative path>``, unless
that path is reserved (``_layout.reserved_path``: a payload or an owner marker of any
area, which DataJoint lets a filepath overwrite): then only the row goes.
Per batch, in one transaction: insert the externals rows of the candidates ourselves,
marked with a token unique to the batch (an uncommitted writer of the same hash makes
this wait until it commits or rolls back; a row that exists is left
alone: ``INSERT IGNORE`` / ``ON CONFLICT DO NOTHING``); the rows that carry our token are
the true orphans, and we now hold the lock a writer of them needs; remove their
payloads; delete our rows; commit. Temporary files of the file store are never touched.
Afterwards, on a file store, folders left empty are removed.

``verify`` pages through the table by hash and reads each page's payloads in a streaming
fashion (concurrently, through the bounded pool), checking each against its hash.
"""

from __future__ import annotations

import collections
import datetime
import functools
import itertools
import secrets
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .._area import FILEPATHS, Area, check_filepath_owner, check_owner, database_identity
from .._dialects import dialect_support
from .._dialects.base import INTERNAL
from .._exceptions import MissingPayloadError, SaDjblobError, StoreError
from .._kinds import Kind
from .._layout import (
    content_hash,
    parse_payload_name,
    reserved_path,
    subfold,
)
from .._pool import call
from .._util import chunks as _chunks
from ..stores import Store
from ..stores.base import ObjectInfo, is_temp_name
from .progress import bar as _bar
from .reports import SweepReport
from .table import Reference, external_table

if TYPE_CHECKING:
    from .maintenance import ExternalTable

__all__ = ["DEFAULT_BATCH", "DEFAULT_GRACE", "sweep"]

DEFAULT_BATCH = 1000
DEFAULT_GRACE = datetime.timedelta(hours=1)
_ATTEMPTS = 5
_T = TypeVar("_T")

# A test hook: called after a batch's payloads were removed, before its commit.
_after_remove: Callable[[str, list[PurePosixPath]], None] | None = None


_Orphan = tuple[uuid.UUID, str | None, ObjectInfo]


class _KnownKeys:
    """Which listed keys have an externals row: a merge join of the listing against the
    table read in hash order, *batch* hashes per query (keyset pagination).

    Asked for keys in ascending order (the order stores list in), it reads every row
    once, a page at a time, and holds one page. Keys that come out of order (a store
    that lists in another order) are looked up directly instead, *batch* per query.
    What it answers may be stale: phase 2 only uses it to pick candidates, and the
    orphan batch decides under the rows' locks.
    """

    def __init__(self, table: sa.Table, batch: int) -> None:
        self.table = table
        self.batch = batch
        self.page: collections.deque[uuid.UUID] = collections.deque()
        self.after: uuid.UUID | None = None  # the last hash read
        self.high: uuid.UUID | None = None  # the highest key asked about
        self.exhausted = False

    def missing(self, conn: Connection, keys: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        """The *keys* without a row."""
        wanted = sorted(set(keys))
        if self.high is not None and wanted[0] <= self.high:
            return self._look_up(conn, wanted)  # out of order: no merge
        self.high = wanted[-1]
        rowless = set(wanted)
        t = self.table
        while True:
            while self.page and self.page[0] <= self.high:
                rowless.discard(self.page.popleft())
            if self.page or self.exhausted:
                return rowless
            q = sa.select(t.c.hash).order_by(t.c.hash).limit(self.batch)
            if self.after is not None:
                q = q.where(t.c.hash > self.after)
            got = list(conn.scalars(q))
            conn.rollback()
            self.exhausted = len(got) < self.batch
            if got:
                self.after = got[-1]
                self.page.extend(got)

    def _look_up(self, conn: Connection, keys: list[uuid.UUID]) -> set[uuid.UUID]:
        t = self.table
        rowless = set(keys)
        for chunk in _chunks(keys, self.batch):
            rowless.difference_update(conn.scalars(sa.select(t.c.hash).where(t.c.hash.in_(chunk))))
        conn.rollback()
        return rowless


class _Sweeper:
    def __init__(
        self,
        ext: ExternalTable,
        *,
        dry_run: bool,
        grace: datetime.timedelta,
        progress: bool | None,
        batch: int,
    ) -> None:
        if batch < 1:
            raise ValueError(f"batch must be a positive number of entries, got {batch}")
        if grace < datetime.timedelta(0):
            raise ValueError(f"grace must not be negative, got {grace}")
        self.ext = ext
        self.table = ext.table
        self.engine = ext.engine
        self.dialect = dialect_support(self.engine.dialect)
        self.store: Store = ext.store
        self.grace = grace
        self.progress = progress
        self.batch = batch
        self.report = SweepReport(dry_run=dry_run)
        self._area: Area | None = None

    @property
    def area(self) -> Area:
        """The store area swept (resolved once the externals table is known to exist)."""
        if self._area is None:
            self._area = self.ext.area()
        return self._area

    @property
    def prefix(self) -> PurePosixPath:
        return self.area.prefix

    # -- connections ---------------------------------------------------------
    def connect(self) -> Connection:
        conn = self.engine.connect().execution_options(**{INTERNAL: True})
        if self.dialect.sweep_isolation:
            conn = conn.execution_options(isolation_level=self.dialect.sweep_isolation)
        return conn

    def _write_lock(self, conn: Connection) -> None:
        """Where rows cannot be locked (SQLite), take the database's write lock now."""
        self.dialect.begin_write(conn, self.table)

    def path(self, key: uuid.UUID, name: str | None) -> PurePosixPath:
        return self.area.path(key, name)

    _root: str | None = None

    def at_layout_path(self, path: PurePosixPath, key: uuid.UUID) -> bool:
        """Whether *path* is where the layout puts an object of its name with hash *key*
        (``self.path(key, name) == path``, compared as strings: the listing's hot loop)."""
        if self._root is None:
            self._root = str(self.prefix)
        folds = subfold(key.hex, self.store.subfolding)
        return str(path) == "/".join((self._root, *folds, path.name))

    def row_path(self, row: dict[str, Any]) -> PurePosixPath:
        """The object of an externals row (its kind knows where it lives)."""
        kind = Kind.for_entry(row["attachment_name"], row.get("filepath"))
        return kind.entry_path(self.area, row["hash"], row)

    _filepaths_owned: bool | None = None

    def check_filepaths(self, conn: Connection) -> None:
        """Raise ``StoreError`` unless this schema owns the store's filepath objects."""
        if self._filepaths_owned is None:
            try:
                check_filepath_owner(conn, self.store, self.area.schema, claim=True, fresh=True)
                self._filepaths_owned = True
            except StoreError:
                self._filepaths_owned = False
                raise
        if not self._filepaths_owned:
            raise StoreError(
                f"the filepath objects of store {self.store.name!r} belong to another"
                " schema or database: their unused entries are kept"
            )

    def filepath_key(self, path: PurePosixPath) -> uuid.UUID:
        """The key a filepath entry whose object is *path* has (the hash of the path
        relative to the store's root)."""
        root = self.store.root
        rel = path.relative_to(root).as_posix()
        return content_hash(rel.encode("utf-8"), algorithm=self.store.hash)

    def filepaths_elsewhere(
        self, conn: Connection, keys: Sequence[uuid.UUID]
    ) -> set[uuid.UUID] | None:
        """Which of the filepath *keys* the schema that owns the store's filepaths has rows
        for, when that is another schema (or store name) of this database; None when it is
        another database (whose rows cannot be read)."""
        marker = Area(self.store, FILEPATHS).marker
        try:
            recorded = call(self.store.get, marker).decode("utf-8", "replace").strip()
        except MissingPayloadError:
            return set()  # nobody placed filepaths here
        me = database_identity(conn) + " store="
        store_name, sep, schema = recorded[len(me) :].partition(" schema=")
        if not recorded.startswith(me) or not sep:
            return None
        if (store_name, schema) == (self.store.name, self.area.schema):
            return set()  # this table's own: already looked up
        table = external_table(sa.MetaData(), store_name, schema)
        found: set[uuid.UUID] = set()
        try:
            for chunk in _chunks(keys, self.batch):
                found.update(conn.scalars(sa.select(table.c.hash).where(table.c.hash.in_(chunk))))
        except sa.exc.DBAPIError as exc:
            if exc.connection_invalidated:
                raise
            conn.rollback()
            return None  # its table cannot be read: nothing ruled out
        conn.rollback()
        return found

    # -- phase 0 ---------------------------------------------------------------
    def check_references(self, conn: Connection) -> list[Reference] | None:
        try:
            refs = self.ext.references(conn)
            for ref in refs:
                t = sa.table(ref.table, sa.column(ref.column), schema=ref.schema)
                conn.execute(sa.select(t.c[ref.column]).limit(1)).all()
        except sa.exc.DBAPIError as exc:
            conn.rollback()
            if exc.connection_invalidated:
                raise
            self.report.errors.append(
                f"cannot read the tables that reference {self.ext.name}: {exc.orig};"
                " nothing deleted"
            )
            return None
        conn.rollback()
        return refs

    def owns_area(self, conn: Connection, *, claim: bool) -> bool:
        """Whether this database owns ``<location>/<schema>/``: only then are payloads
        there that it does not know orphans (see :func:`sa_djblob._area.check_owner`)."""
        try:
            check_owner(conn, self.area, claim=claim, fresh=True)
        except StoreError as exc:  # another owner's area, or an unreadable marker
            self.report.errors.append(f"{exc}; nothing deleted")
            return False
        return True

    def probe_store(self) -> bool:
        """Whether the store's listing can be read (one request), before deleting anything."""
        try:
            call(lambda: next(iter(self.store.list(self.prefix)), None))
        except Exception as exc:  # a failed listing aborts the sweep: reported
            self.report.errors.append(
                f"cannot list {self.prefix} in store {self.store.name!r}: {exc}; nothing deleted"
            )
            return False
        return True

    def list_store(self) -> Iterator[list[ObjectInfo]]:
        """The listing of the area, lazily, in chunks of at most ``batch`` objects
        (temporary files left out). A failed listing is reported and ends it: nothing
        listed after the failure is deleted."""
        listing = iter(self.store.list(self.prefix))

        def take() -> list[ObjectInfo]:
            return list(itertools.islice(listing, self.batch))

        first = True
        while True:
            try:
                chunk = call(take)
            except Exception as exc:  # a failed listing stops phase 2: reported
                done = "nothing deleted" if first else "no more orphans deleted"
                self.report.errors.append(
                    f"cannot list {self.prefix} in store {self.store.name!r}: {exc}; {done}"
                )
                return
            first = False
            if not chunk:
                return
            yield [o for o in chunk if not is_temp_name(o.path.name)]

    # -- phase 1 ---------------------------------------------------------------
    def count_unused(self, conn: Connection, refs: list[Reference]) -> tuple[int, int]:
        t = self.table
        q = sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(t.c.size), 0)).where(
            self.ext.unused_clause(refs)
        )
        row = conn.execute(q).one()
        conn.rollback()
        return int(row[0]), int(row[1])

    def sweep_rows(self, refs: list[Reference]) -> None:
        """Phase 1 (holds one batch of rows at a time)."""
        with self.connect() as conn:
            total = self.count_unused(conn, refs)[0] if self.progress else None
            bar = _bar(self.progress, total, f"sweep {self.ext.name}")
            try:
                after: uuid.UUID | None = None
                while True:
                    batch = functools.partial(self._rows_batch, conn, refs, after)
                    done, after, went, tried = self._retrying(conn, batch)
                    bar.update(went)
                    if done:
                        break
                    if self.report.errors and tried and not went:
                        break  # nothing of a whole batch could be removed: the store is failing
            finally:
                bar.close()

    def _rows_batch(
        self, conn: Connection, refs: list[Reference], after: uuid.UUID | None
    ) -> tuple[bool, uuid.UUID | None, int, int]:
        """One batch of phase 1 in the window of the next ``batch`` rows after *after*;
        returns (done, where the next batch starts, payloads removed, removals tried)."""
        t = self.table
        rep = self.report
        with conn.begin():
            self._write_lock(conn)
            # bounded to a window of the table, and so are the reference subqueries
            window = (after, self.ext.window_end(conn, after, self.batch))
            unused = self.ext.unused_clause(refs, window)
            q = sa.select(t).where(unused, *self.ext.in_window(window))
            q = q.order_by(t.c.hash).limit(self.batch).with_for_update(skip_locked=True)
            rows = {r.hash: r._asdict() for r in conn.execute(q)}
            if len(rows) == self.batch:  # the window may hold more: go on after the last
                done, last = False, max(rows)
            else:
                done, last = window[1] is None, window[1]
            if not rows:
                return done, last, 0, 0
            where: dict[uuid.UUID, PurePosixPath | None] = {}
            for k, row in rows.items():
                try:
                    if not Kind.for_entry(
                        row["attachment_name"], row.get("filepath")
                    ).stored_object:
                        self.check_filepaths(conn)
                        if reserved_path(row["filepath"]) is not None:
                            # written by DataJoint (or by hand) on a payload or an owner
                            # marker of some area: the row goes, the object is not ours
                            where[k] = None
                            continue
                    where[k] = self.row_path(row)
                except SaDjblobError as exc:  # not ours, or a filepath row edited by hand
                    msg = f"{exc}; kept"
                    if msg not in rep.errors:
                        rep.errors.append(msg)
            keys = sorted(where)
            if not keys:
                return done, last, 0, 0
            # delete, re-checking that nothing references them
            delete = sa.delete(t).where(t.c.hash.in_(keys), unused)
            try:
                with conn.begin_nested():
                    conn.execute(delete)
            except sa.exc.IntegrityError:
                for k in keys:
                    try:
                        with conn.begin_nested():
                            conn.execute(sa.delete(t).where(t.c.hash == k, unused))
                    except sa.exc.IntegrityError:
                        pass
            still = set(conn.scalars(sa.select(t.c.hash).where(t.c.hash.in_(keys))))
            gone = [k for k in keys if k not in still]
            rep.skipped_referenced += len(still)
            paths = {p: k for k in gone if (p := where[k]) is not None}
            failed = call(self.store.remove_many, list(paths)) if paths else {}
            if failed:
                # keep the rows of payloads that could not be removed, as they were
                conn.execute(sa.insert(t), [rows[paths[p]] for p in failed])
                rep.errors.extend(f"cannot delete {p}: {why}" for p, why in failed.items())
            went = [p for p in paths if p not in failed]
            if _after_remove is not None:
                _after_remove("rows", went)
        rep.rows_deleted += len(gone) - len(failed)
        rep.payloads_deleted += len(went)
        rep.bytes_freed += sum(int(rows[paths[p]]["size"]) for p in went)
        return done, last, len(went), len(paths)

    # -- phase 2 ---------------------------------------------------------------
    def orphan_candidates(
        self,
        conn: Connection,
        listing: Sequence[ObjectInfo],
        known: _KnownKeys,
        cutoff: datetime.datetime,
    ) -> list[_Orphan]:
        """Listed payloads at their layout path, with no externals row, older than grace
        (*listing*: one chunk of the listing)."""
        parsed: list[_Orphan] = []
        for info in listing:
            parsed_name = parse_payload_name(info.path.name)
            if parsed_name is None:
                continue
            key, name = parsed_name
            if not self.at_layout_path(info.path, key):
                continue  # not where we would have put it: not ours
            parsed.append((key, name, info))
        if not parsed:
            return []
        rowless = known.missing(conn, [k for k, _, _ in parsed])
        parsed = [p for p in parsed if p[0] in rowless]
        if not parsed:
            return []
        # A filepath's object may sit at such a path too (its relative path starting with
        # the schema's name): it is known by the key of its path, not of its name.
        path_keys = {info.path: self.filepath_key(info.path) for _, _, info in parsed}
        t = self.table
        taken: set[uuid.UUID] = set()
        for chunk in _chunks(sorted(set(path_keys.values())), self.batch):
            taken.update(conn.scalars(sa.select(t.c.hash).where(t.c.hash.in_(chunk))))
        conn.rollback()
        parsed = [p for p in parsed if path_keys[p[2].path] not in taken]
        # ... also by another schema that owns the store's filepaths (sa_djblob 0.1 let it
        # place a file on this area's payload paths)
        fp_keys = sorted({path_keys[i.path] for _, _, i in parsed})
        foreign = self.filepaths_elsewhere(conn, fp_keys) if fp_keys else set()
        if foreign is None:  # another database's: none of them can be ruled out
            self.report.orphans_kept += len(parsed)
            return []
        found = []
        for key, name, info in parsed:
            if path_keys[info.path] in foreign:
                continue
            if info.modified > cutoff:
                self.report.orphans_kept += 1
                continue
            found.append((key, name, info))
        return found

    def sweep_orphans(self) -> None:
        """Phase 2: the listing, a chunk at a time, merged against the externals table
        read in hash order; orphans are removed ``batch`` at a time as they are found."""
        rep = self.report
        cutoff = datetime.datetime.now(datetime.UTC) - self.grace
        known = _KnownKeys(self.table, self.batch)
        pending: list[_Orphan] = []
        bar = _bar(self.progress, None, f"orphans {self.store.name}")
        try:
            with self.connect() as conn:
                for listing in self.list_store():
                    found = self.orphan_candidates(conn, listing, known, cutoff)
                    bar.update(len(listing))
                    if rep.dry_run:
                        rep.orphans_deleted += len(found)
                        rep.bytes_freed += sum(o[2].size for o in found)
                        continue
                    pending.extend(found)
                    while len(pending) >= self.batch:
                        if not self._orphans(conn, pending[: self.batch]):
                            return
                        del pending[: self.batch]
                if pending:
                    self._orphans(conn, pending)
        finally:
            bar.close()

    def _orphans(self, conn: Connection, chunk: list[_Orphan]) -> bool:
        """Remove one batch of orphans; False if the store is failing (stop)."""
        ordered = sorted(chunk, key=lambda c: (c[0], str(c[2].path)))
        went = self._retrying(conn, functools.partial(self._orphan_batch, conn, ordered))
        return bool(went) or not self.report.errors

    def _retrying(self, conn: Connection, batch: Callable[[], _T]) -> _T:
        """Run one batch (its own transaction); deadlocks, lock timeouts and serialization
        failures roll it back and run it again, up to ``_ATTEMPTS`` times."""
        for attempt in range(_ATTEMPTS):
            try:
                return batch()
            except sa.exc.DBAPIError as exc:
                conn.rollback()
                if attempt + 1 == _ATTEMPTS or not self.dialect.is_retryable(exc):
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _insert_ignore(self, conn: Connection, values: list[dict[str, Any]]) -> None:
        self.dialect.insert_missing(conn, self.table, values)

    def _orphan_batch(self, conn: Connection, chunk: Sequence[_Orphan]) -> int:
        t = self.table
        rep = self.report
        token = uuid.UUID(bytes=secrets.token_bytes(16))
        by_key: dict[uuid.UUID, list[ObjectInfo]] = {}
        names: dict[uuid.UUID, str | None] = {}
        for key, name, info in chunk:
            by_key.setdefault(key, []).append(info)
            names.setdefault(key, name)
        # the key of the filepath entry each object would have: claimed too, so that a
        # filepath writer of the same object waits for this batch (or it for the writer)
        path_keys = {info.path: self.filepath_key(info.path) for _, _, info in chunk}
        with conn.begin():
            self._write_lock(conn)
            rows = {
                k: {
                    "hash": k,
                    "size": by_key[k][0].size,
                    "attachment_name": names[k],
                    "contents_hash": token,
                }
                for k in by_key
            }
            for fk in path_keys.values():
                rows.setdefault(
                    fk, {"hash": fk, "size": 0, "attachment_name": None, "contents_hash": token}
                )
            keys = sorted(rows)
            self._insert_ignore(conn, [rows[k] for k in keys])
            ours: set[uuid.UUID] = set()
            for part in _chunks(keys, self.batch):
                ours.update(
                    conn.scalars(
                        sa.select(t.c.hash).where(t.c.hash.in_(part), t.c.contents_hash == token)
                    )
                )
            paths = {
                info.path: info
                for k in by_key
                if k in ours
                for info in by_key[k]
                if path_keys[info.path] in ours
            }
            failed = call(self.store.remove_many, list(paths)) if paths else {}
            rep.errors.extend(f"cannot delete orphan {p}: {why}" for p, why in failed.items())
            for part in _chunks(sorted(ours), self.batch):
                conn.execute(sa.delete(t).where(t.c.hash.in_(part), t.c.contents_hash == token))
            went = [p for p in paths if p not in failed]
            if _after_remove is not None:
                _after_remove("orphans", went)
        rep.orphans_deleted += len(went)
        rep.bytes_freed += sum(paths[p].size for p in went)
        return len(went)

    # -- all of it -------------------------------------------------------------
    def run(self) -> SweepReport:
        rep = self.report
        with self.connect() as conn:
            if not self.ext.exists(conn):
                return rep
            refs = self.check_references(conn)
            # Nothing is deleted from an area this (database, store) does not own: its
            # rows' payloads may be another store's or another database's too.
            if refs is None or not self.owns_area(conn, claim=not rep.dry_run):
                return rep
        if not self.probe_store():
            return rep
        if rep.dry_run:
            with self.connect() as conn:
                rep.rows_deleted, rep.bytes_freed = self.count_unused(conn, refs)
            rep.payloads_deleted = rep.rows_deleted
            self.sweep_orphans()
            return rep
        self.sweep_rows(refs)
        if rep.errors:
            return rep  # the store is failing: leave the orphans for the next sweep
        # Listed after phase 1: the payloads it removed need not be listed first.
        self.sweep_orphans()
        if rep.payloads_deleted or rep.orphans_deleted:
            try:
                call(self.store.cleanup, self.prefix)
            except Exception as exc:  # only empty folders are at stake: reported
                rep.errors.append(f"cannot remove empty folders below {self.prefix}: {exc}")
        return rep


def sweep(
    ext: ExternalTable,
    *,
    dry_run: bool = False,
    grace: datetime.timedelta = DEFAULT_GRACE,
    progress: bool | None = None,
    batch: int = DEFAULT_BATCH,
) -> SweepReport:
    """Remove the unused entries of *ext* and their payloads, then the orphan payloads
    older than *grace*; see the module docstring for the protocol."""
    return _Sweeper(ext, dry_run=dry_run, grace=grace, progress=progress, batch=batch).run()
