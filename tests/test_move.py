"""djb.move: a column's values go to another store, into the row or out of it, and the
column is switched, without a committed row ever referencing a missing payload."""

from __future__ import annotations

import datetime
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
    rows: list[dict[str, Any]] = []
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


_KILLED_MOVER = """
import json, os, sys, time
import sqlalchemy as sa
import sa_djblob as djb
from sa_djblob._externals import move as mv
cfg = json.loads(os.environ["DJB_MOVE_TEST"])
djb.config["stores"] = cfg["stores"]
engine = sa.create_engine(cfg["url"])
djb.install(engine)
t = sa.Table("rec", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True),
             sa.Column(cfg["column"], djb.Blob(store=cfg["source"])))
mv._after_batch = lambda n: time.sleep(0.02)
print("start", flush=True)
djb.move(engine, t.c[cfg["column"]], to_store=cfg["to"], batch=3)
print("done", flush=True)
"""


def _move_killed(
    database: Any, stores: Any, column: str, source: Any, to: Any, delay: float
) -> bool:
    """Run a move in a child process and SIGKILL it after *delay* seconds; True if it
    finished first."""
    import json
    import os
    import subprocess
    import sys
    import time

    env = dict(os.environ)
    env["DJB_MOVE_TEST"] = json.dumps(
        {
            "url": database.url.render_as_string(hide_password=False),
            "stores": stores,
            "column": column,
            "source": source,
            "to": to,
        }
    )
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[1]), env.get("PYTHONPATH", "")])
    with subprocess.Popen(  # closes the stdout pipe on exit
        [sys.executable, "-c", _KILLED_MOVER], env=env, stdout=subprocess.PIPE, text=True
    ) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "start"
            time.sleep(delay)
            proc.kill()
        finally:
            proc.wait(30)
    return proc.returncode == 0


@pytest.mark.slow
def test_a_move_killed_at_random_points_finishes_when_run_again(
    database: Any, engine: sa.Engine, stores: Any, tmp_path: Path
) -> None:
    import random

    djb.install(engine)
    old = model("a")
    old.metadata.create_all(engine)
    expected = fill(engine, old, tmp_path, range(60))
    rng = random.Random(18)
    where: str | None = "a"
    killed = 0
    for to in ("b", None, "a"):
        for _ in range(2):
            delay = rng.uniform(0.05, 0.8)
            killed += not _move_killed(database, dict(stores), "trace", where, to, delay)
            with engine.connect() as conn:  # whatever state the kill left: every value reads
                rows = conn.execute(sa.text("SELECT id FROM rec")).all()
            assert len(rows) == len(expected)
        report = djb.move(engine, model(where).c.trace, to_store=to)
        assert report.switched or report.already
        assert djb.move(engine, model(to).c.trace, to_store=to).already
        where = to
        # the doc column never moved: the table mixes both places
        check(engine, _with_trace(to), expected)
    assert killed >= 3  # most kills landed while the move was running
    assert djb.externals(engine)["a"].verify().ok
    cols = {c["name"] for c in sa.inspect(engine).get_columns("rec")}
    assert cols == {"id", "trace", "doc"}


def _with_trace(store: str | None) -> sa.Table:
    """``rec`` with the trace column in *store* and the doc column in store 'a'."""
    return sa.Table(
        "rec",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("trace", djb.Blob(store=store), nullable=True),
        sa.Column("doc", djb.Attach(store="a"), nullable=True),
    )


@pytest.mark.slow
@pytest.mark.backends("mysql", "postgresql")
def test_writers_and_sweeps_keep_running_while_a_column_moves_to_s3_and_back(
    engine: sa.Engine, s3_server: Any, s3_bucket: str, tmp_path: Path
) -> None:
    """Writers insert and update with the model they were deployed with, sweeps of both
    stores run in a loop; a writer whose model names the old store is refused by the
    database once the column switched, and is then redeployed. Every committed value reads
    back exactly from the new store, and the new store verifies."""
    import threading
    import time

    djb.config["stores"] = {
        "a": {"protocol": "file", "location": str(tmp_path / "store-a")},
        "s3": s3_server.store_spec(s3_bucket),
    }
    djb.install(engine)
    old = model("a")
    old.metadata.create_all(engine)
    committed = {i: r["trace"] for i, r in fill(engine, old, tmp_path, range(60)).items()}
    stop = threading.Event()
    errors: list[BaseException] = []
    refused: list[str] = []
    deployed = {"store": "a"}

    def writer() -> None:
        i = 1000
        while not stop.is_set():
            table = model(deployed["store"])
            new = {"id": i, "trace": value(i)}
            target = i % 60 if i % 3 == 0 else None  # every third write updates a row
            try:
                with engine.begin() as conn:
                    if target is None:
                        conn.execute(sa.insert(table), new)
                    else:
                        conn.execute(
                            sa.update(table).where(table.c.id == target), {"trace": new["trace"]}
                        )
            except sa.exc.IntegrityError as exc:  # the column switched: redeploy
                refused.append(str(exc.orig)[:80])
                deployed["store"] = "s3" if deployed["store"] == "a" else "a"
                continue
            except sa.exc.OperationalError as exc:  # a deadlock or lock timeout: retry
                if "deadlock" in str(exc).lower() or "lock" in str(exc).lower():
                    continue
                errors.append(exc)
                return
            except BaseException as exc:
                errors.append(exc)
                return
            committed[target if target is not None else i] = new["trace"]
            i += 1
            time.sleep(0.01)  # an application's pace, not a benchmark's

    def sweeper() -> None:
        ext = djb.externals(engine)
        while not stop.is_set():
            try:
                for name in ("a", "s3"):
                    ext[name].sweep(grace=__import__("datetime").timedelta(0), progress=False)
            except BaseException as exc:
                errors.append(exc)
                return
            time.sleep(0.05)

    threads = [threading.Thread(target=writer), threading.Thread(target=sweeper)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.3)
        there = djb.move(engine, old.c.trace, to_store="s3", batch=16)
        time.sleep(0.3)
        back = djb.move(engine, old.c.trace, to_store="a", batch=16)
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not errors, errors
    assert there.switched and back.switched
    assert len(refused) >= 1  # the old model was refused, not silently kept
    final = _with_trace("a")
    with engine.connect() as conn:
        got = {r.id: r.trace for r in conn.execute(sa.select(final.c.id, final.c.trace))}
    assert set(got) == set(committed)
    for i, v in committed.items():
        np.testing.assert_array_equal(got[i], v)
    assert djb.externals(engine)["a"].verify().ok


def test_cli_move_counts_then_moves_a_column_and_asks_for_its_kind_when_it_cannot_tell(
    engine: sa.Engine, stores: Any, tmp_path: Path
) -> None:
    import json

    from click.testing import CliRunner

    from sa_djblob.cli import cli

    djb.install(engine)
    old = model("a")
    old.metadata.create_all(engine)
    expected = fill(engine, old, tmp_path, range(12))
    cfg = tmp_path / "djb.json"
    cfg.write_text(json.dumps({"stores": stores}))
    url = engine.url.render_as_string(hide_password=False)

    def run(*args: str, input: str | None = None) -> Any:
        base = ["--url", url, "--config", str(cfg), "move"]
        return CliRunner().invoke(cli, [*base, *args], input=input, catch_exceptions=False)

    res = run("rec.trace", "--to", "b", "--dry-run", "--json")
    assert res.exit_code == 0, res.output
    dry = json.loads(res.output)
    assert dry["dry_run"] and dry["values"] == 11 and not dry["switched"]
    res = run("rec.trace", "--to", "b", input="n\n")
    assert res.exit_code == 1 and "nothing moved" in res.output
    res = run("rec.trace", "--to", "b", "--yes")
    assert res.exit_code == 0, res.output
    assert "'a' -> 'b'" in res.output and "switched=True" in res.output
    res = run("rec.doc", "--to", "row", "--yes")
    if engine.dialect.name == "sqlite":  # no column comments: the kind must be given
        assert res.exit_code == 2 and "--kind" in res.output
        res = run("rec.doc", "--to", "row", "--yes", "--kind", "attach")
    assert res.exit_code == 0, res.output
    final = sa.Table(
        "rec",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("trace", djb.Blob(store="b")),
        sa.Column("doc", djb.Attach()),
    )
    check(engine, final, expected)
    res = run("rec.doc", "--to", "row", "--yes", "--kind", "attach")
    assert res.exit_code == 0 and "already there" in res.output


def test_a_copy_the_destination_does_not_hold_exactly_stops_the_move_before_the_switch(
    engine: sa.Engine, stores: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    djb.install(engine)
    old = model("a")
    old.metadata.create_all(engine)
    expected = fill(engine, old, tmp_path, range(6))
    real_put = djb.FileStore.put

    def torn_put(self: Any, path: Any, data: Any) -> None:
        real_put(self, path, bytes(data)[:-1] if self.name == "b" else data)

    monkeypatch.setattr(djb.FileStore, "put", torn_put)
    with pytest.raises(djb.IntegrityError, match="does not hold"):
        djb.move(engine, old.c.trace, to_store="b")
    check(engine, old, expected)  # still in store 'a', every value intact
    monkeypatch.setattr(djb.FileStore, "put", real_put)
    assert djb.move(engine, old.c.trace, to_store="b").switched  # the rerun finishes
    check(engine, _with_trace("b"), expected)
    assert djb.externals(engine)["b"].verify().ok


def test_after_blobs_move_into_the_row_a_writer_on_the_old_model_is_refused(
    engine: sa.Engine, stores: Any, tmp_path: Path
) -> None:
    """A process still running ``Blob(store='a')`` would put a 16-byte key into the in-row
    column (no foreign key there to refuse it): the column's guard refuses it, and the
    guard goes again when the values move back out to a store."""
    djb.install(engine)
    old = model("a")
    old.metadata.create_all(engine)
    expected = fill(engine, old, tmp_path, range(5))
    assert djb.move(engine, old.c.trace, to_store=None).switched
    with pytest.raises(sa.exc.DBAPIError), engine.begin() as conn:
        conn.execute(sa.insert(old), {"id": 99, "trace": value(99)})
    inrow = _with_trace(None)
    with engine.begin() as conn:  # the new model writes as usual
        conn.execute(sa.insert(inrow), {"id": 99, "trace": value(99), "doc": None})
    expected[99] = {"id": 99, "trace": value(99), "doc": None}
    check(engine, inrow, expected)
    assert djb.move(engine, inrow.c.trace, to_store="b").switched
    check(engine, _with_trace("b"), expected)
    with engine.begin() as conn:
        conn.execute(sa.insert(_with_trace("b")), {"id": 100, "trace": value(100), "doc": None})


@pytest.mark.backends("mysql", "postgresql")
@pytest.mark.parametrize(("source", "to"), [("a", None), (None, "b")])
def test_rows_written_while_values_move_into_or_out_of_the_row_end_up_converted(
    engine: sa.Engine,
    stores: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    source: str | None,
    to: str | None,
) -> None:
    """Between the batches a writer (on the model of the column's place before the switch)
    updates rows already converted, sets one to NULL and inserts new ones: the switch
    converts them again, so the new column holds what the writer committed last."""
    from sa_djblob._externals import move as mv

    djb.install(engine)
    before = _with_trace(source)
    before.metadata.create_all(engine)
    expected = fill(engine, before, tmp_path, range(20))
    for row in expected.values():
        row["doc"] = None if row["doc"] is None else row["doc"]
    writes = iter(range(3))

    def writer(done: int) -> None:
        step = next(writes, None)
        if step is None:
            return
        with engine.begin() as conn:
            conn.execute(sa.update(before).where(before.c.id == step), {"trace": value(500 + step)})
            conn.execute(sa.update(before).where(before.c.id == 10 + step), {"trace": None})
            conn.execute(sa.insert(before), {"id": 100 + step, "trace": value(600 + step)})
        expected[step]["trace"] = value(500 + step)
        expected[10 + step]["trace"] = None
        expected[100 + step] = {"id": 100 + step, "trace": value(600 + step), "doc": None}

    monkeypatch.setattr(mv, "_after_batch", writer)
    assert djb.move(engine, before.c.trace, to_store=to, batch=4).switched
    after = _with_trace(to)
    with engine.connect() as conn:
        got = {r.id: r.trace for r in conn.execute(sa.select(after.c.id, after.c.trace))}
    assert sorted(got) == sorted(expected)
    for i, row in expected.items():
        if row["trace"] is None:
            assert got[i] is None, i
        else:
            np.testing.assert_array_equal(got[i], row["trace"])


@pytest.mark.backends("mysql", "postgresql")
def test_a_sweep_of_the_source_never_deletes_a_payload_the_move_is_copying(
    engine: sa.Engine, stores: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between the move's read of a batch and its copy of a payload, a writer replaces the
    last row that used it and a sweep of the source runs: the sweep skips the batch's rows
    (the move holds them as a writer does) instead of deleting the payload under the copy."""
    from sa_djblob._externals import move as mv

    djb.install(engine)
    old = model("a")
    old.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(old), [{"id": 1, "trace": value(1)}, {"id": 2, "trace": value(2)}])
    swept: list[Any] = []
    real = mv._Mover._ensure

    def ensure(self: Any, item: Any) -> int:
        if not swept:  # once: the application moves on while the batch is being copied
            with engine.begin() as conn:
                conn.execute(sa.update(old).values(trace=value(99)))
            swept.append(
                djb.externals(engine)["a"].sweep(grace=datetime.timedelta(0), progress=False)
            )
        return int(real(self, item))

    monkeypatch.setattr(mv._Mover, "_ensure", ensure)
    report = djb.move(engine, old.c.trace, to_store="b", batch=16)
    assert report.values >= 1
    with engine.connect() as conn:
        got = conn.execute(sa.select(model("b").c.trace)).scalars().all()
    assert all(np.array_equal(v, value(99)) for v in got)
