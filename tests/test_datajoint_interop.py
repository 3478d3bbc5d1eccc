"""Both directions with the real DataJoint 0.14, on MariaDB/MySQL.

DataJoint runs in its own virtualenv (``.venv-dj``, created on first use and kept: the
``dj_python`` fixture, ``tests/helpers/dj_venv.py``), as a subprocess
(``tests/helpers/dj_side.py``) that talks to the same database and the same file store
folder as sa_djblob. Expected values come from ``tests/helpers/dj_common.py``,
which both sides import; results travel as JSON files.

1. DataJoint declares tables and writes blob / blob@store / attach / attach@store values:
   sa_djblob models read them back identically, and ``externals(...)['local'].paths()``
   equals DataJoint's ``fetch_external_paths()``. Writing the same values through sa_djblob
   adds no new externals rows (the packed bytes and so the hashes are identical).
2. sa_djblob creates a table (with DataJoint's column comments) and writes values:
   DataJoint's ``VirtualModule`` reads the table's heading as blob@local / attach@local /
   attach, fetches the values identically, and inserts a row that sa_djblob then reads.
3. filepath@fp (file and S3 stores), both ways, each side with its own stage folder.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from conftest import Database
from helpers.dj_paths import DATAJOINT
from helpers.dj_venv import ROOT, run_side, side_config

import sa_djblob as djb
from sa_djblob.datajoint import declare_datajoint_tables

HELPERS = Path(__file__).parent / "helpers"
sys.path.insert(0, str(HELPERS))
from dj_common import (  # noqa: E402
    attachment_contents,
    blob_values,
    describe,
    describe_file,
    write_attachments,
)

# DataJoint runs in its own virtualenv: not in `make test-fast`
pytestmark = pytest.mark.slow


def run_dj(python: Path, command: str, cfg: dict[str, Any], io: Path) -> dict[str, Any]:
    return run_side(python, "dj_side.py", command, cfg, io)


def item_table(metadata: sa.MetaData, name: str) -> sa.Table:
    return sa.Table(
        name,
        metadata,
        sa.Column("item_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("b0", djb.Blob(), nullable=False),
        sa.Column("b1", djb.Blob(store="local"), nullable=False),
        sa.Column("a0", djb.Attach(), nullable=False),
        sa.Column("a1", djb.Attach(store="local"), nullable=False),
    )


@pytest.fixture
def setup(database: Database, tmp_path: Path, dj_python: Path) -> dict[str, Any]:
    cfg = side_config(database.url, database.backend, database.default_schema, tmp_path)
    store, io = Path(cfg["store"]), Path(cfg["io"])
    djb.config["stores"] = {"local": {"protocol": "file", "location": str(store)}}
    return {"cfg": cfg, "io": io, "python": dj_python}


def _paths(engine: sa.Engine) -> list[list[str]]:
    return sorted([str(h), str(p)] for h, p in djb.externals(engine)["local"].paths())


_PACKED: dict[str, bytes] = {}


def _dj_packed(setup: dict[str, Any]) -> dict[str, bytes]:
    if not _PACKED:
        out = run_dj(setup["python"], "pack", setup["cfg"], setup["io"])
        _PACKED.update({k: bytes.fromhex(v) for k, v in out["packed"].items()})
    return _PACKED


@pytest.mark.parametrize("name", sorted(blob_values()))
def test_packed_bytes_match_datajoint(name: str, dj_python: Path, tmp_path: Path) -> None:
    """djb.pack gives DataJoint's bytes, so equal values share one external object.

    Uncompressed blobs always do; compressed ones with ``compression="datajoint"`` (the
    default "fast" compression makes other, equally valid zlib streams)."""
    setup = {"python": dj_python, "cfg": {"io": str(tmp_path)}, "io": tmp_path}
    dj_bytes = _dj_packed(setup)[name]
    value = blob_values()[name]
    np_equal = describe(djb.unpack(dj_bytes)) == describe(value)
    assert np_equal
    with djb.config.override(compression="datajoint"):
        assert djb.pack(value) == dj_bytes
    if not dj_bytes.startswith(b"ZL123"):
        assert djb.pack(value) == dj_bytes
    else:
        assert describe(djb.unpack(djb.pack(value))) == describe(value)


@pytest.mark.backends("mysql")
def test_datajoint_writes_sa_djblob_reads(
    setup: dict[str, Any], engine: sa.Engine, tmp_path: Path
) -> None:
    out = run_dj(setup["python"], "write", setup["cfg"], setup["io"])
    assert out["datajoint"].startswith("0.14.")
    assert {"dj_item", "#dj_param"} <= set(out["tables"])
    values = blob_values()
    contents = attachment_contents()

    djb.install(engine)
    md = sa.MetaData()
    item = item_table(md, "dj_item")
    param = sa.Table(
        "#dj_param",
        md,
        sa.Column("param", sa.String(16), primary_key=True),
        sa.Column("value", djb.Blob(store="local")),
    )
    with engine.connect() as conn:
        rows = {r.item_id: r for r in conn.execute(sa.select(item))}
        params = dict(conn.execute(sa.select(param.c.param, param.c.value)).all())
    assert len(rows) == len(out["rows"]) == len(values)
    for want in out["rows"]:
        got = rows[want["item_id"]]
        assert describe(got.b0) == describe(values[want["b0"]]), want
        assert describe(got.b1) == describe(values[want["b1"]]), want
        for col in ("a0", "a1"):
            path = getattr(got, col)
            assert path.name == want[col]
            assert path.read_bytes() == contents[want[col]]
    assert {k: describe(v) for k, v in params.items()} == {
        k: describe(v) for k, v in values.items()
    }

    # The externals table DataJoint made, seen by sa_djblob: same objects, same paths.
    assert _paths(engine) == out["paths"]
    ext = djb.externals(engine)["local"]
    assert ext.unused() == []
    for _, path in ext.paths():
        assert Path(path).is_file()

    # sa_djblob writes the same values: byte-identical packing means no new objects
    # (except for compressed blobs while the codec's zlib level differs from DataJoint's:
    # see test_packed_bytes_match_datajoint).
    inputs = write_attachments(tmp_path / "sa-inputs")
    with engine.begin() as conn:
        conn.execute(
            sa.insert(item),
            [
                dict(
                    item_id=1000 + r["item_id"],
                    b0=values[r["b0"]],
                    b1=values[r["b1"]],
                    a0=inputs[r["a0"]],
                    a1=inputs[r["a1"]],
                )
                for r in out["rows"]
            ],
        )
        raw: dict[int, Any] = dict(conn.execute(sa.text("SELECT item_id, b0 FROM dj_item")).all())
    compressed = {k for k, v in values.items() if djb.pack(v)[:5] == b"ZL123"}
    dj_keys = {h for h, _ in out["paths"]}
    new = [p for h, p in _paths(engine) if h not in dj_keys]
    expected_new = sum(
        1
        for r in out["rows"]
        if r["b1"] in compressed and djb.pack(values[r["b1"]]) != _dj_packed(setup)[r["b1"]]
    )
    assert len(new) == len(set(new)) <= expected_new, new
    for r in out["rows"]:  # the in-row blobs are byte-identical too
        if r["b0"] not in compressed:
            assert raw[1000 + r["item_id"]] == raw[r["item_id"]], r["b0"]


@pytest.mark.backends("mysql")
def test_sa_djblob_writes_datajoint_reads(
    setup: dict[str, Any], engine: sa.Engine, tmp_path: Path
) -> None:
    values = blob_values()
    contents = attachment_contents()
    inputs = write_attachments(tmp_path / "sa-inputs")
    names = sorted(values)
    fnames = sorted(inputs)
    md = sa.MetaData()
    item = item_table(md, "sa_item")
    md.create_all(engine)
    djb.install(engine)
    written = {
        i: dict(
            item_id=i,
            b0=names[i],
            b1=names[(i + 2) % len(names)],
            a0=fnames[i % len(fnames)],
            a1=fnames[(i + 1) % len(fnames)],
        )
        for i in range(len(names))
    }
    with engine.begin() as conn:
        conn.execute(
            sa.insert(item),
            [
                dict(
                    item_id=i,
                    b0=values[w["b0"]],
                    b1=values[w["b1"]],
                    a0=inputs[w["a0"]],
                    a1=inputs[w["a1"]],
                )
                for i, w in written.items()
            ],
        )
    sa_paths = _paths(engine)

    out = run_dj(setup["python"], "read", setup["cfg"], setup["io"])
    # DataJoint reads the column comments sa_djblob wrote: [type, is_blob, is_attachment, store]
    heading = out["heading"]
    assert heading["b0"][1:] == [True, False, None]
    assert heading["b1"][1:] == [True, False, "local"]
    assert heading["a0"][1:] == [False, True, None]
    assert heading["a1"][1:] == [False, True, "local"]
    assert [r["item_id"] for r in out["rows"]] == sorted(written)
    for r in out["rows"]:
        w = written[r["item_id"]]
        assert r["b0"] == describe(values[w["b0"]]), w
        assert r["b1"] == describe(values[w["b1"]]), w
        assert r["a0"] == describe_file(inputs[w["a0"]])
        assert r["a1"] == describe_file(inputs[w["a1"]])
    # The objects DataJoint sees are where sa_djblob put them (plus DataJoint's new row's).
    assert set(map(tuple, sa_paths)) <= set(map(tuple, out["paths"]))

    # DataJoint wrote a row into sa_djblob's table: sa_djblob reads it.
    w = out["written"]
    with engine.connect() as conn:
        row = conn.execute(sa.select(item).where(item.c.item_id == w["item_id"])).one()
    assert describe(row.b0) == describe(values[w["b0"]])
    assert describe(row.b1) == describe(values[w["b1"]])
    assert row.a0.read_bytes() == contents[w["a0"]]
    assert row.a1.read_bytes() == contents[w["a1"]]
    assert _paths(engine) == out["paths"]
    assert djb.externals(engine)["local"].unused() == []
    assert isinstance(row.b1, np.ndarray)


@pytest.mark.backends("mysql")
def test_interop_example_on_a_datajoint_schema(setup: dict[str, Any], database: Database) -> None:
    """examples/datajoint_interop.py reads and writes the pipeline DataJoint declared."""
    out = run_dj(setup["python"], "pipeline", setup["cfg"], setup["io"])
    assert {"#subject", "session", "_recording"} <= set(out["tables"])
    url = database.url.render_as_string(hide_password=False)
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "datajoint_interop.py"),
            "--url",
            url,
            "--store",
            setup["cfg"]["store"],
            "--output",
            str(setup["io"] / "example"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    # the DataJoint-written session, read by the example before it writes its own
    line = (
        "session 1/1: notes 'notes.txt' (38 bytes), stimulus (2, 3);"
        " recording: trace (4, 5), raw 'trace.bin'"
    )
    assert line in r.stdout, r.stdout
    assert "read back identical" in r.stdout
    got = run_dj(setup["python"], "pipeline-read", setup["cfg"], setup["io"])["rows"]
    assert [row["session_id"] for row in got] == [1, 2]
    mine = got[1]
    assert mine["stimulus"] == describe(np.eye(3))
    assert mine["trace"] == describe(np.sin(np.linspace(0, 20, 5000)).reshape(50, 100))
    assert mine["notes"]["name"] == "notes-2.txt"
    assert mine["raw"] == {
        "name": "raw-2.bin",
        "contents": np.arange(1000, dtype=np.int16).tobytes().hex(),
    }


# -- object paths and S3 keys -----------------------------------------------------


def test_object_paths_match_live_datajoint(dj_python: Path, tmp_path: Path) -> None:
    """``_layout.object_path`` against DataJoint's own ``_make_uuid_path``, every rule."""
    from sa_djblob._layout import object_path

    key = uuid.UUID("f0e1d2c3b4a5968778695a4b3c2d1e0f")
    cases: list[list[Any]] = [
        [p, loc, key.hex, name] for p, loc in sorted(DATAJOINT) for name in (None, "x.bin")
    ]
    out = run_dj(dj_python, "path-rules", {"io": str(tmp_path), "cases": cases}, tmp_path)
    ours = [str(object_path(loc, "main", key, name, protocol=p)) for p, loc, _, name in cases]
    assert ours == out["paths"]


def s3_table(metadata: sa.MetaData, name: str) -> sa.Table:
    return sa.Table(
        name,
        metadata,
        sa.Column("item_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("b", djb.Blob(store="remote"), nullable=False),
        sa.Column("a", djb.Attach(store="remote"), nullable=False),
    )


def _bucket_keys(s3_server: Any, bucket: str) -> set[str]:
    """The payload keys in *bucket* (not sa_djblob's area-owner markers)."""
    pages = s3_server.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
    keys = {o["Key"] for page in pages for o in page.get("Contents", [])}
    return {k for k in keys if ".sa_djblob-owner" not in k}


@pytest.mark.backends("mysql")
@pytest.mark.parametrize(("location", "root"), [("f:\\data\\dj", "data/dj/"), ("/dj", "dj/")])
def test_s3_store_both_directions(
    setup: dict[str, Any],
    engine: sa.Engine,
    database: Database,
    s3_server: Any,
    s3_bucket: str,
    tmp_path: Path,
    location: str,
    root: str,
) -> None:
    """An S3 store whose location has a drive letter and backslashes, or a leading '/':
    the same keys on both sides, and ``paths()`` == ``fetch_external_paths()``."""
    spec = s3_server.store_spec(s3_bucket, location=location)
    djb.config["stores"] = {"remote": spec}
    cfg = {**setup["cfg"], "stores": {"remote": spec}}
    values, contents = blob_values(), attachment_contents()
    schema = database.url.database

    def sa_paths() -> list[list[str]]:
        return sorted([str(h), str(p)] for h, p in djb.externals(engine)["remote"].paths())

    # DataJoint writes, sa_djblob reads.
    out = run_dj(setup["python"], "s3-write", cfg, setup["io"])
    djb.install(engine)
    md = sa.MetaData()
    dj_s3 = s3_table(md, "dj_s3")
    with engine.connect() as conn:
        rows = {r.item_id: r for r in conn.execute(sa.select(dj_s3))}
    assert sorted(rows) == [r["item_id"] for r in out["rows"]]
    for want in out["rows"]:
        got = rows[want["item_id"]]
        assert describe(got.b) == describe(values[want["b"]]), want
        assert got.a.name == want["a"] and got.a.read_bytes() == contents[want["a"]]
    assert sa_paths() == out["paths"]
    keys = _bucket_keys(s3_server, s3_bucket)
    assert {p for _, p in out["paths"]} == keys
    assert all(k.startswith(f"{root}{schema}/") for k in keys), sorted(keys)[:3]

    # sa_djblob writes, DataJoint reads.
    sa_s3 = s3_table(md, "sa_s3")
    md.create_all(engine, tables=[sa_s3])
    inputs = write_attachments(tmp_path / "sa-s3-inputs")
    names, fnames = sorted(values), sorted(inputs)
    written = {i: (names[(i + 3) % len(names)], fnames[(i + 1) % len(fnames)]) for i in range(5)}
    with engine.begin() as conn:
        conn.execute(
            sa.insert(sa_s3),
            [dict(item_id=i, b=values[b], a=inputs[a]) for i, (b, a) in written.items()],
        )
    dj_read = run_dj(setup["python"], "s3-read", cfg, setup["io"])
    assert [r["item_id"] for r in dj_read["rows"]] == sorted(written)
    for r in dj_read["rows"]:
        b, a = written[r["item_id"]]
        assert r["b"] == describe(values[b])
        assert r["a"] == describe_file(inputs[a])
    assert sa_paths() == dj_read["paths"]
    assert {p for _, p in dj_read["paths"]} == _bucket_keys(s3_server, s3_bucket)


# -- DataJoint's own tables in a schema sa_djblob made ---------------------------------


@pytest.mark.backends("mysql")
def test_datajoint_deletes_in_a_schema_sa_djblob_made(
    setup: dict[str, Any], engine: sa.Engine, tmp_path: Path
) -> None:
    """DataJoint's delete() needs its ``~log``: it fails without, and works (with external
    cleanup) once ``declare_datajoint_tables`` made it; sa_djblob reads what is left."""
    values, contents = blob_values(), attachment_contents()
    inputs = write_attachments(tmp_path / "sa-inputs")
    names, fnames = sorted(values), sorted(inputs)
    md = sa.MetaData()
    item = item_table(md, "sa_del")
    md.create_all(engine)
    djb.install(engine)
    written = {i: (names[i], fnames[i % len(fnames)]) for i in range(6)}
    with engine.begin() as conn:
        conn.execute(
            sa.insert(item),
            [
                dict(item_id=i, b0=values[b], b1=values[b], a0=inputs[a], a1=inputs[a])
                for i, (b, a) in written.items()
            ],
        )
    before = _paths(engine)
    assert len(before) == 6 + len(fnames)

    # Without DataJoint's ~log, DataJoint's delete fails and deletes nothing.
    out = run_dj(setup["python"], "delete", setup["cfg"], setup["io"])
    assert out["deleted"] is False
    assert "Cannot declare new tables inside a transaction" in out["error"]
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(item)).scalar() == 6

    assert declare_datajoint_tables(engine) == ["~log"]
    assert declare_datajoint_tables(engine) == []  # idempotent

    out = run_dj(setup["python"], "delete", setup["cfg"], setup["io"])
    assert out["deleted"] is True, out.get("error")
    assert out["errors"] == []
    assert out["remaining"] == [3, 4, 5]
    assert any(e.startswith("DELETE FROM") for e in out["log"]), out["log"]

    with engine.connect() as conn:
        rows = {r.item_id: r for r in conn.execute(sa.select(item))}
    assert sorted(rows) == [3, 4, 5]
    for i, row in rows.items():
        b, a = written[i]
        assert describe(row.b0) == describe(values[b]) == describe(row.b1)
        assert row.a1.name == a and row.a1.read_bytes() == contents[a]
    after = _paths(engine)
    assert after == out["paths"]
    kept = {p for _, p in after}
    gone = {p for _, p in before} - kept
    assert len(after) == 3 + len(fnames) and len(gone) == 3  # three blobs; attachments shared
    assert all(not Path(p).exists() for p in gone)
    assert all(Path(p).is_file() for p in kept)
    assert djb.externals(engine)["local"].unused() == []


# -- filepath@store -----------------------------------------------------------------


@pytest.mark.backends("mysql")
@pytest.mark.parametrize("kind", ["file", "s3"])
def test_filepath_both_directions(
    setup: dict[str, Any],
    engine: sa.Engine,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    kind: str,
) -> None:
    """filepath@fp with a file store and an S3 store: each side has its own stage (the
    store is shared), reads download into it; ``paths()`` == ``fetch_external_paths()``."""
    sa_stage, dj_stage = tmp_path / "sa-stage", tmp_path / "dj-stage"
    sa_stage.mkdir()
    dj_stage.mkdir()
    if kind == "file":
        (tmp_path / "fp-store").mkdir()  # DataJoint wants the folder to exist
        base: dict[str, Any] = {"protocol": "file", "location": str(tmp_path / "fp-store")}
    else:
        server = request.getfixturevalue("s3_server")
        base = server.store_spec(request.getfixturevalue("s3_bucket"), location="fp/store")
    djb.config["stores"] = {"fp": {**base, "stage": str(sa_stage)}}
    cfg = {**setup["cfg"], "stores": {"fp": {**base, "stage": str(dj_stage)}}}

    def sa_paths() -> list[list[str]]:
        return sorted([str(h), str(p)] for h, p in djb.externals(engine)["fp"].paths())

    def fp_table(md: sa.MetaData, name: str) -> sa.Table:
        return sa.Table(
            name,
            md,
            sa.Column("item_id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("f", djb.Filepath(store="fp"), nullable=False),
        )

    # DataJoint places files, sa_djblob reads them (downloaded into its own stage).
    out = run_dj(setup["python"], "fp-write", cfg, setup["io"])
    djb.install(engine)
    md = sa.MetaData()
    dj_fp = fp_table(md, "dj_fp")
    with engine.connect() as conn:
        rows = {r.item_id: r.f for r in conn.execute(sa.select(dj_fp))}
    assert sorted(rows) == [r["item_id"] for r in out["rows"]]
    for want in out["rows"]:
        got = rows[want["item_id"]]
        assert got == sa_stage / want["f"]
        assert got.read_bytes() == bytes.fromhex(out["files"][want["f"]])
    assert sa_paths() == out["paths"]
    # the same files placed through sa_djblob: the same entries, no new ones
    with engine.begin() as conn:
        conn.execute(sa.insert(dj_fp), [{"item_id": 100, "f": sa_stage / "raw/a.dat"}])
    assert sa_paths() == out["paths"]

    # sa_djblob places files, DataJoint reads them (downloaded into its stage).
    sa_fp = fp_table(md, "sa_fp")
    md.create_all(engine, tables=[sa_fp])
    files = {"sa/x.dat": b"from sa_djblob" * 50, "sa/deep/er/y.bin": bytes(range(200))}
    for rel, data in files.items():
        (sa_stage / rel).parent.mkdir(parents=True, exist_ok=True)
        (sa_stage / rel).write_bytes(data)
    written = {1: "sa/x.dat", 2: "sa/deep/er/y.bin", 3: "sa/x.dat"}
    with engine.begin() as conn:
        conn.execute(
            sa.insert(sa_fp), [{"item_id": i, "f": sa_stage / rel} for i, rel in written.items()]
        )
    got_dj = run_dj(setup["python"], "fp-read", cfg, setup["io"])
    assert [r["item_id"] for r in got_dj["rows"]] == sorted(written)
    for r in got_dj["rows"]:
        assert r["f"] == written[r["item_id"]]
        assert bytes.fromhex(r["contents"]) == files[r["f"]]
    assert all((dj_stage / rel).read_bytes() == data for rel, data in files.items())
    assert sa_paths() == got_dj["paths"]
    assert len(got_dj["paths"]) == len(out["files"]) + len(files)
