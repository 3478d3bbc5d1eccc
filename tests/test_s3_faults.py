"""S3 connections cut at bad moments: a StoreError within the store's timeouts, never a hang.

A loopback proxy (tests/helpers/s3_proxy.py) in front of the moto server cuts the
connection right after "100 Continue", in the middle of a request body, or in the
middle of a response body.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from conftest import S3Server
from helpers.s3_proxy import FaultProxy

from sa_djblob._exceptions import StoreError
from sa_djblob.stores import S3Store

HELPERS = Path(__file__).parent / "helpers"
SIZE = 2 << 20  # above botocore's thresholds, below the store's multipart threshold
WAIT = 30.0  # the most any faulty operation may take here (timeouts 2 s + 5 s, 2 tries)


def _clock_ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _clock_ticks()


def _upload_in_subprocess(
    s3_server: S3Server, proxy: FaultProxy, bucket: str, *extra: str, timeout: float
) -> tuple[str | None, float, float]:
    """(output or None if still running at *timeout*, CPU seconds, wall seconds)."""
    env = dict(
        os.environ,
        PYTHONPATH=str(Path(__file__).parent.parent),
        SA_DJBLOB_TEST_S3_ACCESS_KEY=s3_server.access_key,
        SA_DJBLOB_TEST_S3_SECRET_KEY=s3_server.secret_key,
    )
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, str(HELPERS / "s3_upload.py"), proxy.endpoint, bucket, str(SIZE), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    cpu = 0.0
    while time.monotonic() - start < timeout and proc.poll() is None:
        cpu = _cpu_seconds(proc.pid)
        time.sleep(0.2)
    wall = time.monotonic() - start
    if proc.poll() is None:
        cpu = _cpu_seconds(proc.pid)
        proc.kill()
        proc.communicate()
        return None, cpu, wall
    out, err = proc.communicate()
    assert proc.returncode == 0, err.decode()[-2000:]
    return out.decode(), cpu, wall


pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")


@pytest.fixture
def proxy_for(s3_server: S3Server) -> Iterator[Callable[[str | None], FaultProxy]]:
    made: list[FaultProxy] = []

    def make(fault: str | None) -> FaultProxy:
        p = FaultProxy(s3_server.endpoint, fault)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


def test_old_code_spins_after_100_continue_cut(
    s3_server: S3Server, s3_bucket: str, proxy_for: Callable[[str | None], FaultProxy]
) -> None:
    """The hazard the fix avoids: botocore with Expect: 100-continue spins forever."""
    proxy = proxy_for("continue_then_close")
    out, cpu, wall = _upload_in_subprocess(s3_server, proxy, s3_bucket, "--old", timeout=10)
    print(f"old code: still running after {wall:.1f} s, {cpu:.1f} s of CPU")
    assert out is None, f"the old code finished: {out!r}"
    assert proxy.faults >= 1
    assert cpu > 2.0  # busy, not waiting: no timeout will end it


def test_upload_without_expect_continue(
    s3_server: S3Server, s3_bucket: str, proxy_for: Callable[[str | None], FaultProxy]
) -> None:
    proxy = proxy_for("continue_then_close")
    out, cpu, wall = _upload_in_subprocess(s3_server, proxy, s3_bucket, timeout=60)
    print(f"fixed: {out!r} after {wall:.1f} s, {cpu:.1f} s of CPU")
    assert out is not None, f"still running after {wall:.0f} s ({cpu:.1f} s CPU)"
    assert out.strip() == "OK"
    assert proxy.expect_seen == 0 and proxy.faults == 0
    assert cpu < 15.0
    head = s3_server.client().head_object(Bucket=s3_bucket, Key="store/x/payload.bin")
    assert head["ContentLength"] == SIZE


def _store(s3_server: S3Server, bucket: str, endpoint: str) -> S3Store:
    store = S3Store(
        "faulty",
        bucket=bucket,
        location="store",
        endpoint=endpoint,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
    )
    store.connect_timeout = 2.0
    store.read_timeout = 5.0
    store.max_attempts = 2
    return store


def _bounded(action: Callable[[], Any], seconds: float = WAIT) -> BaseException | None:
    """Run *action* in a thread; fail the test if it takes longer than *seconds*."""
    result: list[BaseException | None] = []

    def run() -> None:
        try:
            action()
            result.append(None)
        except BaseException as exc:
            result.append(exc)

    t = threading.Thread(target=run, daemon=True)
    start = time.monotonic()
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"still running after {seconds} s: a hang"
    print(f"{getattr(action, '__name__', action)}: {time.monotonic() - start:.2f} s")
    return result[0]


def test_connection_cut_mid_body(
    s3_server: S3Server,
    s3_bucket: str,
    proxy_for: Callable[[str | None], FaultProxy],
    tmp_path: Path,
) -> None:
    proxy = proxy_for("cut_body")
    store = _store(s3_server, s3_bucket, proxy.endpoint)
    src = tmp_path / "payload.bin"
    src.write_bytes(os.urandom(SIZE))
    path = PurePosixPath("/store/x/cut.bin")
    with store:
        for action in (
            lambda: store.put(path, src.read_bytes()),
            lambda: store.upload_file(path, src),
            lambda: store.put_file(path, src.open("rb")),
        ):
            exc = _bounded(action)
            assert isinstance(exc, StoreError), repr(exc)
            assert "cannot write" in str(exc) and s3_server.secret_key not in str(exc)
    assert proxy.faults >= 3
    assert S3Store.key(path) not in [
        o["Key"] for o in s3_server.client().list_objects_v2(Bucket=s3_bucket).get("Contents", [])
    ]


def test_connection_cut_mid_response(
    s3_server: S3Server,
    s3_bucket: str,
    proxy_for: Callable[[str | None], FaultProxy],
    tmp_path: Path,
) -> None:
    s3_server.client().put_object(Bucket=s3_bucket, Key="store/x/big.bin", Body=os.urandom(SIZE))
    proxy = proxy_for("cut_response")
    store = _store(s3_server, s3_bucket, proxy.endpoint)
    path = PurePosixPath("/store/x/big.bin")

    def read_open() -> None:
        with store.open(path) as f:
            f.read()

    with store:
        for action in (lambda: store.get(path), read_open):
            exc = _bounded(action)
            assert isinstance(exc, StoreError), repr(exc)
            assert "cannot read" in str(exc)
    assert proxy.faults >= 2


def test_botocore_errors_are_mapped_in_one_place() -> None:
    """One context manager maps what botocore raises to sa_djblob's errors (as httpx maps
    its transport's), for every S3 call: no secret in the message, a missing object
    is a MissingPayloadError, an expected code is handed back instead of raised."""
    import inspect

    from botocore.exceptions import ClientError

    from sa_djblob._exceptions import MissingPayloadError
    from sa_djblob.stores import s3

    secret = "SECRETsecretSECRET42"
    store = S3Store(
        "s",
        endpoint="localhost:9",
        bucket="b",
        location="",
        access_key="AKIDEXAMPLE0001",
        secret_key=secret,
    )
    path = PurePosixPath("x/y")

    def client_error(code: str, message: str = "") -> ClientError:
        return ClientError({"Error": {"Code": code, "Message": message}}, "GetObject")

    missing = pytest.raises(MissingPayloadError, match="payload x/y is missing from bucket 'b'")
    with missing, store._errors("read", path, missing=True):
        raise client_error("NoSuchKey")
    denied = pytest.raises(StoreError, match="cannot read x/y: access denied")
    with denied as info, store._errors("read", path, missing=True):
        raise client_error("AccessDenied", f"key {secret}")
    assert secret not in str(info.value)
    slow = pytest.raises(StoreError, match=r"cannot write x/y in .*: SlowDown: key \*\*\*")
    with slow, store._errors("write", path):
        raise client_error("SlowDown", f"key {secret}")
    with store._errors("check", path, expect=("NoSuchKey",)) as outcome:
        raise client_error("NoSuchKey")
    assert outcome.code == "NoSuchKey"
    source = inspect.getsource(s3)
    assert source.count("self._wrap(") + source.count("_store._wrap(") == 1, "one mapping"
