"""``Filepath(store=...)``: DataJoint's ``filepath@store`` on the three databases, with a
file store and an S3 store: the externals row, the object at ``<root>/<relative path>``,
versions, downloads into the stage, the sweep, orphans and verify."""

from __future__ import annotations

import datetime
import hashlib
import json
import uuid
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from conftest import Database
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import sa_djblob as djb
from sa_djblob._layout import object_path, store_root
from sa_djblob.cli import cli

ZERO = datetime.timedelta(0)


def md5(data: bytes) -> uuid.UUID:
    return uuid.UUID(bytes=hashlib.md5(data).digest())


@pytest.fixture(params=["file", "s3"])
def fp(request: pytest.FixtureRequest, engine: sa.Engine, tmp_path: Path) -> dict[str, Any]:
    """Store 'fp' (file or S3) with a stage folder, and table ``doc(id, f filepath@fp,
    b blob@fp)``."""
    stage = tmp_path / "stage"
    stage.mkdir()
    if request.param == "file":
        spec: dict[str, Any] = {
            "protocol": "file",
            "location": str(tmp_path / "store"),
            "stage": str(stage),
        }
    else:
        server = request.getfixturevalue("s3_server")
        spec = server.store_spec(request.getfixturevalue("s3_bucket"), stage=str(stage))
    djb.config["stores"] = {"fp": spec}
    djb.install(engine)
    md = sa.MetaData()
    table = sa.Table(
        "doc",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("f", djb.Filepath(store="fp"), nullable=True),
        sa.Column("b", djb.Blob(store="fp"), nullable=True),
    )
    md.create_all(engine)
    return {"engine": engine, "table": table, "stage": stage, "md": md}


def _file(stage: Path, rel: str, data: bytes) -> Path:
    path = stage / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _object(rel: str) -> PurePosixPath:
    store = djb.get_store("fp")
    return store_root(store.location, store.protocol) / rel


def _insert(env: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    with env["engine"].begin() as conn:
        conn.execute(sa.insert(env["table"]), rows)


def _read(env: dict[str, Any]) -> dict[int, Any]:
    t = env["table"]
    with env["engine"].connect() as conn:
        return {r.id: r.f for r in conn.execute(sa.select(t.c.id, t.c.f).order_by(t.c.id))}


def _ext_rows(env: dict[str, Any]) -> list[Any]:
    ext = djb.externals(env["engine"])["fp"].table
    with env["engine"].connect() as conn:
        return conn.execute(sa.select(ext).order_by(ext.c.hash)).all()


def test_round_trip_core_and_the_externals_row(fp: dict[str, Any]) -> None:
    data = b"some recorded data\x00\xff" * 100
    local = _file(fp["stage"], "sess 1/raw/a.dat", data)
    _insert(fp, [{"id": 1, "f": local}, {"id": 2, "f": str(local)}, {"id": 3, "f": None}])
    (row,) = _ext_rows(fp)
    assert row.hash == md5(b"sess 1/raw/a.dat")  # DataJoint: the hash of the relative path
    assert row.filepath == "sess 1/raw/a.dat"
    assert row.contents_hash == md5(data)  # of the bare contents
    assert row.size == len(data)
    assert row.attachment_name is None
    assert djb.get_store("fp").get(_object("sess 1/raw/a.dat")) == data
    # the column holds the hash
    t = fp["table"]
    with fp["engine"].connect() as conn:
        raw = conn.execute(sa.text("SELECT f FROM doc WHERE id = 1")).scalar_one()
    assert bytes(raw) == row.hash.bytes
    got = _read(fp)
    assert got[1] == got[2] == local and isinstance(got[1], Path)
    assert got[3] is None
    assert t.c.f.comment == ":filepath@fp:"


def test_round_trip_orm(fp: dict[str, Any]) -> None:
    class Base(DeclarativeBase):
        pass

    class Doc(Base):
        __tablename__ = "doc2"
        id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
        f: Mapped[Path | None] = mapped_column(djb.Filepath(store="fp"))

    Base.metadata.create_all(fp["engine"])

    local = _file(fp["stage"], "orm/x.bin", b"orm bytes")
    with Session(fp["engine"]) as s, s.begin():
        s.add(Doc(id=1, f=local))
    local.unlink()
    with Session(fp["engine"]) as s:
        doc = s.get(Doc, 1)
        assert doc is not None and doc.f == local
        assert doc.f.read_bytes() == b"orm bytes"
        assert s.scalars(sa.select(Doc.f)).all() == [local]


def test_same_path_is_one_entry(fp: dict[str, Any]) -> None:
    local = _file(fp["stage"], "one.dat", b"1")
    _insert(fp, [{"id": 1, "f": local}])
    _insert(fp, [{"id": 2, "f": local}, {"id": 3, "f": local}])
    assert len(_ext_rows(fp)) == 1
    assert set(_read(fp).values()) == {local}


def test_a_different_version_is_refused(fp: dict[str, Any]) -> None:
    local = _file(fp["stage"], "v.dat", b"version 1")
    _insert(fp, [{"id": 1, "f": local}])
    local.write_bytes(b"version 2, longer")
    with pytest.raises(djb.StoreError, match=r"different version of 'v\.dat'"):
        _insert(fp, [{"id": 2, "f": local}])
    (row,) = _ext_rows(fp)
    assert row.contents_hash == md5(b"version 1")
    assert djb.get_store("fp").get(_object("v.dat")) == b"version 1"
    # reading keeps the local version 2 and says so; moved aside, version 1 comes back
    with pytest.raises(djb.StageError, match="differs from the stored version"):
        _read(fp)
    assert local.read_bytes() == b"version 2, longer"
    local.unlink()
    assert _read(fp)[1].read_bytes() == b"version 1"


def test_paths_outside_the_stage_are_refused(fp: dict[str, Any], tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.dat"
    outside.write_bytes(b"x")
    with pytest.raises(djb.UnsupportedTypeError, match="inside the stage folder"):
        _insert(fp, [{"id": 1, "f": outside}])
    with pytest.raises(djb.UnsupportedTypeError, match="inside the stage folder"):
        _insert(fp, [{"id": 1, "f": fp["stage"] / ".." / "elsewhere.dat"}])
    with pytest.raises(djb.UnsupportedTypeError, match="file paths"):
        _insert(fp, [{"id": 1, "f": 42}])
    assert _ext_rows(fp) == []


def test_a_store_without_stage_is_refused(fp: dict[str, Any]) -> None:
    spec = dict(djb.config["stores"]["fp"])
    del spec["stage"]
    djb.config["stores"] = {"fp": spec}
    with pytest.raises(djb.ConfigError, match="'stage'"):
        _insert(fp, [{"id": 1, "f": "/any/file"}])


def test_a_missing_local_file_is_downloaded(fp: dict[str, Any]) -> None:
    data = np.arange(1000.0).tobytes()
    local = _file(fp["stage"], "deep/er/f.npy", data)
    _insert(fp, [{"id": 1, "f": local}])
    local.unlink()
    (local.parent).rmdir()
    assert _read(fp)[1] == local
    assert local.read_bytes() == data
    assert _read(fp)[1].read_bytes() == data
    assert [p.name for p in local.parent.iterdir()] == ["f.npy"]  # no temporary left


def test_a_corrupt_object_is_an_integrity_error(fp: dict[str, Any]) -> None:
    local = _file(fp["stage"], "c.dat", b"good contents")
    _insert(fp, [{"id": 1, "f": local}])
    djb.get_store("fp").put(_object("c.dat"), b"evil contents")
    local.unlink()
    with pytest.raises(djb.IntegrityError, match=r"'c\.dat'"):
        _read(fp)
    assert not local.exists()
    assert list(fp["stage"].iterdir()) == []  # no temporary left


def test_a_missing_object_is_reported(fp: dict[str, Any]) -> None:
    local = _file(fp["stage"], "m.dat", b"m")
    _insert(fp, [{"id": 1, "f": local}])
    djb.get_store("fp").remove(_object("m.dat"))
    local.unlink()
    with pytest.raises(djb.MissingPayloadError):
        _read(fp)


def test_a_missing_object_is_uploaded_again(fp: dict[str, Any]) -> None:
    local = _file(fp["stage"], "again.dat", b"again")
    _insert(fp, [{"id": 1, "f": local}])
    djb.get_store("fp").remove(_object("again.dat"))
    _insert(fp, [{"id": 2, "f": local}])
    assert djb.get_store("fp").get(_object("again.dat")) == b"again"


def test_sweep_deletes_unused_filepaths_and_keeps_used(fp: dict[str, Any]) -> None:
    keep = _file(fp["stage"], "keep/k.dat", b"kept")
    drop = _file(fp["stage"], "drop/d.dat", b"dropped")
    _insert(fp, [{"id": 1, "f": keep, "b": np.arange(3.0)}, {"id": 2, "f": drop, "b": None}])
    with fp["engine"].begin() as conn:
        conn.execute(sa.delete(fp["table"]).where(fp["table"].c.id == 2))
    ext = djb.externals(fp["engine"])["fp"]
    assert ext.unused() == [md5(b"drop/d.dat")]
    report = ext.sweep(grace=ZERO, progress=False)
    assert report.ok, report.errors
    assert (report.rows_deleted, report.payloads_deleted) == (1, 1)
    assert report.orphans_deleted == 0
    store = djb.get_store("fp")
    assert not store.exists(_object("drop/d.dat"))
    assert store.get(_object("keep/k.dat")) == b"kept"
    assert [r.filepath for r in _ext_rows(fp) if r.filepath] == ["keep/k.dat"]
    keep.unlink()
    assert _read(fp)[1].read_bytes() == b"kept"


def test_orphans_never_include_filepath_objects(fp: dict[str, Any]) -> None:
    """Filepath objects below ``<root>/<schema>/``, even one named and placed exactly like
    a hashed payload (DataJoint writes such a path), are never taken for orphans."""
    ext = djb.externals(fp["engine"])["fp"]
    schema = ext.schema
    store = djb.get_store("fp")
    # ordinary files whose relative path starts with the schema's name
    a = _file(fp["stage"], f"{schema}/ab/cd/notes.txt", b"a")
    b = _file(fp["stage"], f"{schema}/b.dat", b"b")
    _insert(fp, [{"id": 1, "f": a}, {"id": 2, "f": b}])
    # a file placed (by DataJoint) where a hashed payload would be: same name and layout
    data = b"looks like a blob payload"
    key = md5(b"some other content")
    lookalike = object_path(
        store.location, schema, key, None, store.subfolding, protocol=store.protocol
    )
    rel = str(lookalike.relative_to(store_root(store.location, store.protocol)))
    store.put(lookalike, data)
    ext_t = ext.table
    with fp["engine"].begin() as conn:
        conn.execute(
            sa.insert(ext_t),
            {
                "hash": md5(rel.encode()),
                "size": len(data),
                "filepath": rel,
                "contents_hash": md5(data),
            },
        )
        conn.execute(
            sa.text("INSERT INTO doc (id, f) VALUES (3, :h)"), {"h": md5(rel.encode()).bytes}
        )
    # sa_djblob itself refuses to place a file there, but a SELECT may compare it
    with pytest.raises(djb.UnsupportedTypeError, match="hashed payloads"):
        _insert(fp, [{"id": 4, "f": _file(fp["stage"], rel, data)}])
    t = fp["table"]
    with fp["engine"].connect() as conn:
        found = conn.execute(sa.select(t.c.id).where(t.c.f == fp["stage"] / rel)).scalars()
        assert found.all() == [3]
    report = ext.sweep(grace=ZERO, progress=False)
    assert report.ok, report.errors
    assert report.orphans_deleted == 0 and report.rows_deleted == 0
    assert store.get(lookalike) == data
    assert store.exists(_object(f"{schema}/ab/cd/notes.txt"))
    assert store.exists(_object(f"{schema}/b.dat"))
    # unreferenced, its row goes but phase 1 leaves the object (a filepath's bookkeeping
    # never deletes what sits on a payload's path); now unknown in this schema's own area,
    # it is this area's orphan
    with fp["engine"].begin() as conn:
        conn.execute(sa.delete(fp["table"]).where(fp["table"].c.id == 3))
    report = ext.sweep(grace=ZERO, progress=False)
    assert (report.rows_deleted, report.payloads_deleted, report.orphans_deleted) == (1, 0, 1)
    assert not store.exists(lookalike)


def test_verify_checks_filepath_objects(fp: dict[str, Any]) -> None:
    files = [_file(fp["stage"], f"v/{i}.dat", b"contents %d" % i) for i in range(3)]
    _insert(fp, [{"id": i, "f": f} for i, f in enumerate(files)])
    ext = djb.externals(fp["engine"])["fp"]
    assert ext.verify(progress=False).ok
    store = djb.get_store("fp")
    store.remove(_object("v/0.dat"))
    store.put(_object("v/1.dat"), b"contents X")
    report = ext.verify(progress=False)
    assert report.checked == 3
    assert report.missing == [(md5(b"v/0.dat"), _object("v/0.dat"))]
    assert report.corrupt == [(md5(b"v/1.dat"), _object("v/1.dat"))]


def test_paths_and_the_cli_list_filepath_objects(fp: dict[str, Any], tmp_path: Path) -> None:
    local = _file(fp["stage"], "p/q.dat", b"q")
    _insert(fp, [{"id": 1, "f": local, "b": np.arange(2.0)}])
    ext = djb.externals(fp["engine"])["fp"]
    paths = dict(ext.paths())
    assert paths[md5(b"p/q.dat")] == _object("p/q.dat")
    assert len(paths) == 2
    cfg = tmp_path / "djb.json"
    cfg.write_text(json.dumps({"stores": djb.config["stores"]}))
    url = fp["engine"].url.render_as_string(hide_password=False)
    res = CliRunner().invoke(
        cli,
        ["--url", url, "--config", str(cfg), "paths", "--json"],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    listed = {e["hash"]: e["path"] for e in json.loads(res.output)["stores"]["fp"]}
    assert listed[str(md5(b"p/q.dat"))] == str(_object("p/q.dat"))


def test_a_file_store_on_the_stage_keeps_the_file_in_place(
    engine: sa.Engine, tmp_path: Path
) -> None:
    stage = tmp_path / "stage"
    djb.config["stores"] = {"fp": {"protocol": "file", "location": str(stage), "stage": str(stage)}}
    djb.install(engine)
    md = sa.MetaData()
    t = sa.Table(
        "doc",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("f", djb.Filepath(store="fp")),
    )
    md.create_all(engine)
    local = _file(stage, "in/place.dat", b"in place")
    inode = local.stat().st_ino
    with engine.begin() as conn:
        conn.execute(sa.insert(t), {"id": 1, "f": local})
    assert local.stat().st_ino == inode  # not rewritten
    with engine.connect() as conn:
        assert conn.execute(sa.select(t.c.f)).scalar_one() == local
    local.write_bytes(b"changed!")
    with engine.connect() as conn, pytest.raises(djb.IntegrityError):
        conn.execute(sa.select(t.c.f)).scalar_one()


def test_filepath_needs_a_store() -> None:
    with pytest.raises(ValueError, match="needs a store"):
        djb.Filepath(store=None)  # type: ignore[arg-type]
    assert repr(djb.Filepath(store="x", foreign_key=False)) == (
        "Filepath(store='x', foreign_key=False)"
    )


# -- what a filepath may name ---------------------------------------------------------


def test_a_filepath_longer_than_the_externals_column_is_refused(fp: dict[str, Any]) -> None:
    """The externals table's ``filepath`` column holds 1000 characters: MariaDB would cut a
    longer path (two rows naming one object), PostgreSQL would fail with a raw DataError.
    A path of 1000 characters is fine; one more is refused before anything is written."""
    folders = "/".join(["d" * 199] * 4) + "/" + "e" * 150  # 950 characters
    fits = folders + "/" + "f" * 49  # 1000 characters
    local = _file(fp["stage"], fits, b"just fits")
    _insert(fp, [{"id": 1, "f": local}])
    (row,) = _ext_rows(fp)
    assert row.filepath == fits
    assert _read(fp)[1] == local
    # one character more: refused at bind time, nothing stored
    longer = folders + "/" + "f" * 50
    with pytest.raises(djb.UnsupportedTypeError, match="1001 characters"):
        _insert(fp, [{"id": 2, "f": _file(fp["stage"], longer, b"too long")}])
    assert [r.filepath for r in _ext_rows(fp)] == [fits]
    assert not djb.get_store("fp").exists(_object(longer))


@pytest.mark.backends("mysql")
def test_a_filepath_the_database_stores_differently_is_refused(fp: dict[str, Any]) -> None:
    """MySQL's INSERT IGNORE cuts a value too long for its column with only a warning: the
    write path reads back what the row records (as for attachment names) and refuses."""
    ext = djb.externals(fp["engine"])["fp"].table
    with fp["engine"].begin() as conn:
        conn.execute(sa.text(f"ALTER TABLE `{ext.name}` MODIFY filepath VARCHAR(20) NULL"))
    a = _file(fp["stage"], "twenty-characters-0/a.dat", b"a")
    with pytest.raises(djb.StoreError, match="records the path"):
        _insert(fp, [{"id": 1, "f": a}])
    assert _ext_rows(fp) == []


def test_a_filepath_that_is_not_utf8_is_refused_at_bind_time(fp: dict[str, Any]) -> None:
    name = "raw\udcff.dat"  # the byte 0xff, surrogate-escaped by os.fsdecode
    local = fp["stage"] / name
    local.write_bytes(b"x")
    with pytest.raises(djb.UnsupportedTypeError, match="not valid UTF-8"):
        _insert(fp, [{"id": 1, "f": local}])
    assert _ext_rows(fp) == []


def _hex_path(schema: str, key: uuid.UUID, suffix: str = "") -> str:
    return f"{schema}/{key.hex[:2]}/{key.hex[2:4]}/{key.hex}{suffix}"


@pytest.mark.parametrize(
    "where",
    [
        "another schema's payload",
        "another schema's attachment",
        "a payload without subfolders",
        "this schema's owner marker",
        "the filepath owner marker",
    ],
)
def test_filepath_never_lands_on_a_payload_or_a_marker(fp: dict[str, Any], where: str) -> None:
    """Whoever owns the area: a filepath at ``<any schema>/ab/cd/<32 hex>[.name]`` would
    overwrite that schema's payload (and be swept by it as an orphan); one at
    ``.sa_djblob-owner/...`` would overwrite an owner marker."""
    schema = djb.externals(fp["engine"])["fp"].schema
    key = md5(b"another schema's content")
    rel = {
        "another schema's payload": _hex_path("other_schema", key),
        "another schema's attachment": _hex_path("other_schema", key, ".notes.txt"),
        "a payload without subfolders": f"other_schema/{key.hex}",
        "this schema's owner marker": f".sa_djblob-owner/{schema}",
        "the filepath owner marker": ".sa_djblob-owner/.filepath",
    }[where]
    local = _file(fp["stage"], rel, b"a user's file")
    with pytest.raises(djb.UnsupportedTypeError, match="keeps"):
        _insert(fp, [{"id": 1, "f": local}])
    assert _ext_rows(fp) == []
    assert not djb.get_store("fp").exists(_object(rel))


def test_filepath_upkeep_never_deletes_a_payload_or_a_marker(fp: dict[str, Any]) -> None:
    """Rows DataJoint (or an older sa_djblob) wrote for a filepath on another area's payload
    or on an owner marker: sweeping them away deletes the rows, never those objects."""
    engine, store = fp["engine"], djb.get_store("fp")
    ext = djb.externals(engine)["fp"]
    _insert(fp, [{"id": 1, "b": np.arange(4.0)}])  # claims the area: writes its marker
    marker_rel = f".sa_djblob-owner/{ext.schema}"
    owner_line = store.get(_object(marker_rel))
    payload_rel = _hex_path("other_schema", md5(b"x"))
    store.put(_object(payload_rel), b"another schema's payload")
    with engine.begin() as conn:
        for rel, data in [(marker_rel, owner_line), (payload_rel, b"another schema's payload")]:
            row = {"hash": md5(rel.encode()), "size": len(data), "filepath": rel}
            conn.execute(sa.insert(ext.table), {**row, "contents_hash": md5(data)})
    report = ext.sweep(grace=ZERO, progress=False)
    assert report.ok, report.errors
    assert report.rows_deleted == 2
    assert store.get(_object(marker_rel)) == owner_line
    assert store.get(_object(payload_rel)) == b"another schema's payload"
    assert len(_ext_rows(fp)) == 1  # the blob's


def test_a_schema_sweep_keeps_another_schemas_filepath_objects_in_its_area(
    engine: sa.Engine, database: Database, tmp_path: Path
) -> None:
    """sa_djblob 0.1 let one schema place a filepath on another schema's payload path: the
    sweep of that area looks the object up in the externals table of the schema that owns
    the store's filepaths, and keeps it."""
    stage = tmp_path / "stage"
    stage.mkdir()
    djb.config["stores"] = {
        "fp": {"protocol": "file", "location": str(tmp_path / "store"), "stage": str(stage)}
    }
    djb.install(engine)
    other = database.make_schema("x")
    md = sa.MetaData()
    mine = sa.Table(
        "rec",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("b", djb.Blob(store="fp")),
    )
    theirs = sa.Table(
        "doc",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("f", djb.Filepath(store="fp")),
        schema=other,
    )
    md.create_all(engine)
    with engine.begin() as conn:  # the other schema owns the store's filepaths
        conn.execute(sa.insert(theirs), {"id": 1, "f": _file(stage, "x.dat", b"x")})
    with engine.begin() as conn:  # this schema owns its area
        conn.execute(sa.insert(mine), {"id": 1, "b": np.arange(3.0)})
    ext = djb.externals(engine)["fp"]
    rel = _hex_path(ext.schema, md5(b"unrelated"))
    data = b"the other schema's file"
    store = djb.get_store("fp")
    store.put(_object(rel), data)
    raw = sa.table("doc", sa.column("id"), sa.column("f"), schema=other)
    with engine.begin() as conn:
        conn.execute(
            sa.insert(djb.externals(engine, other)["fp"].table),
            {
                "hash": md5(rel.encode()),
                "size": len(data),
                "filepath": rel,
                "contents_hash": md5(data),
            },
        )
        conn.execute(sa.insert(raw), {"id": 2, "f": md5(rel.encode()).bytes})
    report = ext.sweep(grace=ZERO, progress=False)
    assert report.ok, report.errors
    assert report.orphans_deleted == 0
    assert store.get(_object(rel)) == data


def test_a_sweep_keeps_what_may_be_another_databases_filepath_objects(tmp_path: Path) -> None:
    """When another database places the store's filepaths, its rows cannot be read: a
    hash-named object in this area may be one of its files, so none is taken for an
    orphan."""
    stage = tmp_path / "stage"
    stage.mkdir()
    djb.config["stores"] = {
        "fp": {"protocol": "file", "location": str(tmp_path / "store"), "stage": str(stage)}
    }
    a, b = (sa.create_engine(f"sqlite:///{tmp_path / n}") for n in ("a.db", "b.db"))

    @sa.event.listens_for(b, "connect")
    def _attach(dbapi_conn: Any, _rec: Any) -> None:
        dbapi_conn.execute(f"ATTACH DATABASE '{tmp_path / 'b-aux.db'}' AS aux")

    def table(schema: str | None) -> tuple[sa.MetaData, sa.Table]:
        md = sa.MetaData()
        t = sa.Table(
            "rec",
            md,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("b", djb.Blob(store="fp"), nullable=True),
            sa.Column("f", djb.Filepath(store="fp"), nullable=True),
            schema=schema,
        )
        return md, t

    try:
        for e, schema in ((a, None), (b, "aux")):
            md, t = table(schema)
            md.create_all(e)
            djb.install(e)
            with e.begin() as conn:  # b owns the store's filepaths, a the area "main"
                value = {"f": _file(stage, "b.dat", b"b")} if e is b else {"b": np.arange(3.0)}
                conn.execute(sa.insert(t), {"id": 1, **value})
        ext = djb.externals(a)["fp"]
        lookalike = _object(_hex_path(ext.schema, md5(b"placed by b's 0.1")))
        djb.get_store("fp").put(lookalike, b"b's file")
        report = ext.sweep(grace=ZERO, progress=False)
        assert report.ok, report.errors
        assert (report.orphans_deleted, report.orphans_kept) == (0, 1)
        assert djb.get_store("fp").get(lookalike) == b"b's file"
    finally:
        for e in (a, b):
            djb.uninstall(e)
            e.dispose()


# -- the stage folder ---------------------------------------------------------------


def _stage_store(engine: sa.Engine, tmp_path: Path) -> tuple[sa.Table, Path]:
    """Store 'fp' on a file store whose location is its stage, and table doc."""
    stage = tmp_path / "stage"
    djb.config["stores"] = {"fp": {"protocol": "file", "location": str(stage), "stage": str(stage)}}
    djb.install(engine)
    md = sa.MetaData()
    t = sa.Table(
        "doc",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("f", djb.Filepath(store="fp")),
    )
    md.create_all(engine)
    return t, stage


def test_a_stage_file_edited_before_the_commit_is_not_committed(
    engine: sa.Engine, tmp_path: Path
) -> None:
    """On a store whose location is the stage, the file is its own object: an edit between
    the statement and the commit would commit a row whose object no longer matches."""
    t, stage = _stage_store(engine, tmp_path)
    local = _file(stage, "run/a.dat", b"as bound")
    with pytest.raises(djb.StoreError, match="changed after"), engine.begin() as conn:
        conn.execute(sa.insert(t), {"id": 1, "f": local})
        local.write_bytes(b"edited before the commit")
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one() == 0
    assert local.read_bytes() == b"edited before the commit"
    # the same through a Session; an unchanged file commits
    with Session(engine) as s:
        s.execute(sa.insert(t), {"id": 2, "f": local})
        local.write_bytes(b"edited again")
        with pytest.raises(djb.StoreError, match="changed after"):
            s.commit()
        s.rollback()
        s.execute(sa.insert(t), {"id": 3, "f": local})
        s.commit()
    assert djb.externals(engine)["fp"].verify(progress=False).ok
    with engine.connect() as conn:
        assert conn.execute(sa.select(t.c.id)).scalars().all() == [3]


def test_a_stage_file_of_a_rolled_back_savepoint_may_change_before_the_commit(
    engine: sa.Engine, tmp_path: Path
) -> None:
    """Only files the committing transaction still stores are checked at the commit."""
    t, stage = _stage_store(engine, tmp_path)
    dropped = _file(stage, "dropped.dat", b"inserted, then rolled back")
    kept = _file(stage, "kept.dat", b"kept")
    with engine.begin() as conn:
        with conn.begin_nested():  # released: its file stays checked
            conn.execute(sa.insert(t), {"id": 1, "f": kept})
        savepoint = conn.begin_nested()
        conn.execute(sa.insert(t), {"id": 2, "f": dropped})
        with conn.begin_nested():  # inside the savepoint rolled back below
            conn.execute(sa.insert(t), {"id": 3, "f": _file(stage, "inner.dat", b"inner")})
        savepoint.rollback()
        dropped.write_bytes(b"free to change: no longer stored here")
        (stage / "inner.dat").write_bytes(b"changed too")
    with engine.connect() as conn:
        assert conn.execute(sa.select(t.c.id)).scalars().all() == [1]
    with pytest.raises(djb.StoreError, match="changed after"), engine.begin() as conn:
        with conn.begin_nested():
            conn.execute(sa.insert(t), {"id": 4, "f": _file(stage, "k2.dat", b"k2")})
        (stage / "k2.dat").write_bytes(b"changed: released savepoints still count")


def test_a_stage_file_edited_after_the_commit_is_kept_and_reported(fp: dict[str, Any]) -> None:
    local = _file(fp["stage"], "kept/k.dat", b"stored version")
    _insert(fp, [{"id": 1, "f": local}])
    local.write_bytes(b"my local edits")
    with pytest.raises(djb.StageError, match="differs from the stored version"):
        _read(fp)
    assert local.read_bytes() == b"my local edits"
    assert sorted(p.name for p in local.parent.iterdir()) == ["k.dat"]
    # moved aside by the user: the stored version comes back
    local.rename(local.with_name("k.mine"))
    assert _read(fp)[1].read_bytes() == b"stored version"


def test_a_read_never_writes_through_a_symlink_out_of_the_stage(
    fp: dict[str, Any], tmp_path: Path
) -> None:
    local = _file(fp["stage"], "linked/f.dat", b"stored")
    _insert(fp, [{"id": 1, "f": local}])
    local.unlink()
    local.parent.rmdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (fp["stage"] / "linked").symlink_to(outside)
    with pytest.raises(djb.StageError, match="outside the stage"):
        _read(fp)
    assert list(outside.iterdir()) == []


def test_a_stage_folder_that_is_a_symlink_is_used_as_the_stage(
    fp: dict[str, Any], tmp_path: Path
) -> None:
    local = _file(fp["stage"], "s/f.dat", b"through the link")
    _insert(fp, [{"id": 1, "f": local}])
    real = tmp_path / "real-stage"
    fp["stage"].rename(real)
    fp["stage"].symlink_to(real)
    (real / "s" / "f.dat").unlink()
    assert _read(fp)[1].read_bytes() == b"through the link"
    assert (real / "s" / "f.dat").read_bytes() == b"through the link"
