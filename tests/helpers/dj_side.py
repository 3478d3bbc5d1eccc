"""The DataJoint 0.14 side of the interop test; run with the .venv-dj interpreter.

    python dj_side.py write CONFIG.json   # declare tables with DataJoint and insert values
    python dj_side.py read  CONFIG.json   # read sa_djblob's tables through DataJoint, write one row
    python dj_side.py fp-write / fp-read CONFIG.json   # filepath@fp, both directions

CONFIG.json: {"host", "port", "user", "password", "database", "store", "io"}; ``store``
is the file store folder shared with sa_djblob (store name 'local'), ``io`` a folder
for the files exchanged with the test (``result.json``, downloaded attachments).
Credentials are read from the file, never printed.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import datajoint as dj
import numpy as np
from dj_common import attachment_contents, blob_values, describe, describe_file, write_attachments


def connect(cfg: dict[str, Any]) -> dj.Schema:
    dj.config["database.host"] = cfg["host"]
    dj.config["database.port"] = int(cfg["port"])
    dj.config["database.user"] = cfg["user"]
    dj.config["database.password"] = cfg["password"]
    dj.config["database.use_tls"] = False
    dj.config["safemode"] = False
    dj.config["loglevel"] = "WARNING"
    dj.config["stores"] = cfg.get("stores") or {
        "local": {"protocol": "file", "location": cfg["store"]}
    }
    dj.config["enable_python_native_blobs"] = True
    return dj.Schema(cfg["database"])


def paths(schema: Any) -> list[list[str]]:
    ext = schema.external["local"]
    return sorted([str(h), str(p)] for h, p in ext.fetch_external_paths())


def write(cfg: dict[str, Any]) -> dict[str, Any]:
    schema = connect(cfg)
    io = Path(cfg["io"])
    files = write_attachments(io / "dj-inputs")
    values = blob_values()

    @schema
    class DjItem(dj.Manual):  # table `dj_item`
        definition = """
        item_id : int
        ---
        b0 : longblob        # in the row
        b1 : blob@local      # in the file store
        a0 : attach          # in the row
        a1 : attach@local    # in the file store
        """

    @schema
    class DjParam(dj.Lookup):  # table `#dj_param`
        definition = """
        param : varchar(16)
        ---
        value : blob@local
        """

    names = sorted(values)
    fnames = sorted(files)
    rows = [
        dict(
            item_id=i,
            b0=values[names[i]],
            b1=values[names[(i + 1) % len(names)]],
            a0=str(files[fnames[i % len(fnames)]]),
            a1=str(files[fnames[(i + 1) % len(fnames)]]),
        )
        for i in range(len(names))
    ]
    DjItem.insert(rows)
    DjParam.insert([dict(param=n, value=values[n]) for n in names])
    return {
        "rows": [
            {
                "item_id": r["item_id"],
                "b0": names[i],
                "b1": names[(i + 1) % len(names)],
                "a0": Path(r["a0"]).name,
                "a1": Path(r["a1"]).name,
            }
            for i, r in enumerate(rows)
        ],
        "tables": sorted(schema.list_tables()),
        "paths": paths(schema),
    }


def read(cfg: dict[str, Any]) -> dict[str, Any]:
    schema = connect(cfg)
    io = Path(cfg["io"])
    vm = dj.VirtualModule("vm", cfg["database"])
    sa_item = vm.SaItem
    heading = {
        name: (a.type, a.is_blob, a.is_attachment, a.store)
        for name, a in sa_item.heading.attributes.items()
    }
    downloads = io / "dj-downloads"
    downloads.mkdir(exist_ok=True)
    got = []
    for row in sa_item.fetch(as_dict=True, order_by="item_id", download_path=str(downloads)):
        got.append(
            {
                "item_id": int(row["item_id"]),
                "b0": describe(row["b0"]),
                "b1": describe(row["b1"]),
                "a0": describe_file(row["a0"]),
                "a1": describe_file(row["a1"]),
            }
        )
    # DataJoint writes into the table that sa_djblob created.
    inputs = write_attachments(io / "dj-inputs-2")
    values = blob_values()
    new_id = max(r["item_id"] for r in got) + 100 if got else 100
    sa_item.insert1(
        dict(
            item_id=new_id,
            b0=values["struct"],
            b1=values["fortran"],
            a0=str(inputs["trace.bin"]),
            a1=str(inputs["notes.txt"]),
        )
    )
    return {
        "heading": {k: list(v) for k, v in heading.items()},
        "rows": got,
        "written": {
            "item_id": new_id,
            "b0": "struct",
            "b1": "fortran",
            "a0": "trace.bin",
            "a1": "notes.txt",
        },
        "paths": paths(schema),
        "contents": sorted(attachment_contents()),
    }


def _pipeline(schema: Any) -> tuple[Any, Any, Any]:
    """The pipeline of examples/datajoint_interop.py, declared by DataJoint."""

    @schema
    class Subject(dj.Lookup):
        definition = """
        subject_id : int
        ---
        species    : varchar(32)
        """

    @schema
    class Session(dj.Manual):
        definition = """
        -> Subject
        session_id : int
        ---
        notes      : attach
        stimulus   : longblob
        """

    @schema
    class Recording(dj.Imported):
        definition = """
        -> Session
        ---
        trace      : blob@local
        raw        : attach@local
        """

    return Subject, Session, Recording


def pipeline(cfg: dict[str, Any]) -> dict[str, Any]:
    """Declare the example's pipeline and insert session 1/1 with DataJoint."""
    schema = connect(cfg)
    subject, session, recording = _pipeline(schema)
    files = write_attachments(Path(cfg["io"]) / "dj-pipeline")
    subject.insert1(dict(subject_id=1, species="mouse"))
    session.insert1(
        dict(
            subject_id=1,
            session_id=1,
            notes=str(files["notes.txt"]),
            stimulus=np.arange(6.0).reshape(2, 3),
        )
    )
    recording.insert1(
        dict(subject_id=1, session_id=1, trace=np.ones((4, 5)), raw=str(files["trace.bin"])),
        allow_direct_insert=True,
    )
    return {"tables": sorted(schema.list_tables())}


def pipeline_read(cfg: dict[str, Any]) -> dict[str, Any]:
    """Read every session and recording (the example's too) with DataJoint."""
    schema = connect(cfg)
    _, session, recording = _pipeline(schema)
    downloads = Path(cfg["io"]) / "dj-pipeline-downloads"
    downloads.mkdir(exist_ok=True)
    rows = (session * recording).fetch(
        as_dict=True, order_by="session_id", download_path=str(downloads)
    )
    return {
        "rows": [
            {
                "session_id": int(r["session_id"]),
                "stimulus": describe(r["stimulus"]),
                "trace": describe(r["trace"]),
                "notes": describe_file(r["notes"]),
                "raw": describe_file(r["raw"]),
            }
            for r in rows
        ]
    }


def _remote_paths(schema: Any) -> list[list[str]]:
    ext = schema.external["remote"]
    return sorted([str(h), str(p)] for h, p in ext.fetch_external_paths())


def s3_write(cfg: dict[str, Any]) -> dict[str, Any]:
    """Declare ``dj_s3`` (blob@remote, attach@remote; ``remote`` an S3 store) and insert."""
    schema = connect(cfg)
    files = write_attachments(Path(cfg["io"]) / "dj-s3-inputs")
    values = blob_values()

    @schema
    class DjS3(dj.Manual):
        definition = """
        item_id : int
        ---
        b : blob@remote
        a : attach@remote
        """

    names, fnames = sorted(values), sorted(files)
    rows = [dict(item_id=i, b=names[i], a=fnames[i % len(fnames)]) for i in range(len(names))]
    DjS3.insert([dict(item_id=r["item_id"], b=values[r["b"]], a=str(files[r["a"]])) for r in rows])
    return {"rows": rows, "paths": _remote_paths(schema)}


def s3_read(cfg: dict[str, Any]) -> dict[str, Any]:
    """Read sa_djblob's ``sa_s3`` through a VirtualModule."""
    schema = connect(cfg)
    vm = dj.VirtualModule("vm", cfg["database"])
    downloads = Path(cfg["io"]) / "dj-s3-downloads"
    downloads.mkdir(exist_ok=True)
    rows = vm.SaS3.fetch(as_dict=True, order_by="item_id", download_path=str(downloads))
    return {
        "rows": [
            {"item_id": int(r["item_id"]), "b": describe(r["b"]), "a": describe_file(r["a"])}
            for r in rows
        ],
        "paths": _remote_paths(schema),
    }


def path_rules(cfg: dict[str, Any]) -> dict[str, Any]:
    """DataJoint's object paths for ``cfg['cases']`` ([protocol, location, uuid hex, name])."""
    import uuid

    from datajoint.external import ExternalTable

    out = []
    for protocol, location, hexkey, name in cfg["cases"]:
        table = object.__new__(ExternalTable)  # only the path rules: no database, no store
        table.spec = {"protocol": protocol, "location": location, "subfolding": (2, 2)}
        table.database = "main"
        suffix = "" if name is None else "." + name
        out.append(str(table._make_uuid_path(uuid.UUID(hexkey), suffix)))
    return {"paths": out}


def delete(cfg: dict[str, Any]) -> dict[str, Any]:
    """Delete rows of sa_djblob's ``sa_del`` (item_id < 3), then clean up the store."""
    schema = connect(cfg)
    vm = dj.VirtualModule("vm", cfg["database"])
    try:
        (vm.SaDel & "item_id < 3").delete()
    except Exception as exc:  # reported to the test, which expects it without ~log
        return {"deleted": False, "error": f"{type(exc).__name__}: {exc}"}
    errors = schema.external["local"].delete(delete_external_files=True, display_progress=False)
    events = dj.conn().query(f"SELECT event FROM `{cfg['database']}`.`~log` ORDER BY id")
    return {
        "deleted": True,
        "errors": [str(e) for e in errors],
        "remaining": sorted(int(k) for k in vm.SaDel.fetch("item_id")),
        "paths": paths(schema),
        "log": [e[0] for e in events.fetchall()],
    }


def pack(cfg: dict[str, Any]) -> dict[str, Any]:
    """DataJoint's packed bytes of every value (no database needed)."""
    from datajoint.blob import pack as dj_pack

    return {"packed": {name: dj_pack(v).hex() for name, v in blob_values().items()}}


# -- filepath@store ----------------------------------------------------------------

#: the files DataJoint places (relative to its stage) and their contents
FILEPATH_FILES = {
    "raw/a.dat": b"recording A" * 100,
    "raw/sub dir/b.bin": bytes(range(256)) * 10,
    "c.txt": b"",
}


def _fp_paths(schema: Any) -> list[list[str]]:
    ext = schema.external["fp"]
    return sorted([str(h), str(p)] for h, p in ext.fetch_external_paths())


def _fp_connect(cfg: dict[str, Any]) -> Any:
    os.environ["DJ_SUPPORT_FILEPATH_MANAGEMENT"] = "TRUE"  # DataJoint 0.14's switch
    return connect(cfg)


def fp_write(cfg: dict[str, Any]) -> dict[str, Any]:
    """Declare ``dj_fp`` (filepath@fp) and insert files of DataJoint's stage."""
    schema = _fp_connect(cfg)
    stage = Path(cfg["stores"]["fp"]["stage"])

    @schema
    class DjFp(dj.Manual):
        definition = """
        item_id : int
        ---
        f : filepath@fp
        """

    names = sorted(FILEPATH_FILES)
    for rel, data in FILEPATH_FILES.items():
        (stage / rel).parent.mkdir(parents=True, exist_ok=True)
        (stage / rel).write_bytes(data)
    rows: list[dict[str, Any]] = [
        {"item_id": i, "f": names[i % len(names)]} for i in range(len(names) + 1)
    ]
    DjFp.insert([{"item_id": r["item_id"], "f": str(stage / r["f"])} for r in rows])
    files = {rel: data.hex() for rel, data in FILEPATH_FILES.items()}
    return {"rows": rows, "files": files, "paths": _fp_paths(schema)}


def fp_read(cfg: dict[str, Any]) -> dict[str, Any]:
    """Read sa_djblob's ``sa_fp`` through a VirtualModule (downloads into the stage)."""
    schema = _fp_connect(cfg)
    stage = Path(cfg["stores"]["fp"]["stage"]).absolute()
    vm = dj.VirtualModule("vm", cfg["database"])
    rows = vm.SaFp.fetch(as_dict=True, order_by="item_id")
    return {
        "rows": [
            {
                "item_id": int(r["item_id"]),
                "f": Path(r["f"]).relative_to(stage).as_posix(),
                "contents": Path(r["f"]).read_bytes().hex(),
            }
            for r in rows
        ],
        "paths": _fp_paths(schema),
    }


def main() -> None:
    command, cfg_path = sys.argv[1], sys.argv[2]
    cfg = json.loads(Path(cfg_path).read_text())
    result = {
        "write": write,
        "read": read,
        "pack": pack,
        "pipeline": pipeline,
        "pipeline-read": pipeline_read,
        "s3-write": s3_write,
        "s3-read": s3_read,
        "path-rules": path_rules,
        "delete": delete,
        "fp-write": fp_write,
        "fp-read": fp_read,
    }[command](cfg)
    result["datajoint"] = dj.__version__
    result["numpy"] = np.__version__
    (Path(cfg["io"]) / f"{command}-result.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
