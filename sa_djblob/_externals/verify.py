"""``ExternalTable.verify``: every payload (or every referenced one) is in its store and
matches its hash; the table is read in hash order a page at a time, the payloads are
streamed and checked several at a time."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from .._area import Area
from .._exceptions import MissingPayloadError, SaDjblobError
from .._kinds import Kind
from .._layout import attachment_prefix, hash_stream
from .._pool import run_all, serial_for
from .._util import chunks as _chunks
from ..stores import Store
from .progress import Bar
from .progress import bar as make_bar
from .reports import VerifyReport
from .sweep import DEFAULT_BATCH

if TYPE_CHECKING:
    from .maintenance import ExternalTable

__all__ = ["verify"]


def _check(
    store: Store, key: uuid.UUID | None, prefix: bytes, path: PurePosixPath, size: int
) -> str:
    """``"ok"``, ``"missing"``, ``"corrupt"`` or an error message. *key* None: no hash was
    recorded (a filepath past DataJoint's checksum limit), the size is checked."""
    try:
        with store.open(path) as f:
            got, n = hash_stream(f, prefix=prefix, algorithm=store.hash)
    except MissingPayloadError:
        return "missing"
    except Exception as exc:  # reported per payload
        return f"cannot read {path}: {exc}"
    if key is None:
        return "ok" if n == size else "corrupt"
    return "ok" if got == key else "corrupt"


def _verify_item(store: Store, area: Area, row: Any) -> tuple[PurePosixPath, Any]:
    """(object path, arguments of :func:`_check` after it) of an externals row."""
    h, name, fp, contents, size = row
    kind = Kind.for_entry(name, fp)
    path = kind.entry_path(area, h, {"attachment_name": name, "filepath": fp})
    if not kind.selects_entry or kind.named:
        return path, (h, b"" if name is None else attachment_prefix(name), size)
    return path, (contents, b"", size)  # a filepath: its contents hash (None: its size)


def verify(
    ext: ExternalTable,
    *,
    progress: bool | None = None,
    include_unused: bool = False,
    chunk: int = 256,
) -> VerifyReport:
    """Check that every referenced payload (every payload, with *include_unused*) is in
    the store and matches its hash; payloads are streamed, several at a time. The table
    is read in hash order, a page at a time (keyset pagination), so memory holds one
    page at any number of entries."""
    report = VerifyReport()
    t = ext.table
    q = sa.select(t.c.hash, t.c.attachment_name, t.c.filepath, t.c.contents_hash, t.c.size)
    total: int | None = None
    with ext.engine.connect() as conn:
        if not ext.exists(conn):
            return report
        refs = None if include_unused else ext.references(conn)
        try:
            area = ext.area(conn)
        except SaDjblobError as exc:
            report.errors.append(str(exc))
            return report
        if progress:
            counted = q if refs is None else q.where(ext.used_clause(refs))
            total = conn.scalar(sa.select(sa.func.count()).select_from(counted.subquery()))
    store = area.store
    bar = make_bar(progress, total, f"verify {ext.name}")
    page = max(chunk, DEFAULT_BATCH)
    after: uuid.UUID | None = None
    try:
        while True:
            # the entries of the next window of the table (see ExternalTable.window_end)
            with ext.engine.connect() as conn:
                window = (after, ext.window_end(conn, after, page))
                paged = q.where(*ext.in_window(window))
                if refs is not None:
                    paged = paged.where(ext.used_clause(refs, window))
                rows = conn.execute(paged.order_by(t.c.hash)).all()
            if rows:
                _verify_rows(store, area, rows, chunk, report, bar)
            after = window[1]
            if after is None:
                break
    finally:
        bar.close()
    return report


def _verify_rows(
    store: Store, area: Area, rows: Sequence[Any], chunk: int, report: VerifyReport, bar: Bar
) -> None:
    items: list[tuple[uuid.UUID, PurePosixPath, Any]] = []
    for row in rows:
        try:
            path, args = _verify_item(store, area, row)
        except SaDjblobError as exc:  # a filepath row edited by hand
            report.errors.append(str(exc))
            continue
        items.append((row[0], path, args))
    for part in _chunks(items, chunk):
        serial = serial_for(store.is_remote, sum(int(it[2][2] or 0) for it in part))
        results = run_all(
            lambda it: _check(store, it[2][0], it[2][1], it[1], int(it[2][2])), part, serial=serial
        )
        for (h, path, _), result in zip(part, results, strict=True):
            report.checked += 1
            if result == "missing":
                report.missing.append((h, path))
            elif result == "corrupt":
                report.corrupt.append((h, path))
            elif result != "ok":
                report.errors.append(result)
        bar.update(len(part))
