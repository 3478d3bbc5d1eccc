"""Streaming a large result of external S3 blobs: wall time, throughput and peak memory.

    python benchmarks/streaming.py [--rows N] [--sqlite] [--latency]

A table of N rows (default 10,000), each a distinct random 64 KB array in a
``Blob(store="s3")`` column, lives on MariaDB (SA_DJBLOB_BENCH_MYSQL_URL, default the
loopback server; a scratch database is created and dropped) or, with ``--sqlite``, in
a SQLite file; its payloads live on a moto S3 server on loopback, with ``--latency``
behind ``shared/tools/latency_proxy.py`` (20 ms per request, as a remote S3 adds).
The rows are inserted in batches first (not part of any figure). Then each case reads
the whole table in its own fresh process, which reports its wall time and its peak
RSS above its RSS just before the query (psutil sampled every 10 ms, and the
process's ``ru_maxrss`` if the query raised it further):

- streamed Core: ``conn.execution_options(yield_per=100).execute(select(t.c.id, t.c.b))``
  iterated to the end, each row dropped once read;
- streamed ORM: ``session.scalars(select(Item).execution_options(yield_per=100))``;
- unstreamed: ``conn.execute(select(t.c.id, t.c.b)).all()`` (the whole result's
  payloads prefetched concurrently, all of it held);
- baseline: a raw boto3 loop reading the same objects with a ThreadPoolExecutor of
  16 threads (sa_djblob's default ``threads``), no database, bodies dropped.

Targets: streamed peak RSS < 64 MiB above its baseline; streamed throughput within
1.5x of the unstreamed prefetch.

Run time: every case is bound by moto's CPU (about 2.6 ms per GET, and boto3's
1.7 ms on the client side), and the insert makes two requests per row (HEAD, PUT):
some 60,000 requests for the default 10,000 rows, about 4 minutes on an idle 2-core
machine and 6 under load. ``--rows 3000`` takes about 2 minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _servers import latency_proxy, moto_server, mysql_database, s3_client, s3_spec, timed

import sa_djblob as djb

MIB = 1 << 20
LOCATION = "stream"
CASES = ("baseline", "unstreamed", "streamed-core", "streamed-orm")
TITLES = {
    "baseline": "raw boto3, 16 threads (baseline)",
    "unstreamed": "unstreamed .all()",
    "streamed-core": "streamed Core, yield_per={per}",
    "streamed-orm": "streamed ORM, yield_per={per}",
}


def make_table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        "bench_stream",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("b", djb.Blob(store="s3")),
    )


def array_values(start: int, count: int, size_kb: int) -> list[np.ndarray]:
    """Distinct random float64 arrays of *size_kb* KiB each, reproducible per row."""
    n = size_kb * 1024 // 8
    return [np.random.default_rng(i).random(n) for i in range(start, start + count)]


def populate(url: str, rows: int, size_kb: int, batch: int) -> float:
    engine = sa.create_engine(url)
    djb.install(engine)
    md = sa.MetaData()
    table = make_table(md)
    md.create_all(engine)
    t0 = time.perf_counter()
    for start in range(0, rows, batch):
        count = min(batch, rows - start)
        values = array_values(start, count, size_kb)
        with engine.begin() as conn:
            conn.execute(
                sa.insert(table), [{"id": start + i, "b": v} for i, v in enumerate(values)]
            )
    engine.dispose()
    return time.perf_counter() - t0


# -- one case, in a fresh process --------------------------------------------------


class PeakRSS:
    """Peak RSS of this process while the block runs, above its RSS when it starts."""

    def __init__(self, interval: float = 0.01) -> None:
        import psutil

        self._proc = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self.base = 0
        self.peak = 0

    def _rss(self) -> int:
        return int(self._proc.memory_info().rss)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(self._interval)

    @contextlib.contextmanager
    def measure(self) -> Iterator[None]:
        maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        self.base = self.peak = self._rss()
        thread = threading.Thread(target=self._sample, daemon=True)
        thread.start()
        try:
            yield
        finally:
            self._stop.set()
            thread.join()
            self.peak = max(self.peak, self._rss())
            maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            if maxrss > maxrss_before:  # the block raised the lifetime peak: that is exact
                self.peak = max(self.peak, maxrss)

    @property
    def growth(self) -> int:
        return self.peak - self.base


def _is_payload(key: str) -> bool:
    name = key.rsplit("/", 1)[-1]
    return len(name) == 32 and all(c in "0123456789abcdef" for c in name)


def _baseline_case(args: argparse.Namespace) -> Callable[[], tuple[int, int]]:
    client = s3_client(args.endpoint, threads=args.threads)
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=args.bucket, Prefix=LOCATION + "/"
    ):
        # the payloads, ``<location>/<schema>/<h0h1>/<h2h3>/<hex>``, not the owner marker
        keys.extend(o["Key"] for o in page.get("Contents", ()) if _is_payload(o["Key"]))
    client.get_object(Bucket=args.bucket, Key=keys[0])["Body"].read()  # warm up

    def get(key: str) -> int:
        return len(client.get_object(Bucket=args.bucket, Key=key)["Body"].read())

    def run() -> tuple[int, int]:
        with ThreadPoolExecutor(args.threads) as pool:
            sizes = list(pool.map(get, keys))
        return len(sizes), sum(sizes)

    return run


def _sa_case(args: argparse.Namespace) -> Callable[[], tuple[int, int]]:
    djb.config["stores"] = {"s3": s3_spec(args.endpoint, args.bucket, LOCATION)}
    djb.config["threads"] = args.threads
    engine = sa.create_engine(args.url)
    djb.install(engine)
    table = make_table(sa.MetaData())

    class Base(DeclarativeBase):
        pass

    class Item(Base):
        __table__ = table
        id: Mapped[int]
        b: Mapped[Any]

    query = sa.select(table.c.id, table.c.b)
    with engine.connect() as conn:  # warm up: imports, the pool, the S3 client
        conn.execute(query.where(table.c.id.in_([0, 1]))).all()
    with Session(engine) as s:
        s.scalars(sa.select(Item).where(table.c.id == 0)).all()

    def unstreamed() -> tuple[int, int]:
        with engine.connect() as conn:
            rows = conn.execute(query).all()
        return len(rows), sum(r.b.nbytes for r in rows)

    def streamed_core() -> tuple[int, int]:
        n = nbytes = 0
        with engine.connect() as conn:
            for row in conn.execution_options(yield_per=args.yield_per).execute(query):
                n += 1
                nbytes += row.b.nbytes
        return n, nbytes

    def streamed_orm() -> tuple[int, int]:
        n = nbytes = 0
        with Session(engine) as s:
            stmt = sa.select(Item).execution_options(yield_per=args.yield_per)
            for item in s.scalars(stmt):
                n += 1
                nbytes += item.b.nbytes
        return n, nbytes

    cases = {
        "unstreamed": unstreamed,
        "streamed-core": streamed_core,
        "streamed-orm": streamed_orm,
    }
    return cases[args.case]


def run_case(args: argparse.Namespace) -> None:
    """The child process: set up (untimed), then time one read of the whole table."""
    run = _baseline_case(args) if args.case == "baseline" else _sa_case(args)
    rss = PeakRSS()
    with rss.measure():
        seconds, (rows, nbytes) = timed(run)
    result = {"seconds": seconds, "rows": rows, "bytes": nbytes, "rss": rss.growth}
    print(json.dumps(result))


def spawn_case(case: str, url: str, endpoint: str, bucket: str, args: argparse.Namespace) -> Any:
    argv = [sys.executable, __file__, "--case", case, "--url", url, "--endpoint", endpoint]
    argv += ["--bucket", bucket, "--threads", str(args.threads)]
    argv += ["--yield-per", str(args.yield_per)]
    out = subprocess.run(argv, capture_output=True, text=True)
    if out.returncode != 0:
        sys.stderr.write(out.stderr)
        raise SystemExit(f"case {case!r} failed (exit status {out.returncode})")
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- the run ---------------------------------------------------------------------


@contextlib.contextmanager
def database(sqlite: bool, tmp: Path) -> Iterator[str]:
    if sqlite:
        yield f"sqlite:///{tmp / 'bench.db'}"
    else:
        with mysql_database() as url:
            yield url


@contextlib.contextmanager
def s3_endpoint(latency: bool) -> Iterator[tuple[str, str]]:
    """Yields (moto endpoint, endpoint the cases read from)."""
    with moto_server() as s3:
        if latency:
            with latency_proxy(s3) as slow:
                yield s3, slow
        else:
            yield s3, s3


def mb_per_s(res: dict[str, Any]) -> float:
    return float(res["bytes"]) / 1e6 / float(res["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=10_000, help="rows (default 10,000)")
    parser.add_argument("--size-kb", type=int, default=64, help="KiB per array (default 64)")
    parser.add_argument("--sqlite", action="store_true", help="SQLite instead of MariaDB")
    parser.add_argument("--latency", action="store_true", help="S3 behind a 20 ms proxy")
    parser.add_argument("--yield-per", type=int, default=100, help="partition size (100)")
    parser.add_argument("--threads", type=int, default=16, help="S3 threads (default 16)")
    parser.add_argument("--batch", type=int, default=500, help="insert batch size (500)")
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--bucket", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        run_case(args)
        return

    started = time.perf_counter()
    backend = "SQLite" if args.sqlite else "MariaDB"
    where = "S3 (moto) +20 ms proxy" if args.latency else "S3 (moto) loopback"
    print(
        f"sa_djblob {djb.__version__}, numpy {np.__version__}, SQLAlchemy {sa.__version__}, "
        f"{os.cpu_count()} cores; {backend}, {where}; {args.rows} rows x {args.size_kb} KiB"
    )
    with (
        tempfile.TemporaryDirectory() as tmpdir,
        database(args.sqlite, Path(tmpdir)) as url,
        s3_endpoint(args.latency) as (s3, endpoint),
    ):
        bucket = "bench-" + uuid.uuid4().hex[:8]
        s3_client(s3).create_bucket(Bucket=bucket)
        djb.config["stores"] = {"s3": s3_spec(s3, bucket, LOCATION)}  # inserts skip the proxy
        t_ins = populate(url, args.rows, args.size_kb, args.batch)
        print(f"inserted in batches of {args.batch} in {t_ins:.1f} s (not part of the figures)\n")

        results: dict[str, dict[str, Any]] = {}
        print(f"  {'case':<36} {'rows':>6} {'time':>9} {'MB/s':>8} {'peak RSS':>10}   target")
        for case in CASES:
            res = results[case] = spawn_case(case, url, endpoint, bucket, args)
            if res["rows"] != args.rows:
                raise SystemExit(f"case {case!r} read {res['rows']} rows, expected {args.rows}")
            base = results["baseline"]
            unstreamed = results.get("unstreamed")
            speed = mb_per_s(res)
            ratio = f"{mb_per_s(base) / speed:.2f}x the baseline's time"
            target = ""
            if case.startswith("streamed") and unstreamed is not None:
                slower = mb_per_s(unstreamed) / speed
                rss_ok = res["rss"] < 64 * MIB
                speed_ok = slower <= 1.5
                target = (
                    f"RSS < 64 MiB: {'met' if rss_ok else 'MISSED'}; "
                    f"{slower:.2f}x the unstreamed time (<= 1.5x): "
                    f"{'met' if speed_ok else 'MISSED'}"
                )
            title = TITLES[case].format(per=args.yield_per)
            print(
                f"  {title:<36} {res['rows']:>6} {res['seconds']:>7.2f} s {speed:>8.1f}"
                f" {res['rss'] / MIB:>6.1f} MiB   {'' if case == 'baseline' else ratio}",
                flush=True,
            )
            if target:
                print(f"  {'':<36} {target}", flush=True)
    print(f"\ntotal run {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
