"""Converting a 0.14 schema (written by sa_djblob) to DataJoint 2.x's layout, and back.

The 2.x side is checked here by reading the layout as DataJoint 2.3.5 reads it (follow the
pointer's ``path``, check the MD5, unpack the blob or split the attachment);
``test_dj2convert_datajoint.py`` has DataJoint 0.14 write and DataJoint 2.3.5 read.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from conftest import Database

import sa_djblob as djb
from sa_djblob import dj2convert
from sa_djblob.cli import cli

HELPERS = Path(__file__).parent / "helpers"
SERVERS = pytest.mark.backends("mysql", "postgresql")

VALUES = {
    0: np.arange(12, dtype=np.float64).reshape(3, 4) / 7.0,
    1: {"name": "trial", "w": [0.5, 1.25], "trace": np.arange(6, dtype=np.float32)},
    2: np.linspace(0.0, 1.0, 4000),  # compressed
    3: np.arange(12, dtype=np.float64).reshape(3, 4) / 7.0,  # the same payload as row 0
}
FILES = {"notes.txt": b"recorded on day 3\n", "trace.bin": bytes(range(256)) * 8, "empty.dat": b""}


def b32(digest: bytes) -> str:
    return base64.b32encode(digest).decode().rstrip("=").lower()


def item_table(md: sa.MetaData) -> sa.Table:
    return sa.Table(
        "item",
        md,
        sa.Column("item_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("b0", djb.Blob(), nullable=False),
        sa.Column("a0", djb.Attach(), nullable=True, comment="it's the rig's: raw \\ notes"),
        sa.Column("b1", djb.Blob(store="local"), nullable=False, comment="trace: 'a' \\ b"),
        sa.Column("a1", djb.Attach(store="local"), nullable=True),
        sa.Column("raw", sa.LargeBinary, nullable=True),
    )


@pytest.fixture
def lab(
    engine: sa.Engine, database: Database, tmp_path: Path, request: pytest.FixtureRequest
) -> dict[str, Any]:
    """A 0.14 schema written by sa_djblob: in-row and stored blobs and attachments (a file
    store, or an S3 store when the test is parametrized with ``lab_store="s3"``)."""
    store = tmp_path / "store"
    spec: dict[str, Any] = {"protocol": "file", "location": str(store)}
    if getattr(request, "param", "file") == "sha256":
        spec["hash"] = "sha256"
    if getattr(request, "param", "file") == "s3":
        server = request.getfixturevalue("s3_server")
        spec = server.store_spec(request.getfixturevalue("s3_bucket"), location="lab/dj")
    djb.config["stores"] = {"local": spec}
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for name, data in FILES.items():
        (inputs / name).write_bytes(data)
    names = sorted(FILES)
    md = sa.MetaData()
    item = item_table(md)
    md.create_all(engine)
    djb.install(engine)
    rows = [
        {
            "item_id": i,
            "b0": VALUES[i],
            "a0": inputs / names[i % 3],
            "b1": VALUES[(i + 1) % 4],
            "a1": None if i == 3 else inputs / names[(i + 1) % 3],
            "raw": b"not a blob" if i == 0 else None,
        }
        for i in VALUES
    ]
    with engine.begin() as conn:
        conn.execute(sa.insert(item), rows)
    schema = database.default_schema
    return {
        "engine": engine,
        "schema": schema,
        "store": store,
        "root": PurePosixPath(spec["location"]),
        "rows": rows,
        "item": item,
    }


def comments(engine: sa.Engine, schema: str, table: str = "item") -> dict[str, str]:
    with engine.connect() as conn:
        cols = sa.inspect(conn).get_columns(table, schema=schema)
    return {c["name"]: c.get("comment") or "" for c in cols}


def read_dj2(lab: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """Every row as DataJoint 2.3.5 reads the converted table (its rules, not its code)."""
    engine, schema, store = lab["engine"], lab["schema"], djb.get_store("local")
    with engine.connect() as conn:
        q = sa.text("SELECT item_id, b0, a0, b1, a1 FROM item ORDER BY item_id")
        rows = conn.execute(q).all()
    out = {}
    for item_id, b0, a0, b1, a1 in rows:
        got: dict[str, Any] = {"b0": djb.unpack(bytes(b0)), "a0": split(bytes(a0))}
        for name, ptr in (("b1", b1), ("a1", a1)):
            if ptr is None:
                got[name] = None
                continue
            p = json.loads(ptr) if isinstance(ptr, str) else ptr
            assert set(p) == {"hash", "path", "schema", "store", "size"}
            assert p["path"] == f"_hash/{schema}/{p['hash']}"
            assert (p["schema"], p["store"]) == (schema, "local")
            data = store.get(lab["root"] / p["path"])
            assert b32(hashlib.md5(data).digest()) == p["hash"] and len(data) == p["size"]
            got[name] = djb.unpack(data) if name == "b1" else split(data)
        out[int(item_id)] = got
    return out


def split(stored: bytes) -> tuple[str, bytes]:
    name, _, contents = stored.partition(b"\0")
    return name.decode(), contents


def expected(lab: dict[str, Any]) -> dict[int, dict[str, Any]]:
    out = {}
    for r in lab["rows"]:
        out[r["item_id"]] = {
            "b0": r["b0"],
            "a0": (r["a0"].name, r["a0"].read_bytes()),
            "b1": r["b1"],
            "a1": None if r["a1"] is None else (r["a1"].name, r["a1"].read_bytes()),
        }
    return out


def same(a: Any, b: Any) -> bool:
    return repr(a) == repr(b)


def read_014(lab: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """Every row through sa_djblob's 0.14 models."""
    with lab["engine"].connect() as conn:
        rows = conn.execute(sa.select(lab["item"]).order_by(lab["item"].c.item_id)).all()
    out = {}
    for r in rows:
        out[r.item_id] = {
            "b0": r.b0,
            "a0": (r.a0.name, r.a0.read_bytes()),
            "b1": r.b1,
            "a1": None if r.a1 is None else (r.a1.name, r.a1.read_bytes()),
        }
    return out


def old_objects(store: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(store)): p.read_bytes()
        for p in sorted(store.rglob("*"))
        if p.is_file() and not str(p.relative_to(store)).startswith(("_hash", "."))
    }


# -- the tests -------------------------------------------------------------------------


@SERVERS
def test_conversion_points_every_stored_value_where_datajoint2_looks(
    lab: dict[str, Any],
) -> None:
    before = old_objects(lab["store"])
    report = dj2convert.convert(lab["engine"], lab["schema"])
    assert report.ok, report.errors
    got = comments(lab["engine"], lab["schema"])
    assert got["b1"] == ":<blob@local>:trace: 'a' \\ b" and got["a1"] == ":<attach@local>:"
    assert got["b0"] == ":<blob>:" and got["a0"] == ":<attach>:it's the rig's: raw \\ notes"
    assert got["_b1__dj014"] == ":blob@local:trace: 'a' \\ b"
    assert got["raw"] == ""  # holds no DataJoint blob: left alone
    actions = {c.column: c.action for c in report.columns}
    assert actions == {
        "b0": "labelled",
        "a0": "labelled",
        "b1": "converted",
        "a1": "converted",
        "raw": "skipped: not DataJoint blobs",
    }
    assert repr(read_dj2(lab)) == repr(expected(lab))
    # 3 distinct blobs (rows 0 and 3 share one) and 3 attachments
    assert report.objects_copied == 6 and report.rows_updated == 7
    # the 2.x name of a payload is the base32 of its 0.14 key
    names = {p.name for p in (lab["store"] / "_hash" / lab["schema"]).iterdir()}
    with lab["engine"].connect() as conn:
        keys = conn.execute(sa.text("SELECT _b1__dj014 FROM item")).scalars().all()
    assert {b32(bytes(k)) for k in keys} <= names
    # the 0.14 objects are all still there, unchanged
    assert old_objects(lab["store"]) == before


@SERVERS
def test_dry_run_counts_objects_and_bytes_and_changes_nothing(lab: dict[str, Any]) -> None:
    before = comments(lab["engine"], lab["schema"])
    report = dj2convert.convert(lab["engine"], lab["schema"], dry_run=True)
    assert report.ok and report.dry_run
    by = {c.column: c for c in report.columns}
    assert by["b1"].action == "would convert" and by["b1"].rows == 4 and by["b1"].objects == 3
    assert by["a1"].rows == 3 and by["a1"].objects == 3
    sizes = [len(n.encode()) + 1 + len(d) for n, d in FILES.items()]
    assert by["a1"].bytes == sum(sizes)
    assert by["b0"].action == "would label"
    assert comments(lab["engine"], lab["schema"]) == before
    assert not (lab["store"] / "_hash").exists()
    real = dj2convert.convert(lab["engine"], lab["schema"])
    assert real.bytes_copied == by["b1"].bytes + by["a1"].bytes


@SERVERS
def test_a_second_conversion_changes_nothing(lab: dict[str, Any]) -> None:
    assert dj2convert.convert(lab["engine"], lab["schema"]).ok
    after = comments(lab["engine"], lab["schema"])
    again = dj2convert.convert(lab["engine"], lab["schema"])
    assert again.ok and again.objects_copied == 0 and again.rows_updated == 0
    assert {c.action for c in again.columns} == {"already", "skipped: not DataJoint blobs"}
    assert comments(lab["engine"], lab["schema"]) == after
    assert repr(read_dj2(lab)) == repr(expected(lab))


class Killed(BaseException):
    """Stands for a kill: nothing after it runs (not an Exception, so nothing catches it)."""


@SERVERS
@pytest.mark.parametrize("point", ["first copy", "third copy", "after a copy", "swap"])
def test_a_conversion_stopped_at_any_point_finishes_on_rerun(
    lab: dict[str, Any], monkeypatch: pytest.MonkeyPatch, point: str
) -> None:
    calls = {"n": 0}
    real_copy, real_swap = dj2convert._copy, dj2convert._Db.swap_in

    def copy(*args: Any) -> Any:
        calls["n"] += 1
        if point == "first copy" or (point == "third copy" and calls["n"] == 3):
            raise Killed
        out = real_copy(*args)
        if point == "after a copy" and calls["n"] == 4:  # placed, pointer not yet written
            raise Killed
        return out

    def swap(self: Any, *args: Any) -> Any:
        if point == "swap" and args[1].name == "a1":
            raise Killed
        return real_swap(self, *args)

    monkeypatch.setattr(dj2convert, "_copy", copy)
    monkeypatch.setattr(dj2convert._Db, "swap_in", swap)
    with pytest.raises(Killed):
        dj2convert.convert(lab["engine"], lab["schema"])
    monkeypatch.undo()
    report = dj2convert.convert(lab["engine"], lab["schema"])
    assert report.ok, report.errors
    assert repr(read_dj2(lab)) == repr(expected(lab))
    assert not any(c.endswith("__dj2") for c in comments(lab["engine"], lab["schema"]))
    assert dj2convert.convert(lab["engine"], lab["schema"]).rows_updated == 0


@SERVERS
def test_a_conversion_killed_by_sigkill_finishes_on_rerun(lab: dict[str, Any]) -> None:
    engine = lab["engine"]
    url = engine.url.render_as_string(hide_password=False)
    spec = json.dumps(djb.config["stores"]["local"])
    with subprocess.Popen(  # closes the stdout pipe on exit
        [sys.executable, str(HELPERS / "dj2convert_killed.py"), url, spec, lab["schema"]],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    ) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.startswith("COPIED"), line
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait(timeout=60)
    assert "_b1__dj2" in comments(engine, lab["schema"])  # stopped half-way
    report = dj2convert.convert(engine, lab["schema"])
    assert report.ok, report.errors
    assert report.objects_present >= 1  # what the killed run placed is checked and kept
    assert repr(read_dj2(lab)) == repr(expected(lab))


@SERVERS
def test_revert_gives_back_the_014_schema(lab: dict[str, Any]) -> None:
    engine, schema = lab["engine"], lab["schema"]
    before_comments = comments(engine, schema)
    before = read_014(lab)
    assert dj2convert.convert(engine, schema).ok
    dry = dj2convert.revert(engine, schema, dry_run=True)
    assert {c.action for c in dry.columns} == {"would revert", "would unlabel"}
    report = dj2convert.revert(engine, schema)
    assert report.ok, report.errors
    assert comments(engine, schema) == before_comments
    assert repr(read_014(lab)) == repr(before)
    # and it converts again
    assert dj2convert.convert(engine, schema).ok
    assert repr(read_dj2(lab)) == repr(expected(lab))


@SERVERS
def test_revert_refuses_a_column_with_rows_written_after_the_conversion(
    lab: dict[str, Any],
) -> None:
    engine, schema = lab["engine"], lab["schema"]
    assert dj2convert.convert(engine, schema).ok
    with engine.begin() as conn:
        copy = "INSERT INTO item (item_id, b0, b1) SELECT 9, b0, b1 FROM item WHERE item_id = 0"
        conn.execute(sa.text(copy))
    report = dj2convert.revert(engine, schema)
    assert not report.ok
    assert "1 rows were written after the conversion" in report.errors[0]
    got = comments(engine, schema)  # all or nothing
    assert got["b1"].startswith(":<blob@local>:") and got["a0"].startswith(":<attach>:")


@SERVERS
def test_a_corrupt_014_payload_is_not_converted(lab: dict[str, Any]) -> None:
    engine, schema = lab["engine"], lab["schema"]
    with engine.connect() as conn:
        key = bytes(conn.execute(sa.text("SELECT b1 FROM item WHERE item_id = 1")).scalar_one())
    hexkey = key.hex()
    victim = next(p for p in lab["store"].rglob(hexkey))
    victim.write_bytes(victim.read_bytes()[:-1] + b"X")
    report = dj2convert.convert(engine, schema)
    assert not report.ok
    assert any("does not match" in e for e in report.errors)
    assert comments(engine, schema)["b1"].startswith(":blob@local:")  # not swapped
    assert not (lab["store"] / "_hash" / schema / b32(key)).exists()


@pytest.mark.backends("sqlite")
def test_conversion_refuses_sqlite_with_a_clear_error(lab: dict[str, Any]) -> None:
    with pytest.raises(djb.UnsupportedDialectError, match="MySQL/MariaDB and PostgreSQL"):
        dj2convert.convert(lab["engine"], lab["schema"])


@SERVERS
def test_cli_dj2_convert_dry_run_convert_and_revert(lab: dict[str, Any], tmp_path: Path) -> None:
    cfg = tmp_path / "djb.json"
    cfg.write_text(json.dumps({"stores": djb.config["stores"]}))
    url = lab["engine"].url.render_as_string(hide_password=False)
    base = ["--url", url, "--config", str(cfg), "--schema", lab["schema"]]

    def run(*args: str, input: str | None = None) -> Any:
        return CliRunner().invoke(cli, [*base, *args], input=input, catch_exceptions=False)

    declined = run("dj2-convert", input="n\n")
    assert declined.exit_code == 0 and "nothing changed" in declined.output
    assert "would convert" in declined.output  # the preview, with the question
    assert comments(lab["engine"], lab["schema"])["b1"].startswith(":blob@local:")

    dry = run("--json", "dj2-convert", "--dry-run")
    assert dry.exit_code == 0, dry.output
    data = json.loads(dry.output)
    assert data["dry_run"] and data["ok"]
    assert {c["column"]: c["objects"] for c in data["columns"]}["b1"] == 3
    assert not (lab["store"] / "_hash").exists()
    done = run("dj2-convert", "--yes")
    assert done.exit_code == 0, done.output
    assert "converted" in done.output and "6 objects copied" in done.output
    assert repr(read_dj2(lab)) == repr(expected(lab))
    back = run("dj2-convert", "--revert", "--yes")
    assert back.exit_code == 0, back.output
    assert comments(lab["engine"], lab["schema"])["b1"].startswith(":blob@local:")


@SERVERS
def test_a_014_sweep_after_the_conversion_keeps_the_old_objects(lab: dict[str, Any]) -> None:
    engine, schema = lab["engine"], lab["schema"]
    before = old_objects(lab["store"])
    assert dj2convert.convert(engine, schema).ok
    swept = djb.externals(engine)["local"].sweep(grace=datetime.timedelta(0))
    assert swept.ok and swept.rows_deleted == swept.payloads_deleted == 0
    assert old_objects(lab["store"]) == before
    assert repr(read_dj2(lab)) == repr(expected(lab))
    assert dj2convert.revert(engine, schema).ok


@SERVERS
def test_after_finalize_a_sweep_frees_the_old_objects_and_the_2x_values_stay(
    lab: dict[str, Any],
) -> None:
    engine, schema = lab["engine"], lab["schema"]
    assert dj2convert.convert(engine, schema).ok
    dry = dj2convert.finalize(engine, schema, dry_run=True)
    assert {c.column for c in dry.columns} == {"b1", "a1"}
    assert "_b1__dj014" in comments(engine, schema)
    done = dj2convert.finalize(engine, schema)
    assert done.ok and {c.action for c in done.columns} == {"dropped the 0.14 column"}
    assert not any(c.endswith("__dj014") for c in comments(engine, schema))
    swept = djb.externals(engine)["local"].sweep(grace=datetime.timedelta(0))
    assert swept.ok and swept.payloads_deleted == 6
    assert old_objects(lab["store"]) == {}
    assert repr(read_dj2(lab)) == repr(expected(lab))
    again = dj2convert.revert(engine, schema)
    assert not again.ok and "cannot be reverted" in again.errors[0]
    got = comments(engine, schema)  # all or nothing: the in-row labels stay too
    assert got["b1"].startswith(":<blob@local>:") and got["b0"] == ":<blob>:"


@SERVERS
def test_revert_of_a_conversion_cut_short_drops_its_staged_column(
    lab: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, schema = lab["engine"], lab["schema"]
    before = read_014(lab)
    real_copy = dj2convert._copy
    calls = {"n": 0}

    def copy(*args: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise Killed
        return real_copy(*args)

    monkeypatch.setattr(dj2convert, "_copy", copy)
    with pytest.raises(Killed):
        dj2convert.convert(engine, schema)
    monkeypatch.undo()
    assert "_b1__dj2" in comments(engine, schema)
    report = dj2convert.revert(engine, schema)
    assert report.ok and ("item", "b1", "dropped") in [
        (c.table, c.column, c.action) for c in report.columns
    ]
    assert not any(c.startswith("_") for c in comments(engine, schema))
    assert repr(read_014(lab)) == repr(before)


@pytest.mark.backends("mysql")
@pytest.mark.parametrize("lab", ["s3"], indirect=True)
def test_conversion_on_an_s3_store_places_the_objects_where_datajoint2_looks(
    lab: dict[str, Any], s3_server: Any, s3_bucket: str
) -> None:
    report = dj2convert.convert(lab["engine"], lab["schema"])
    assert report.ok, report.errors
    assert report.objects_copied == 6
    assert repr(read_dj2(lab)) == repr(expected(lab))
    listed = s3_server.client().list_objects_v2(Bucket=s3_bucket, Prefix="lab/dj/_hash/")
    keys = {o["Key"] for o in listed["Contents"]}
    assert len(keys) == 6 and all(k.startswith(f"lab/dj/_hash/{lab['schema']}/") for k in keys)


@SERVERS
@pytest.mark.parametrize("killed_after_swap", [False, True])
def test_a_row_written_just_before_the_swap_gets_its_pointer(
    lab: dict[str, Any], monkeypatch: pytest.MonkeyPatch, killed_after_swap: bool
) -> None:
    engine, schema = lab["engine"], lab["schema"]
    real_swap, real_fill = dj2convert._Db.swap_in, dj2convert._fill

    def swap(self: Any, table: str, col: Any, comment: str) -> Any:
        if col.name == "a1":  # a late writer: after the last check, before the swap
            with engine.begin() as conn:
                conn.execute(
                    sa.text(
                        "INSERT INTO item (item_id, b0, a0, b1, _b1__dj014, a1)"
                        " SELECT 20, b0, a0, b1, _b1__dj014, a1 FROM item WHERE item_id = 1"
                    )
                )
        return real_swap(self, table, col, comment)

    def fill(db: Any, table: str, key_col: str, *args: Any) -> Any:
        if killed_after_swap and key_col == "_a1__dj014":
            raise Killed
        return real_fill(db, table, key_col, *args)

    monkeypatch.setattr(dj2convert._Db, "swap_in", swap)
    monkeypatch.setattr(dj2convert, "_fill", fill)
    if killed_after_swap:
        with pytest.raises(Killed):
            dj2convert.convert(engine, schema)
        monkeypatch.undo()
    report = dj2convert.convert(engine, schema)
    assert report.ok, report.errors
    got = read_dj2(lab)
    assert got[20]["a1"] == got[1]["a1"] != None  # noqa: E711


@SERVERS
def test_two_conversions_of_a_schema_do_not_run_at_once(lab: dict[str, Any]) -> None:
    engine, schema = lab["engine"], lab["schema"]
    with dj2convert._Db(engine, schema).exclusive():  # another conversion is running
        with pytest.raises(djb.SaDjblobError, match="another conversion of schema"):
            dj2convert.convert(engine, schema)
        with pytest.raises(djb.SaDjblobError, match="another conversion of schema"):
            dj2convert.revert(engine, schema)
    assert "_b1__dj2" not in comments(engine, schema)
    assert dj2convert.convert(engine, schema).ok  # released


@pytest.mark.backends("postgresql")
@pytest.mark.parametrize("lab", ["sha256"], indirect=True)
def test_a_sha256_store_converts_to_md5_names(lab: dict[str, Any]) -> None:
    report = dj2convert.convert(lab["engine"], lab["schema"])
    assert report.ok, report.errors
    assert report.objects_copied == 6
    assert repr(read_dj2(lab)) == repr(expected(lab))  # names are the MD5s, as 2.x reads


@pytest.mark.backends("mysql")
@pytest.mark.parametrize("prefix", ["", "/", "."])
def test_a_hash_prefix_inside_the_014_area_is_refused(lab: dict[str, Any], prefix: str) -> None:
    with pytest.raises(djb.ConfigError, match=r"0\.14 sweep takes them for orphans"):
        dj2convert.convert(lab["engine"], lab["schema"], hash_prefix=prefix)
