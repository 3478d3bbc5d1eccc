"""A small HTTP/1.1 proxy on loopback in front of an S3 server, that can cut connections.

``FaultProxy(upstream, fault)`` relays requests one by one (keep-alive) to *upstream*
("host:port"); *fault* decides, per request, what goes wrong:

``None``
    nothing: a plain relay.
``"continue_then_close"``
    a request with ``Expect: 100-continue`` gets the status line
    ``HTTP/1.1 100 Continue`` and then the connection is closed (before the blank line
    that ends the interim response).
``"cut_body"``
    a PUT with a body over 1 MiB: half of the body is read, then the connection closes.
``"cut_response"``
    a GET of an object: the response headers and half of its body are relayed, then
    the connection closes.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Any

BIG = 1 << 20


def _read_head(f: Any) -> bytes | None:
    """The request or response head (through the blank line), or None at EOF."""
    lines = []
    while True:
        line = f.readline(65537)
        if not line:
            return None
        lines.append(line)
        if line in (b"\r\n", b"\n"):
            return b"".join(lines)


def _headers(head: bytes) -> dict[str, str]:
    out = {}
    for line in head.split(b"\r\n")[1:]:
        if b":" in line:
            k, v = line.split(b":", 1)
            out[k.decode().strip().lower()] = v.decode().strip()
    return out


class FaultProxy:
    def __init__(self, upstream: str, fault: str | None = None) -> None:
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.fault = fault
        self.faults = 0  # how many times the fault was applied
        self.expect_seen = 0  # requests that carried Expect: 100-continue
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.endpoint = f"127.0.0.1:{self._sock.getsockname()[1]}"
        self._closed = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._closed = True
        self._sock.close()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        up = socket.create_connection(self.upstream)
        cf = client.makefile("rb")
        uf = up.makefile("rb")
        try:
            while self._relay_one(client, cf, up, uf):
                pass
        except OSError:
            pass
        finally:
            for s in (client, up):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def _relay_one(self, client: socket.socket, cf: Any, up: socket.socket, uf: Any) -> bool:
        head = _read_head(cf)
        if head is None:
            return False
        method = head.split(b" ", 1)[0].decode()
        headers = _headers(head)
        length = int(headers.get("content-length", "0") or 0)
        if headers.get("expect", "").lower() == "100-continue":
            self.expect_seen += 1
            if self.fault == "continue_then_close":
                self.faults += 1
                client.sendall(b"HTTP/1.1 100 Continue\r\n")
                return False
            client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            head = head.replace(b"Expect: 100-continue\r\n", b"")
        if self.fault == "cut_body" and method == "PUT" and length > BIG:
            self.faults += 1
            cf.read(length // 2)
            return False
        up.sendall(head)
        left = length
        while left:
            chunk = cf.read(min(left, 1 << 16))
            if not chunk:
                return False
            up.sendall(chunk)
            left -= len(chunk)
        rhead = _read_head(uf)
        if rhead is None:
            return False
        rheaders = _headers(rhead)
        status = int(rhead.split(b" ", 2)[1])
        rlength = int(rheaders.get("content-length", "0") or 0)
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            rlength = 0
        cut = self.fault == "cut_response" and method == "GET" and rlength > BIG
        client.sendall(rhead)
        left = rlength // 2 if cut else rlength
        while left:
            chunk = uf.read(min(left, 1 << 16))
            if not chunk:
                return False
            client.sendall(chunk)
            left -= len(chunk)
        if cut:
            self.faults += 1
            return False
        return rheaders.get("connection", "").lower() != "close"
