"""Loopback servers for the benchmarks: a moto S3 server and the latency proxy."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa

PROXY = Path(__file__).resolve().parents[2] / "shared" / "tools" / "latency_proxy.py"
MYSQL_URL = os.environ.get("SA_DJBLOB_BENCH_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str = "server") -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{what} did not start")


@contextlib.contextmanager
def _process(argv: list[str], port: int, what: str) -> Iterator[str]:
    """Run a loopback server process until the block ends; yields ``host:port``."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, proc, what)
        yield f"127.0.0.1:{port}"
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """End a server process: SIGTERM, then SIGKILL if it has not ended within 10 s (a
    moto server holding 100,000 objects can take longer to wind down)."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def moto_server() -> contextlib.AbstractContextManager[str]:
    """A moto S3 server process; yields its ``host:port``."""
    port = free_port()
    argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    return _process(argv, port, "moto server")


def latency_proxy(target: str, delay_ms: int = 20) -> contextlib.AbstractContextManager[str]:
    """``shared/tools/latency_proxy.py`` in front of *target*; yields ``host:port``."""
    port = free_port()
    target_port = target.rsplit(":", 1)[1]
    argv = [sys.executable, str(PROXY), str(port), target_port, str(delay_ms)]
    return _process(argv, port, "latency proxy")


def s3_client(endpoint: str, threads: int = 32) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=f"http://{endpoint}",
        aws_access_key_id="bench",
        aws_secret_access_key="bench-secret",
        region_name="us-east-1",
        config=Config(max_pool_connections=threads),
    )


def s3_spec(endpoint: str, bucket: str, location: str = "bench") -> dict[str, Any]:
    return {
        "protocol": "s3",
        "endpoint": endpoint,
        "bucket": bucket,
        "location": location,
        "access_key": "bench",
        "secret_key": "bench-secret",
    }


@contextlib.contextmanager
def mysql_database() -> Iterator[str]:
    """A fresh MariaDB database; yields its URL. Dropped afterwards."""
    admin = sa.create_engine(MYSQL_URL)
    name = "djb_bench_" + uuid.uuid4().hex[:8]
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE DATABASE `{name}`"))
    try:
        yield str(sa.make_url(MYSQL_URL).set(database=name).render_as_string(hide_password=False))
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))
        admin.dispose()


def timed(fn: Any, *args: Any, **kw: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    result = fn(*args, **kw)
    return time.perf_counter() - t0, result
