"""DataJoint's side of the conversion tests: read every table of a schema.

    .venv-dj2/bin/python dj2convert_side.py read2 CONFIG.json   # DataJoint 2.3.5
    .venv-dj/bin/python  dj2convert_side.py read14 CONFIG.json  # DataJoint 0.14

CONFIG.json: {"backend", "host", "port", "user", "password", "dbname", "schema", "tables",
"store", "io", "insert"}; ``store`` is the file store folder (store name 'local'), ``io`` a
folder for the files exchanged with the test, ``insert`` (read2) a row to insert into the
first table after reading (attachments named by file name, blobs by dj_common name).
Credentials are read from the file, never printed. Results: ``<command>-result.json``.

DataJoint 2.3.5 is set up as in ``dj2_side.py``, with its two workarounds for our
databases; DataJoint 0.14 with the same server, credentials and store.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import datajoint as dj
from dj2_side import configure, set_config
from dj_common import blob_values, describe, describe_file, write_attachments


def _connect(cfg: dict[str, Any], v2: bool) -> Any:
    if v2:
        configure(cfg)
    else:
        set_config(cfg)
        dj.config["enable_python_native_blobs"] = True
    return dj.conn()


def _describe(value: Any, attachment: bool) -> Any:
    if value is None:
        return None
    return describe_file(value) if attachment else describe(value)


def read2(cfg: dict[str, Any]) -> dict[str, Any]:
    conn = _connect(cfg, v2=True)
    schema = dj.Schema(cfg["schema"], create_schema=False)  # activated: delete needs it
    out: dict[str, Any] = {"tables": {}}
    for name in cfg["tables"]:
        table = dj.FreeTable(conn, f"{cfg['schema']}.{name}")
        attrs = table.heading.attributes
        codecs = {k: (a.codec.name if a.codec else None) for k, a in attrs.items()}
        kinds = {k: str(a.type) for k, a in attrs.items()}
        rows = []
        for row in table.to_dicts(order_by=table.primary_key):
            rows.append(
                {k: _describe(v, codecs[k] == "attach") if codecs[k] else v for k, v in row.items()}
            )
        out["tables"][name] = {"heading": kinds, "rows": rows}
    if cfg.get("insert"):
        io = Path(cfg["io"])
        files = write_attachments(io / "dj2-inputs")
        values = blob_values()
        table = dj.FreeTable(conn, f"{cfg['schema']}.{cfg['tables'][0]}")
        codecs = {k: a.codec and a.codec.name for k, a in table.heading.attributes.items()}
        row = {
            k: (str(files[v]) if codecs.get(k) == "attach" else values[v])
            if isinstance(v, str)
            else v
            for k, v in cfg["insert"].items()
        }
        table.insert1(row)
        key = {k: row[k] for k in table.primary_key}
        got = (table & key).to_dicts()[0]
        out["inserted"] = {
            k: _describe(v, codecs[k] == "attach") if codecs[k] else v for k, v in got.items()
        }
        (table & key).delete()  # DataJoint 2.x deletes from the converted table too
        out["left_after_delete"] = len(table & key)
    report = dj.gc.GarbageCollector(schema, store="local").collect(dry_run=True)
    keys = ("hash_paths_referenced", "hash_paths_stored", "hash_paths_orphaned")
    out["gc"] = {k: report[k] for k in keys}
    return out


def read14(cfg: dict[str, Any]) -> dict[str, Any]:
    conn = _connect(cfg, v2=False)
    dj.Schema(cfg["schema"])  # registers the schema's externals with the connection
    downloads = Path(cfg["io"]) / "dj14-downloads"
    downloads.mkdir(exist_ok=True)
    out: dict[str, Any] = {"tables": {}}
    for name in cfg["tables"]:
        table = dj.FreeTable(conn, f"`{cfg['schema']}`.`{name}`")
        attrs = table.heading.attributes
        rows = []
        for row in table.fetch(
            as_dict=True, order_by=table.primary_key, download_path=str(downloads)
        ):
            rows.append(
                {
                    k: _describe(v, a.is_attachment) if a.is_blob or a.is_attachment else v
                    for k, v in row.items()
                    for a in [attrs[k]]
                }
            )
        out["tables"][name] = {"rows": rows}
    return out


if __name__ == "__main__":
    command, cfg_file = sys.argv[1], Path(sys.argv[2])
    cfg = json.loads(cfg_file.read_text())
    result = {"read2": read2, "read14": read14}[command](cfg)
    result["datajoint"] = dj.__version__
    (Path(cfg["io"]) / f"{command}-result.json").write_text(json.dumps(result))
