"""ExternalTable.verify: every referenced payload is there and matches its hash."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from helpers.common import make_table, value

import sa_djblob as djb


@pytest.fixture
def filled(
    engine: sa.Engine, shared_store: dict[str, Any], tmp_path: Path
) -> tuple[sa.Engine, sa.Table, djb.ExternalTable]:
    djb.install(engine)
    table = make_table(engine)
    att = tmp_path / "notes.txt"
    att.write_bytes(b"some notes\n" * 100)
    with engine.begin() as conn:
        conn.execute(sa.insert(table), [{"id": i, "b": value(i)} for i in range(5)])
        conn.execute(sa.insert(table), [{"id": 9, "a": str(att)}])
    return engine, table, djb.externals(engine)["shared"]


def test_verify_ok(filled: Any) -> None:
    _, _, ext = filled
    report = ext.verify(progress=False)
    assert report.ok
    assert report.checked == 6
    assert report.missing == [] and report.corrupt == []


def test_verify_finds_missing_and_corrupt(filled: Any) -> None:
    _, _, ext = filled
    paths = dict(ext.paths())
    keys = sorted(paths)
    store = ext.store
    att_key = next(k for k, p in paths.items() if p.name.endswith(".notes.txt"))
    blob_keys = [k for k in keys if k != att_key]
    store.remove(paths[blob_keys[0]])
    store.put(paths[blob_keys[1]], b"not the original bytes")
    store.put(paths[att_key], b"tampered notes")

    report = ext.verify(progress=False)

    assert not report.ok
    assert report.checked == 6
    assert report.missing == [(blob_keys[0], paths[blob_keys[0]])]
    assert sorted(report.corrupt) == sorted(
        [(blob_keys[1], paths[blob_keys[1]]), (att_key, paths[att_key])]
    )


def test_verify_skips_unused_unless_asked(filled: Any) -> None:
    engine, table, ext = filled
    with engine.begin() as conn:
        conn.execute(sa.delete(table).where(table.c.id == 0))
    unused = ext.unused()
    assert len(unused) == 1
    path = dict(ext.paths())[unused[0]]
    ext.store.remove(path)
    assert ext.verify(progress=False).ok  # nothing referenced is missing
    everything = ext.verify(progress=False, include_unused=True)
    assert everything.checked == 6 and everything.missing == [(unused[0], path)]


@pytest.mark.parametrize("store_kind", ["memory"])
def test_verify_reports_store_errors(filled: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    _, _, ext = filled

    def refuse(path: Any) -> Any:
        raise djb.StoreError("store is down")

    monkeypatch.setattr(ext.store, "open", refuse)
    report = ext.verify(progress=False)
    assert not report.ok
    assert len(report.errors) == 6 and "store is down" in report.errors[0]
    assert report.missing == [] and report.corrupt == []
