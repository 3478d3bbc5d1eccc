"""Insert and fetch of external blobs and attachments, next to raw baselines.

    python benchmarks/external.py [--quick]

Runs on MariaDB (SA_DJBLOB_BENCH_MYSQL_URL, default the loopback server), a file store
in a temp folder, and a moto S3 server on loopback, bare and behind
``shared/tools/latency_proxy.py`` (20 ms per request, as a remote S3 adds). Each
figure is printed next to a baseline measured in the same run (a raw loop of file
writes, or of boto3 puts with 16 threads) and next to DataJoint 0.14's time for the
same work on this machine (from the issue tracker).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _servers import latency_proxy, moto_server, mysql_database, s3_client, s3_spec, timed

import sa_djblob as djb

rows_out: list[tuple[str, float, str, str, str]] = []


def report(name: str, seconds: float, baseline: str, datajoint: float | None, target: str) -> None:
    dj = f"{datajoint / seconds:5.1f}x DataJoint ({datajoint:.2f} s)" if datajoint else ""
    rows_out.append((name, seconds, baseline, dj, target))
    print(f"  {name:<44} {seconds:8.3f} s   {baseline:<28} {dj:<28} {target}", flush=True)


def make_table(metadata: sa.MetaData, store: str, kind: str = "blob") -> sa.Table:
    col = djb.Blob(store=store) if kind == "blob" else djb.Attach(store=store)
    return sa.Table(
        f"bench_{store}_{kind}",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("v", col),
    )


def bench_rows(
    engine: sa.Engine,
    store: str,
    values: list[Any],
    label: str,
    dj: tuple[float, float] | None,
    baseline_put: float,
    baseline_get: float,
    targets: tuple[str, str],
) -> None:
    md = sa.MetaData()
    table = make_table(md, store)
    md.create_all(engine)
    rows = [{"id": i, "v": v} for i, v in enumerate(values)]

    def insert() -> None:
        with engine.begin() as conn:
            conn.execute(sa.insert(table), rows)

    def fetch() -> list[Any]:
        with engine.connect() as conn:
            return conn.execute(sa.select(table.c.id, table.c.v)).all()

    t_ins, _ = timed(insert)
    t_get, got = timed(fetch)
    assert len(got) == len(values)
    report(
        f"{label} insert",
        t_ins,
        f"raw loop {baseline_put:.3f} s ({baseline_put / t_ins:.2f}x)",
        dj[0] if dj else None,
        targets[0],
    )
    report(
        f"{label} fetch",
        t_get,
        f"raw loop {baseline_get:.3f} s ({baseline_get / t_get:.2f}x)",
        dj[1] if dj else None,
        targets[1],
    )
    md.drop_all(engine)


def raw_file_loop(folder: Path, blobs: list[bytes]) -> tuple[float, float]:
    def put() -> None:
        for i, b in enumerate(blobs):
            (folder / f"{i}.bin").write_bytes(b)

    def get() -> None:
        for i in range(len(blobs)):
            (folder / f"{i}.bin").read_bytes()

    folder.mkdir(parents=True, exist_ok=True)
    return timed(put)[0], timed(get)[0]


def raw_boto_loop(
    endpoint: str, bucket: str, blobs: list[bytes], threads: int = 16
) -> tuple[float, float]:
    client = s3_client(endpoint)
    prefix = "raw-" + uuid.uuid4().hex[:6]

    def put(i: int) -> None:
        client.put_object(Bucket=bucket, Key=f"{prefix}/{i}", Body=blobs[i])

    def get(i: int) -> None:
        client.get_object(Bucket=bucket, Key=f"{prefix}/{i}")["Body"].read()

    with ThreadPoolExecutor(threads) as pool:
        t_put = timed(lambda: list(pool.map(put, range(len(blobs)))))[0]
        t_get = timed(lambda: list(pool.map(get, range(len(blobs)))))[0]
    return t_put, t_get


def small_blobs(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.integers(0, 256, 1024, dtype=np.uint8) for _ in range(n)]


# -- the 256 MiB attachment, measured in a child process for a clean peak RSS --------


def _rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def attachment_child(args: argparse.Namespace) -> None:
    import threading

    import psutil

    djb.config["stores"] = {"shared": s3_spec(args.endpoint, args.bucket)}
    djb.config["download_path"] = args.download
    engine = sa.create_engine(args.url)
    djb.install(engine)
    md = sa.MetaData()
    table = make_table(md, "shared", "attach")
    md.create_all(engine)
    # warm up imports and connections with a tiny attachment
    tiny = Path(args.download) / "tiny.txt"
    tiny.write_text("warm")
    with engine.begin() as conn:
        conn.execute(sa.insert(table), [{"id": 0, "v": tiny}])
    with engine.connect() as conn:
        conn.execute(sa.select(table.c.v).where(table.c.id == 0)).all()
    proc = psutil.Process()
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.01)

    def measure(fn: Any) -> tuple[float, int]:
        base = _rss()
        peak[0] = base
        stop.clear()
        t = threading.Thread(target=sample)
        t.start()
        try:
            seconds = timed(fn)[0]
        finally:
            stop.set()
            t.join()
        return seconds, peak[0] - base

    def insert() -> None:
        with engine.begin() as conn:
            conn.execute(sa.insert(table), [{"id": 1, "v": args.file}])

    def fetch() -> None:
        with engine.connect() as conn:
            conn.execute(sa.select(table.c.v).where(table.c.id == 1)).all()

    t_ins, rss_ins = measure(insert)
    t_get, rss_get = measure(fetch)
    md.drop_all(engine)
    print(
        json.dumps({"insert": t_ins, "fetch": t_get, "rss_insert": rss_ins, "rss_fetch": rss_get})
    )


def bench_attachment(url: str, endpoint: str, bucket: str, size_mib: int, tmp: Path) -> None:
    big = tmp / "big.bin"
    block = os.urandom(1 << 20)
    with big.open("wb") as f:
        for _ in range(size_mib):
            f.write(block)
    dl = tmp / "downloads"
    dl.mkdir()
    client = s3_client(endpoint)
    from boto3.s3.transfer import TransferConfig

    t_raw = timed(
        lambda: client.upload_file(str(big), bucket, "raw/big.bin", Config=TransferConfig())
    )[0]
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--attachment-child",
            "--url",
            url,
            "--endpoint",
            endpoint,
            "--bucket",
            bucket,
            "--file",
            str(big),
            "--download",
            str(dl),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    res = json.loads(out.stdout.strip().splitlines()[-1])
    mib = 1 << 20
    report(
        f"{size_mib} MiB attachment to S3 insert",
        res["insert"],
        f"boto3 upload_file {t_raw:.2f} s",
        4.8 if size_mib == 256 else None,
        "<= 4.8 s",
    )
    print(
        f"  {'':<44} peak RSS growth on insert: {res['rss_insert'] / mib:.0f} MiB (target < 64 MiB)"
    )
    report(f"{size_mib} MiB attachment from S3 fetch", res["fetch"], "", None, "")
    print(
        f"  {'':<44} peak RSS growth on fetch:  {res['rss_fetch'] / mib:.0f} MiB (target < 64 MiB)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--attachment-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--bucket", help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    parser.add_argument("--download", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.attachment_child:
        attachment_child(args)
        return

    n_small, n_s3, n_big, big_mib, att_mib = (1000, 200, 20, 16, 256)
    full = not args.quick
    if args.quick:
        n_small, n_s3, n_big, big_mib, att_mib = (200, 50, 4, 4, 32)
    print(
        f"sa_djblob {djb.__version__}, numpy {np.__version__}, SQLAlchemy {sa.__version__}, "
        f"{os.cpu_count()} cores"
    )
    with tempfile.TemporaryDirectory() as tmpdir, mysql_database() as url, moto_server() as s3:
        tmp = Path(tmpdir)
        engine = sa.create_engine(url)
        djb.install(engine)
        client = s3_client(s3)
        bucket = "bench-" + uuid.uuid4().hex[:8]
        client.create_bucket(Bucket=bucket)
        print(
            f"\n  {'work':<44} {'time':>10}   {'baseline (same run)':<28}"
            f" {'vs DataJoint 0.14':<28} target"
        )

        # 1,000 x 1 KB on a file store, one commit
        values = small_blobs(n_small)
        djb.config["stores"] = {"local": {"protocol": "file", "location": str(tmp / "store")}}
        raw = raw_file_loop(tmp / "raw", [djb.pack(v) for v in values])
        bench_rows(
            engine,
            "local",
            values,
            f"{n_small} x 1 KB @local",
            (1.5, 0.2) if full else None,
            *raw,
            targets=(">= 4x DataJoint", "no slower than DataJoint"),
        )

        # 200 x 1 KB on S3, bare and behind the latency proxy
        values = small_blobs(n_s3)
        packed = [djb.pack(v) for v in values]
        djb.config["stores"] = {"s3": s3_spec(s3, bucket, "bare")}
        raw = raw_boto_loop(s3, bucket, packed)
        bench_rows(
            engine,
            "s3",
            values,
            f"{n_s3} x 1 KB @S3 loopback",
            None,
            *raw,
            targets=("no slower than DataJoint", "no slower than DataJoint"),
        )
        with latency_proxy(s3) as slow:
            djb.config["stores"] = {"s3": s3_spec(slow, bucket, "proxied")}
            raw = raw_boto_loop(slow, bucket, packed)
            bench_rows(
                engine,
                "s3",
                values,
                f"{n_s3} x 1 KB @S3 +20 ms",
                (5.6, 5.1) if full else None,
                *raw,
                targets=(">= 3x DataJoint", ">= 3x DataJoint"),
            )

        # 20 x 16 MB arrays on a file store
        rng = np.random.default_rng(3)
        values = [rng.random(big_mib * (1 << 20) // 8) for _ in range(n_big)]
        djb.config["stores"] = {"local": {"protocol": "file", "location": str(tmp / "store")}}
        raw = raw_file_loop(tmp / "raw-big", [v.tobytes() for v in values])
        bench_rows(
            engine,
            "local",
            values,
            f"{n_big} x {big_mib} MB arrays @local",
            (18.9, 0.0) if full else None,
            *raw,
            targets=(">= 5x DataJoint", ""),
        )
        del values

        # one large attachment to S3
        engine.dispose()
        bench_attachment(url, s3, bucket, att_mib, tmp)


if __name__ == "__main__":
    main()
