"""Relocating a store: ``ExternalTable.copy_to`` from a file store to S3, against raw boto3.

    python benchmarks/copy_store.py [--rows N] [--size-kb K] [--no-latency] [--mysql]

N values (default 10,000) of K KiB (default 64) each, distinct random bytes in a
``Blob(store="local")`` column, are written to a file store (SQLite, or MariaDB with
``--mysql``; not part of any figure). A moto S3 server runs on loopback behind
``shared/tools/latency_proxy.py`` (20 ms per request, as a remote S3 adds). Then, in the
same run, each from a fresh bucket prefix:

- baseline: a raw boto3 copy of the same files, ``put_object`` from a ThreadPoolExecutor of
  16 threads (sa_djblob's default ``threads``), no database, no checks of any kind;
- the same raw copy with each object read back (``get_object``) and its MD5 checked: what
  a verified copy costs without sa_djblob;
- ``copy_to``: the whole store copied to S3 with verification: the size of each object at
  the destination asked first (resumability), each payload hashed as it is read, and
  each copy read back and hashed (never trusting an ETag);
- the catch-up pass: ``copy_to`` again, with nothing left to copy.

Printed: wall times, the ratio to the baseline, and the peak RSS above the RSS before the
copy (psutil sampled every 10 ms). Requests per value: the baseline makes one (PUT), a
verified copy two (PUT, GET); ``copy_to`` learns what the destination holds from listings
(about one page per 1,000 values; it asks per object only where the store is sparse).
With moto's CPU the bound on a small machine, the ratios are about what the request
counts make them.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _servers
from _servers import latency_proxy, moto_server, mysql_database, s3_client, s3_spec

import sa_djblob as djb

MIB = 1 << 20
THREADS = 16

if not _servers.PROXY.exists():  # a git worktree sits deeper than the checkout: look upwards
    for _up in Path(__file__).resolve().parents:
        if (_up / "shared" / "tools" / "latency_proxy.py").exists():
            _servers.PROXY = _up / "shared" / "tools" / "latency_proxy.py"
            break


@contextmanager
def peak_rss() -> Iterator[list[int]]:
    """Yields a list that holds, after the block, the peak RSS growth in bytes."""
    import psutil

    proc = psutil.Process()
    base = proc.memory_info().rss
    peak = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.01)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    out = [0]
    try:
        yield out
    finally:
        stop.set()
        t.join()
        out[0] = max(peak[0], proc.memory_info().rss) - base


def populate(url: str, rows: int, size_kb: int) -> sa.Table:
    engine = sa.create_engine(url)
    djb.install(engine)
    md = sa.MetaData()
    table = sa.Table(
        "bench_copy",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("b", djb.Blob(store="local")),
    )
    md.create_all(engine)
    n = size_kb * 1024
    for start in range(0, rows, 500):
        count = min(500, rows - start)
        with engine.begin() as conn:
            conn.execute(
                sa.insert(table),
                [
                    {"id": i, "b": np.random.default_rng(i).bytes(n)}
                    for i in range(start, start + count)
                ],
            )
    djb.uninstall(engine)
    engine.dispose()
    return table


def raw_copy(
    folder: Path, endpoint: str, bucket: str, *, read_back: bool = False
) -> tuple[float, int, int]:
    client = s3_client(endpoint, threads=THREADS + 4)
    files = [Path(d, f) for d, _, names in os.walk(folder) for f in names]
    files = [f for f in files if len(f.name) == 32]  # the payloads, not the owner marker
    top = "raw-read-back" if read_back else "raw"

    def put(f: Path) -> int:
        data = f.read_bytes()
        key = f"{top}/{f.relative_to(folder)}"
        client.put_object(Bucket=bucket, Key=key, Body=data)
        if read_back:
            got = client.get_object(Bucket=bucket, Key=key)["Body"].read()
            assert hashlib.md5(got).hexdigest() == f.name, key
        return len(data)

    client.put_object(Bucket=bucket, Key="raw/warm-up", Body=b"x")
    t0 = time.perf_counter()
    with ThreadPoolExecutor(THREADS) as pool:
        sizes = list(pool.map(put, files))
    return time.perf_counter() - t0, len(sizes), sum(sizes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--size-kb", type=int, default=64)
    ap.add_argument("--no-latency", action="store_true", help="no latency proxy")
    ap.add_argument("--mysql", action="store_true", help="MariaDB instead of SQLite")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="djb-copy-") as tmp, moto_server() as moto:
        folder = Path(tmp, "store")
        bucket = "copy-" + uuid.uuid4().hex[:8]
        s3_client(moto).create_bucket(Bucket=bucket)
        djb.config["stores"] = {"local": {"protocol": "file", "location": str(folder)}}
        djb.config["threads"] = THREADS
        db = mysql_database() if args.mysql else _given(f"sqlite:///{tmp}/bench.sqlite")
        with db as url:
            t0 = time.perf_counter()
            populate(url, args.rows, args.size_kb)
            print(
                f"{args.rows:,} x {args.size_kb} KiB written to the file store in"
                f" {time.perf_counter() - t0:.1f} s (not measured)"
            )
            proxy = latency_proxy(moto) if not args.no_latency else _given(moto)
            with proxy as endpoint:
                run(url, folder, endpoint, bucket, args)


@contextmanager
def _given(value: str) -> Iterator[str]:
    yield value


def run(url: str, folder: Path, endpoint: str, bucket: str, args: argparse.Namespace) -> None:
    where = "S3 + 20 ms" if not args.no_latency else "S3 loopback"
    raw_time, raw_n, raw_bytes = raw_copy(folder, endpoint, bucket)
    checked_time = raw_copy(folder, endpoint, bucket, read_back=True)[0]

    engine = sa.create_engine(url)
    ext = djb.externals(engine)["local"]
    new = s3_spec(endpoint, bucket, "moved")
    with peak_rss() as rss:
        t0 = time.perf_counter()
        report = ext.copy_to(new, progress=False)
        ours = time.perf_counter() - t0
    assert report.ok and report.copied == raw_n, report
    t0 = time.perf_counter()
    again = ext.copy_to(new, progress=False)
    catch_up = time.perf_counter() - t0
    assert again.ok and again.copied == 0 and again.skipped == raw_n, again
    engine.dispose()

    mb = raw_bytes / MIB
    print(f"\nfile store -> {where}, {raw_n:,} values, {mb:.0f} MiB, {THREADS} threads\n")
    print("| work | time | values/s | MiB/s | vs baseline | peak RSS |")
    print("|---|---|---|---|---|---|")
    print(
        f"| raw boto3 put_object (baseline) | {raw_time:.2f} s | {raw_n / raw_time:,.0f} |"
        f" {mb / raw_time:.1f} | 100 % | |"
    )
    print(
        f"| raw boto3 put_object + get_object + MD5 | {checked_time:.2f} s |"
        f" {raw_n / checked_time:,.0f} | {mb / checked_time:.1f} |"
        f" {100 * raw_time / checked_time:.0f} % | |"
    )
    print(
        f"| copy_to (verified) | {ours:.2f} s | {raw_n / ours:,.0f} | {mb / ours:.1f} |"
        f" {100 * raw_time / ours:.0f} % | +{rss[0] / MIB:.0f} MiB |"
    )
    print(
        f"| copy_to again (catch-up, nothing to copy) | {catch_up:.2f} s |"
        f" {raw_n / catch_up:,.0f} | | | |"
    )


if __name__ == "__main__":
    main()
