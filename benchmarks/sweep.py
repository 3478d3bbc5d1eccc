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

Upkeep at scale (``--upkeep file:100000 --upkeep file:1000000 --upkeep s3:100000``, with
``--url sqlite://`` or a server URL): N entries as a lab's store holds them (98% used,
1% unused rows, 1% orphan payloads), made with bulk INSERTs and plain writes, not
through the write path. Each operation (``iter_paths``, ``iter_used``, ``iter_unused``,
``verify``, then ``sweep``) runs in a fresh process that samples its resident memory,
so the figure is the peak growth of that operation alone. Next to each: its floor
measured in the same run, per entry: a raw ``os.scandir`` walk with ``stat`` (file) or
a raw boto3 ``list_objects_v2`` (S3), a raw DBAPI read of the externals table, and a
raw open+read+md5 loop (file) or ``get_object`` loop (S3) for verify, on up to 20,000
entries. The targets: peak growth under 64 MiB at any N, and time per entry at
1,000,000 within 1.2x of that at 100,000.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path, PurePosixPath
from typing import Any

import sqlalchemy as sa

import sa_djblob as djb
from sa_djblob._pool import run_all

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _servers import PROXY, free_port, stop, wait_port

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
            stop(p)


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


# -- upkeep at scale --------------------------------------------------------------------

OPS = ("iter_paths", "iter_used", "iter_unused", "verify", "sweep")
FLOOR_SAMPLE = 20_000
MIB = 1 << 20


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(args: dict[str, Any]) -> None:
    """Run one upkeep operation; print its time and peak resident memory growth."""
    djb.config["stores"] = {"bench": args["spec"]}
    engine = sa.create_engine(args["url"])
    ext = djb.externals(engine)["bench"]
    ext.exists()  # connect (and import the driver) before the baseline
    op = args["op"]
    base = _rss()
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.005):
            peak[0] = max(peak[0], _rss())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    if op == "sweep":
        report = ext.sweep(grace=ZERO, progress=False)
        assert report.ok, report.errors
        count = report.rows_deleted + report.orphans_deleted
    elif op == "verify":
        vreport = ext.verify(progress=False)
        assert vreport.ok, (vreport.missing[:3], vreport.corrupt[:3], vreport.errors[:3])
        count = vreport.checked
    else:
        count = sum(1 for _ in getattr(ext, op)())
    took = time.perf_counter() - start
    done.set()
    sampler.join()
    peak[0] = max(peak[0], _rss())
    print(json.dumps({"op": op, "s": took, "count": count, "peak": peak[0] - base}))


def _kind(i: int) -> str:
    return {0: "orphan", 1: "unused"}.get(i % 100, "used")


def scale_fill(engine: sa.Engine, ext: djb.ExternalTable, n: int, s3: S3 | None) -> float:
    """N entries, made with bulk INSERTs and plain writes (files) or concurrent puts (S3)."""
    from concurrent.futures import ThreadPoolExecutor

    from sa_djblob._layout import object_path

    start = time.perf_counter()
    store = ext.store
    schema = ext.schema
    item = sa.table("item", sa.column("id"), sa.column("b", ext.table.c.hash.type))
    made: set[str] = set()
    client = s3.client() if s3 is not None else None
    bucket = getattr(store, "bucket", "")
    pool = ThreadPoolExecutor(32) if client is not None else None
    step = 20_000
    for lo in range(0, n, step):
        rows, refs, puts = [], [], []
        for i in range(lo, min(n, lo + step)):
            data = f"scale:{i}".encode()
            key = content_hash(data)
            path = object_path(store.location, schema, key, None, store.subfolding)
            kind = _kind(i)
            if kind != "orphan":
                rows.append({"hash": key, "size": len(data), "attachment_name": None})
            if kind == "used":
                refs.append({"id": i, "b": key})
            if client is None:
                folder = os.path.dirname(path)
                if folder not in made:
                    os.makedirs(folder, exist_ok=True)
                    made.add(folder)
                with open(path, "wb") as f:
                    f.write(data)
            else:
                puts.append((str(path).lstrip("/"), data))
        with engine.begin() as conn:
            conn.execute(sa.insert(ext.table), rows)
            conn.execute(sa.insert(item), refs)
        if pool is not None and client is not None:
            list(pool.map(lambda kd: client.put_object(Bucket=bucket, Key=kd[0], Body=kd[1]), puts))
        print(f"    filled {min(n, lo + step):,}", file=sys.stderr, end="\r", flush=True)
    if pool is not None:
        pool.shutdown()
    return time.perf_counter() - start


def floors(engine: sa.Engine, ext: djb.ExternalTable, s3: S3 | None) -> dict[str, float]:
    """Seconds per entry of the raw work each operation rests on, measured now."""
    out: dict[str, float] = {}
    store = ext.store
    prefix = PurePosixPath(store.location, ext.schema)
    start = time.perf_counter()
    count = 0
    sample: list[str] = []
    if s3 is None:
        stack = [str(prefix)]
        while stack:
            with os.scandir(stack.pop()) as it:
                for e in it:
                    if e.is_dir():
                        stack.append(e.path)
                    else:
                        e.stat()
                        count += 1
                        if len(sample) < FLOOR_SAMPLE:
                            sample.append(e.path)
    else:
        client = s3.client()
        bucket = getattr(store, "bucket", "")
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=str(prefix).lstrip("/") + "/"
        )
        for page in pages:
            for obj in page.get("Contents", []):
                count += 1
                if len(sample) < FLOOR_SAMPLE:
                    sample.append(obj["Key"])
    out["listing"] = (time.perf_counter() - start) / count
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        name = ext.table.name
        quoted = f"`{name}`" if engine.dialect.name in ("mysql", "mariadb") else f'"{name}"'
        start = time.perf_counter()
        cur.execute(f"SELECT hash, attachment_name, filepath FROM {quoted} ORDER BY hash")
        count = 0
        while got := cur.fetchmany(10_000):
            count += len(got)
        out["table"] = (time.perf_counter() - start) / count
        cur.close()
    finally:
        raw.close()
    start = time.perf_counter()
    if s3 is None:
        for path in sample:
            with open(path, "rb") as f:
                hashlib.md5(f.read(), usedforsecurity=False).digest()
    else:
        client = s3.client()
        for key in sample:
            body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
            hashlib.md5(body, usedforsecurity=False).digest()
    out["read"] = (time.perf_counter() - start) / len(sample)
    return out


FLOOR_OF = {
    "iter_paths": ("table",),
    "iter_used": ("table",),
    "iter_unused": ("table",),
    "verify": ("table", "read"),
    "sweep": ("table", "listing"),
}


def run_upkeep(case: str, admin_url: str, s3: S3 | None) -> list[dict[str, Any]]:
    kind, n_text = case.split(":")
    n = int(n_text)
    tmp = Path(tempfile.mkdtemp(prefix="djb-upkeep-"))
    if kind == "file":
        spec: dict[str, Any] = {"protocol": "file", "location": str(tmp / "store")}
    else:
        assert s3 is not None
        bucket = "upkeep-" + uuid.uuid4().hex[:8]
        s3.client().create_bucket(Bucket=bucket)
        spec = s3.spec(bucket)
    djb.config["stores"] = {"bench": spec}
    admin = sa.create_engine(admin_url)
    name = "djb_upkeep_" + uuid.uuid4().hex[:8]
    is_sqlite = admin.dialect.name == "sqlite"
    if is_sqlite:
        url = f"sqlite:///{tmp / 'bench.sqlite'}"
    else:
        with admin.begin() as conn:
            conn.execute(sa.text(f"CREATE DATABASE {name}"))
        url = admin.url.set(database=name).render_as_string(hide_password=False)
    engine = sa.create_engine(url)
    out = []
    try:
        md = sa.MetaData()
        sa.Table(
            "item",
            md,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("b", djb.Blob(store="bench"), nullable=True),
        )
        md.create_all(engine)
        ext = djb.externals(engine)["bench"]
        fill_s = scale_fill(engine, ext, n, s3 if kind == "s3" else None)
        print(f"  {case}: filled in {fill_s:.0f}s", file=sys.stderr, flush=True)
        floor = floors(engine, ext, s3 if kind == "s3" else None)
        for op in OPS:
            arg = json.dumps({"url": url, "spec": spec, "op": op})
            got = subprocess.run(
                [sys.executable, __file__, "--child", arg],
                check=True,
                capture_output=True,
                text=True,
            )
            r = json.loads(got.stdout.strip().splitlines()[-1])
            r.update(case=case, n=n, floor=sum(floor[f] for f in FLOOR_OF[op]))
            r["floor_of"] = "+".join(FLOOR_OF[op])
            print(
                f"  {case} {op}: {r['s']:.1f}s, peak +{r['peak'] / MIB:.1f} MiB",
                file=sys.stderr,
                flush=True,
            )
            out.append(r)
        used = n - 2 * (n // 100) - (1 if n % 100 > 0 else 0) - (1 if n % 100 > 1 else 0)
        expect = {
            "iter_paths": n - (n + 99) // 100,
            "iter_used": used,
            "iter_unused": (n + 98) // 100,
            "verify": used,
            "sweep": (n + 99) // 100 + (n + 98) // 100,
        }
        for r in out:
            assert r["count"] == expect[r["op"]], (r, expect[r["op"]])
    finally:
        engine.dispose()
        if not is_sqlite:
            with admin.begin() as conn:
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
        admin.dispose()
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def print_upkeep(rows: list[dict[str, Any]], db: str) -> None:
    print(
        f"upkeep on {db}: per entry, next to its floor (raw work, same run); peak = resident"
        " memory growth of the operation's process"
    )
    print(
        f"{'case':<14}{'op':<12}{'entries':>10}{'time':>9}{'per entry':>11}"
        f"{'floor':>10}{'of':>14}{'ratio':>7}{'peak':>10}{'vs 100k':>9}"
    )
    per: dict[tuple[str, str, int], float] = {}
    for r in rows:
        per[(r["case"].split(":")[0], r["op"], r["n"])] = r["s"] / r["n"]
    for r in rows:
        each = r["s"] / r["n"]
        kind = r["case"].split(":")[0]
        ref = per.get((kind, r["op"], 100_000))
        vs = f"{each / ref:.2f}x" if ref and r["n"] > 100_000 else ""
        print(
            f"{r['case']:<14}{r['op']:<12}{r['n']:>10,}{r['s']:>8.1f}s{each * 1e6:>9.1f}us"
            f"{r['floor'] * 1e6:>8.1f}us{r['floor_of']:>14}{each / r['floor']:>6.1f}x"
            f"{r['peak'] / MIB:>6.1f} MiB{vs:>9}"
        )
    worst = max((r["peak"] for r in rows), default=0)
    print(f"largest peak growth: {worst / MIB:.1f} MiB (target: under 64 MiB at any N)")


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
    ap.add_argument(
        "--upkeep",
        action="append",
        help="STORE:N with STORE file or s3: upkeep at scale (repeatable; see above)",
    )
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    if args.upkeep:
        s3 = S3() if any(c.startswith("s3") for c in args.upkeep) else None
        try:
            rows = [r for case in args.upkeep for r in run_upkeep(case, args.url, s3)]
        finally:
            if s3 is not None:
                s3.close()
        print_upkeep(rows, sa.make_url(args.url).get_backend_name())
        return
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
