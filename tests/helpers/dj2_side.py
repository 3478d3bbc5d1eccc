"""The DataJoint 2.3.5 side of the 2.x interop test; run with the .venv-dj2 interpreter.

    python dj2_side.py write CONFIG.json   # declare a table with DataJoint 2.x and insert values
    python dj2_side.py read  CONFIG.json   # read sa_djblob's table, insert one row, run the GC

CONFIG.json: {"backend", "host", "port", "user", "password", "dbname", "schema", "store",
"io"}; ``store`` is the file store folder shared with sa_djblob (store name 'local'),
``io`` a folder for the files exchanged with the test. Credentials are read from the
file, never printed.

Two workarounds for DataJoint 2.3.5 on our databases (docs: /work/shared/notes):
on MariaDB, JSON columns are reported as ``longtext``, so codec columns lose their json
flag and inserts of ``<blob@s>`` fail (upstream #1451): the flag is set again for every
stored codec column; on PostgreSQL with psycopg2, ``bytea`` arrives as ``memoryview`` and
in-row ``<attach>`` fails to decode: a typecaster returns ``bytes``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import datajoint as dj
from dj_common import attachment_contents, blob_values, describe, describe_file, write_attachments

TABLE_DEFINITION = """
item_id : int32
---
b0 : <blob>                 # in the row
a0 : <attach>               # in the row
b1 : <blob@local>           # in the store
a1 : <attach@local>         # in the store
h1 = null : <hash@local>    # raw bytes in the store
"""


def _workarounds(backend: str) -> None:
    if backend == "mysql":
        from datajoint import heading

        original = heading.Heading._init_from_database

        def init_from_database(self: Any) -> None:
            original(self)
            for name, attr in list(self._attributes.items()):
                if attr.codec is not None and attr.store is not None and not attr.json:
                    self._attributes[name] = attr._replace(json=True)

        heading.Heading._init_from_database = init_from_database
    else:
        import psycopg2
        import psycopg2.extensions

        def as_bytes(value: Any, cur: Any) -> bytes | None:
            view = psycopg2.BINARY(value, cur)
            return None if view is None else bytes(view)

        caster = psycopg2.extensions.new_type(psycopg2.BINARY.values, "BYTEA_BYTES", as_bytes)
        psycopg2.extensions.register_type(caster)


def set_config(cfg: dict[str, Any]) -> None:
    """The settings DataJoint 0.14 and 2.x share: server, credentials, store 'local'."""
    dj.config["database.host"] = cfg["host"]
    dj.config["database.port"] = int(cfg["port"])
    dj.config["database.user"] = cfg["user"]
    dj.config["database.password"] = cfg["password"]
    dj.config["database.use_tls"] = False
    dj.config["safemode"] = False
    dj.config["loglevel"] = "WARNING"
    dj.config["stores"] = {"local": {"protocol": "file", "location": cfg["store"]}}


def configure(cfg: dict[str, Any]) -> None:
    """DataJoint 2.3.5, with its workarounds, on the test's database and file store."""
    _workarounds(cfg["backend"])
    dj.config["database.backend"] = cfg["backend"]
    if cfg["backend"] == "postgresql":
        dj.config["database.name"] = cfg["dbname"]
    set_config(cfg)
    dj.config["download_path"] = str(Path(cfg["io"]) / "dj2-downloads")


def connect(cfg: dict[str, Any]) -> dj.Schema:
    configure(cfg)
    return dj.Schema(cfg["schema"])


def rows(io: Path) -> list[dict[str, Any]]:
    """The rows both sides write: the same values from dj_common."""
    files = write_attachments(io / "dj-inputs")
    values = blob_values()
    names = sorted(values)
    fnames = sorted(files)
    return [
        dict(
            item_id=i,
            b0=values[names[i]],
            a0=str(files[fnames[i % len(fnames)]]),
            b1=values[names[(i + 1) % len(names)]],
            a1=str(files[fnames[(i + 1) % len(fnames)]]),
            h1=f"raw-{i}".encode(),
        )
        for i in range(len(names))
    ]


def describe_rows(table: Any) -> dict[str, Any]:
    out = {}
    for row in table.to_dicts(order_by="item_id"):
        out[str(row["item_id"])] = {
            "b0": describe(row["b0"]),
            "a0": describe_file(row["a0"]),
            "b1": describe(row["b1"]),
            "a1": describe_file(row["a1"]),
            "h1": None if row["h1"] is None else row["h1"].hex(),
        }
    return out


def gc_report(schema: dj.Schema) -> dict[str, Any]:
    report = dj.gc.GarbageCollector(schema, store="local").collect(dry_run=True)
    keys = ("hash_paths_referenced", "hash_paths_stored", "hash_paths_orphaned")
    return {k: report[k] for k in keys} | {"orphaned": report["orphaned_hash_paths"]}


def write(cfg: dict[str, Any]) -> dict[str, Any]:
    schema = connect(cfg)
    io = Path(cfg["io"])

    @schema
    class DjItem(dj.Manual):  # table `dj_item`
        definition = TABLE_DEFINITION

    DjItem.insert(rows(io))
    return {"read": describe_rows(DjItem()), "gc": gc_report(schema)}


def read(cfg: dict[str, Any]) -> dict[str, Any]:
    schema = connect(cfg)
    io = Path(cfg["io"])
    table = dj.FreeTable(schema.connection, f"{cfg['schema']}.{cfg['table']}")
    heading = {
        name: str(attr.codec and attr.codec.name) for name, attr in table.heading.attributes.items()
    }
    before = describe_rows(table)
    extra = rows(io)[0] | {"item_id": 100}
    table.insert1(extra)
    return {"heading": heading, "read": before, "gc": gc_report(schema)}


REFS_DEFINITION = """
item_id : int32
---
n = null : <npy@local>        # a .npy file, read lazily
o = null : <object@local>     # a file
f = null : <filepath@local>   # a file already in the store
"""


def refs_rows(cfg: dict[str, Any], side: str) -> list[dict[str, Any]]:
    """Rows of the refs table: arrays, files, and files placed in the store by *side*."""
    io = Path(cfg["io"])
    values = blob_values()
    files = write_attachments(io / f"{side}-ref-inputs")
    out = []
    for i, name in enumerate(["matrix", "image", "ints", "fortran"]):
        placed = Path(cfg["store"]) / "raw" / side / f"file{i}.bin"
        placed.parent.mkdir(parents=True, exist_ok=True)
        placed.write_bytes(f"{side} placed {i}".encode())
        fname = sorted(files)[i % len(files)]
        out.append(
            dict(item_id=i, n=values[name], o=str(files[fname]), f=f"raw/{side}/file{i}.bin")
        )
    return out


def describe_refs(table: Any) -> dict[str, Any]:
    import numpy as np

    out = {}
    for row in table.to_dicts(order_by="item_id"):
        ref = row["n"]
        out[str(row["item_id"])] = {
            "n": describe(np.asarray(ref)),
            "n_meta": [list(ref.shape), str(ref.dtype)],
            "o": row["o"].read().hex(),
            "f": row["f"].read().hex(),
        }
    return out


def gc_full(schema: dj.Schema) -> dict[str, Any]:
    report = dj.gc.GarbageCollector(schema, store="local").collect(dry_run=True)
    return {k: v for k, v in report.items() if k.endswith(("_orphaned", "_referenced", "_stored"))}


def refs_write(cfg: dict[str, Any]) -> dict[str, Any]:
    schema = connect(cfg)

    @schema
    class DjRefs(dj.Manual):  # table `dj_refs`
        definition = REFS_DEFINITION

    DjRefs.insert(refs_rows(cfg, "dj"))
    return {"read": describe_refs(DjRefs()), "gc": gc_full(schema)}


def refs_read(cfg: dict[str, Any]) -> dict[str, Any]:
    schema = connect(cfg)
    table = dj.FreeTable(schema.connection, f"{cfg['schema']}.{cfg['table']}")
    before = describe_refs(table)
    table.insert1(refs_rows(cfg, "dj")[0] | {"item_id": 100})
    return {"read": before, "gc": gc_full(schema)}


COMMANDS = {"write": write, "read": read, "refs-write": refs_write, "refs-read": refs_read}

if __name__ == "__main__":
    command, cfg_file = sys.argv[1], Path(sys.argv[2])
    cfg = json.loads(cfg_file.read_text())
    result = COMMANDS[command](cfg)
    (Path(cfg["io"]) / f"{command}-result.json").write_text(json.dumps(result))
    del attachment_contents  # imported for symmetry with dj_side; unused here
