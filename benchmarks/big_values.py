"""Memory of a big array through ``Blob(store=...)``: peak RSS growth of insert and fetch.

Each measurement runs in a fresh process (``--child``), which records its peak RSS
(``ru_maxrss``) before the operation and after it. Insert: the process already holds
the array; the growth is what sa_djblob adds. Fetch: a fresh process reads the value;
the growth is the value plus what sa_djblob adds. Targets (issue 17): insert under
64 MiB, fetch under the value's size + 64 MiB, on file, S3 (loopback moto) and fsspec
stores, for random floats and for zeros (stored compressed, a few MB).

    python benchmarks/big_values.py                  # 1 GiB, every store, both kinds
    python benchmarks/big_values.py --mib 256 --stores file

moto keeps every object in the server process (not this one): only the client side is
measured. Uses SQLite (the database holds only the 16-byte keys).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MiB = 1 << 20
TARGET_EXTRA = 64 * MiB


def _peak() -> int:
    """Peak resident set size of this process so far, in bytes (Linux: KiB units)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _array(kind: str, nbytes: int) -> Any:
    import numpy as np

    n = nbytes // 8
    if kind == "zeros":
        return np.zeros(n)
    out = np.empty(n)
    rng = np.random.default_rng(17)
    step = 1 << 22
    for i in range(0, n, step):  # in pieces: no temporary of the array's size
        out[i : i + step] = rng.random(min(step, n - i))
    return out


def child(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import sqlalchemy as sa

    import sa_djblob as djb

    if not args.inrow:
        djb.config["stores"] = {"big": json.loads(args.store)}
    engine = sa.create_engine(args.url)
    djb.install(engine)
    meta = sa.MetaData()
    t = sa.Table(
        "big_values",
        meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column(
            "value",
            djb.Blob(compress=args.compress)
            if args.inrow
            else djb.Blob(store="big", compress=args.compress),
        ),
    )
    if args.phase == "insert":
        meta.create_all(engine)
        value = _array(args.kind, int(args.mib * MiB))
        digest = hashlib.md5(memoryview(value).cast("B"), usedforsecurity=False).hexdigest()
        before = _peak()
        start = time.perf_counter()
        with engine.begin() as conn:
            conn.execute(t.insert().values(id=args.row, value=value))
        seconds = time.perf_counter() - start
    else:
        with engine.connect() as conn:  # connected and warmed up before measuring
            conn.execute(sa.select(t.c.id).where(t.c.id == -1)).all()
            before = _peak()
            start = time.perf_counter()
            value = conn.execute(sa.select(t.c.value).where(t.c.id == args.row)).scalar_one()
            seconds = time.perf_counter() - start
        value = np.asarray(value)
        digest = hashlib.md5(memoryview(value).cast("B"), usedforsecurity=False).hexdigest()
    return {
        "growth": _peak() - before,
        "nbytes": int(value.nbytes),
        "md5": digest,
        "seconds": seconds,
    }


def run_child(
    phase: str,
    url: str,
    store: dict[str, Any],
    mib: float,
    kind: str,
    row: int,
    compress: bool,
    inrow: bool = False,
) -> dict[str, Any]:
    """One measurement in a fresh process (the package imported from this checkout)."""
    root = Path(__file__).resolve().parent.parent
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        phase,
        "--url",
        url,
        "--store",
        json.dumps(store),
        "--mib",
        str(mib),
        "--kind",
        kind,
        "--row",
        str(row),
    ]
    if not compress:
        cmd.append("--no-compress")
    if inrow:
        cmd.append("--inrow")
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode:
        raise RuntimeError(f"{phase} failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=float, default=1024)
    parser.add_argument("--stores", default="file,s3,fsspec")
    parser.add_argument("--kinds", default="random,zeros")
    parser.add_argument("--child", choices=("insert", "fetch"))
    parser.add_argument("--url")
    parser.add_argument("--store")
    parser.add_argument("--kind", default="random")
    parser.add_argument("--row", type=int, default=1)
    parser.add_argument("--no-compress", dest="compress", action="store_false")
    parser.add_argument(
        "--inrow",
        action="store_true",
        help="in-row values: measure what each database driver holds (copies of the value)",
    )
    parser.add_argument("--mysql-url", default="mysql+pymysql://root@127.0.0.1:3306/test")
    parser.add_argument(
        "--postgresql-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test"
    )
    args = parser.parse_args()
    if args.child:
        args.phase = args.child
        print(json.dumps(child(args)))
        return
    if args.inrow:
        inrow(args)
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/big.sqlite"
        specs: dict[str, Any] = {
            "file": lambda: {"protocol": "file", "location": f"{tmp}/file-store"},
            "fsspec": lambda: {
                "protocol": "fsspec",
                "url": f"file://{tmp}/fsspec-store",
                "location": "x",
            },
        }
        stack = contextlib.ExitStack()
        if "s3" in args.stores:
            from _servers import moto_server, s3_client, s3_spec

            endpoint = stack.enter_context(moto_server())
            s3_client(endpoint).create_bucket(Bucket="big")
            # (moto joins a multipart upload's parts slowly: give it time)
            specs["s3"] = lambda: {**s3_spec(endpoint, "big"), "read_timeout": 300}
        print(f"{args.mib} MiB float64 array; targets: insert < 64 MiB, fetch < value + 64 MiB")
        print(
            f"{'store':8} {'values':7} {'insert MiB':>11} {'fetch MiB':>10} {'value MiB':>10}"
            f" {'insert s':>9} {'fetch s':>8}  ok"
        )
        row = 0
        with stack:
            for name in args.stores.split(","):
                store = specs[name]()
                for kind in args.kinds.split(","):
                    row += 1
                    w = run_child("insert", url, store, args.mib, kind, row, True)
                    r = run_child("fetch", url, store, args.mib, kind, row, True)
                    ok = (
                        w["growth"] < TARGET_EXTRA
                        and r["growth"] < r["nbytes"] + TARGET_EXTRA
                        and w["md5"] == r["md5"]
                    )
                    print(
                        f"{name:8} {kind:7} {w['growth'] / MiB:11.1f} {r['growth'] / MiB:10.1f}"
                        f" {r['nbytes'] / MiB:10.0f} {w['seconds']:9.2f} {r['seconds']:8.2f}"
                        f"  {'yes' if ok else 'NO'}"
                    )


def inrow(args: argparse.Namespace) -> None:
    """In-row values through each driver, random floats (never compressed): peak RSS growth
    as copies of the value. MySQL's size is bounded by the server's max_allowed_packet."""
    import sqlalchemy as sa

    print("in-row Blob() values: growth of peak RSS in copies of the value")
    print(f"{'database':24} {'value MiB':>10} {'insert':>8} {'fetch':>8}")
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        urls = {
            "sqlite": (f"sqlite:///{tmp}/inrow.sqlite", args.mib),
            "mysql+pymysql": (stack.enter_context(_database(args.mysql_url)), None),
            "postgresql+psycopg": (stack.enter_context(_database(args.postgresql_url)), args.mib),
        }
        for name, (url, mib) in urls.items():
            if mib is None:  # the largest value the server accepts, with room for the SQL
                engine = sa.create_engine(url)
                with engine.connect() as conn:
                    packet = conn.execute(sa.text("SELECT @@max_allowed_packet")).scalar_one()
                engine.dispose()
                mib = min(args.mib, int(packet) / MiB * 0.45)  # escaped: up to 2x
            w = run_child("insert", url, {}, mib, "random", 1, True, inrow=True)
            r = run_child("fetch", url, {}, mib, "random", 1, True, inrow=True)
            assert w["md5"] == r["md5"]
            n = w["nbytes"]
            print(f"{name:24} {n / MiB:10.1f} {w['growth'] / n:8.2f} {r['growth'] / n:8.2f}")


@contextlib.contextmanager
def _database(url: str) -> Any:
    """A fresh database (MySQL) or schema (PostgreSQL) on the server of *url*; its URL."""
    import uuid

    import sqlalchemy as sa

    base = sa.make_url(url)
    name = "djb_bench_" + uuid.uuid4().hex[:8]
    admin = sa.create_engine(base)
    mysql = base.get_backend_name() == "mysql"
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE DATABASE `{name}`" if mysql else f'CREATE SCHEMA "{name}"'))
    try:
        if mysql:
            yield base.set(database=name).render_as_string(hide_password=False)
        else:
            own = base.update_query_dict({"options": f"-csearch_path={name}"})
            yield own.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            drop = f"DROP DATABASE IF EXISTS `{name}`" if mysql else f'DROP SCHEMA "{name}" CASCADE'
            conn.execute(sa.text(drop))
        admin.dispose()


if __name__ == "__main__":
    main()
