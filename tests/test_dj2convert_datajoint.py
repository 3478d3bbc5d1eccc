"""Converting with the real DataJoint on both sides: 0.14 writes, 2.3.5 reads.

DataJoint 0.14 runs in ``.venv-dj``, DataJoint 2.3.5 in ``.venv-dj2`` (the ``dj_python``
and ``dj2_python`` fixtures; ``SA_DJBLOB_DJ_VENV`` / ``SA_DJBLOB_DJ2_VENV`` name others),
each created on first use and kept, each a subprocess talking to the same database and
file store folder.

* MariaDB: DataJoint 0.14 declares and fills a schema (``blob``, ``blob@local``,
  ``attach``, ``attach@local``, a lookup table); after ``dj2convert.convert`` DataJoint
  2.3.5 reads every value identically, inserts a row into the converted table and reads
  it back, and its garbage collector finds no orphan; after ``revert`` DataJoint 0.14
  reads every value identically again.
* PostgreSQL: DataJoint 0.14 does not run on PostgreSQL, so sa_djblob writes the 0.14
  layout there; after the conversion DataJoint 2.3.5 reads every value identically.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import Database
from helpers.dj_venv import run_side, side_config

import sa_djblob as djb
from sa_djblob import dj2convert

HELPERS = Path(__file__).parent / "helpers"
sys.path.insert(0, str(HELPERS))
from dj_common import (  # noqa: E402
    attachment_contents,
    blob_values,
    describe,
    write_attachments,
)

pytestmark = pytest.mark.slow


def run_dj(python: Path, command: str, cfg: dict[str, Any], io: Path) -> dict[str, Any]:
    return run_side(python, "dj_side.py", command, cfg, io)


def run_convert_side(python: Path, command: str, cfg: dict[str, Any], io: Path) -> dict[str, Any]:
    return run_side(python, "dj2convert_side.py", command, cfg, io)


@pytest.fixture
def setup(database: Database, backend: str, tmp_path: Path) -> dict[str, Any]:
    cfg = side_config(database.url, backend, database.default_schema, tmp_path)
    store, io = Path(cfg["store"]), Path(cfg["io"])
    djb.config["stores"] = {"local": {"protocol": "file", "location": str(store)}}
    return {"cfg": cfg, "io": io, "store": store}


def file_of(name: str) -> dict[str, str]:
    return {"name": name, "contents": attachment_contents()[name].hex()}


def expected_items(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """dj_item's rows as DataJoint describes them, from the names DataJoint 0.14 wrote."""
    values = blob_values()
    return [
        {
            "item_id": r["item_id"],
            "b0": describe(values[r["b0"]]),
            "b1": describe(values[r["b1"]]),
            "a0": file_of(r["a0"]),
            "a1": file_of(r["a1"]),
        }
        for r in rows
    ]


def expected_params() -> list[dict[str, Any]]:
    return [{"param": n, "value": describe(v)} for n, v in sorted(blob_values().items())]


@pytest.mark.backends("mysql")
def test_a_schema_datajoint_014_wrote_reads_identically_in_datajoint_2_after_conversion(
    setup: dict[str, Any],
    engine: sa.Engine,
    dj_python: Path,
    dj2_python: Path,
) -> None:
    out = run_dj(dj_python, "write", setup["cfg"], setup["io"])
    assert out["datajoint"].startswith("0.14.")
    report = dj2convert.convert(engine, setup["cfg"]["schema"])
    assert report.ok, report.errors
    converted = {(c.table, c.column): c.action for c in report.columns}
    assert converted[("dj_item", "b1")] == converted[("#dj_param", "value")] == "converted"
    assert converted[("dj_item", "b0")] == converted[("dj_item", "a0")] == "labelled"

    cfg = setup["cfg"] | {
        "tables": ["dj_item", "#dj_param"],
        "insert": {
            "item_id": 50,
            "b0": "struct",
            "b1": "image",
            "a0": "notes.txt",
            "a1": "trace.bin",
        },
    }
    got = run_convert_side(dj2_python, "read2", cfg, setup["io"])
    assert got["datajoint"] == "2.3.5"
    item = got["tables"]["dj_item"]
    assert item["heading"] == {
        "item_id": "int",
        "b0": "<blob>",
        "b1": "<blob@local>",
        "a0": "<attach>",
        "a1": "<attach@local>",
    }
    assert item["rows"] == expected_items(out["rows"])
    assert got["tables"]["#dj_param"]["rows"] == expected_params()
    values = blob_values()
    assert got["inserted"] == {
        "item_id": 50,
        "b0": describe(values["struct"]),
        "b1": describe(values["image"]),
        "a0": file_of("notes.txt"),
        "a1": file_of("trace.bin"),
    }
    assert got["left_after_delete"] == 0
    gc = got["gc"]
    assert gc["hash_paths_orphaned"] == 0
    assert gc["hash_paths_referenced"] == gc["hash_paths_stored"] > 0


@pytest.mark.backends("mysql")
def test_a_reverted_schema_reads_identically_in_datajoint_014(
    setup: dict[str, Any],
    engine: sa.Engine,
    dj_python: Path,
) -> None:
    out = run_dj(dj_python, "write", setup["cfg"], setup["io"])
    schema = setup["cfg"]["schema"]
    assert dj2convert.convert(engine, schema).ok
    report = dj2convert.revert(engine, schema)
    assert report.ok, report.errors
    cfg = setup["cfg"] | {"tables": ["dj_item", "#dj_param"]}
    got = run_convert_side(dj_python, "read14", cfg, setup["io"])
    assert got["tables"]["dj_item"]["rows"] == expected_items(out["rows"])
    assert got["tables"]["#dj_param"]["rows"] == expected_params()


@pytest.mark.backends("postgresql")
def test_a_014_schema_on_postgresql_reads_identically_in_datajoint_2_after_conversion(
    setup: dict[str, Any], engine: sa.Engine, dj2_python: Path
) -> None:
    files = write_attachments(setup["io"] / "inputs")
    values = blob_values()
    names, fnames = sorted(values), sorted(files)
    md = sa.MetaData()
    item = sa.Table(
        "dj_item",
        md,
        sa.Column("item_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("b0", djb.Blob(), nullable=False),
        sa.Column("b1", djb.Blob(store="local"), nullable=False),
        sa.Column("a0", djb.Attach(), nullable=False),
        sa.Column("a1", djb.Attach(store="local"), nullable=False),
    )
    md.create_all(engine)
    djb.install(engine)
    rows = [
        {
            "item_id": i,
            "b0": names[i],
            "b1": names[(i + 1) % len(names)],
            "a0": fnames[i % len(fnames)],
            "a1": fnames[(i + 1) % len(fnames)],
        }
        for i in range(len(names))
    ]
    with djb.config.override(compression="datajoint"), engine.begin() as conn:
        conn.execute(
            sa.insert(item),
            [
                {
                    "item_id": r["item_id"],
                    "b0": values[r["b0"]],
                    "b1": values[r["b1"]],
                    "a0": files[r["a0"]],
                    "a1": files[r["a1"]],
                }
                for r in rows
            ],
        )
    report = dj2convert.convert(engine, setup["cfg"]["schema"])
    assert report.ok, report.errors
    cfg = setup["cfg"] | {"tables": ["dj_item"]}
    got = run_convert_side(dj2_python, "read2", cfg, setup["io"])
    assert got["tables"]["dj_item"]["rows"] == expected_items(rows)
    assert got["gc"]["hash_paths_orphaned"] == 0
