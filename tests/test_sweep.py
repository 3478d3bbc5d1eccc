"""ExternalTable.sweep: unused rows, orphans, dry runs, and what it must never delete."""

from __future__ import annotations

import datetime
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from helpers.common import backdate, make_table, store_paths, value

import sa_djblob as djb
from sa_djblob._layout import content_hash, object_path

HOUR = datetime.timedelta(hours=1)
ZERO = datetime.timedelta(0)


@pytest.fixture
def setup(
    engine: sa.Engine, shared_store: dict[str, Any]
) -> tuple[sa.Engine, sa.Table, djb.ExternalTable]:
    djb.install(engine)
    table = make_table(engine)
    return engine, table, djb.externals(engine)["shared"]


def _insert(engine: sa.Engine, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    with engine.begin() as conn:
        conn.execute(sa.insert(table), rows)


def _orphan(ext: djb.ExternalTable, i: int, attachment: str | None = None) -> PurePosixPath:
    """Put a payload in the store with no externals row (as a rolled-back writer leaves it)."""
    data = djb.pack(value(1000 + i))
    store = ext.store
    if attachment is not None:
        data = b"orphan attachment %d" % i
        key = content_hash(attachment.encode() + b"\0" + data)
    else:
        key = content_hash(data)
    path = object_path(store.location, ext.schema, key, attachment, store.subfolding)
    store.put(path, data)
    return path


def test_sweep_removes_unused_and_keeps_used(setup: Any, tmp_path: Path) -> None:
    engine, table, ext = setup
    att = tmp_path / "note.txt"
    att.write_text("hello")
    _insert(engine, table, [{"id": i, "b": value(i), "a": None} for i in range(6)])
    _insert(engine, table, [{"id": 10, "b": None, "a": str(att)}])
    assert len(store_paths(ext)) == 7
    with engine.begin() as conn:
        conn.execute(sa.delete(table).where(table.c.id.in_([1, 3, 5, 10])))
    unused = set(ext.unused())
    assert len(unused) == 4
    sizes_unused = 3 * len(djb.pack(value(1))) + len(b"hello")

    report = ext.sweep(progress=False)

    assert report.ok, report.errors
    assert (report.rows_deleted, report.payloads_deleted, report.orphans_deleted) == (4, 4, 0)
    assert report.bytes_freed == sizes_unused
    assert report.skipped_referenced == 0
    assert ext.unused() == []
    assert len(ext.used()) == 3
    assert store_paths(ext) == {p for _, p in ext.paths()}
    with engine.connect() as conn:
        got = {r.id: r.b for r in conn.execute(sa.select(table.c.id, table.c.b))}
    assert sorted(got) == [0, 2, 4]
    for i, v in got.items():
        np.testing.assert_array_equal(v, value(i))
    again = ext.sweep(progress=False)
    assert (again.rows_deleted, again.orphans_deleted, again.errors) == (0, 0, [])


def test_dry_run_reports_and_deletes_nothing(setup: Any) -> None:
    engine, table, ext = setup
    _insert(engine, table, [{"id": i, "b": value(i)} for i in range(5)])
    with engine.begin() as conn:
        conn.execute(sa.delete(table).where(table.c.id < 3))
    orphan = _orphan(ext, 1)
    if ext.store.protocol != "s3":
        backdate(ext.store, orphan, 2 * HOUR)
    grace = HOUR if ext.store.protocol != "s3" else ZERO
    before_paths, before_rows = store_paths(ext), ext.paths()

    dry = ext.sweep(dry_run=True, grace=grace, progress=False)

    assert dry.dry_run
    assert (dry.rows_deleted, dry.payloads_deleted, dry.orphans_deleted) == (3, 3, 1)
    assert store_paths(ext) == before_paths and ext.paths() == before_rows
    real = ext.sweep(grace=grace, progress=False)
    assert (real.rows_deleted, real.payloads_deleted, real.orphans_deleted) == (3, 3, 1)
    assert real.bytes_freed == dry.bytes_freed
    assert store_paths(ext) == {p for _, p in ext.paths()}


def test_null_values_do_not_hide_unused_entries(setup: Any) -> None:
    """``NOT IN (SELECT col ...)`` over a column holding NULL is never true: we must not use it."""
    engine, table, ext = setup
    _insert(engine, table, [{"id": i, "b": value(i), "a": None} for i in range(3)])
    _insert(engine, table, [{"id": 100 + i, "b": None, "a": None} for i in range(3)])
    with engine.begin() as conn:
        conn.execute(sa.delete(table).where(table.c.id == 1))
    assert len(ext.unused()) == 1
    report = ext.sweep(progress=False)
    assert report.rows_deleted == 1 and report.payloads_deleted == 1
    assert len(ext.used()) == 2 and ext.unused() == []


@pytest.mark.parametrize("store_kind", ["memory", "file"])
def test_orphans_respect_grace_and_layout(setup: Any, store_kind: str) -> None:
    engine, table, ext = setup
    store = ext.store
    _insert(engine, table, [{"id": 1, "b": value(1)}])
    old, old_att, young = _orphan(ext, 1), _orphan(ext, 2, "data.csv"), _orphan(ext, 3)
    backdate(store, old, 2 * HOUR)
    backdate(store, old_att, 2 * HOUR)
    # not ours: a foreign file, a payload name in the wrong folder, a hidden temp file
    area = PurePosixPath(store.location, ext.schema)
    foreign = area / "README"
    misplaced = area / "00" / "11" / ("ab" * 16)
    temp = young.with_name(f".{young.name}.tmp-0123456789ab")
    for p in (foreign, misplaced, temp):
        store.put(p, b"x")
        backdate(store, p, 2 * HOUR)
    used_path = ext.paths()[0][1]

    report = ext.sweep(grace=HOUR, progress=False)

    assert report.ok, report.errors
    assert report.orphans_deleted == 2
    assert report.orphans_kept == 1
    assert not store.exists(old) and not store.exists(old_att)
    for p in (young, foreign, misplaced, used_path):
        assert store.exists(p), p
    if store_kind == "file":
        assert Path(temp).exists()
        # emptied folders are gone, the rest stay
        assert not Path(old).parent.exists()
        assert Path(used_path).parent.exists()
    assert ext.paths() == [(ext.used()[0], used_path)]  # no row was left behind
    report = ext.sweep(grace=ZERO, progress=False)
    assert report.orphans_deleted == 1 and not store.exists(young)


def test_orphans_on_s3_grace_zero(setup: Any, store_kind: str) -> None:
    engine, table, ext = setup
    _insert(engine, table, [{"id": 1, "b": value(1)}])
    orphans = {_orphan(ext, i) for i in range(5)}
    kept = ext.sweep(grace=HOUR, progress=False)
    assert kept.orphans_deleted == 0 and kept.orphans_kept == 5
    report = ext.sweep(grace=ZERO, progress=False)
    assert report.orphans_deleted == 5 and report.ok
    assert not any(ext.store.exists(p) for p in orphans)
    assert store_paths(ext) == {p for _, p in ext.paths()}


def test_small_batches_cover_everything(setup: Any) -> None:
    engine, table, ext = setup
    _insert(engine, table, [{"id": i, "b": value(i)} for i in range(11)])
    with engine.begin() as conn:
        conn.execute(sa.delete(table).where(table.c.id % 3 != 0))
    for i in range(5):
        _orphan(ext, i)
    report = ext.sweep(grace=ZERO, progress=False, batch=2)
    assert (report.rows_deleted, report.orphans_deleted) == (7, 5)
    assert store_paths(ext) == {p for _, p in ext.paths()}
    assert len(ext.used()) == 4


@pytest.mark.parametrize("store_kind", ["memory"])
def test_listing_failure_deletes_nothing(setup: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    engine, table, ext = setup
    _insert(engine, table, [{"id": i, "b": value(i)} for i in range(3)])
    with engine.begin() as conn:
        conn.execute(sa.delete(table))
    store = ext.store

    def broken(prefix: PurePosixPath) -> Any:
        yield from ()
        raise djb.StoreError("listing refused")

    monkeypatch.setattr(store, "list", broken)
    report = ext.sweep(grace=ZERO, progress=False)
    assert not report.ok and "listing refused" in report.errors[0]
    assert report.rows_deleted == report.payloads_deleted == 0
    assert len(ext.unused()) == 3
    assert all(store.exists(p) for _, p in ext.paths())


@pytest.mark.parametrize("store_kind", ["memory"])
def test_unreadable_referencing_table_deletes_nothing(
    setup: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, table, ext = setup
    _insert(engine, table, [{"id": i, "b": value(i)} for i in range(3)])
    with engine.begin() as conn:
        conn.execute(sa.delete(table))
    real = djb.ExternalTable.references

    def with_ghost(self: djb.ExternalTable, conn: Any = None) -> list[Any]:
        from sa_djblob._externals import Reference

        return [*real(self, conn), Reference(None, "no_such_table", "b")]

    monkeypatch.setattr(djb.ExternalTable, "references", with_ghost)
    report = ext.sweep(grace=ZERO, progress=False)
    assert not report.ok and "nothing deleted" in report.errors[0]
    assert report.rows_deleted == 0
    monkeypatch.undo()
    assert len(ext.unused()) == 3
    assert all(ext.store.exists(p) for _, p in ext.paths())


@pytest.mark.parametrize("store_kind", ["memory"])
def test_failed_payload_removal_keeps_its_row(setup: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    engine, table, ext = setup
    _insert(engine, table, [{"id": i, "b": value(i)} for i in range(4)])
    with engine.begin() as conn:
        conn.execute(sa.delete(table))
    store = ext.store
    victim = ext.paths()[0][1]
    real = store.remove_many

    def flaky(paths: Any) -> dict[PurePosixPath, str]:
        paths = list(paths)
        failed = real([p for p in paths if p != victim])
        if victim in paths:
            failed[victim] = "injected failure"
        return failed

    monkeypatch.setattr(store, "remove_many", flaky)
    report = ext.sweep(grace=ZERO, progress=False)
    assert report.rows_deleted == 3 and report.payloads_deleted == 3
    assert len(report.errors) == 1 and "injected failure" in report.errors[0]
    assert [p for _, p in ext.paths()] == [victim]  # its row stays, so a later sweep retries
    assert store.exists(victim)
    monkeypatch.undo()
    report = ext.sweep(grace=ZERO, progress=False)
    assert report.ok and report.rows_deleted == 1 and ext.paths() == []


@pytest.mark.parametrize("store_kind", ["memory"])
def test_rows_the_database_refuses_are_skipped(setup: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Even if the candidate query were wrong, the FK refuses and no payload goes."""
    engine, table, ext = setup
    _insert(engine, table, [{"id": i, "b": value(i)} for i in range(4)])
    with engine.begin() as conn:
        conn.execute(sa.delete(table).where(table.c.id == 0))
    monkeypatch.setattr(djb.ExternalTable, "unused_clause", lambda self, refs, w=None: sa.true())
    report = ext.sweep(grace=ZERO, progress=False)
    assert report.rows_deleted == 1
    assert report.skipped_referenced == 3
    monkeypatch.undo()
    assert len(ext.used()) == 3 and ext.unused() == []
    assert all(ext.store.exists(p) for _, p in ext.paths())
    with engine.connect() as conn:
        for r in conn.execute(sa.select(table.c.id, table.c.b)):
            np.testing.assert_array_equal(r.b, value(r.id))


@pytest.mark.parametrize("store_kind", ["memory"])
def test_no_externals_table_is_an_empty_report(engine: sa.Engine, shared_store: Any) -> None:
    ext = djb.externals(engine)["shared"]
    report = ext.sweep(progress=False)
    assert report.ok and report.rows_deleted == 0
    assert ext.verify(progress=False).checked == 0


@pytest.mark.parametrize("store_kind", ["memory"])
def test_bad_arguments(setup: Any) -> None:
    _, _, ext = setup
    with pytest.raises(ValueError):
        ext.sweep(batch=0, progress=False)
    with pytest.raises(ValueError):
        ext.sweep(grace=-HOUR, progress=False)


@pytest.mark.parametrize("store_kind", ["memory"])
def test_progress_bar(setup: Any, capsys: pytest.CaptureFixture[str]) -> None:
    engine, table, ext = setup
    _insert(engine, table, [{"id": i, "b": value(i)} for i in range(3)])
    with engine.begin() as conn:
        conn.execute(sa.delete(table))
    report = ext.sweep(progress=True)
    assert report.rows_deleted == 3
    assert "sweep" in capsys.readouterr().err


@pytest.mark.parametrize("store_kind", ["memory"])
def test_no_progress_bars_by_default_when_stderr_is_not_a_terminal(
    setup: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    engine, table, ext = setup
    _insert(engine, table, [{"id": i, "b": value(i)} for i in range(3)])
    with engine.begin() as conn:
        conn.execute(sa.delete(table).where(table.c.id == 0))
    assert ext.sweep().rows_deleted == 1
    assert ext.verify().ok
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("store_kind", ["memory"])
def test_progress_bars_by_default_on_a_terminal(
    setup: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, table, ext = setup
    _insert(engine, table, [{"id": i, "b": value(i)} for i in range(3)])
    with engine.begin() as conn:
        conn.execute(sa.delete(table))
    monkeypatch.setattr("sys.stderr.isatty", lambda: True)
    assert ext.sweep().rows_deleted == 3
    assert "sweep" in capsys.readouterr().err
