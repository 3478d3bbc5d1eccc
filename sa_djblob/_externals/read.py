"""The read path of external values.

A column with an external type selects, through its ``column_expression``, the
16-byte hash and (for attachments) the stored file name from a correlated scalar
subquery on the externals table: one SELECT, no query per row. The result type
carries the store name and the table's schema, so the object path can be built.

Payloads come from the local cache (remote stores) or the store, and are verified
against their hash on every read from a store. On installed engines, a result whose
columns hold payloads of remote stores is fetched whole and its payloads prefetched
concurrently before the rows are handed out.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import TypeDecorator

from .. import _attach
from .._codec import unpack
from .._exceptions import IntegrityError, MissingPayloadError, SaDjblobError
from .._layout import (
    HASH_CHUNK,
    attachment_prefix,
    content_hash,
    hash_stream,
    new_hasher,
    object_path,
)
from .._pool import in_async_greenlet, run_all
from ..stores import Store, get_cache, get_store

__all__ = ["ExternalResult", "external_column_expression", "read_external"]


class ExternalResult(TypeDecorator[Any]):
    """The result type of an external column: knows the store and the schema."""

    impl = sa.LargeBinary
    cache_ok = True

    def __init__(self, kind: str, store: str, schema: str | None = None) -> None:
        super().__init__()
        self.kind = kind
        self.store = store
        self.schema = schema

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        return read_external(self.kind, self.store, self.schema, bytes(value), dialect)


class _attach_ref(FunctionElement[Any]):
    """``hash || attachment_name`` as bytes, per dialect."""

    inherit_cache = True
    name = "djb_attach_ref"


@compiles(_attach_ref)
def _attach_ref_default(element: _attach_ref, compiler: SQLCompiler, **kw: Any) -> str:
    h, name = (compiler.process(c, **kw) for c in element.clauses.clauses)
    return f"CAST({h} || {name} AS BLOB)"


@compiles(_attach_ref, "mysql")
@compiles(_attach_ref, "mariadb")
def _attach_ref_mysql(element: _attach_ref, compiler: SQLCompiler, **kw: Any) -> str:
    h, name = (compiler.process(c, **kw) for c in element.clauses.clauses)
    return f"CONCAT({h}, CAST({name} AS BINARY))"


@compiles(_attach_ref, "postgresql")
def _attach_ref_pg(element: _attach_ref, compiler: SQLCompiler, **kw: Any) -> str:
    h, name = (compiler.process(c, **kw) for c in element.clauses.clauses)
    return f"({h} || convert_to({name}, 'UTF8'))"


def _base_table(colexpr: Any) -> sa.Table | None:
    """The Table a selected column comes from, through aliases and subqueries."""
    t = getattr(colexpr, "table", None)
    if isinstance(t, sa.Table):
        return t
    for base in getattr(colexpr, "base_columns", ()):
        if isinstance(getattr(base, "table", None), sa.Table):
            return base.table  # type: ignore[no-any-return]
    return None


def external_column_expression(colexpr: Any, typ: Any) -> Any:
    """The SELECT expression of an external column (see the module docstring)."""
    from .table import external_table

    table = _base_table(colexpr)
    schema = table.schema if table is not None else None
    result = ExternalResult(typ.kind, typ.store, schema)
    if typ.kind != "attach":
        return sa.type_coerce(colexpr, result)
    if table is None:
        raise SaDjblobError(
            f"cannot select external attachment column {colexpr!r} outside its table"
        )
    ext = external_table(table.metadata, typ.store, schema)
    name = sa.select(ext.c.attachment_name).where(ext.c.hash == colexpr).scalar_subquery()
    expr = _attach_ref(colexpr, name)
    expr.type = result
    return expr


# -- fetching payloads ---------------------------------------------------------

_prefetched = threading.local()


def _prefetch_map() -> dict[tuple[str, PurePosixPath], list[Any]]:
    m: dict[tuple[str, PurePosixPath], list[Any]] | None = getattr(_prefetched, "map", None)
    if m is None:
        m = _prefetched.map = {}
    return m


def _take_prefetched(store: str, path: PurePosixPath) -> Any:
    m = _prefetch_map()
    entry = m.get((store, path))
    if entry is None:
        return None
    entry[1] -= 1
    if entry[1] <= 0:
        del m[(store, path)]
    return entry[0]


def _verify(store: Store, key: uuid.UUID, path: PurePosixPath, data: bytes) -> bytes:
    if content_hash(data, algorithm=store.hash) != key:
        raise IntegrityError(
            f"payload {key} in store {store.name!r} at {path} does not match its hash"
            f" ({store.hash}): it was changed or corrupted"
        )
    return data


def fetch_bytes(store: Store, key: uuid.UUID, path: PurePosixPath) -> bytes:
    """The verified bytes of a payload, through the cache for remote stores."""
    cache = get_cache() if store.is_remote else None
    if cache is not None:
        hit = cache.get(key, store.hash)
        if hit is not None:
            return hit
    data = _verify(store, key, path, store.get(path))
    if cache is not None:
        cache.put(key, data)
    return data


def _file_matches(path: Path, prefix: bytes, key: uuid.UUID, algorithm: str) -> bool:
    try:
        with path.open("rb") as f:
            return hash_stream(f, prefix=prefix, algorithm=algorithm)[0] == key
    except OSError:
        return False


@contextlib.contextmanager
def _open_payload(
    store: Store, key: uuid.UUID, path: PurePosixPath, prefix: bytes
) -> Iterator[BinaryIO]:
    cache = get_cache() if store.is_remote else None
    if cache is not None:
        cached = cache.get_file(key, store.hash, prefix=prefix)
        if cached is not None:
            with cached.open("rb") as f:
                yield f
            return
    with store.open(path) as f:
        yield f


def fetch_attachment(store: Store, key: uuid.UUID, path: PurePosixPath, name: str) -> Path:
    """Write a verified external attachment into ``download_path``; return its path."""
    prefix = attachment_prefix(name)

    def fill(out: BinaryIO) -> None:
        h = new_hasher(store.hash)
        h.update(prefix)
        with _open_payload(store, key, path, prefix) as src:
            while chunk := src.read(HASH_CHUNK):
                h.update(chunk)
                out.write(chunk)
        if uuid.UUID(bytes=h.digest()[:16]) != key:
            raise IntegrityError(
                f"attachment {key} in store {store.name!r} at {path} does not match its hash"
                f" ({store.hash}): it was changed or corrupted"
            )
        out.flush()

    result = _attach.write_download(name, lambda p: _file_matches(p, prefix, key, store.hash), fill)
    cache = get_cache() if store.is_remote else None
    if cache is not None and cache.path(key) is None:
        cache.put_file(key, result)
    return result


def check_attachment_name(key: uuid.UUID, name: str) -> None:
    """Refuse a stored attachment name that would leave the object's folder."""
    if not name or name in (".", "..") or any(c in name for c in "/\\\0"):
        raise SaDjblobError(
            f"refusing the attachment name {name[:60]!r} of {key} in the externals table:"
            " it is not a plain file name"
        )


def read_external(
    kind: str, store_name: str, schema: str | None, raw: bytes, dialect: Dialect
) -> Any:
    """Turn a selected hash (and attachment name) back into the value."""
    if len(raw) < 16:
        raise SaDjblobError(f"external {kind} reference of {len(raw)} bytes: expected 16")
    key = uuid.UUID(bytes=raw[:16])
    store = get_store(store_name)
    schema = schema or dialect.default_schema_name
    if not schema:
        raise SaDjblobError("cannot tell the schema of an external value's object path")
    if kind == "attach":
        if len(raw) == 16:
            raise SaDjblobError(
                f"external attachment {key} was selected without its name: select the column"
                " through its table (the name comes from the externals table)"
            )
        try:
            name = raw[16:].decode("utf-8")
        except UnicodeDecodeError:
            raise SaDjblobError(f"attachment name of {key} is not valid UTF-8") from None
        check_attachment_name(key, name)
        path = object_path(store.location, schema, key, name, store.subfolding)
        got = _take_prefetched(store.name, path)
        if isinstance(got, Path):
            return got
        if isinstance(got, BaseException):
            raise got
        return fetch_attachment(store, key, path, name)
    path = object_path(store.location, schema, key, None, store.subfolding)
    got = _take_prefetched(store.name, path)
    if isinstance(got, BaseException):
        raise got
    data = got if isinstance(got, bytes) else fetch_bytes(store, key, path)
    return unpack(data)


# -- prefetch of remote payloads -------------------------------------------------


def _remote_columns(context: Any) -> list[tuple[int, ExternalResult]]:
    compiled = getattr(context, "compiled", None)
    columns = getattr(compiled, "_result_columns", None)
    if not columns:
        return []
    found = []
    for i, entry in enumerate(columns):
        typ = entry[3]
        if isinstance(typ, ExternalResult):
            try:
                if get_store(typ.store).is_remote:
                    found.append((i, typ))
            except SaDjblobError:
                continue
    return found


def _after_cursor_execute(
    conn: Connection, cursor: Any, statement: Any, parameters: Any, context: Any, executemany: bool
) -> None:
    if cursor.description is None or executemany:
        return
    cols = _remote_columns(context)
    if not cols:
        return
    # Whatever an earlier result left unread is dropped: entries live for one result.
    target = _prefetch_map()
    target.clear()
    from sqlalchemy.engine.cursor import FullyBufferedCursorFetchStrategy

    rows = cursor.fetchall()
    context.cursor_fetch_strategy = FullyBufferedCursorFetchStrategy(
        cursor, cursor.description, rows
    )
    jobs: dict[tuple[str, PurePosixPath], tuple[str, Store, uuid.UUID, str | None]] = {}
    uses: dict[tuple[str, PurePosixPath], int] = {}
    for row in rows:
        for i, typ in cols:
            raw = row[i]
            if raw is None or len(raw) < 16:
                continue
            raw = bytes(raw)
            key = uuid.UUID(bytes=raw[:16])
            store = get_store(typ.store)
            schema = str(typ.schema or conn.dialect.default_schema_name)
            name = raw[16:].decode("utf-8", "replace") if typ.kind == "attach" else None
            if typ.kind == "attach" and not name:
                continue
            path = object_path(store.location, schema, key, name, store.subfolding)
            jobs[(store.name, path)] = (typ.kind, store, key, name)
            uses[(store.name, path)] = uses.get((store.name, path), 0) + 1
    if len(jobs) < 2 and not in_async_greenlet():
        return  # (under asyncio even one payload is fetched on the pool: the loop runs on)

    def run(
        item: tuple[tuple[str, PurePosixPath], tuple[str, Store, uuid.UUID, str | None]],
    ) -> Any:
        (_, path), (kind, store, key, name) = item
        try:
            if kind == "attach":
                assert name is not None
                return fetch_attachment(store, key, path, name)
            return fetch_bytes(store, key, path)
        except (MissingPayloadError, IntegrityError) as exc:
            return exc

    results = run_all(run, list(jobs.items()))
    for k, v in zip(jobs, results, strict=True):
        target[k] = [v, uses[k]]


def install_prefetch(engine: Engine) -> None:
    if not event.contains(engine, "after_cursor_execute", _after_cursor_execute):
        event.listen(engine, "after_cursor_execute", _after_cursor_execute)


def uninstall_prefetch(engine: Engine) -> None:
    if event.contains(engine, "after_cursor_execute", _after_cursor_execute):
        event.remove(engine, "after_cursor_execute", _after_cursor_execute)
