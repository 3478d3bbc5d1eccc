"""``djb.move`` from a file store to S3 behind the latency proxy, next to a raw boto3 copy.

Run: ``.venv/bin/python benchmarks/move.py`` (10,000 values of 64 KB; ``-n`` for another
count, ``--url`` for another database; default: a fresh MariaDB database).

Both sides copy the same payloads from the same file store to the loopback moto S3
server behind ``shared/tools/latency_proxy.py`` (20 ms per request), in the same run:

- raw: boto3 ``put_object`` of every payload file with 16 threads, nothing else (no
  database, no verification);
- move: ``djb.move(engine, table.c.trace, to_store="s3")`` with ``djb.config["threads"] =
  16``: keyset-paged batches, the destination's externals rows claimed under the locking
  protocol, every source payload verified against its key and every copy verified by S3
  (``Content-MD5``), then the column switched.

The goal is move >= 80 % of the raw copy's rate. Peak memory (RSS) is printed for each.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

import sa_djblob as djb

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _servers
from _servers import latency_proxy, moto_server, mysql_database, s3_client, s3_spec

if not _servers.PROXY.exists():  # a git worktree one level deeper than the main checkout
    for up in Path(__file__).resolve().parents:
        if (up / "shared" / "tools" / "latency_proxy.py").exists():
            _servers.PROXY = up / "shared" / "tools" / "latency_proxy.py"
            break

GOAL = 0.80


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fill(engine: sa.Engine, table: sa.Table, n: int, size: int) -> None:
    rng = np.random.default_rng(18)
    count = size // 8 - 8  # the packed blob is about *size* bytes
    for start in range(0, n, 500):
        ids = range(start, min(n, start + 500))
        rows = [{"id": i, "trace": rng.standard_normal(count)} for i in ids]
        with engine.begin() as conn:
            conn.execute(sa.insert(table), rows)


def raw_copy(files: list[Path], client: Any, bucket: str, threads: int) -> float:
    def put(f: Path) -> None:
        client.put_object(Bucket=bucket, Key=f"raw/{f.name}", Body=f.read_bytes())

    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(put, files))
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10_000, help="values to move")
    parser.add_argument("--size", type=int, default=64 * 1024, help="bytes per value")
    parser.add_argument("--delay", type=int, default=20, help="proxy latency (ms)")
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--url", default=None, help="database URL (default: fresh MariaDB)")
    args = parser.parse_args()

    with (
        tempfile.TemporaryDirectory() as tmp,
        moto_server() as moto,
        latency_proxy(moto, args.delay) as proxy,
        mysql_database() if args.url is None else _given(args.url) as url,
    ):
        client = s3_client(proxy, threads=args.threads * 2)
        bucket = "djb-move-" + uuid.uuid4().hex[:8]
        client.create_bucket(Bucket=bucket)
        djb.config["threads"] = args.threads
        djb.config["stores"] = {
            "local": {"protocol": "file", "location": str(Path(tmp) / "store"), "fsync": False},
            "s3": s3_spec(proxy, bucket),
        }
        engine = sa.create_engine(url)
        djb.install(engine)
        table = sa.Table(
            "recording",
            sa.MetaData(),
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("trace", djb.Blob(store="local")),
        )
        table.metadata.create_all(engine)
        print(f"filling {args.n:,} values of {args.size // 1024} KB ...", flush=True)
        fill(engine, table, args.n, args.size)
        files = [Path(p) for _, p in djb.externals(engine)["local"].paths()]
        total = sum(f.stat().st_size for f in files)
        print(f"{len(files):,} payloads, {total / 2**20:,.0f} MiB; proxy {args.delay} ms")

        before = peak_mb()
        raw = raw_copy(files, client, bucket, args.threads)
        print(f"raw boto3 put, {args.threads} threads: {raw:7.2f} s  {len(files) / raw:8.1f} /s")

        t0 = time.perf_counter()
        report = djb.move(engine, table.c.trace, to_store="s3", progress=False, batch=1000)
        moved = time.perf_counter() - t0
        assert report.switched and report.copied == len(files), report
        print(f"djb.move:                     {moved:7.2f} s  {len(files) / moved:8.1f} /s")
        print(f"  {report}")
        ratio = raw / moved
        print(f"move reaches {ratio:.0%} of the raw copy (goal {GOAL:.0%}):", end=" ")
        print("OK" if ratio >= GOAL else "BELOW GOAL")
        print(f"peak RSS {peak_mb():.0f} MB (before the copies: {before:.0f} MB)")
        engine.dispose()


class _given:
    def __init__(self, url: str) -> None:
        self.url = url

    def __enter__(self) -> str:
        return self.url

    def __exit__(self, *exc: object) -> None:
        return None


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
