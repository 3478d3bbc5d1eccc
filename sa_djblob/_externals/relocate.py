"""``ExternalTable.copy_to``: relocate a whole store (the same name, a new location or
protocol: a NAS folder to S3, one bucket to another), verified by hash.

What is copied: the payload of every entry of the externals table, referenced or not
(``include_unused=False`` narrows it to the referenced ones). An unused entry can become
referenced at any moment without an upload (a writer that finds the entry and its payload
in place uploads nothing), so only a copy of every entry makes the new location hold what
the table promises. Filepath entries' objects (``<root>/<relative path>``) are copied too.

How, in key order and in batches (bounded memory at any number of entries; each batch
read in its own short transaction, so a later pass sees entries written meanwhile):

1. ask the new location for each object's size (concurrently, on the bounded pool); an
   object already there at the entry's size is skipped: stores write atomically (a file
   store renames a complete temporary file into place, an S3 upload appears whole), so a
   killed copy leaves no partial object behind. ``verify_existing=True`` reads and hashes
   those too and replaces the ones that do not match.
2. copy the others: small payloads through memory, large ones streamed; the bytes read
   from the old location are hashed on the way and must match the entry's hash (a payload
   corrupt at the source is never placed, or is removed again: reported as failed);
3. read the new object back and hash it (never trusting an S3 ETag, which is no MD5 for
   multipart uploads); one that does not match is removed and reported as failed.

Before anything is written the new location's areas are claimed for this (database, store
name) with the owner marker (``_area``), so the configuration that later names the new
location is accepted by writers and sweeps; a location another database or store owns is
refused. A payload missing at the source is reported, unless its entry is gone too (a
sweep removed it while the copy ran). Nothing is ever deleted at the old location.
"""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from .._area import Area, check_filepath_owner, check_owner
from .._dialects import dialect_support
from .._dialects.base import INTERNAL
from .._exceptions import ConfigError, MissingPayloadError, SaDjblobError
from .._fetch import filepath_object
from .._layout import HASH_CHUNK, attachment_prefix, hash_stream, new_hasher, subfold
from .._pool import call, run_all
from ..stores import FileStore, Store, build_store
from .progress import bar as _bar

if TYPE_CHECKING:
    from .maintenance import ExternalTable

__all__ = ["DEFAULT_BATCH", "CopyReport", "copy_to"]

DEFAULT_BATCH = 1000
_IN_MEMORY = 1 << 20  # payloads up to this size are copied through memory
_PAGE = 1000  # objects per listing request (S3's page)
_LIST_MIN = 8  # batches with fewer objects at their layout path are never listed
_LIST_KEEP = 200_000  # at most about this many listed objects are kept at once

# A test hook: called after each payload was copied and verified at the new location.
_after_copy: Callable[[PurePosixPath], None] | None = None


@dataclass
class CopyReport:
    """What ``copy_to`` copied (or, with ``dry_run``, would copy)."""

    dry_run: bool = False
    checked: int = 0
    copied: int = 0
    bytes_copied: int = 0
    skipped: int = 0
    bytes_skipped: int = 0
    vanished: int = 0
    failed: list[tuple[uuid.UUID, PurePosixPath, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.failed or self.errors)


@dataclass(frozen=True)
class _Item:
    key: uuid.UUID
    source: PurePosixPath
    target: PurePosixPath
    size: int
    prefix: bytes
    expect: uuid.UUID | None  # None: no contents hash recorded (a filepath): the size is checked
    layout: bool = True  # at its layout path (not a filepath's object)


class _HashingReader(io.RawIOBase):
    """Reads through *f*, hashing ``prefix`` + what passes."""

    def __init__(self, f: Any, prefix: bytes, algorithm: str) -> None:
        self._f = f
        self.hasher = new_hasher(algorithm)
        self.hasher.update(prefix)
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._f.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self.hasher.update(data)
        self.size += n
        return n


def _matches(item: _Item, got: uuid.UUID, size: int) -> bool:
    return size == item.size if item.expect is None else got == item.expect


def _place(store: Store) -> tuple[str, str]:
    """What identifies where a store keeps its objects."""
    if isinstance(store, FileStore):
        return ("file", os.path.realpath(store.location or "."))
    return (store.protocol, repr(store))


class _Copier:
    def __init__(
        self,
        ext: ExternalTable,
        new_settings: Mapping[str, Any],
        *,
        dry_run: bool,
        progress: bool | None,
        batch: int,
        verify_existing: bool,
        include_unused: bool,
    ) -> None:
        if batch < 1:
            raise ValueError(f"batch must be a positive number of entries, got {batch}")
        self.ext = ext
        self.source: Store = ext.store
        self.target: Store = build_store(ext.store_name, new_settings)
        if self.target.hash != self.source.hash:
            raise ConfigError(
                f"store {ext.store_name!r}: the new settings hash with {self.target.hash!r} but"
                f" the keys of its entries are {self.source.hash!r} hashes: set 'hash' to"
                f" {self.source.hash!r} in the new settings"
            )
        if _place(self.target) == _place(self.source):
            raise ConfigError(
                f"store {ext.store_name!r}: the new settings name its current location;"
                " give the new location"
            )
        self.report = CopyReport(dry_run=dry_run)
        self.progress = progress
        self.batch = batch
        self.verify_existing = verify_existing
        self.include_unused = include_unused
        self.total = 0  # entries to look at, as counted at the start
        #: sizes of the current batch's objects at the new location, when they were listed
        self._listed: dict[PurePosixPath, int] | None = None
        #: listings of the new location's folders, by (level, folder name), kept while
        #: batches still need them
        self._folders: dict[tuple[int, str], dict[PurePosixPath, int]] = {}

    # -- one payload -------------------------------------------------------------
    def _hash_at_target(self, item: _Item) -> tuple[uuid.UUID, int] | None:
        try:
            with self.target.open(item.target) as f:
                return hash_stream(f, prefix=item.prefix, algorithm=self.target.hash)
        except MissingPayloadError:
            return None

    def _in_place(self, item: _Item) -> bool:
        """Whether the new location already holds the right object."""
        listed = self._listed
        have = (
            listed.get(item.target)
            if listed is not None and item.layout
            else self.target.size(item.target)
        )
        if have is None or (have != item.size and have != -1):
            return False
        if have == item.size and not self.verify_existing:
            return True
        found = self._hash_at_target(item)
        return found is not None and _matches(item, *found)

    def _copy(self, item: _Item) -> str | None:
        """Copy one payload; None when done, else why not."""
        src, dst = self.source, self.target
        if item.size <= _IN_MEMORY:
            data = src.get(item.source)
            hasher = new_hasher(src.hash)
            hasher.update(item.prefix)
            hasher.update(data)
            if not _matches(item, uuid.UUID(bytes=hasher.digest()[:16]), len(data)):
                return "corrupt at the source"
            dst.put(item.target, data)
        else:
            with src.open(item.source) as f:
                reader = _HashingReader(f, item.prefix, src.hash)
                dst.put_file(item.target, io.BufferedReader(reader, HASH_CHUNK))
            got = uuid.UUID(bytes=reader.hasher.digest()[:16])
            if not _matches(item, got, reader.size):
                dst.remove(item.target)
                return "corrupt at the source"
        found = self._hash_at_target(item)
        if found is None or not _matches(item, *found):
            dst.remove(item.target)
            return "does not match its hash at the new location after the copy"
        return None

    def _one(self, item: _Item) -> tuple[str, str]:
        """(outcome, detail): ``skipped``, ``copied``, ``missing`` or ``failed``."""
        try:
            if self._in_place(item):
                return "skipped", ""
        except Exception as exc:  # reported per payload
            return "failed", f"cannot check the new location: {exc}"
        if self.report.dry_run:
            return "copied", ""
        try:
            why = self._copy(item)
        except MissingPayloadError:
            return "missing", "missing at the source"
        except Exception as exc:  # reported per payload
            return "failed", f"cannot copy: {exc}"
        if why is not None:
            return "failed", why
        if _after_copy is not None:
            _after_copy(item.target)
        return "copied", ""

    # -- batches -------------------------------------------------------------------
    def _list_batch(self, dst: Area, items: list[_Item]) -> dict[PurePosixPath, int] | None:
        """The sizes of the batch's objects at the new location, by listing the folders
        that hold them, when that takes fewer requests than asking for each object (a
        listing page holds 1,000 objects; the folder level is chosen from the number of
        entries and the keys of the batch); None: ask for each object.

        Keys come in order, so a folder's listing serves the following batches too: it is
        kept until the batches have passed it, and folders are listed at a level where
        what is kept stays under ``_LIST_KEEP`` objects."""
        keys = [i.key.hex for i in items if i.layout]
        if len(keys) < _LIST_MIN:
            return None
        folds = dst.store.subfolding
        best: tuple[float, int, list[str]] | None = None
        for depth in range(len(folds) + 1):
            width = sum(folds[:depth])
            heads = sorted({k[:width] for k in keys})
            per_folder = max(1.0, self.total / 16**width)
            if len(heads) * per_folder > _LIST_KEEP:
                continue
            todo = [h for h in heads if (depth, h) not in self._folders]
            cost = len(todo) * -(-per_folder // _PAGE)
            if best is None or cost < best[0]:
                best = (cost, depth, heads)
        if best is None or best[0] * 2 > len(keys):
            self._folders.clear()
            return None
        _, depth, heads = best
        # folders the batches have passed (and other levels' folders) are let go
        self._folders = {
            k: v for k, v in self._folders.items() if k[0] == depth and k[1] >= heads[0]
        }
        todo = [h for h in heads if (depth, h) not in self._folders]

        def listed(head: str) -> dict[PurePosixPath, int]:
            folder = dst.prefix.joinpath(*subfold(head, folds[:depth]))
            return {o.path: o.size for o in self.target.list(folder)}

        try:
            found = run_all(listed, todo)
        except Exception:  # a listing that fails: ask for each object instead
            self._folders.clear()
            return None
        self._folders.update({(depth, h): f for h, f in zip(todo, found, strict=True)})
        width = sum(folds[:depth])
        sizes: dict[PurePosixPath, int] = {}
        for item in items:
            if item.layout:
                size = self._folders[(depth, item.key.hex[:width])].get(item.target)
                if size is not None:
                    sizes[item.target] = size
        return sizes

    def _item(self, src: Area, dst: Area, row: Any) -> _Item:
        key, name, fp, contents, size = row
        if fp and not name:
            return _Item(
                key,
                filepath_object(src.store, fp),
                filepath_object(dst.store, fp),
                int(size),
                b"",
                contents,
                layout=False,
            )
        prefix = b"" if name is None else attachment_prefix(name)
        return _Item(key, src.path(key, name), dst.path(key, name), int(size), prefix, key)

    def _claim(self, conn: sa.Connection, schema: str) -> None:
        """Claim the new location's area (and, if this schema has filepath entries, its
        filepath objects) for this (database, store); ``StoreError`` if another owns it."""
        claim = not self.report.dry_run
        check_owner(conn, Area(self.target, schema), claim=claim)
        t = self.ext.table
        has_filepaths = conn.execute(
            sa.select(t.c.hash)
            .where(t.c.filepath.is_not(None), t.c.attachment_name.is_(None))
            .limit(1)
        ).first()
        if has_filepaths is not None:
            check_filepath_owner(conn, self.target, schema, claim=claim)
        conn.rollback()

    def _connect(self) -> sa.Connection:
        """A connection that sees the latest committed entries in each batch."""
        conn = self.ext.engine.connect().execution_options(**{INTERNAL: True})
        isolation = dialect_support(conn.dialect).sweep_isolation
        return conn.execution_options(isolation_level=isolation) if isolation else conn

    def run(self) -> CopyReport:
        ext, rep, t = self.ext, self.report, self.ext.table
        with self._connect() as conn:
            if not ext.exists(conn):
                return rep
            schema = ext.resolve(conn)
            src, dst = Area(self.source, schema), Area(self.target, schema)
            self._claim(conn, schema)
            where = [] if self.include_unused else [ext.used_clause(ext.references(conn))]
            self.total = int(
                conn.scalar(sa.select(sa.func.count()).select_from(t).where(*where)) or 0
            )
            conn.rollback()
            bar = _bar(self.progress, self.total, f"copy {ext.name}")
            cols = (t.c.hash, t.c.attachment_name, t.c.filepath, t.c.contents_hash, t.c.size)
            after: uuid.UUID | None = None
            try:
                while True:
                    q = sa.select(*cols).where(*where)
                    if after is not None:
                        q = q.where(t.c.hash > after)
                    rows = conn.execute(q.order_by(t.c.hash).limit(self.batch)).all()
                    conn.rollback()  # each batch sees the entries committed since
                    if not rows:
                        break
                    after = rows[-1][0]
                    self._batch(conn, src, dst, rows)
                    bar.update(len(rows))
            finally:
                bar.close()
        return rep

    def _batch(self, conn: sa.Connection, src: Area, dst: Area, rows: Sequence[Any]) -> None:
        rep = self.report
        items: list[_Item] = []
        for row in rows:
            try:
                items.append(self._item(src, dst, row))
            except SaDjblobError as exc:  # a filepath entry edited by hand
                rep.errors.append(str(exc))
        self._listed = self._list_batch(dst, items)
        try:
            outcomes = run_all(self._one, items)
        finally:
            self._listed = None
        missing: dict[uuid.UUID, tuple[_Item, str]] = {}
        for item, (outcome, detail) in zip(items, outcomes, strict=True):
            rep.checked += 1
            if outcome == "missing":
                missing[item.key] = (item, detail)
            else:
                self._tally(item, outcome, detail)
        if missing:
            self._settle(conn, missing)

    def _tally(self, item: _Item, outcome: str, detail: str) -> None:
        rep = self.report
        if outcome == "skipped":
            rep.skipped += 1
            rep.bytes_skipped += item.size
        elif outcome == "copied":
            rep.copied += 1
            rep.bytes_copied += item.size
        else:
            rep.failed.append((item.key, item.source, detail))

    def _settle(self, conn: sa.Connection, missing: dict[uuid.UUID, tuple[_Item, str]]) -> None:
        """Payloads missing at the source: those whose entry a sweep removed meanwhile are
        gone for good (*vanished*); the rest are tried once more, then reported. The entries
        are read under the lock a sweep holds while it deletes (SQLite: the write lock), so
        a sweep still at work is waited for, never mistaken for a lost payload."""
        rep, t = self.report, self.ext.table
        dialect = dialect_support(conn.dialect)
        with conn.begin():
            dialect.begin_write(conn, t)
            q = sa.select(t.c.hash).where(t.c.hash.in_(sorted(missing)))
            still = set(conn.scalars(dialect.lock_shared(q)))
        rep.vanished += len(missing) - len(still)
        again = [missing[k][0] for k in sorted(still)]
        for item, (outcome, detail) in zip(again, run_all(self._one, again), strict=True):
            self._tally(item, outcome, detail)


def copy_to(
    ext: ExternalTable,
    new_settings: Mapping[str, Any],
    *,
    dry_run: bool = False,
    progress: bool | None = None,
    batch: int = DEFAULT_BATCH,
    verify_existing: bool = False,
    include_unused: bool = True,
) -> CopyReport:
    """Copy every payload of *ext* missing at the location *new_settings* describe (the
    same store name's new settings), verified by hash; see the module docstring."""
    copier = _Copier(
        ext,
        new_settings,
        dry_run=dry_run,
        progress=progress,
        batch=batch,
        verify_existing=verify_existing,
        include_unused=include_unused,
    )
    try:
        return copier.run()
    finally:
        call(copier.target.close)
