"""djb.move: a column's values go to another store, into the row or out of it, and the
column is switched, without a committed row ever referencing a missing payload."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from helpers.common import value

import sa_djblob as djb


def model(store: str | None, name: str = "rec") -> sa.Table:
    """``rec(id, trace blob[@store], doc attach[@store])`` on a fresh MetaData."""
    return sa.Table(
        name,
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("trace", djb.Blob(store=store), nullable=True),
        sa.Column("doc", djb.Attach(store=store), nullable=True),
    )


@pytest.fixture
def stores(tmp_path: Path) -> dict[str, Any]:
    djb.config["stores"] = {
        "a": {"protocol": "file", "location": str(tmp_path / "store-a")},
        "b": {"protocol": "file", "location": str(tmp_path / "store-b")},
    }
    return djb.config["stores"]


def fill(engine: sa.Engine, table: sa.Table, tmp_path: Path, ids: range) -> dict[int, Any]:
    """Rows with distinct values (and a shared one), an attachment on every third."""
    rows = []
    for i in ids:
        doc = None
        if i % 3 == 0:
            doc = tmp_path / f"doc{i}.txt"
            doc.write_bytes(b"document %d" % i)
        rows.append({"id": i, "trace": value(i % 7 if i % 5 == 0 else i), "doc": doc})
    with engine.begin() as conn:
        conn.execute(sa.insert(table), rows)
    return {r["id"]: r for r in rows}


def check(engine: sa.Engine, table: sa.Table, expected: dict[int, Any]) -> None:
    with engine.connect() as conn:
        got = {r.id: r for r in conn.execute(sa.select(table))}
    assert sorted(got) == sorted(expected)
    for i, row in expected.items():
        np.testing.assert_array_equal(got[i].trace, row["trace"])
        if row["doc"] is None:
            assert got[i].doc is None
        else:
            assert Path(got[i].doc).read_bytes() == Path(row["doc"]).read_bytes()


def test_move_between_stores_keeps_every_value_and_switches_the_column(
    engine: sa.Engine, stores: Any, tmp_path: Path
) -> None:
    djb.install(engine)
    old = model("a")
    old.metadata.create_all(engine)
    expected = fill(engine, old, tmp_path, range(40))
    new = model("b")
    report = djb.move(engine, old.c.trace, to_store="b", batch=7)
    assert report.switched and report.ok
    assert (report.source, report.destination) == ("a", "b")
    assert report.values == report.copied > 0
    report = djb.move(engine, old.c.doc, to_store="b")
    assert report.switched
    check(engine, new, expected)
    ext = djb.externals(engine)
    # the source keeps its payloads until it is swept: the move can be undone until then
    assert len(ext["a"].unused()) == len(ext["b"].used()) > 0
    assert ext["b"].verify().ok
    ext["a"].sweep(grace=__import__("datetime").timedelta(0))
    assert not ext["a"].used() and not ext["a"].paths()
    check(engine, new, expected)
    again = djb.move(engine, new.c.trace, to_store="b")
    assert again.already and not again.copied


def test_move_into_the_row_and_back_keeps_every_value(
    engine: sa.Engine, stores: Any, tmp_path: Path
) -> None:
    djb.install(engine)
    old = model("a")
    old.metadata.create_all(engine)
    expected = fill(engine, old, tmp_path, range(30))
    for column in ("trace", "doc"):
        report = djb.move(engine, old.c[column], to_store=None, batch=4)
        assert report.switched and (report.source, report.destination) == ("a", None)
    check(engine, model(None), expected)
    assert not djb.externals(engine)["a"].used()
    for column in ("trace", "doc"):
        report = djb.move(engine, old.c[column], to_store="b", batch=4)
        assert report.switched and (report.source, report.destination) == (None, "b")
    check(engine, model("b"), expected)
    assert djb.externals(engine)["b"].verify().ok
    # the database enforces the new reference
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.exec_driver_sql("UPDATE rec SET trace = NULL, doc = NULL WHERE id = 1")
        conn.execute(sa.text("UPDATE rec SET trace = :h WHERE id = 1"), {"h": b"\x01" * 16})


def test_dry_run_counts_what_a_move_would_copy_and_changes_nothing(
    engine: sa.Engine, stores: Any, tmp_path: Path
) -> None:
    djb.install(engine)
    old = model("a")
    old.metadata.create_all(engine)
    expected = fill(engine, old, tmp_path, range(10))
    sizes = {len(djb.pack(r["trace"])) for r in expected.values()}
    report = djb.move(engine, old.c.trace, to_store="b", dry_run=True)
    assert report.dry_run and not report.switched
    assert report.values == len({r["trace"].tobytes() for r in expected.values()})
    assert report.bytes == report.values * sizes.pop()
    into_row = djb.move(engine, old.c.trace, to_store=None, dry_run=True)
    assert into_row.values == 10
    check(engine, old, expected)
    assert not Path(stores["b"]["location"]).exists()
