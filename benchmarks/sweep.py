"""Sweeping unused entries, next to a raw delete loop measured in the same run.

Run: ``.venv/bin/python benchmarks/sweep.py`` (defaults: 1,000 entries on the file store
and on the loopback S3 server, 200 on S3 behind the latency proxy, 100,000 on the file
store), or pick cases: ``--case file:1000 --case s3:100000 --case proxy:200``.

Every case fills a fresh database schema (MariaDB by default, ``--url`` for another
server) with N unused externals entries and their payloads, then times
``ExternalTable.sweep(grace=0)``. The baseline fills the same number of payloads and
deletes them one request (or one ``unlink``) at a time, as a naive cleanup does:
a boto3 ``delete_object`` loop on S3, an ``os.unlink`` loop on the file store.

The DataJoint 0.14 figures were measured on this machine: 1,000 entries take 1.9 s on
the file store and 7.8-8.4 s on loopback S3; 200 entries behind the proxy (20 ms per
request) take 5.6 s.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path, PurePosixPath
from typing import Any

import sqlalchemy as sa

import sa_djblob as djb
from sa_djblob._pool import run_all

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _servers import PROXY, free_port, wait_port

from sa_djblob._layout import content_hash

DATAJOINT = {"file:1000": 1.9, "s3:1000": 8.1, "proxy:200": 5.6}  # seconds
GOAL = {"file:1000": 3, "s3:1000": 10, "proxy:200": 20}  # required speed-up
ZERO = datetime.timedelta(0)


class S3:
    """A moto server on loopback, optionally behind the latency proxy."""

    def __init__(self) -> None:
        self.port = free_port()
        self.procs = [
            subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        ]
        wait_port(self.port, self.procs[0])
        self.proxy_port: int | None = None

    def start_proxy(self, delay_ms: float) -> int:
        if self.proxy_port is None:
            port = free_port()
            proc = subprocess.Popen(
                [sys.executable, str(PROXY), str(port), str(self.port), str(delay_ms)],
                stdout=subprocess.DEVNULL,
            )
            self.procs.append(proc)
            wait_port(port, proc)
            self.proxy_port = port
        return self.proxy_port

    def spec(self, bucket: str, port: int | None = None) -> dict[str, Any]:
        return dict(
            protocol="s3",
            endpoint=f"127.0.0.1:{port or self.port}",
            bucket=bucket,
            location="store",
            access_key="bench",
            secret_key="bench-secret",
            secure=False,
        )

    def client(self, port: int | None = None) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{port or self.port}",
            aws_access_key_id="bench",
            aws_secret_access_key="bench-secret",
            region_name="us-east-1",
        )

    def close(self) -> None:
        for p in reversed(self.procs):
            p.terminate()
            p.wait(10)


def payloads(n: int, tag: str) -> list[tuple[uuid.UUID, bytes]]:
    out = []
    for i in range(n):
        data = f"{tag}:{i}:".encode() * 8
        out.append((content_hash(data), data))
    return out


def fill(engine: sa.Engine, ext: djb.ExternalTable, n: int, tag: str) -> None:
    """N unused entries: externals rows plus payloads, put concurrently."""
    items = payloads(n, tag)
    store = ext.store
    schema = ext.schema
    from sa_djblob._layout import object_path

    with engine.begin() as conn:
        for i in range(0, n, 5000):
            conn.execute(
                sa.insert(ext.table),
                [
                    {"hash": k, "size": len(d), "attachment_name": None}
                    for k, d in items[i : i + 5000]
                ],
            )
    paths = [(object_path(store.location, schema, k, None, store.subfolding), d) for k, d in items]
    for i in range(0, n, 2000):
        run_all(lambda pd: store.put(pd[0], pd[1]), paths[i : i + 2000])


def raw_baseline(kind: str, n: int, s3: S3 | None, port: int | None, tmp: Path) -> float:
    """Put N objects, then delete them one by one; the deletes are timed."""
    items = payloads(n, "raw")
    keys = [f"raw/{k.hex[:2]}/{k.hex[2:4]}/{k.hex}" for k, _ in items]
    if kind == "file":
        root = tmp / "raw"
        files = [root / k for k in keys]
        for f, (_, d) in zip(files, items, strict=True):
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(d)
        start = time.perf_counter()
        for f in files:
            os.unlink(f)
        took = time.perf_counter() - start
        shutil.rmtree(root)
        return took
    assert s3 is not None
    bucket = "raw-" + uuid.uuid4().hex[:8]
    fast = s3.client()
    fast.create_bucket(Bucket=bucket)
    run_all(
        lambda kd: fast.put_object(Bucket=bucket, Key=kd[0], Body=kd[1]),
        [(k, d) for k, (_, d) in zip(keys, items, strict=True)],
    )
    client = s3.client(port)
    start = time.perf_counter()
    for k in keys:
        client.delete_object(Bucket=bucket, Key=k)
    took = time.perf_counter() - start
    fast.delete_bucket(Bucket=bucket)
    return took


def run_case(
    case: str, admin_url: str, s3: S3 | None, delay_ms: float, baseline_max: int
) -> dict[str, Any]:
    kind, n_text = case.split(":")
    n = int(n_text)
    tmp = Path(tempfile.mkdtemp(prefix="djb-bench-"))
    port = None
    if kind == "file":
        spec: dict[str, Any] = {"protocol": "file", "location": str(tmp / "store")}
    else:
        assert s3 is not None
        bucket = "bench-" + uuid.uuid4().hex[:8]
        s3.client().create_bucket(Bucket=bucket)
        port = s3.start_proxy(delay_ms) if kind == "proxy" else None
        spec = s3.spec(bucket, port)
    djb.config["stores"] = {"bench": spec}
    admin = sa.create_engine(admin_url)
    name = "djb_bench_" + uuid.uuid4().hex[:8]
    is_sqlite = admin.dialect.name == "sqlite"
    if is_sqlite:
        url = f"sqlite:///{tmp / 'bench.sqlite'}"
    else:
        with admin.begin() as conn:
            conn.execute(sa.text(f"CREATE DATABASE {name}"))
        url = admin.url.set(database=name).render_as_string(hide_password=False)
    engine = sa.create_engine(url)
    try:
        md = sa.MetaData()
        sa.Table(
            "item",
            md,
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("b", djb.Blob(store="bench"), nullable=True),
        )
        md.create_all(engine)
        ext = djb.externals(engine)["bench"]
        t0 = time.perf_counter()
        fill(engine, ext, n, case)
        fill_s = time.perf_counter() - t0
        start = time.perf_counter()
        report = ext.sweep(grace=ZERO, progress=False)
        took = time.perf_counter() - start
        assert report.ok, report.errors
        assert report.rows_deleted == n == report.payloads_deleted, report
        assert ext.paths() == []
        assert not list(ext.store.list(PurePosixPath(ext.store.location, ext.schema)))
        raw = (
            raw_baseline("file" if kind == "file" else "s3", min(n, baseline_max), s3, port, tmp)
            if baseline_max
            else None
        )
        raw_n = min(n, baseline_max)
        return {
            "case": case,
            "n": n,
            "fill_s": fill_s,
            "sweep_s": took,
            "raw_s": raw,
            "raw_n": raw_n,
        }
    finally:
        engine.dispose()
        if not is_sqlite:
            with admin.begin() as conn:
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
        admin.dispose()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--case", action="append", help="STORE:N with STORE one of file, s3, proxy (repeatable)"
    )
    ap.add_argument(
        "--url",
        default=os.environ.get("SA_DJBLOB_BENCH_URL", "mysql+pymysql://root@127.0.0.1:3306"),
        help="a database server URL (a fresh database is made per case), or sqlite://",
    )
    ap.add_argument("--delay-ms", type=float, default=20.0, help="latency proxy delay")
    ap.add_argument(
        "--baseline-max",
        type=int,
        default=1000,
        help="largest N of the raw delete loop (it is slow on purpose)",
    )
    args = ap.parse_args()
    cases = args.case or ["file:1000", "s3:1000", "proxy:200", "file:100000"]
    s3 = S3() if any(not c.startswith("file") for c in cases) else None
    rows = []
    try:
        for case in cases:
            r = run_case(case, args.url, s3, args.delay_ms, args.baseline_max)
            rows.append(r)
            print(
                f"  {case}: filled in {r['fill_s']:.1f}s, swept in {r['sweep_s']:.3f}s",
                file=sys.stderr,
                flush=True,
            )
    finally:
        if s3 is not None:
            s3.close()
    print(
        f"{'case':<14}{'entries':>9}{'sa_djblob':>11}{'per entry':>11}{'raw loop':>17}"
        f"{'DataJoint':>11}{'speed-up':>10}{'goal':>7}"
    )
    for r in rows:
        n, took = r["n"], r["sweep_s"]
        raw = "" if r["raw_s"] is None else f"{r['raw_s']:.3f}s ({r['raw_n']})"
        dj = DATAJOINT.get(r["case"])
        ratio = f"{dj / took:.0f}x" if dj else ""
        goal = f"{GOAL[r['case']]}x" if r["case"] in GOAL else ("<60s" if n >= 100000 else "")
        print(
            f"{r['case']:<14}{n:>9,}{took:>10.3f}s{took / n * 1e6:>9.0f}us{raw:>17}"
            f"{(f'{dj:.1f}s' if dj else ''):>11}{ratio:>10}{goal:>7}"
        )


if __name__ == "__main__":
    main()
