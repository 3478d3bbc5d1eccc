"""Converting a DataJoint 0.14 schema to DataJoint 2.x's layout, in place.

    from sa_djblob import dj2convert
    report = dj2convert.convert(engine, "lab", dry_run=True)   # what would change
    report = dj2convert.convert(engine, "lab")                 # convert (resumable)
    report = dj2convert.revert(engine, "lab")                  # back to 0.14
    report = dj2convert.finalize(engine, "lab")   # drop the kept 0.14 columns (no way back)

What :func:`convert` does, per table of the schema (hidden ``~`` tables aside):

* ``blob@store`` / ``attach@store`` columns (0.14: ``binary(16)`` with a foreign key to
  ``~external_<store>``, comment ``:blob@store:...``) become DataJoint 2.x pointer columns
  (``json`` on MySQL/MariaDB, ``jsonb`` on PostgreSQL, comment ``:<blob@store>:...``)
  holding ``{"hash", "path", "schema", "store", "size"}``. Each payload is copied to
  ``<location>/_hash/<schema>/<hash>``, where DataJoint 2.3.5 looks: a blob as it is (its
  2.x hash is the base32 of the 0.14 MD5 key), an attachment rewritten as
  ``name + b"\\0" + contents`` (0.14 kept the bare contents at ``<hex>.<name>``; the 2.x
  hash is again the base32 of the 0.14 key, which hashed exactly those bytes). Every
  payload is checked against its 0.14 key while it is copied and every new object
  against its 2.x hash after it is written; a payload that fails is not used and its
  column is left unconverted (reported in ``errors``).
* in-row ``attach`` columns (comment ``:attach:``) are labelled ``:<attach>:`` and in-row
  blob columns (``longblob`` ..., ``bytea``; no label) ``:<blob>:``; their bytes are
  already what 2.x reads. A ``bytea`` / blob column holding anything that is not a
  DataJoint blob is left alone (reported as skipped).

It is resumable: the pointers are written into a staged column ``_<column>__dj2`` one
payload at a time (committed), and the staged column replaces the 0.14 column in one
atomic step (one ``ALTER TABLE`` on MySQL, one transaction on PostgreSQL); a rerun after a
kill at any point finishes, and a run on a converted schema changes nothing. It is
reversible: the 0.14 column is kept, renamed ``_<column>__dj014`` (hidden from DataJoint
2.x by its leading ``_``, nullable so that new rows need no value), with its foreign key,
so its externals entries stay referenced and no 0.14 sweep deletes the old objects;
:func:`revert` swaps it back. :func:`finalize` drops the kept columns, after which a 0.14
sweep (``sa-djblob sweep``) frees the old objects. Stop writers of the schema while
converting.

Filepath columns are not converted (reported as skipped). SQLite is refused: DataJoint
2.x does not run on it and it keeps no column comments to find the columns by.
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, BinaryIO

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, Engine

from ._area import Area
from ._codec import DJ0, MYM
from ._exceptions import (
    ConfigError,
    IntegrityError,
    SaDjblobError,
    StoreNotConfiguredError,
    UnsupportedDialectError,
)
from ._framing import ZL123
from ._layout import HASH_CHUNK, attachment_prefix, new_hasher
from .stores import Store, get_store

__all__ = ["ColumnReport", "ConvertReport", "convert", "dj2_hash", "finalize", "revert"]

HASH_PREFIX = "_hash"
_OLD = "_{}__dj014"
_STAGED = "_{}__dj2"
_V014 = re.compile(r"^:(blob|attach)@([^\W\d][-\w]*):(.*)\Z", re.S)
_V2 = re.compile(r"^:<(blob|attach)@([^\W\d][-\w]*)>:(.*)\Z", re.S)
_FILEPATH = re.compile(r"^:filepath@[^:]*:")
_LABEL = re.compile(r"^:[^:\s]+:")
_BLOB_TYPES = {"TINYBLOB", "BLOB", "MEDIUMBLOB", "LONGBLOB", "BYTEA"}
_BLOB_HEADS = (MYM, DJ0)
_ZL = ZL123


def dj2_hash(data: bytes) -> str:
    """DataJoint 2.x's content hash: the base32 of the MD5, lower case, 26 characters."""
    return _b32(hashlib.md5(data, usedforsecurity=False).digest())


def _b32(digest: bytes) -> str:
    return base64.b32encode(digest).decode("ascii").rstrip("=").lower()


@dataclass
class ColumnReport:
    """One column: what it is (``blob@store``, ``attach@store``, ``blob``, ``attach``) and
    what was done (``converted``, ``labelled``, ``already``, ``skipped: ...``, ``failed``;
    with ``dry_run``, ``would convert`` / ``would label``)."""

    table: str
    column: str
    kind: str
    action: str
    rows: int = 0
    objects: int = 0
    bytes: int = 0


@dataclass
class ConvertReport:
    """What :func:`convert` or :func:`revert` did (or, with ``dry_run``, would do)."""

    schema: str
    dry_run: bool = False
    columns: list[ColumnReport] = field(default_factory=list)
    objects_copied: int = 0
    objects_present: int = 0
    bytes_copied: int = 0
    rows_updated: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def _is_staged(name: str) -> bool:
    return name.startswith("_") and name.endswith("__dj2")


# -- the database side ----------------------------------------------------------------


@dataclass
class _Column:
    name: str
    type_sql: str
    nullable: bool
    comment: str


class _Db:
    """The SQL of one schema on MySQL/MariaDB or PostgreSQL."""

    def __init__(self, engine: Engine, schema: str | None) -> None:
        name = engine.dialect.name
        if name not in ("mysql", "mariadb", "postgresql"):
            raise UnsupportedDialectError(
                f"dj2convert works on MySQL/MariaDB and PostgreSQL, the databases DataJoint"
                f" 2.x runs on; {name} keeps no column comments to find DataJoint's columns"
                " by: convert the schema on its MySQL or PostgreSQL server"
            )
        self.engine = engine
        self.dialect = engine.dialect
        self.mysql = name != "postgresql"
        self.q = engine.dialect.identifier_preparer.quote
        if schema is None:
            with engine.connect() as conn:
                schema = sa.inspect(conn).default_schema_name
        if not schema:
            raise SaDjblobError("no schema given and the connection has no default schema")
        self.schema = schema

    def table_sql(self, table: str) -> str:
        return f"{self.q(self.schema)}.{self.q(table)}"

    def literal(self, text: str) -> str:
        compiled = sa.literal(text, sa.String()).compile(
            dialect=self.dialect, compile_kwargs={"literal_binds": True}
        )
        return str(compiled)

    def tables(self) -> list[str]:
        with self.engine.connect() as conn:
            names = sa.inspect(conn).get_table_names(schema=self.schema)
        return sorted(n for n in names if not n.startswith("~"))

    def columns(self, table: str) -> dict[str, _Column]:
        with self.engine.connect() as conn:
            found = sa.inspect(conn).get_columns(table, schema=self.schema)
        return {
            c["name"]: _Column(
                c["name"],
                str(c["type"].compile(dialect=self.dialect)),
                bool(c["nullable"]),
                c.get("comment") or "",
            )
            for c in found
        }

    def ref(self, table: str, *names: str, json: str | None = None) -> sa.TableClause:
        """*table* with columns *names*: pointers (``json`` or staged) or 0.14 keys."""
        json_type: Any = postgresql.JSONB() if not self.mysql else sa.JSON()
        cols = [
            sa.column(n, json_type if n == json or _is_staged(n) else sa.LargeBinary())
            for n in names
        ]
        return sa.table(table, *cols, schema=self.schema)

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """One conversion (or revert, or finalize) of a schema at a time: a session lock
        on the server, held on its own connection, released if this process dies."""
        name = f"sa_djblob.dj2convert.{self.schema}"
        with self.engine.connect() as conn:
            if self.mysql:
                got = conn.execute(sa.text("SELECT GET_LOCK(:n, 0)"), {"n": name[:64]}).scalar()
            else:
                got = conn.execute(
                    sa.text("SELECT pg_try_advisory_lock(hashtext(:n))"), {"n": name}
                ).scalar()
            conn.commit()
            if not got:
                raise SaDjblobError(
                    f"another conversion of schema {self.schema!r} is running: wait for it"
                    " to finish (or, if it was killed, for its database session to end)"
                )
            try:
                yield
            finally:
                if self.mysql:
                    conn.execute(sa.text("SELECT RELEASE_LOCK(:n)"), {"n": name[:64]})
                else:
                    conn.execute(sa.text("SELECT pg_advisory_unlock(hashtext(:n))"), {"n": name})
                conn.commit()

    def run(self, statements: list[str]) -> None:
        """DDL: one transaction on PostgreSQL; MySQL commits each statement by itself."""
        with self.engine.begin() as conn:
            for sql in statements:
                conn.exec_driver_sql(sql)

    # -- DDL ------------------------------------------------------------------------
    def set_comment(self, table: str, col: _Column, comment: str) -> list[str]:
        if self.mysql:
            null = "NULL DEFAULT NULL" if col.nullable else "NOT NULL"
            return [
                f"ALTER TABLE {self.table_sql(table)} MODIFY COLUMN {self.q(col.name)}"
                f" {col.type_sql} {null} COMMENT {self.literal(comment)}"
            ]
        return [
            f"COMMENT ON COLUMN {self.table_sql(table)}.{self.q(col.name)}"
            f" IS {self.literal(comment)}"
        ]

    def add_staged(self, table: str, col: _Column, comment: str) -> list[str]:
        staged = _STAGED.format(col.name)
        if self.mysql:
            return [
                f"ALTER TABLE {self.table_sql(table)} ADD COLUMN {self.q(staged)} JSON NULL"
                f" COMMENT {self.literal(comment)} AFTER {self.q(col.name)}"
            ]
        return [
            f"ALTER TABLE {self.table_sql(table)} ADD COLUMN {self.q(staged)} jsonb NULL",
            f"COMMENT ON COLUMN {self.table_sql(table)}.{self.q(staged)}"
            f" IS {self.literal(comment)}",
        ]

    def swap_in(self, table: str, col: _Column, comment: str) -> list[str]:
        """The staged column takes the name; the 0.14 column is kept, hidden and nullable."""
        t, old, staged = self.table_sql(table), _OLD.format(col.name), _STAGED.format(col.name)
        null = "NULL" if col.nullable else "NOT NULL"
        if self.mysql:
            return [
                f"ALTER TABLE {t} CHANGE COLUMN {self.q(col.name)} {self.q(old)} {col.type_sql}"
                f" NULL COMMENT {self.literal(col.comment)},"
                f" CHANGE COLUMN {self.q(staged)} {self.q(col.name)} JSON {null}"
                f" COMMENT {self.literal(comment)}"
            ]
        out = [
            f"ALTER TABLE {t} RENAME COLUMN {self.q(col.name)} TO {self.q(old)}",
            f"ALTER TABLE {t} ALTER COLUMN {self.q(old)} DROP NOT NULL",
            f"ALTER TABLE {t} RENAME COLUMN {self.q(staged)} TO {self.q(col.name)}",
            f"COMMENT ON COLUMN {t}.{self.q(col.name)} IS {self.literal(comment)}",
        ]
        if not col.nullable:
            out.append(f"ALTER TABLE {t} ALTER COLUMN {self.q(col.name)} SET NOT NULL")
        return out

    def swap_back(self, table: str, new: _Column, old: _Column) -> list[str]:
        """The kept 0.14 column takes its name back; the pointer column is dropped."""
        t = self.table_sql(table)
        if self.mysql:
            null = "NULL" if new.nullable else "NOT NULL"
            return [
                f"ALTER TABLE {t} DROP COLUMN {self.q(new.name)},"
                f" CHANGE COLUMN {self.q(old.name)} {self.q(new.name)} {old.type_sql} {null}"
                f" COMMENT {self.literal(old.comment)}"
            ]
        out = [
            f"ALTER TABLE {t} DROP COLUMN {self.q(new.name)}",
            f"ALTER TABLE {t} RENAME COLUMN {self.q(old.name)} TO {self.q(new.name)}",
        ]
        if not new.nullable:
            out.append(f"ALTER TABLE {t} ALTER COLUMN {self.q(new.name)} SET NOT NULL")
        return out

    def drop(self, table: str, column: str) -> list[str]:
        """Drop *column* (on MySQL with its foreign keys, which would hold it)."""
        drops = [f"DROP COLUMN {self.q(column)}"]
        if self.mysql:
            with self.engine.connect() as conn:
                fks = sa.inspect(conn).get_foreign_keys(table, schema=self.schema)
            names = [fk["name"] for fk in fks if column in fk["constrained_columns"]]
            drops[:0] = [f"DROP FOREIGN KEY {self.q(n)}" for n in names if n]
        return [f"ALTER TABLE {self.table_sql(table)} " + ", ".join(drops)]


# -- the store side ---------------------------------------------------------------------


class _Verified(io.RawIOBase):
    """``prefix`` then *src*, hashed as it passes; at the end, checked against *key* (the
    store's algorithm) and, if *name* is given, against the 2.x hash *name*: a mismatch
    raises before the writer can finish, so nothing is stored."""

    def __init__(
        self, prefix: bytes, src: BinaryIO, key: uuid.UUID, algorithm: str, name: str | None
    ) -> None:
        self._pending = prefix
        self._src = src
        self._key = key
        self._name = name
        self._old = new_hasher(algorithm)
        self._md5 = hashlib.md5(usedforsecurity=False)
        self.size = 0
        self.what = ""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._pending:
            chunk, self._pending = self._pending[: len(view)], self._pending[len(view) :]
        else:
            chunk = self._src.read(min(len(view), HASH_CHUNK))
        if not chunk:
            self._finish()
            return 0
        self._old.update(chunk)
        self._md5.update(chunk)
        self.size += len(chunk)
        view[: len(chunk)] = chunk
        return len(chunk)

    @property
    def dj2_name(self) -> str:
        return _b32(self._md5.digest())

    def _finish(self) -> None:
        if self._old.digest()[:16] != self._key.bytes:
            raise IntegrityError(f"the 0.14 payload of {self._key} {self.what} does not match it")
        if self._name is not None and self.dj2_name != self._name:
            raise IntegrityError(f"the copy of {self._key} {self.what} does not hash to its name")


def _md5_of(store: Store, path: PurePosixPath) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with store.open(path) as f:
        while chunk := f.read(HASH_CHUNK):
            h.update(chunk)
    return _b32(h.digest())


def _object_path(store: Store, hash_prefix: str, schema: str, name: str) -> PurePosixPath:
    return store.root / hash_prefix / schema / name


@dataclass
class _Payload:
    key: uuid.UUID
    size: int
    attachment_name: str | None


def _copy(
    store: Store,
    area: Area,
    payload: _Payload,
    hash_prefix: str,
    report: ConvertReport,
) -> dict[str, Any]:
    """Place one 0.14 payload where DataJoint 2.x looks; return its pointer."""
    src = area.path(payload.key, payload.attachment_name)
    prefix = b"" if payload.attachment_name is None else attachment_prefix(payload.attachment_name)

    @contextmanager
    def reader(name: str | None) -> Iterator[_Verified]:
        with store.open(src) as f:
            r = _Verified(prefix, f, payload.key, store.hash, name)
            r.what = f"at {src}"
            yield r

    if store.hash == "md5":
        name = _b32(payload.key.bytes)
    else:  # the key is not the MD5: a first pass finds the 2.x name (and checks the key)
        with reader(None) as r:
            while r.read(HASH_CHUNK):
                pass
        name = r.dj2_name
    target = _object_path(store, hash_prefix, area.schema, name)
    size = store.size(target)
    if size is not None and _md5_of(store, target) == name:
        report.objects_present += 1
        size = size if size >= 0 else len(store.get(target))
    else:
        with reader(name) as r:
            store.put_file(target, io.BufferedReader(r, HASH_CHUNK))
        if _md5_of(store, target) != name:
            store.remove(target)
            raise IntegrityError(f"the new object {target} does not hash to {name}")
        size = r.size
        report.objects_copied += 1
        report.bytes_copied += size
    return {
        "hash": name,
        "path": f"{hash_prefix}/{area.schema}/{name}",
        "schema": area.schema,
        "store": store.name,
        "size": size,
    }


# -- convert ------------------------------------------------------------------------------


def _progress(enabled: bool, total: int, desc: str) -> Any:
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # the cli extra is not installed: no bar
        return None
    return tqdm(total=total, desc=desc, unit="obj", leave=False)


def _externals_ref(db: _Db, store: str) -> sa.TableClause:
    return sa.table(
        f"~external_{store}",
        sa.column("hash", sa.LargeBinary()),
        sa.column("size", sa.BigInteger()),
        sa.column("attachment_name", sa.String()),
        schema=db.schema,
    )


def _payloads(
    conn: Connection, db: _Db, table: str, col: str, pointer: str, store: str
) -> list[_Payload]:
    """The payloads of the rows with a 0.14 key in *col* and no pointer in *pointer*."""
    t = db.ref(table, col, pointer, json=pointer)
    ext = _externals_ref(db, store)
    query = (
        sa.select(t.c[col], ext.c.size, ext.c.attachment_name)
        .distinct()
        .select_from(t.outerjoin(ext, ext.c.hash == t.c[col]))
        .where(t.c[col].is_not(None), t.c[pointer].is_(None))
    )
    out = []
    for raw, size, name in conn.execute(query):
        key = uuid.UUID(bytes=bytes(raw))
        if size is None:
            raise SaDjblobError(
                f"{table}.{col} references {key}, which ~external_{store} does not list:"
                " the schema is inconsistent (run sa-djblob verify)"
            )
        out.append(_Payload(key, int(size), name))
    return out


def _count(conn: Connection, t: sa.TableClause, *where: Any) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(t).where(*where)).scalar_one())


def _convert_external(
    db: _Db,
    table: str,
    col: _Column,
    kind: str,
    store_name: str,
    rest: str,
    cols: dict[str, _Column],
    report: ConvertReport,
    hash_prefix: str,
    progress: bool,
) -> None:
    entry = ColumnReport(table, col.name, f"{kind}@{store_name}", "converted")
    report.columns.append(entry)
    new_comment = f":<{kind}@{store_name}>:{rest}"
    staged = _STAGED.format(col.name)
    try:
        get_store(store_name)
    except StoreNotConfiguredError as exc:
        entry.action = "failed"
        report.errors.append(f"{table}.{col.name}: {exc}")
        return
    if report.dry_run:
        entry.action = "would convert"
        with db.engine.connect() as conn:
            t = db.ref(table, col.name, *([staged] if staged in cols else []))
            pending: Any = t.c[col.name].is_not(None)
            if staged in cols:  # a conversion cut short: what is left
                pending = pending & t.c[staged].is_(None)
            entry.rows = _count(conn, t, pending)
            ext = _externals_ref(db, store_name)
            inner = sa.select(t.c[col.name]).where(pending).distinct()
            rows = conn.execute(
                sa.select(ext.c.size, ext.c.attachment_name).where(ext.c.hash.in_(inner))
            ).all()
        entry.objects = len(rows)
        entry.bytes = sum(
            int(size) + (0 if name is None else len(attachment_prefix(name))) for size, name in rows
        )
        return
    if staged not in cols:
        db.run(db.add_staged(table, col, new_comment))
    if not _fill(db, table, col.name, staged, store_name, entry, report, hash_prefix, progress):
        return
    t = db.ref(table, col.name, staged)
    with db.engine.connect() as conn:
        left = _count(conn, t, t.c[col.name].is_not(None), t.c[staged].is_(None))
    if left:
        entry.action = "failed"
        report.errors.append(
            f"{table}.{col.name}: {left} rows were written while converting; stop the"
            " schema's writers and run the conversion again"
        )
        return
    db.run(db.swap_in(table, col, new_comment))
    # a row written between the last check and the swap has its key in the kept column
    _fill(
        db, table, _OLD.format(col.name), col.name, store_name, entry, report, hash_prefix, progress
    )


def _late_rows(db: _Db, table: str, key_col: str, pointer_col: str) -> int:
    t = db.ref(table, key_col, pointer_col, json=pointer_col)
    with db.engine.connect() as conn:
        return _count(conn, t, t.c[key_col].is_not(None), t.c[pointer_col].is_(None))


def _fill(
    db: _Db,
    table: str,
    key_col: str,
    pointer_col: str,
    store_name: str,
    entry: ColumnReport,
    report: ConvertReport,
    hash_prefix: str,
    progress: bool,
) -> bool:
    """Place the payload of every row with a key in *key_col* and no pointer in
    *pointer_col*, and write its pointer; False if one failed (reported)."""
    store = get_store(store_name)
    area = Area(store, db.schema)
    t = db.ref(table, key_col, pointer_col, json=pointer_col)
    for _ in range(3):  # rows that writers added meanwhile get their pointers too
        with db.engine.connect() as conn:
            payloads = _payloads(conn, db, table, key_col, pointer_col, store_name)
        if not payloads:
            break
        bar = _progress(progress, len(payloads), f"{table}.{entry.column}")
        try:
            for p in payloads:
                try:
                    pointer = _copy(store, area, p, hash_prefix, report)
                except SaDjblobError as exc:
                    entry.action = "failed"
                    report.errors.append(f"{table}.{entry.column}: {exc}")
                    continue
                with db.engine.begin() as conn:
                    n = conn.execute(
                        sa.update(t)
                        .where(t.c[key_col] == p.key.bytes, t.c[pointer_col].is_(None))
                        .values({pointer_col: pointer})
                    ).rowcount
                entry.objects += 1
                entry.bytes += int(pointer["size"])
                entry.rows += n
                report.rows_updated += n
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        if entry.action == "failed":
            return False
    return True


def _is_blob_column(db: _Db, table: str, col: _Column) -> bool:
    """Whether every value of the in-row column *col* is a DataJoint blob."""
    t = sa.table(table, sa.column(col.name, sa.LargeBinary()), schema=db.schema)
    c = t.c[col.name]
    heads = [sa.literal(h, sa.LargeBinary()) for h in _BLOB_HEADS]
    not_blob = sa.and_(
        c.is_not(None),
        sa.func.substr(c, 1, 4).not_in(heads),
        sa.func.substr(c, 1, 6) != sa.literal(_ZL, sa.LargeBinary()),
    )
    with db.engine.connect() as conn:
        return _count(conn, t, not_blob) == 0


def convert(
    engine: Engine,
    schema: str | None = None,
    *,
    dry_run: bool = False,
    progress: bool = False,
    hash_prefix: str = HASH_PREFIX,
) -> ConvertReport:
    """Convert the 0.14 columns of *schema* (default: the connection's) to DataJoint 2.x.

    Resumable and idempotent; see the module's documentation. *hash_prefix* is the
    stores' ``hash_prefix`` in DataJoint 2.x (``_hash`` unless configured otherwise).
    ``dry_run`` reports the columns, rows, objects and bytes and changes nothing.
    """
    hash_prefix = hash_prefix.strip("/")
    if not hash_prefix or hash_prefix.startswith(".") or "//" in hash_prefix:
        raise ConfigError(
            f"hash_prefix {hash_prefix!r} would put DataJoint 2.x objects among the 0.14"
            " objects (<location>/<schema>/), where a 0.14 sweep takes them for orphans:"
            " use DataJoint 2.x's default '_hash' or another folder name"
        )
    db = _Db(engine, schema)
    report = ConvertReport(db.schema, dry_run)
    with db.exclusive():
        for table in db.tables():
            cols = db.columns(table)
            for col in list(cols.values()):
                if col.name.startswith("_") and col.name.endswith(("__dj014", "__dj2")):
                    continue
                m = _V014.match(col.comment)
                if m:
                    kind, store_name, rest = m.groups()
                    _convert_external(
                        db, table, col, kind, store_name, rest, cols, report, hash_prefix, progress
                    )
                    continue
                m2 = _V2.match(col.comment)
                if m2:
                    kind = f"{m2.group(1)}@{m2.group(2)}"
                    old = _OLD.format(col.name)
                    entry = ColumnReport(table, col.name, kind, "already")
                    report.columns.append(entry)
                    if old not in cols:
                        entry.action = "skipped: 2.x"
                    elif not dry_run and _late_rows(db, table, old, col.name):
                        # killed right after the swap, with rows written just before it
                        entry.action = "converted"
                        try:
                            _fill(
                                db,
                                table,
                                old,
                                col.name,
                                m2.group(2),
                                entry,
                                report,
                                hash_prefix,
                                progress,
                            )
                        except StoreNotConfiguredError as exc:
                            entry.action = "failed"
                            report.errors.append(f"{table}.{col.name}: {exc}")
                    continue
                if _FILEPATH.match(col.comment):
                    report.columns.append(
                        ColumnReport(table, col.name, "filepath", "skipped: filepath")
                    )
                    continue
                label = None
                if col.comment.startswith(":attach:"):
                    label, kind = ":<attach>:" + col.comment[len(":attach:") :], "attach"
                elif col.type_sql.upper() in _BLOB_TYPES and not _LABEL.match(col.comment):
                    kind = "blob"
                    if not _is_blob_column(db, table, col):
                        report.columns.append(
                            ColumnReport(table, col.name, kind, "skipped: not DataJoint blobs")
                        )
                        continue
                    label = ":<blob>:" + col.comment
                elif col.comment.startswith((":<blob>:", ":<attach>:")):
                    kind = col.comment[2:].split(">", 1)[0]
                    report.columns.append(ColumnReport(table, col.name, kind, "already"))
                    continue
                if label is None:
                    continue
                if dry_run:
                    report.columns.append(ColumnReport(table, col.name, kind, "would label"))
                    continue
                db.run(db.set_comment(table, col, label))
                report.columns.append(ColumnReport(table, col.name, kind, "labelled"))
    return report


def revert(engine: Engine, schema: str | None = None, *, dry_run: bool = False) -> ConvertReport:
    """Undo :func:`convert` on *schema*: the kept 0.14 columns take their names back, the
    pointer columns are dropped, the in-row labels are removed.

    All or nothing: if a stored 2.x column has rows written after the conversion (no 0.14
    value) or no kept 0.14 column (finalized, or declared by DataJoint 2.x), nothing is
    changed and ``errors`` says why. The objects the conversion placed under ``_hash/``
    stay (no 0.14 reader looks there).
    """
    db = _Db(engine, schema)
    report = ConvertReport(db.schema, dry_run)
    with db.exclusive():
        steps: list[tuple[ColumnReport, str, list[str]]] = []
        for table in db.tables():
            cols = db.columns(table)
            for col in list(cols.values()):
                if _is_staged(col.name):
                    base = col.name[1 : -len("__dj2")]
                    if base in cols and _V014.match(cols[base].comment):  # a conversion cut short
                        entry = ColumnReport(table, base, "staged", "dropped")
                        report.columns.append(entry)
                        steps.append((entry, "would drop", db.drop(table, col.name)))
                    continue
                m = _V2.match(col.comment)
                old = cols.get(_OLD.format(col.name))
                if m:
                    entry = ColumnReport(table, col.name, f"{m.group(1)}@{m.group(2)}", "reverted")
                    report.columns.append(entry)
                    if old is None:
                        entry.action = "failed"
                        report.errors.append(
                            f"{table}.{col.name}: no 0.14 column is kept (finalized, or declared"
                            " by DataJoint 2.x): it cannot be reverted"
                        )
                        continue
                    t = db.ref(table, col.name, old.name)
                    with db.engine.connect() as conn:
                        newer = _count(conn, t, t.c[old.name].is_(None), t.c[col.name].is_not(None))
                        entry.rows = _count(conn, t, t.c[old.name].is_not(None))
                    if newer:
                        entry.action = "failed"
                        report.errors.append(
                            f"{table}.{col.name}: {newer} rows were written after the conversion"
                            " and have no 0.14 value: delete or rewrite them, then revert again"
                        )
                        continue
                    steps.append((entry, "would revert", db.swap_back(table, col, old)))
                    continue
                for label, back, kind in (
                    (":<blob>:", "", "blob"),
                    (":<attach>:", ":attach:", "attach"),
                ):
                    if col.comment.startswith(label):
                        entry = ColumnReport(table, col.name, kind, "unlabelled")
                        report.columns.append(entry)
                        comment = back + col.comment[len(label) :]
                        steps.append((entry, "would unlabel", db.set_comment(table, col, comment)))
        if report.errors or dry_run:
            for entry, would, _ in steps:
                entry.action = would if dry_run and not report.errors else "not reverted"
            return report
        for _, _, statements in steps:
            db.run(statements)
    return report


def finalize(engine: Engine, schema: str | None = None, *, dry_run: bool = False) -> ConvertReport:
    """Drop the 0.14 columns that :func:`convert` kept: the conversion can no longer be
    reverted, and the next 0.14 sweep (``sa-djblob sweep``) deletes the old objects and
    externals entries, which nothing references any more. The 2.x objects stay."""
    db = _Db(engine, schema)
    report = ConvertReport(db.schema, dry_run)
    with db.exclusive():
        for table in db.tables():
            cols = db.columns(table)
            for col in list(cols.values()):
                m = _V2.match(col.comment)
                old = cols.get(_OLD.format(col.name))
                if not m or old is None:
                    continue
                action = "would drop the 0.14 column" if dry_run else "dropped the 0.14 column"
                report.columns.append(
                    ColumnReport(table, col.name, f"{m.group(1)}@{m.group(2)}", action)
                )
                if not dry_run:
                    db.run(db.drop(table, old.name))
    return report
