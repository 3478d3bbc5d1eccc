"""Faults: processes killed at the worst moment, and a store that fails during a sweep."""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from helpers.common import kill, make_table, run_until, store_paths, url_with_password, value

import sa_djblob as djb

HELPERS = Path(__file__).parent / "helpers"
HOUR = datetime.timedelta(hours=1)
ZERO = datetime.timedelta(0)


def _wait_for_rollback(ext: djb.ExternalTable, want: int, timeout: float = 20) -> None:
    """The server notices the dead client and rolls its transaction back."""
    deadline = time.monotonic() + timeout
    while len(ext.paths()) != want and time.monotonic() < deadline:
        time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.parametrize("store_kind", ["file", "s3"])
def test_writer_killed_before_commit_leaves_an_orphan(
    engine: sa.Engine, shared_store: dict[str, Any], store_kind: str
) -> None:
    djb.install(engine)
    table = make_table(engine)
    ext = djb.externals(engine)["shared"]
    with engine.begin() as conn:
        conn.execute(sa.insert(table), {"id": 1, "b": value(1)})
    proc = run_until(
        [
            str(HELPERS / "writer_killed.py"),
            url_with_password(engine),
            json.dumps(shared_store),
            table.name,
            "2",
            "2",
        ],
        "UPLOADED",
    )
    kill(proc)
    _wait_for_rollback(ext, 1)
    store = ext.store
    orphans = store_paths(ext) - {p for _, p in ext.paths()}
    assert len(orphans) == 1, "the killed writer's upload is an orphan"
    (orphan,) = orphans

    kept = ext.sweep(grace=HOUR, progress=False)
    assert kept.ok and kept.orphans_deleted == 0 and kept.orphans_kept == 1
    assert store.exists(orphan)

    collected = ext.sweep(grace=ZERO, progress=False)
    assert collected.ok and collected.orphans_deleted == 1 and collected.rows_deleted == 0
    assert not store.exists(orphan)
    assert store_paths(ext) == {p for _, p in ext.paths()}
    assert ext.paths() and ext.verify(progress=False).ok
    # the same content can be written again
    with engine.begin() as conn:
        conn.execute(sa.insert(table), {"id": 2, "b": value(2)})
    with engine.connect() as conn:
        np.testing.assert_array_equal(
            conn.scalar(sa.select(table.c.b).where(table.c.id == 2)), value(2)
        )


@pytest.mark.slow
@pytest.mark.parametrize("store_kind", ["file", "s3"])
def test_sweep_killed_before_commit_loses_nothing_referenced(
    engine: sa.Engine, shared_store: dict[str, Any], store_kind: str
) -> None:
    djb.install(engine)
    table = make_table(engine)
    ext = djb.externals(engine)["shared"]
    with engine.begin() as conn:
        conn.execute(sa.insert(table), [{"id": i, "b": value(i)} for i in range(6)])
        conn.execute(sa.delete(table).where(table.c.id >= 3))
    unused = set(ext.unused())
    paths = dict(ext.paths())
    assert len(unused) == 3

    proc = run_until(
        [str(HELPERS / "sweep_killed.py"), url_with_password(engine), json.dumps(shared_store)],
        "REMOVED rows",
    )
    kill(proc)
    _wait_for_rollback(ext, 6)

    store = ext.store
    # the rows came back (rollback), their payloads did not; nothing referenced was touched
    assert set(ext.unused()) == unused
    assert all(not store.exists(paths[k]) for k in unused)
    assert all(store.exists(paths[k]) for k in ext.used())
    with engine.connect() as conn:
        for r in conn.execute(sa.select(table.c.id, table.c.b)):
            np.testing.assert_array_equal(r.b, value(r.id))
    # verify: every referenced payload is fine; the unused entries lost theirs
    report = ext.verify(progress=False)
    assert report.ok and report.checked == 3
    full = ext.verify(progress=False, include_unused=True)
    assert sorted(full.missing) == sorted((k, paths[k]) for k in unused)

    # a later write of the same content repairs the payload
    with engine.begin() as conn:
        conn.execute(sa.insert(table), {"id": 3, "b": value(3)})
    with engine.connect() as conn:
        np.testing.assert_array_equal(
            conn.scalar(sa.select(table.c.b).where(table.c.id == 3)), value(3)
        )
    full = ext.verify(progress=False, include_unused=True)
    assert len(full.missing) == 2 and full.checked == 6
    assert ext.verify(progress=False).ok

    # and the next sweep finishes the job
    swept = ext.sweep(grace=ZERO, progress=False)
    assert swept.ok and swept.rows_deleted == 2
    assert store_paths(ext) == {p for _, p in ext.paths()}
    assert ext.verify(progress=False, include_unused=True).ok


# -- S3 failures during a sweep -------------------------------------------------


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.body


def _error_response(code: str, status: int) -> Any:
    from botocore.awsrequest import AWSResponse
    from botocore.compat import HTTPHeaders

    body = (
        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
        f"<Message>injected {code}</Message></Error>"
    ).encode()
    headers = HTTPHeaders()
    headers["Content-Type"] = "application/xml"
    return AWSResponse("http://injected", status, headers, _Raw(body))


@pytest.fixture
def s3_filled(
    engine: sa.Engine, shared_store: dict[str, Any]
) -> Iterator[tuple[sa.Engine, sa.Table, djb.ExternalTable, Any]]:
    djb.install(engine)
    table = make_table(engine)
    ext = djb.externals(engine)["shared"]
    with engine.begin() as conn:
        conn.execute(sa.insert(table), [{"id": i, "b": value(i)} for i in range(8)])
        conn.execute(sa.delete(table).where(table.c.id >= 3))
    store = ext.store
    assert isinstance(store, djb.S3Store)
    events = store.client.meta.events
    handlers: list[tuple[str, Any]] = []

    def register(name: str, fn: Any) -> None:
        events.register(name, fn)
        handlers.append((name, fn))

    yield engine, table, ext, register
    for name, fn in handlers:
        events.unregister(name, fn)


def _snapshot(ext: djb.ExternalTable) -> tuple[Any, Any]:
    return ext.paths(), store_paths(ext)


@pytest.mark.parametrize("store_kind", ["s3"])
def test_s3_delete_refused_deletes_nothing(s3_filled: Any) -> None:
    _, _, ext, register = s3_filled
    register("before-send.s3.DeleteObjects", lambda **kw: _error_response("AccessDenied", 403))
    before = _snapshot(ext)
    report = ext.sweep(grace=ZERO, progress=False)
    assert not report.ok and "access denied" in report.errors[0].lower()
    assert report.rows_deleted == report.payloads_deleted == 0
    assert _snapshot(ext) == before  # every row kept: a later sweep will retry
    assert len(ext.unused()) == 5


@pytest.mark.parametrize("store_kind", ["s3"])
def test_s3_partial_delete_failure(s3_filled: Any) -> None:
    _, _, ext, register = s3_filled
    refused: list[str] = []

    def drop_some(params: dict[str, Any], **_: Any) -> None:
        objects = params["Delete"]["Objects"]
        refused.extend(o["Key"] for o in objects[::2])
        params["Delete"]["Objects"] = objects[1::2]

    def report_them(parsed: dict[str, Any], **_: Any) -> None:
        parsed.setdefault("Errors", []).extend(
            {"Key": k, "Code": "InternalError", "Message": "injected"} for k in refused
        )

    register("before-parameter-build.s3.DeleteObjects", drop_some)
    register("after-call.s3.DeleteObjects", report_them)
    report = ext.sweep(grace=ZERO, progress=False)
    assert len(refused) == 3
    assert report.rows_deleted == report.payloads_deleted == 2
    assert len(report.errors) == 3 and all("InternalError" in e for e in report.errors)
    # exactly the entries whose payload is still there keep their rows
    assert {str(p).lstrip("/") for p in _unused_path_set(ext)} == set(refused)
    assert store_paths(ext) == {p for _, p in ext.paths()}
    assert ext.verify(progress=False, include_unused=True).ok


@pytest.mark.parametrize("store_kind", ["s3"])
def test_s3_listing_failure_deletes_nothing(s3_filled: Any) -> None:
    _, _, ext, register = s3_filled
    before = _snapshot(ext)
    register("before-send.s3.ListObjectsV2", lambda **kw: _error_response("AccessDenied", 403))
    report = ext.sweep(grace=ZERO, progress=False)
    assert not report.ok and "nothing deleted" in report.errors[0]
    assert report.rows_deleted == report.orphans_deleted == 0
    assert ext.paths() == before[0]
    assert all(ext.store.exists(p) for p in before[1])


@pytest.mark.parametrize("store_kind", ["s3"])
def test_s3_read_errors_during_verify(s3_filled: Any) -> None:
    _, _, ext, register = s3_filled
    register("before-send.s3.GetObject", lambda **kw: _error_response("AccessDenied", 403))
    report = ext.verify(progress=False)
    assert not report.ok and report.checked == 3 and len(report.errors) == 3
    assert report.missing == [] and report.corrupt == []


def _unused_path_set(ext: djb.ExternalTable) -> set[PurePosixPath]:
    unused = set(ext.unused())
    return {p for k, p in ext.paths() if k in unused}
