"""Relocating a whole store: ``ExternalTable.copy_to`` and ``sa-djblob copy-store``.

Every payload an externals row promises is copied to the new location, verified there
by its hash; a rerun (after a kill, or as the final catch-up pass) copies only what is
missing or wrong; once the configuration names the new location every value reads back
and ``verify`` is clean.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from conftest import S3Server
from helpers.common import value

import sa_djblob as djb
from sa_djblob._externals import relocate
from sa_djblob.cli import cli

HELPERS = Path(__file__).parent / "helpers"
ROWS = 12


def _file_spec(tmp_path: Path, name: str) -> dict[str, Any]:
    return {"protocol": "file", "location": str(tmp_path / name), "stage": str(tmp_path / "stage")}


def _s3_spec(server: S3Server, bucket: str, tmp_path: Path, location: str) -> dict[str, Any]:
    return server.store_spec(bucket, location, stage=str(tmp_path / "stage"))


def _table(engine: sa.Engine) -> sa.Table:
    md = sa.MetaData()
    t = sa.Table(
        "item",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("b", djb.Blob(store="shared"), nullable=True),
        sa.Column("a", djb.Attach(store="shared"), nullable=True),
        sa.Column("f", djb.Filepath(store="shared"), nullable=True),
    )
    md.create_all(engine)
    return t


def _populate(engine: sa.Engine, tmp_path: Path, rows: int = ROWS) -> tuple[sa.Table, Any]:
    """*rows* rows with a blob, an attachment and a filepath each, plus two unused entries."""
    djb.install(engine)
    table = _table(engine)
    stage = tmp_path / "stage"
    files = tmp_path / "files"
    files.mkdir()
    expected: dict[int, tuple[Any, bytes, bytes]] = {}
    params = []
    for i in range(rows + 2):
        att = files / f"note{i}.txt"
        att.write_bytes(b"attachment %d " % i * (i + 1))
        raw = stage / f"session{i}" / "raw.dat"
        raw.parent.mkdir(parents=True, exist_ok=True)
        raw.write_bytes(b"raw samples %d " % i * (i + 2))
        params.append({"id": i, "b": value(i), "a": str(att), "f": str(raw)})
        expected[i] = (value(i), att.read_bytes(), raw.read_bytes())
    with engine.begin() as conn:
        conn.execute(sa.insert(table), params)
        conn.execute(sa.update(table).where(table.c.id >= rows).values(b=None, a=None, f=None))
    return table, {i: v for i, v in expected.items() if i < rows}


def _switch(spec: dict[str, Any], tmp_path: Path) -> None:
    """The config change of the switch-over; the stage is emptied so that every filepath
    value is downloaded from the new location when read."""
    djb.config["stores"] = {"shared": spec}
    for f in (tmp_path / "stage").rglob("*"):
        if f.is_file():
            f.unlink()


def _check_values(engine: sa.Engine, table: sa.Table, expected: dict[int, Any]) -> None:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(table).where(table.c.id.in_(list(expected)))).all()
    assert len(rows) == len(expected)
    for r in rows:
        b, a, f = expected[r.id]
        np.testing.assert_array_equal(r.b, b)
        assert Path(r.a).read_bytes() == a
        assert Path(r.f).read_bytes() == f


def _entries(ext: djb.ExternalTable) -> int:
    return len(ext.paths())


@pytest.mark.parametrize("direction", ["file-to-s3", "s3-to-file"])
def test_copy_to_relocates_every_payload_and_reads_back_after_the_switch(
    engine: sa.Engine, s3_server: S3Server, s3_bucket: str, tmp_path: Path, direction: str
) -> None:
    file_spec = _file_spec(tmp_path, "old")
    s3_spec = _s3_spec(s3_server, s3_bucket, tmp_path, "lab")
    old, new = (file_spec, s3_spec) if direction == "file-to-s3" else (s3_spec, file_spec)
    djb.config["stores"] = {"shared": old}
    table, expected = _populate(engine, tmp_path)
    ext = djb.externals(engine)["shared"]
    total = _entries(ext)
    assert total == 3 * (ROWS + 2)

    report = ext.copy_to(new, progress=False, batch=7)
    assert report.ok, report
    assert (report.copied, report.skipped, report.failed) == (total, 0, [])
    assert report.bytes_copied == sum(s for s in _sizes(engine, ext))

    again = ext.copy_to(new, progress=False)
    assert again.ok and (again.copied, again.skipped) == (0, total), "a second run copies nothing"

    _switch(new, tmp_path)
    _check_values(engine, table, expected)
    moved = djb.externals(engine)["shared"]
    checked = moved.verify(progress=False, include_unused=True)
    assert checked.ok and checked.checked == total
    # the old location is intact until it is retired: the move can be undone
    _switch(old, tmp_path)
    assert djb.externals(engine)["shared"].verify(progress=False, include_unused=True).ok
    _switch(new, tmp_path)
    # writers and sweeps accept the new location (its owner marker names this database)
    raw = tmp_path / "stage" / "after" / "raw.dat"
    raw.parent.mkdir(parents=True)
    raw.write_bytes(b"written after the switch")
    with engine.begin() as conn:
        conn.execute(sa.insert(table), {"id": 99, "b": value(99), "f": str(raw)})
    swept = moved.sweep(grace=datetime.timedelta(0), progress=False)
    assert swept.ok and swept.rows_deleted == 6, "the unused entries, at the new location"


def _sizes(engine: sa.Engine, ext: djb.ExternalTable) -> list[int]:
    with engine.connect() as conn:
        return [int(s) for s in conn.scalars(sa.select(ext.table.c.size))]


@pytest.mark.backends("mysql", "postgresql")
def test_copy_to_while_writers_and_sweeps_run_then_a_catch_up_pass_loses_nothing(
    engine: sa.Engine, s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    old = _file_spec(tmp_path, "old")
    new = _s3_spec(s3_server, s3_bucket, tmp_path, "moved")
    djb.config["stores"] = {"shared": old}
    table, expected = _populate(engine, tmp_path)
    ext = djb.externals(engine)["shared"]
    stop = threading.Event()
    written: dict[int, Any] = {}
    problems: list[BaseException] = []

    def writer() -> None:  # inserts new values; deletes every other one again
        i = 1000
        try:
            while not stop.is_set():
                with engine.begin() as conn:
                    conn.execute(sa.insert(table), {"id": i, "b": value(i)})
                    if i % 2:
                        conn.execute(sa.delete(table).where(table.c.id == i - 1))
                written[i] = value(i)
                if i % 2:
                    del written[i - 1]
                i += 1
        except BaseException as exc:  # reported by the test
            problems.append(exc)

    def sweeper() -> None:  # collects the deleted values' entries and payloads meanwhile
        try:
            while not stop.is_set():
                swept = ext.sweep(grace=datetime.timedelta(0), progress=False, batch=3)
                assert swept.ok, swept.errors
        except BaseException as exc:  # reported by the test
            problems.append(exc)

    threads = [threading.Thread(target=writer), threading.Thread(target=sweeper)]
    for th in threads:
        th.start()
    try:
        deadline = time.monotonic() + 30
        while len(written) < 4 and time.monotonic() < deadline and not problems:
            time.sleep(0.05)
        first = ext.copy_to(new, progress=False, batch=5)
    finally:
        stop.set()
        for th in threads:
            th.join(60)
    assert not problems, problems
    assert first.failed == [] and first.errors == [], "a swept entry is no failure"

    # the writers have stopped: the catch-up pass copies what they wrote meanwhile
    final = ext.copy_to(new, progress=False)
    assert final.ok, final
    _switch(new, tmp_path)
    _check_values(engine, table, expected)
    with engine.connect() as conn:
        got = dict(conn.execute(sa.select(table.c.id, table.c.b).where(table.c.id >= 1000)).all())
    assert sorted(got) == sorted(written)
    for i, v in written.items():
        np.testing.assert_array_equal(got[i], v)
    assert djb.externals(engine)["shared"].verify(progress=False, include_unused=True).ok


@pytest.mark.backends("sqlite")
def test_copy_to_dry_run_reports_counts_and_bytes_and_copies_nothing(
    engine: sa.Engine, tmp_path: Path
) -> None:
    djb.config["stores"] = {"shared": _file_spec(tmp_path, "old")}
    _populate(engine, tmp_path, rows=3)
    ext = djb.externals(engine)["shared"]
    new = _file_spec(tmp_path, "new")
    report = ext.copy_to(new, dry_run=True, progress=False)
    assert report.dry_run and report.ok
    assert report.copied == _entries(ext) and report.bytes_copied == sum(_sizes(engine, ext))
    assert not (tmp_path / "new").exists()


@pytest.mark.backends("sqlite", "postgresql")
@pytest.mark.parametrize("lookup", ["listed", "listed-across-batches", "per-object"])
def test_copy_to_rerun_copies_only_what_is_missing_or_wrong(
    engine: sa.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lookup: str
) -> None:
    batch = 4 if lookup == "listed-across-batches" else 1000
    monkeypatch.setattr(relocate, "_LIST_MIN", 10**9 if lookup == "per-object" else 1)
    djb.config["stores"] = {"shared": _file_spec(tmp_path, "old")}
    table, expected = _populate(engine, tmp_path, rows=4)
    ext = djb.externals(engine)["shared"]
    new = _file_spec(tmp_path, "new")
    assert ext.copy_to(new, progress=False).ok
    dest = djb.stores.build_store("shared", new)
    paths = [p for _, p in ext.paths()]
    moved = [Path(str(p).replace(str(tmp_path / "old"), str(tmp_path / "new"))) for p in paths]
    moved[0].unlink()  # missing
    moved[1].write_bytes(moved[1].read_bytes() + b"!")  # wrong size
    data = bytearray(moved[2].read_bytes())
    data[0] ^= 0xFF
    moved[2].write_bytes(bytes(data))  # same size, wrong bytes
    assert dest.exists(PurePosixPath(moved[3]))

    quick = ext.copy_to(new, progress=False, batch=batch)
    assert quick.ok and quick.copied == 2, "sizes are checked: the missing and the torn one"
    thorough = ext.copy_to(new, progress=False, verify_existing=True, batch=batch)
    assert thorough.ok and thorough.copied == 1 and thorough.skipped == _entries(ext) - 1
    _switch(new, tmp_path)
    _check_values(engine, table, expected)
    assert djb.externals(engine)["shared"].verify(progress=False, include_unused=True).ok


@pytest.mark.backends("sqlite")
@pytest.mark.parametrize("streamed", [False, True], ids=["in-memory", "streamed"])
def test_copy_to_never_places_a_payload_that_does_not_match_its_hash(
    engine: sa.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, streamed: bool
) -> None:
    if streamed:  # every payload takes the path of large ones
        monkeypatch.setattr(relocate, "_IN_MEMORY", 16)
    djb.config["stores"] = {"shared": _file_spec(tmp_path, "old")}
    _populate(engine, tmp_path, rows=2)
    ext = djb.externals(engine)["shared"]
    key, path = next((k, p) for k, p in ext.paths() if p.name == k.hex)  # a blob
    Path(path).write_bytes(Path(path).read_bytes()[:-1] + b"\0")  # corrupt at the source
    new = _file_spec(tmp_path, "new")
    report = ext.copy_to(new, progress=False)
    assert not report.ok
    assert [(k, why) for k, _, why in report.failed] == [(key, "corrupt at the source")]
    assert report.copied == _entries(ext) - 1
    assert not (tmp_path / "new" / str(path.relative_to(tmp_path / "old"))).exists()


@pytest.mark.backends("sqlite")
def test_copy_to_reads_each_copy_back_and_removes_one_the_new_location_garbled(
    engine: sa.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    djb.config["stores"] = {"shared": _file_spec(tmp_path, "old")}
    _populate(engine, tmp_path, rows=1)
    ext = djb.externals(engine)["shared"]
    new_root = str(tmp_path / "new")
    put = djb.FileStore.put

    def garbling_put(self: djb.FileStore, path: PurePosixPath, data: Any) -> None:
        if str(path).startswith(new_root) and ".sa_djblob-owner" not in str(path):
            data = bytes(data[:-1]) + bytes([data[-1] ^ 1])  # a flipped bit, the same size
        put(self, path, data)

    monkeypatch.setattr(djb.FileStore, "put", garbling_put)
    report = ext.copy_to(_file_spec(tmp_path, "new"), progress=False)
    assert report.copied == 0 and len(report.failed) == _entries(ext)
    assert {why for _, _, why in report.failed} == {
        "does not match its hash at the new location after the copy"
    }
    assert not [p for p in (tmp_path / "new").rglob("*") if p.is_file() and "owner" not in str(p)]


@pytest.mark.backends("sqlite", "mysql")
def test_copy_to_reports_a_lost_payload_but_not_one_a_sweep_took_meanwhile(
    engine: sa.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    djb.config["stores"] = {"shared": _file_spec(tmp_path, "old")}
    djb.config["threads"] = 1  # one payload after the other: the sweep lands mid-batch
    _populate(engine, tmp_path, rows=2)
    ext = djb.externals(engine)["shared"]
    total, unused = _entries(ext), len(ext.unused())
    assert unused == 6
    key, path = next((k, p) for k, p in ext.paths() if p.name == k.hex and k in ext.used())
    Path(path).unlink()  # a referenced payload lost at the source
    swept: list[int] = []

    def sweep_once(_: PurePosixPath) -> None:
        if not swept:
            swept.append(ext.sweep(grace=datetime.timedelta(hours=1), progress=False).rows_deleted)

    monkeypatch.setattr(relocate, "_after_copy", sweep_once)
    report = ext.copy_to(_file_spec(tmp_path, "new"), progress=False)
    assert swept == [unused]
    assert [(k, why) for k, _, why in report.failed] == [(key, "missing at the source")]
    assert report.vanished >= 1 and report.vanished + report.copied + 1 == total


@pytest.mark.backends("sqlite")
def test_copy_to_claims_the_new_location_and_refuses_another_owners(
    engine: sa.Engine, tmp_path: Path
) -> None:
    djb.config["stores"] = {"shared": _file_spec(tmp_path, "old")}
    _populate(engine, tmp_path, rows=2)
    ext = djb.externals(engine)["shared"]
    taken = _file_spec(tmp_path, "taken")
    marker = tmp_path / "taken" / ".sa_djblob-owner" / ext.schema
    marker.parent.mkdir(parents=True)
    marker.write_text("another-database store=shared\n")
    with pytest.raises(djb.StoreError, match="belongs to another owner"):
        ext.copy_to(taken, progress=False)
    assert sorted(p.name for p in (tmp_path / "taken").iterdir()) == [".sa_djblob-owner"]

    new = _file_spec(tmp_path, "new")
    assert ext.copy_to(new, progress=False).ok
    assert (tmp_path / "new" / ".sa_djblob-owner" / ext.schema).is_file()


@pytest.mark.backends("sqlite")
def test_copy_to_refuses_the_current_location_and_another_hash(
    engine: sa.Engine, tmp_path: Path
) -> None:
    old = _file_spec(tmp_path, "old")
    djb.config["stores"] = {"shared": old}
    _populate(engine, tmp_path, rows=1)
    ext = djb.externals(engine)["shared"]
    with pytest.raises(djb.ConfigError, match="current location"):
        ext.copy_to(dict(old), progress=False)
    with pytest.raises(djb.ConfigError, match="hash"):
        ext.copy_to({**_file_spec(tmp_path, "new"), "hash": "sha256"}, progress=False)


def test_copy_to_killed_at_a_random_point_then_rerun_loses_nothing(
    engine: sa.Engine, s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    old = _file_spec(tmp_path, "old")
    new = _s3_spec(s3_server, s3_bucket, tmp_path, "moved")
    djb.config["stores"] = {"shared": old}
    table, expected = _populate(engine, tmp_path)
    ext = djb.externals(engine)["shared"]
    total = _entries(ext)
    stop_after = random.randint(1, total - 2)
    url = engine.url.render_as_string(hide_password=False)
    args = [str(HELPERS / "copy_killed.py"), url, json.dumps(old), json.dumps(new)]
    proc = subprocess.Popen(
        [sys.executable, *args, str(stop_after)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("COPIED"):
        proc.kill()
        raise AssertionError(f"the copy never got going: {proc.communicate(timeout=10)[1][-2000:]}")
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    proc.stdout.close()
    assert proc.stderr is not None
    proc.stderr.close()

    report = ext.copy_to(new, progress=False)
    assert report.ok, report
    assert report.skipped >= stop_after and report.copied + report.skipped == total
    _switch(new, tmp_path)
    _check_values(engine, table, expected)
    assert djb.externals(engine)["shared"].verify(progress=False, include_unused=True).ok


@pytest.mark.backends("sqlite")
def test_copy_to_on_the_async_twin(tmp_path: Path) -> None:
    pytest.importorskip("aiosqlite")
    from sqlalchemy.ext.asyncio import create_async_engine

    djb.config["stores"] = {"shared": _file_spec(tmp_path, "old")}
    url = f"sqlite:///{tmp_path / 'a.sqlite'}"
    sync = sa.create_engine(url)
    _populate(sync, tmp_path, rows=2)
    djb.uninstall(sync)
    sync.dispose()

    async def main() -> Any:
        engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'a.sqlite'}")
        try:
            return await djb.externals(engine)["shared"].copy_to(
                _file_spec(tmp_path, "new"), progress=False
            )
        finally:
            await engine.dispose()

    report = asyncio.run(main())
    assert report.ok and report.copied == 3 * 4


@pytest.mark.backends("sqlite", "mysql")
def test_cli_copy_store_copies_reports_and_masks_keys(
    engine: sa.Engine, s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    old = _file_spec(tmp_path, "old")
    djb.config["stores"] = {"shared": old}
    _populate(engine, tmp_path, rows=3)
    total = _entries(djb.externals(engine)["shared"])
    cfg = tmp_path / "djb.json"
    cfg.write_text(json.dumps({"stores": {"shared": old}}))
    new = _s3_spec(s3_server, s3_bucket, tmp_path, "lab")
    target = tmp_path / "new.toml"
    target.write_text(
        "".join(f"{k} = {json.dumps(v)}\n" for k, v in new.items() if k != "secure")
        + "secure = false\n"
    )
    url = engine.url.render_as_string(hide_password=False)
    base = ["--url", url, "--config", str(cfg), "--no-progress"]

    runner = CliRunner()
    dry = runner.invoke(
        cli, [*base, "copy-store", "--store", "shared", "--to", str(target), "--dry-run"]
    )
    assert dry.exit_code == 0, dry.output
    assert "dry run: nothing copied" in dry.output
    res = runner.invoke(cli, [*base, "copy-store", "--store", "shared", "--to", str(target)])
    assert res.exit_code == 0, res.output
    assert new["secret_key"] not in res.output and new["access_key"] not in res.output
    again = runner.invoke(
        cli, [*base, "--json", "copy-store", "--store", "shared", "--to", str(target)]
    )
    data = json.loads(again.output)["stores"]["shared"]
    assert (data["copied"], data["skipped"], data["ok"]) == (0, total, True)

    # a djb config file naming the store works too; a missing store is a usage error
    full = tmp_path / "new.json"
    full.write_text(json.dumps({"stores": {"shared": new}}))
    res = runner.invoke(cli, [*base, "copy-store", "--store", "shared", "--to", str(full)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(cli, [*base, "copy-store", "--to", str(full)])
    assert res.exit_code == 2 and "--store" in res.output

    # a payload that cannot be copied: exit code 1, and the reason
    ext = djb.externals(engine)["shared"]
    blob = next(p for k, p in ext.paths() if p.name == k.hex)
    Path(blob).write_bytes(b"not the payload")
    other = tmp_path / "other.json"
    other.write_text(json.dumps(_file_spec(tmp_path, "other")))
    res = runner.invoke(cli, [*base, "copy-store", "--store", "shared", "--to", str(other)])
    assert res.exit_code == 1 and "corrupt at the source" in res.output
