"""S3 that fails fast and says why; presigned URLs (against the real moto server)."""

from __future__ import annotations

import datetime
import http.server
import socket
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Any

import pytest

from sa_djblob._exceptions import MissingPayloadError, StoreError
from sa_djblob.stores import S3Store, build_store

SECRET = "very-secret-key-1a2b3c"
ACCESS = "AKIAFAILFASTACCESS"


def _spec(endpoint: str, **extra: Any) -> dict[str, Any]:
    return {
        "protocol": "s3",
        "endpoint": endpoint,
        "bucket": "bucket",
        "location": "store",
        "access_key": ACCESS,
        "secret_key": SECRET,
        **extra,
    }


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """A loopback server that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            held.append(conn)  # keep it open, read nothing, say nothing

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        server.close()


class _NotS3(http.server.BaseHTTPRequestHandler):
    """A web server: 404 with an HTML page to everything."""

    def _answer(self, body: bool) -> None:
        page = b"<html><body><h1>404 Not Found</h1></body></html>"
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.send_response(404)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        if body:
            self.wfile.write(page)

    def do_GET(self) -> None:
        self._answer(True)

    def do_PUT(self) -> None:
        self._answer(True)

    def do_HEAD(self) -> None:
        self._answer(False)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def web_endpoint() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotS3)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _clean(text: str) -> None:
    assert SECRET not in text and ACCESS not in text


@pytest.mark.slow  # waits for the fail-fast timeouts
def test_silent_endpoint_names_the_setting(silent_endpoint: str) -> None:
    s = build_store("x", _spec(silent_endpoint, read_timeout=0.5, max_attempts=1))
    start = time.monotonic()
    with pytest.raises(StoreError) as info:
        s.get(PurePosixPath("store/a"))
    elapsed = time.monotonic() - start
    assert elapsed < 5, f"took {elapsed:.1f} s"
    msg = str(info.value)
    assert "store 'x'" in msg and silent_endpoint in msg
    assert "did not answer within 0.5 s (1 attempt)" in msg
    assert "raise 'read_timeout' in djb.config['stores']['x']" in msg
    assert not isinstance(info.value, MissingPayloadError)
    _clean(msg)


@pytest.mark.slow  # waits for the fail-fast timeouts
def test_silent_endpoint_retries_count(silent_endpoint: str) -> None:
    s = build_store("x", _spec(silent_endpoint, read_timeout=0.5, max_attempts=3))
    start = time.monotonic()
    with pytest.raises(StoreError, match=r"within 0\.5 s \(3 attempts\)"):
        s.exists(PurePosixPath("store/a"))
    assert 1.4 < time.monotonic() - start < 8


@pytest.mark.slow  # waits for the fail-fast timeouts
def test_silent_endpoint_default_bound(silent_endpoint: str) -> None:
    """With the default settings an endpoint that never answers is reported within 15 s."""
    s = build_store("x", _spec(silent_endpoint))
    start = time.monotonic()
    with pytest.raises(StoreError) as info:
        s.put(PurePosixPath("store/a"), b"data")
    elapsed = time.monotonic() - start
    assert elapsed < 15, f"took {elapsed:.1f} s"
    assert "'read_timeout'" in str(info.value)


def test_web_server_is_not_reported_as_a_missing_bucket(web_endpoint: str) -> None:
    s = build_store("x", _spec(web_endpoint))
    with pytest.raises(StoreError) as info:
        s.get(PurePosixPath("store/a"))
    msg = str(info.value)
    assert "does not look like S3" in msg and web_endpoint in msg and "'endpoint'" in msg
    assert "does not exist" not in msg
    _clean(msg)


def test_missing_bucket_on_real_s3_still_says_so(s3_server: Any) -> None:
    s = build_store("x", s3_server.store_spec("no-such-" + uuid.uuid4().hex[:8]))
    with pytest.raises(StoreError, match="does not exist at endpoint"):
        s.exists(PurePosixPath("store/a"))


@pytest.fixture
def s3_store(s3_server: Any, s3_bucket: str) -> Iterator[S3Store]:
    s = build_store("shared", s3_server.store_spec(s3_bucket))
    assert isinstance(s, S3Store)
    try:
        yield s
    finally:
        s.close()


def test_presigned_url_fetches_the_payload(s3_store: S3Store, s3_server: Any) -> None:
    p = PurePosixPath("store/schema/ab/cd/abcd.photo.png")
    data = b"\x89PNG payload " + uuid.uuid4().bytes
    s3_store.put(p, data)
    url = s3_store.presigned_url(p, expires_in=60)
    assert url.startswith(s3_server.endpoint_url)
    assert s3_server.secret_key not in url
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == data


def test_presigned_url_expiry_is_signed_in(s3_store: S3Store) -> None:
    """The URL carries its lifetime (S3 refuses it afterwards; moto 5 does not check it)."""
    p = PurePosixPath("store/schema/expiring")
    s3_store.put(p, b"soon gone")
    before = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    url = s3_store.presigned_url(p, expires_in=1)
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    assert query["X-Amz-Expires"] == ["1"]
    signed = datetime.datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ")
    assert abs((signed.replace(tzinfo=datetime.UTC) - before).total_seconds()) < 60
    assert "X-Amz-Signature" in query and SECRET not in url
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == b"soon gone"


@pytest.mark.parametrize("bad", [0, -5, 604801, 1.5, True, "60"])
def test_presigned_url_expiry_is_validated(bad: Any) -> None:
    s = build_store("x", {"protocol": "s3", "location": "", "bucket": "b"})
    with pytest.raises(StoreError, match="expires_in must be a whole number of seconds"):
        s.presigned_url(PurePosixPath("a"), expires_in=bad)
