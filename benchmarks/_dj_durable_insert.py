"""DataJoint 0.14's side of ``durable_insert.py``; run with the DataJoint virtualenv.

    python _dj_durable_insert.py CONFIG.json

CONFIG.json: {"host", "port", "user", "password", "database", "store", "rows", "size",
"repeat"}. Each repeat declares a fresh schema (a database named after ``database``)
with ``id: int --- v: blob@local``, inserts the rows in one transaction and fetches
them back, timing both; then drops the schema. Prints one JSON line:
{"insert": [seconds, ...], "fetch": [seconds, ...], "version": "0.14.x"}.
Credentials are read from the file, never printed.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import datajoint as dj
import numpy as np


def main() -> None:
    cfg: dict[str, Any] = json.loads(Path(sys.argv[1]).read_text())
    dj.config["database.host"] = cfg["host"]
    dj.config["database.port"] = int(cfg["port"])
    dj.config["database.user"] = cfg["user"]
    dj.config["database.password"] = cfg["password"]
    dj.config["database.use_tls"] = False
    dj.config["safemode"] = False
    dj.config["loglevel"] = "WARNING"
    dj.config["enable_python_native_blobs"] = True
    rng = np.random.default_rng(7)
    values = [rng.random(cfg["size"]) for _ in range(cfg["rows"])]
    rows = [{"id": i, "v": v} for i, v in enumerate(values)]
    inserts, fetches = [], []
    for r in range(cfg["repeat"]):
        store = Path(cfg["store"]) / f"dj{r}"
        store.mkdir(parents=True, exist_ok=True)  # DataJoint wants the folder to exist
        dj.config["stores"] = {"local": {"protocol": "file", "location": str(store)}}
        schema = dj.Schema(f"{cfg['database']}_{r}")

        @schema
        class DurableInsert(dj.Manual):
            definition = """
            id : int
            ---
            v : blob@local
            """

        conn = dj.conn()
        t0 = time.perf_counter()
        with conn.transaction:
            DurableInsert.insert(rows)
        inserts.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        got = DurableInsert.fetch("v")
        fetches.append(time.perf_counter() - t0)
        assert len(got) == len(rows)
        schema.drop(force=True)  # the store folder is left to the caller (see durable_insert.py)
    print(json.dumps({"insert": inserts, "fetch": fetches, "version": dj.__version__}))


if __name__ == "__main__":
    main()
