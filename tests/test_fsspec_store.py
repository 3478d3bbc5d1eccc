"""End to end through an fsspec store: Blob/Attach columns on SQLite, reads, a sweep."""

from __future__ import annotations

import datetime
import uuid
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
import sqlalchemy as sa
from helpers.common import make_table, store_paths, value

import sa_djblob as djb
from sa_djblob._layout import content_hash, object_path
from sa_djblob.stores import FsspecStore, get_store

pytestmark = pytest.mark.backends("sqlite")


@pytest.fixture(params=["memory", "file"])
def fsspec_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "memory":
        return f"memory://djbt-{uuid.uuid4().hex[:8]}/lab"
    return f"file://{tmp_path}/fsspec-store"


def test_blob_and_attach_through_fsspec_then_sweep(
    engine: sa.Engine, fsspec_url: str, tmp_path: Path
) -> None:
    djb.config["stores"] = {"shared": {"protocol": "fsspec", "url": fsspec_url, "location": "x"}}
    djb.config["cache"] = str(tmp_path / "cache")
    djb.install(engine)
    table = make_table(engine)
    store = get_store("shared")
    assert isinstance(store, FsspecStore)
    att = tmp_path / "note.txt"
    att.write_text("hello fsspec")
    with engine.begin() as conn:
        conn.execute(sa.insert(table), [{"id": i, "b": value(i), "a": None} for i in range(3)])
        conn.execute(sa.insert(table), [{"id": 9, "b": None, "a": str(att)}])
    ext = djb.externals(engine)["shared"]
    assert store_paths(ext) == {p for _, p in ext.paths()} and len(ext.paths()) == 4
    # the payloads are objects of the file system, below the URL's path
    fs_root = fsspec_url.split("://", 1)[1]
    some_path = ext.paths()[0][1]
    assert store.fs.isfile(f"{fs_root.rstrip('/')}/{str(some_path).lstrip('/')}")

    with engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(sa.select(table))}
    for i in range(3):
        np.testing.assert_array_equal(rows[i].b, value(i))
    assert Path(rows[9].a).read_text() == "hello fsspec"

    # an unused entry and an old orphan payload: the sweep removes both
    with engine.begin() as conn:
        conn.execute(sa.delete(table).where(table.c.id == 1))
    orphan_data = djb.pack(value(77))
    orphan = object_path(
        store.location, ext.schema, content_hash(orphan_data), None, store.subfolding
    )
    store.put(orphan, orphan_data)
    assert len(ext.unused()) == 1
    report = ext.sweep(progress=False, grace=datetime.timedelta(0))
    assert report.ok, report.errors
    assert (report.rows_deleted, report.payloads_deleted, report.orphans_deleted) == (1, 1, 1)
    assert not store.exists(orphan)
    assert ext.unused() == [] and len(ext.used()) == 3
    assert store_paths(ext) == {p for _, p in ext.paths()}
    assert ext.verify(progress=False).ok


def test_fsspec_grace_keeps_young_orphans(engine: sa.Engine) -> None:
    url = f"memory://djbt-{uuid.uuid4().hex[:8]}/lab"
    djb.config["stores"] = {"shared": {"protocol": "fsspec", "url": url}}
    djb.install(engine)
    make_table(engine)
    ext = djb.externals(engine)["shared"]
    store = ext.store
    data = djb.pack(value(5))
    orphan = object_path(store.location, ext.schema, content_hash(data), None, store.subfolding)
    store.put(orphan, data)
    report = ext.sweep(progress=False, grace=datetime.timedelta(hours=1))
    assert (report.orphans_deleted, report.orphans_kept) == (0, 1)
    assert store.exists(orphan)
    assert [i.path for i in store.list(PurePosixPath(store.location, ext.schema))] == [orphan]


def test_fsspec_errors_are_mapped_in_one_place() -> None:
    """One context manager maps what a file system raises to sa_djblob's errors: a
    missing file is a MissingPayloadError where a payload is read, an expected error is
    handed back, anything else is a StoreError naming the action and the path."""
    import inspect

    from sa_djblob.stores import fsspec

    store = FsspecStore("one_place", url="memory://one-place/x")
    path = PurePosixPath("a/b")
    missing = pytest.raises(djb.MissingPayloadError, match="payload a/b is missing")
    with missing, store._errors("read", path, missing=True):
        raise FileNotFoundError("a/b")
    failed = pytest.raises(djb.StoreError, match=r"cannot check a/b at .*: PermissionError: no")
    with failed, store._errors("check", path):
        raise PermissionError("no")
    with store._errors("delete", path, expect=(FileNotFoundError,)) as absent:
        raise FileNotFoundError("a/b")
    assert absent and isinstance(absent[0], FileNotFoundError)
    assert inspect.getsource(fsspec).count("self._error(") == 1, "one mapping"
