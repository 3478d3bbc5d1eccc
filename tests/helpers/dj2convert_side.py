"""DataJoint's side of the conversion tests: read every table of a schema.

    .venv-dj2/bin/python dj2convert_side.py read2 CONFIG.json   # DataJoint 2.3.5
    .venv-dj/bin/python  dj2convert_side.py read14 CONFIG.json  # DataJoint 0.14

CONFIG.json: {"backend", "host", "port", "user", "password", "dbname", "schema", "tables",
"store", "io", "insert"}; ``store`` is the file store folder (store name 'local'), ``io`` a
folder for the files exchanged with the test, ``insert`` (read2) a row to insert into the
first table after reading (attachments named by file name, blobs by dj_common name).
Credentials are read from the file, never printed. Results: ``<command>-result.json``.

DataJoint 2.3.5 needs two workarounds on our databases (/work/shared/notes): on MariaDB,
JSON columns are reported as ``longtext``, so stored codec columns lose their json flag
and inserts fail (upstream #1451): the flag is set again; on PostgreSQL with psycopg2,
``bytea`` arrives as ``memoryview`` and in-row ``<attach>`` fails to decode: a typecaster
returns ``bytes``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import datajoint as dj
from dj_common import blob_values, describe, describe_file, write_attachments


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


def _connect(cfg: dict[str, Any], v2: bool) -> Any:
    if v2:
        _workarounds(cfg["backend"])
        dj.config["database.backend"] = cfg["backend"]
        if cfg["backend"] == "postgresql":
            dj.config["database.name"] = cfg["dbname"]
    dj.config["database.host"] = cfg["host"]
    dj.config["database.port"] = int(cfg["port"])
    dj.config["database.user"] = cfg["user"]
    dj.config["database.password"] = cfg["password"]
    dj.config["database.use_tls"] = False
    dj.config["safemode"] = False
    dj.config["loglevel"] = "WARNING"
    dj.config["stores"] = {"local": {"protocol": "file", "location": cfg["store"]}}
    if v2:
        dj.config["download_path"] = str(Path(cfg["io"]) / "dj2-downloads")
    else:
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
