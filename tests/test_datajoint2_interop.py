"""Both directions with the real DataJoint 2.3.5, on MariaDB/MySQL and PostgreSQL.

DataJoint 2.3.5 runs in its own virtualenv (``.venv-dj2``, created on first use and kept;
``SA_DJBLOB_DJ2_VENV`` names another: the ``dj2_python`` fixture), as a subprocess
(``tests/helpers/dj2_side.py``) talking to the same database and file store folder as
sa_djblob. Expected values come
from ``tests/helpers/dj_common.py``, which both sides import.

1. DataJoint declares a table with ``<blob>``, ``<attach>``, ``<blob@local>``,
   ``<attach@local>`` and ``<hash@local>`` and inserts rows: ``sa_djblob.dj2`` models read
   them identically; writing the same values through sa_djblob gives the same pointers.
2. sa_djblob creates a table and writes values: DataJoint reads its heading as the same
   codecs and the values identically, inserts a row that sa_djblob reads, and DataJoint's
   garbage collector finds no orphan.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from conftest import Database
from helpers.dj_venv import run_side, side_config

import sa_djblob as djb
from sa_djblob import dj2

HELPERS = Path(__file__).parent / "helpers"
sys.path.insert(0, str(HELPERS))
from dj_common import blob_values, describe, describe_file, write_attachments  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.backends("mysql", "postgresql")]


def run_dj2(python: Path, command: str, cfg: dict[str, Any], io: Path) -> dict[str, Any]:
    return run_side(python, "dj2_side.py", command, cfg, io)


def item_table(metadata: sa.MetaData, name: str) -> sa.Table:
    return sa.Table(
        name,
        metadata,
        sa.Column("item_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("b0", dj2.Blob(), nullable=False),
        sa.Column("a0", dj2.Attach(), nullable=False),
        sa.Column("b1", dj2.Blob(store="local"), nullable=False),
        sa.Column("a1", dj2.Attach(store="local"), nullable=False),
        sa.Column("h1", dj2.Hash(store="local"), nullable=True),
    )


@pytest.fixture
def setup(database: Database, backend: str, tmp_path: Path, dj2_python: Path) -> dict[str, Any]:
    cfg = side_config(database.url, backend, database.default_schema, tmp_path)
    store, io = Path(cfg["store"]), Path(cfg["io"])
    djb.config["stores"] = {"local": {"protocol": "file", "location": str(store)}}
    return {"cfg": cfg, "io": io, "python": dj2_python, "store": store}


def rows(folder: Path) -> list[dict[str, Any]]:
    """The rows dj2_side.rows() writes, with this side's copies of the files."""
    files = write_attachments(folder)
    values = blob_values()
    names = sorted(values)
    fnames = sorted(files)
    return [
        dict(
            item_id=i,
            b0=values[names[i]],
            a0=files[fnames[i % len(fnames)]],
            b1=values[names[(i + 1) % len(names)]],
            a1=files[fnames[(i + 1) % len(fnames)]],
            h1=f"raw-{i}".encode(),
        )
        for i in range(len(names))
    ]


def described(row: Any) -> dict[str, Any]:
    return {
        "b0": describe(row.b0),
        "a0": describe_file(row.a0),
        "b1": describe(row.b1),
        "a1": describe_file(row.a1),
        "h1": None if row.h1 is None else row.h1.hex(),
    }


def expected(folder: Path) -> dict[str, Any]:
    out = {}
    for r in rows(folder):
        out[str(r["item_id"])] = {
            "b0": describe(r["b0"]),
            "a0": describe_file(r["a0"]),
            "b1": describe(r["b1"]),
            "a1": describe_file(r["a1"]),
            "h1": r["h1"].hex(),
        }
    return out


def pointers(engine: sa.Engine, table: str, column: str) -> dict[int, Any]:
    with engine.connect() as conn:
        rows: Sequence[Any] = conn.execute(
            sa.select(sa.column("item_id"), sa.column(column)).select_from(sa.table(table))
        ).all()
    return {i: json.loads(v) if isinstance(v, str) else v for i, v in rows}


def test_datajoint2_writes_sa_djblob_reads(
    setup: dict[str, Any], engine: sa.Engine, tmp_path: Path
) -> None:
    out = run_dj2(setup["python"], "write", setup["cfg"], setup["io"])
    want = expected(tmp_path / "expected")
    assert out["read"] == want  # DataJoint reads its own values as both sides expect
    assert out["gc"]["hash_paths_orphaned"] == 0

    djb.install(engine)
    md = sa.MetaData()
    item = item_table(md, "dj_item")
    md.create_all(engine)  # DataJoint's table is left alone; the claims table is added
    with engine.connect() as conn:
        got = {str(r.item_id): described(r) for r in conn.execute(sa.select(item))}
    assert got == want

    # sa_djblob writes the same values into the same table: the same pointers
    dj_pointers = {c: pointers(engine, "dj_item", c) for c in ("b1", "a1", "h1")}
    with engine.begin() as conn:
        conn.execute(
            sa.insert(item),
            [r | {"item_id": 1000 + r["item_id"]} for r in rows(tmp_path / "sa-inputs")],
        )
    sa_rows = {r["item_id"]: r for r in rows(tmp_path / "again")}
    for column, before in dj_pointers.items():
        after = pointers(engine, "dj_item", column)
        for i, ptr in before.items():
            if column == "b1" and djb.pack(sa_rows[i]["b1"])[:5] == b"ZL123":
                # equal values, perhaps another zlib stream: same schema, store and folder
                assert after[1000 + i]["path"].rsplit("/", 1)[0] == ptr["path"].rsplit("/", 1)[0]
                assert (after[1000 + i]["schema"], after[1000 + i]["store"]) == (
                    ptr["schema"],
                    ptr["store"],
                )
            else:
                assert after[1000 + i] == ptr, (column, i)


def test_sa_djblob_writes_datajoint2_reads(
    setup: dict[str, Any], engine: sa.Engine, tmp_path: Path
) -> None:
    md = sa.MetaData()
    item = item_table(md, "sa_item")
    md.create_all(engine)
    djb.install(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(item), rows(tmp_path / "sa-inputs"))

    out = run_dj2(setup["python"], "read", setup["cfg"] | {"table": "sa_item"}, setup["io"])
    assert out["heading"] == {
        "item_id": "None",
        "b0": "blob",
        "a0": "attach",
        "b1": "blob",
        "a1": "attach",
        "h1": "hash",
    }
    assert out["read"] == expected(tmp_path / "expected")
    # DataJoint's collector sees every object sa_djblob wrote as referenced
    assert out["gc"]["hash_paths_orphaned"] == 0, out["gc"]
    assert out["gc"]["hash_paths_stored"] == out["gc"]["hash_paths_referenced"] > 0

    # the row DataJoint inserted reads back through sa_djblob
    with engine.connect() as conn:
        row = conn.execute(sa.select(item).where(item.c.item_id == 100)).one()
    assert described(row) == expected(tmp_path / "expected2")["0"]


# -- <npy@>, <object@>, <filepath@> -------------------------------------------------


def refs_table(metadata: sa.MetaData, name: str) -> sa.Table:
    return sa.Table(
        name,
        metadata,
        sa.Column("item_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("n", dj2.Npy(store="local"), nullable=True),
        sa.Column("o", dj2.Object(store="local"), nullable=True),
        sa.Column("f", dj2.Filepath(store="local"), nullable=True),
    )


def refs_rows(store: Path, folder: Path, side: str) -> list[dict[str, Any]]:
    """The rows dj2_side.refs_rows() writes, with this side's files."""
    values = blob_values()
    files = write_attachments(folder)
    out = []
    for i, name in enumerate(["matrix", "image", "ints", "fortran"]):
        placed = store / "raw" / side / f"file{i}.bin"
        placed.parent.mkdir(parents=True, exist_ok=True)
        placed.write_bytes(f"{side} placed {i}".encode())
        fname = sorted(files)[i % len(files)]
        out.append(dict(item_id=i, n=values[name], o=files[fname], f=f"raw/{side}/file{i}.bin"))
    return out


def refs_expected(store: Path, folder: Path, side: str) -> dict[str, Any]:
    return {
        str(r["item_id"]): {
            "n": describe(r["n"]),
            "n_meta": [list(r["n"].shape), str(r["n"].dtype)],
            "o": r["o"].read_bytes().hex(),
            "f": (store / r["f"]).read_bytes().hex(),
        }
        for r in refs_rows(store, folder, side)
    }


def refs_described(row: Any) -> dict[str, Any]:
    return {
        "n": describe(np.asarray(row.n)),
        "n_meta": [list(row.n.shape), str(row.n.dtype)],
        "o": row.o.read().hex(),
        "f": row.f.read().hex(),
    }


def test_datajoint2_npy_object_filepath_read_through_sa_djblob(
    setup: dict[str, Any], engine: sa.Engine, tmp_path: Path
) -> None:
    out = run_dj2(setup["python"], "refs-write", setup["cfg"], setup["io"])
    want = refs_expected(setup["store"], tmp_path / "expected", "dj")
    assert out["read"] == want
    assert out["gc"]["schema_paths_orphaned"] == 0
    djb.install(engine)
    table = refs_table(sa.MetaData(), "dj_refs")
    with engine.connect() as conn:
        got = {str(r.item_id): refs_described(r) for r in conn.execute(sa.select(table))}
    assert got == want
    with engine.connect() as conn:  # rows by range reads match DataJoint's arrays too
        ref = conn.execute(sa.select(table.c.n).where(table.c.item_id == 1)).scalar_one()
    np.testing.assert_array_equal(ref[3:7, 2], blob_values()["image"][3:7, 2])


def test_sa_djblob_npy_object_filepath_read_by_datajoint2(
    setup: dict[str, Any], engine: sa.Engine, tmp_path: Path
) -> None:
    md = sa.MetaData()
    table = refs_table(md, "sa_refs")
    md.create_all(engine)
    djb.install(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(table), refs_rows(setup["store"], tmp_path / "sa-inputs", "sa"))
    out = run_dj2(setup["python"], "refs-read", setup["cfg"] | {"table": "sa_refs"}, setup["io"])
    assert out["read"] == refs_expected(setup["store"], tmp_path / "expected", "sa")
    # DataJoint's collector sees every object sa_djblob wrote as referenced
    assert out["gc"]["schema_paths_orphaned"] == 0, out["gc"]
    # four rows of sa_djblob's and one of DataJoint's, each with an npy and an object file
    assert out["gc"]["schema_paths_stored"] == out["gc"]["schema_paths_referenced"] == 10
    with engine.connect() as conn:
        row = conn.execute(sa.select(table).where(table.c.item_id == 100)).one()
    assert refs_described(row) == refs_expected(setup["store"], tmp_path / "again", "dj")["0"]
