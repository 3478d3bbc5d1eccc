"""The cost of a file store's durability (``fsync``, on by default) on inserts.

    python benchmarks/fsync.py [--sqlite] [--repeat N] [--folder DIR]

Inserts, in one transaction each, 1,000 rows of ~1 KB Blob(store=file) values and
20 rows of 16 MB values, into a fresh store folder with ``fsync`` on and off, and
prints the times and their ratios (best of ``--repeat``). The database is MariaDB
(SA_DJBLOB_BENCH_MYSQL_URL, default the loopback server) or, with ``--sqlite``, a
SQLite file. The store lives in a temporary folder below ``--folder`` (default the
system's temp folder): fsync's cost depends on that file system and its disk.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _servers import mysql_database

import sa_djblob as djb


@contextlib.contextmanager
def database(use_sqlite: bool, folder: Path) -> Iterator[str]:
    if use_sqlite:
        yield f"sqlite:///{folder / 'bench.sqlite'}"
    else:
        with mysql_database() as url:
            yield url


def small_values(n: int) -> list[Any]:
    rng = np.random.default_rng(7)
    return [rng.random(120) for _ in range(n)]  # 960 bytes of float64 + header: ~1 KB


def big_values(n: int) -> list[Any]:
    rng = np.random.default_rng(8)
    return [rng.random(2 << 20) for _ in range(n)]  # 16 MiB each, incompressible


def insert_once(url: str, values: list[Any], fsync: bool, folder: Path) -> float:
    store = folder / f"store-{'on' if fsync else 'off'}"
    shutil.rmtree(store, ignore_errors=True)
    djb.config["stores"] = {"local": {"protocol": "file", "location": str(store), "fsync": fsync}}
    engine = sa.create_engine(url)
    djb.install(engine)
    md = sa.MetaData()
    table = sa.Table(
        "bench_fsync",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("v", djb.Blob(store="local")),
    )
    md.drop_all(engine)
    md.create_all(engine)
    rows = [{"id": i, "v": v} for i, v in enumerate(values)]
    try:
        t0 = time.perf_counter()
        with engine.begin() as conn:
            conn.execute(sa.insert(table), rows)
        return time.perf_counter() - t0
    finally:
        md.drop_all(engine)
        djb.uninstall(engine)
        engine.dispose()
        shutil.rmtree(store, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sqlite", action="store_true", help="SQLite instead of MariaDB")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (best kept)")
    parser.add_argument("--folder", default=None, help="where the store folder goes")
    args = parser.parse_args()
    cases = [
        ("1,000 x 1 KB rows, one commit", small_values(1000)),
        ("20 x 16 MB rows, one commit", big_values(20)),
    ]
    with tempfile.TemporaryDirectory(dir=args.folder) as tmp:
        folder = Path(tmp)
        with database(args.sqlite, folder) as url:
            backend = sa.make_url(url).get_backend_name()
            print(f"database {backend}, store folder {folder}, threads {djb.config['threads']}")
            print(f"  {'case':<32} {'fsync on':>10} {'fsync off':>10} {'on / off':>9}")
            for label, values in cases:
                best: dict[bool, float] = {}
                for _ in range(args.repeat):
                    for fsync in (False, True):
                        t = insert_once(url, values, fsync, folder)
                        best[fsync] = min(best.get(fsync, t), t)
                on, off = best[True], best[False]
                print(
                    f"  {label:<32} {on:9.3f}s {off:9.3f}s {on / off:8.2f}x"
                    f"   (+{(on - off) / len(values) * 1000:.2f} ms per row)",
                    flush=True,
                )


if __name__ == "__main__":
    main()
