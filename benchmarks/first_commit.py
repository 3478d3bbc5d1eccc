"""The cost of the first commit: cold (a fresh process) and warm, next to the raw floor.

    python benchmarks/first_commit.py [--sqlite-only] [--cold-runs N] [--no-fsync] [--folder DIR]
                                       [--repeat N]

1,000 rows of 1 KB random float64 arrays (128 values) in ``Blob(store="local")``, a
file store in a temp folder, inserted in one Session commit, on MariaDB
(SA_DJBLOB_BENCH_MYSQL_URL, default the loopback server; a scratch database is
created and dropped) and on a SQLite file. Printed per database:

* cold: a fresh Python process does the imports, creates the engine, installs
  sa_djblob, creates the tables and makes the one commit. The import time and the
  commit alone are reported separately (best of ``--cold-runs`` processes);
* warm: the same commit repeated in one process, into fresh tables and a fresh store
  folder each time (best of ``--repeat``, default 5);
* floor: what the commit must do at least, with nothing of sa_djblob or SQLAlchemy's
  statement machinery: a DBAPI executemany of the 16-byte hashes into the table, an
  executemany into the externals table, and the 1,000 files written (temp file +
  rename into the same subfolders), with and without fsync (file, then its folder,
  as the store does). The store fsyncs by default: the fsync floor is compared with
  the default store, the no-fsync floor with ``fsync=False``.

The store and the SQLite file live in a temp folder below ``--folder`` (default the
system's temp folder); ``--folder /dev/shm`` takes the disk out and leaves the CPU
cost, which is what sa_djblob adds.

Wall times on a shared machine are noisy (the disk above all); the CPU time of the
benchmark's process is printed next to them, a steadier measure of the Python work.

Targets: warm within 2x of the floor, cold (the commit in a fresh process) within 2x
of warm.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

T0 = time.perf_counter()  # the cold child measures its imports from here

ROWS = 1000
SIZE = 128  # float64 values: 1 KB of data per row
WARM_REPEAT = 5
HERE = Path(__file__).resolve().parent


# -- the work, as the library does it ---------------------------------------------------


def values() -> list[Any]:
    import numpy as np

    rng = np.random.default_rng(9)
    return [rng.random(SIZE) for _ in range(ROWS)]


def store_config(location: Path, fsync: bool) -> dict[str, Any]:
    return {"local": {"protocol": "file", "location": str(location), "fsync": fsync}}


def make_table(md: Any) -> Any:
    import sqlalchemy as sa

    import sa_djblob as djb

    return sa.Table(
        "bench_first",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("v", djb.Blob(store="local")),
    )


def commit(engine: Any, table: Any, rows: list[dict[str, Any]]) -> tuple[float, float]:
    """The measured step: one Session, one executemany insert, one commit."""
    import sqlalchemy as sa
    from sqlalchemy.orm import Session

    t0, c0 = time.perf_counter(), time.process_time()
    with Session(engine) as session:
        session.execute(sa.insert(table), rows)
        session.commit()
    return time.perf_counter() - t0, time.process_time() - c0


def child(url: str, folder: str, fsync: bool, warm: int) -> None:
    """A fresh process: imports, engine, install, tables, the commit; then warm repeats."""
    t_start = T0
    import numpy  # noqa: F401
    import sqlalchemy as sa
    import sqlalchemy.orm  # the Session's import is not the commit's cost

    import sa_djblob as djb

    t_import = time.perf_counter() - t_start
    vals = values()  # not timed: the user has the arrays already
    rows = [{"id": i, "v": v} for i, v in enumerate(vals)]
    t1 = time.perf_counter()
    djb.config["stores"] = store_config(Path(folder) / "cold", fsync)
    engine = sa.create_engine(url)
    djb.install(engine)
    md = sa.MetaData()
    table = make_table(md)
    md.create_all(engine)
    t_setup = time.perf_counter() - t1
    t_commit, c_commit = commit(engine, table, rows)
    t_total = time.perf_counter() - t_start
    warm_times, floor_times = [], []
    for k in range(warm):  # interleaved with the floor (each goes first in turn): both
        if k % 2:  # see the same disk load, and the same leftovers of the other
            floor_times.append(floor(url, Path(folder), fsync))
        md.drop_all(engine)
        md.create_all(engine)
        djb.config["stores"] = store_config(Path(folder) / f"warm{k}", fsync)
        warm_times.append(commit(engine, table, rows))
        if not k % 2:
            floor_times.append(floor(url, Path(folder), fsync))
    md.drop_all(engine)
    djb.uninstall(engine)
    engine.dispose()
    out = {
        "import": t_import,
        "setup": t_setup,
        "commit": t_commit,
        "commit_cpu": c_commit,
        "total": t_total,
        "warm": warm_times,
        "floor": floor_times,
    }
    print(json.dumps(out))


def run_child(url: str, folder: Path, fsync: bool, warm: int) -> dict[str, Any]:
    # the caller's PYTHONPATH first: it may point at another copy of sa_djblob
    path = [os.environ.get("PYTHONPATH"), str(HERE.parent)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, path))}
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", url, str(folder)]
    argv += ["--fsync" if fsync else "--no-fsync", "--warm", str(warm)]
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child failed:\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["wall"] = wall
    shutil.rmtree(folder, ignore_errors=True)
    return result


# -- the floor ----------------------------------------------------------------------------


def _sync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def floor(url: str, folder: Path, fsync: bool) -> tuple[float, float]:
    """DBAPI executemany of hashes into the table and the externals table + 1,000 files."""
    import hashlib

    import sqlalchemy as sa

    import sa_djblob as djb

    payloads = [djb.pack(v) for v in values()]  # packing and hashing are not timed
    keys = [hashlib.md5(p, usedforsecurity=False).digest() for p in payloads]
    engine = sa.create_engine(url)
    mysql = engine.dialect.name in ("mysql", "mariadb")
    binary = "BINARY(16)" if mysql else "BLOB"
    q = (lambda n: f"`{n}`") if mysql else (lambda n: f'"{n}"')
    mark = "%s" if mysql else "?"
    ext_name, tab_name = "floor_external", "floor_table"
    with engine.begin() as conn:
        for name in (tab_name, ext_name):
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {q(name)}")
        conn.exec_driver_sql(
            f"CREATE TABLE {q(ext_name)} (hash {binary} PRIMARY KEY, size BIGINT NOT NULL,"
            " attachment_name VARCHAR(255),"
            " timestamp TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP)"
        )
        conn.exec_driver_sql(
            f"CREATE TABLE {q(tab_name)} (id INTEGER PRIMARY KEY, v {binary},"
            f" FOREIGN KEY (v) REFERENCES {q(ext_name)} (hash))"
        )
    root = folder / "floor" / "schema"
    t0, c0 = time.perf_counter(), time.process_time()
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.executemany(
            f"INSERT INTO {q(ext_name)} (hash, size, attachment_name)"
            f" VALUES ({mark}, {mark}, {mark})",
            [(k, len(p), None) for k, p in zip(keys, payloads, strict=True)],
        )
        durable: set[Path] = set()
        for key, data in zip(keys, payloads, strict=True):
            h = key.hex()
            dest = root / h[:2] / h[2:4] / h
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{h}.{uuid.uuid4().hex[:8]}.tmp")
            with open(tmp, "xb") as f:
                f.write(data)
                if fsync:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, dest)
            if fsync:
                _sync_dir(str(dest.parent))
                d = dest.parent
                while d not in durable and d != root.parent:  # new folders' entries
                    _sync_dir(str(d.parent))
                    durable.add(d)
                    d = d.parent
        cur.executemany(
            f"INSERT INTO {q(tab_name)} (id, v) VALUES ({mark}, {mark})",
            list(enumerate(keys)),
        )
        raw.commit()
    finally:
        raw.close()
    elapsed = time.perf_counter() - t0, time.process_time() - c0
    with engine.begin() as conn:
        for name in (tab_name, ext_name):
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {q(name)}")
    engine.dispose()
    shutil.rmtree(folder / "floor", ignore_errors=True)
    return elapsed


# -- the report ---------------------------------------------------------------------------


@contextlib.contextmanager
def database(kind: str, folder: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'bench.sqlite'}"
        return
    sys.path.insert(0, str(HERE))
    from _servers import mysql_database

    with mysql_database() as url:
        yield url


def verdict(ratio: float) -> str:
    return "ok" if ratio <= 2.0 else "MISSED"


def bench(kind: str, fsync: bool, cold_runs: int, base: str | None, repeat: int) -> None:
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        folder = Path(tmp)
        with database(kind, folder) as url:
            # cold runs first: the warm repeats ride along in the first child
            colds = [
                run_child(url, folder / f"run{k}", fsync, repeat if k == 0 else 0)
                for k in range(cold_runs)
            ]
    best = min(colds, key=lambda r: r["commit"])
    warm, warm_cpu = (min(t[i] for t in colds[0]["warm"]) for i in (0, 1))
    flo, flo_cpu = (min(t[i] for t in colds[0]["floor"]) for i in (0, 1))
    label = f"{kind}, fsync {'on' if fsync else 'off'}, folder {base or tempfile.gettempdir()}"
    cold, cold_cpu = best["commit"], best["commit_cpu"]
    print(f"{label}: {ROWS} x 1 KB Blob(store='local') rows, one Session commit")
    print(f"  {'':42} {'wall':>8}   {'CPU (this process)':>18}")
    print(f"  {'cold process (interpreter + all)':42} {min(r['wall'] for r in colds):8.3f} s")
    print(f"  {'cold import (numpy, sqlalchemy, djb)':42} {min(r['import'] for r in colds):8.3f} s")
    print(f"  {'cold engine + install + create_all':42} {min(r['setup'] for r in colds):8.3f} s")
    print(f"  {'cold commit alone':42} {cold:8.3f} s {cold_cpu:12.3f} s")
    print(f"  {f'warm commit (best of {repeat})':42} {warm:8.3f} s {warm_cpu:12.3f} s")
    print(f"  {'floor (DBAPI executemany + files)':42} {flo:8.3f} s {flo_cpu:12.3f} s")
    for name, a, b, a_cpu, b_cpu in (
        ("warm / floor", warm, flo, warm_cpu, flo_cpu),
        ("cold / warm", cold, warm, cold_cpu, warm_cpu),
    ):
        print(
            f"  {name:<14} wall {a / b:5.2f}x  CPU {a_cpu / b_cpu:5.2f}x"
            f"   target <= 2x   {verdict(a / b)}"
        )
    print(flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--child", nargs=2, metavar=("URL", "FOLDER"), help=argparse.SUPPRESS)
    parser.add_argument("--warm", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument(
        "--fsync", dest="fsync", action="store_true", default=None, help=argparse.SUPPRESS
    )
    parser.add_argument("--no-fsync", dest="fsync", action="store_false", help="only fsync=False")
    parser.add_argument("--sqlite-only", action="store_true", help="skip MariaDB")
    parser.add_argument("--repeat", type=int, default=WARM_REPEAT, help="warm and floor runs")
    parser.add_argument("--folder", default=None, help="where the temp folders go")
    parser.add_argument("--cold-runs", type=int, default=3, help="fresh processes (best kept)")
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.fsync is not False, args.warm)
        return
    fsyncs = [False] if args.fsync is False else [True, False]
    kinds = ["sqlite"] if args.sqlite_only else ["mariadb", "sqlite"]
    for kind in kinds:
        for fsync in fsyncs:
            bench(kind, fsync, args.cold_runs, args.folder, args.repeat)


if __name__ == "__main__":
    main()
