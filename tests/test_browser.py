"""A real browser uploads a file through the FastAPI example's page.

Headless Chromium (Debian's ``chromium`` package) is driven over the Chrome DevTools
Protocol with a small websocket client: it opens ``GET /`` of the app served by uvicorn
on a loopback port, puts a file into the form's file input and submits the form. The
test then finds the attachment in the database and its verified bytes in the store.
Outside CI the test skips when the browser is missing; in CI (``CI=true``) it fails.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from helpers.asgi import serve

import sa_djblob as djb

# a real browser: not in `make test-fast`
pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _browser() -> str:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    reason = (
        "no headless browser: the 'chromium' binary is not on PATH"
        " (install Debian's package: apt-get install -y chromium)"
    )
    if IN_CI:
        pytest.fail(f"{reason}; .ci/run installs it", pytrace=False)
    pytest.skip(reason)


class DevTools:
    """A minimal Chrome DevTools Protocol client on one page target."""

    def __init__(self, ws_url: str) -> None:
        import websocket

        self.ws = websocket.create_connection(ws_url, timeout=30, suppress_origin=True)
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        msg_id = next(self.ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return dict(msg.get("result", {}))
            self.events.append(msg)

    def wait_event(self, method: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, ev in enumerate(self.events):
                if ev.get("method") == method:
                    return dict(self.events.pop(i))
            self.ws.settimeout(max(0.1, deadline - time.monotonic()))
            self.events.append(json.loads(self.ws.recv()))
        raise TimeoutError(f"no {method} event within {timeout} s")

    def evaluate(self, expression: str, await_promise: bool = False) -> Any:
        got = self.send(
            "Runtime.evaluate",
            expression=expression,
            returnByValue=True,
            awaitPromise=await_promise,
        )
        if "exceptionDetails" in got:
            raise RuntimeError(f"{expression[:60]}...: {got['exceptionDetails']}")
        return got["result"].get("value")

    def close(self) -> None:
        self.ws.close()


@contextlib.contextmanager
def chromium(binary: str, profile: Path) -> Iterator[DevTools]:
    """Headless Chromium with remote debugging; yields a client on its first page."""
    proc = subprocess.Popen(
        [
            binary,
            "--headless",
            "--no-sandbox",  # CI runs as root
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client: DevTools | None = None
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.is_file() and port_file.read_text().strip()):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{binary} did not start its DevTools endpoint")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            targets = json.load(r)
        page = next(t for t in targets if t.get("type") == "page")
        client = DevTools(page["webSocketDebuggerUrl"])
        yield client
    finally:
        if client is not None:
            client.close()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _load_example() -> Any:
    sys.path.insert(0, str(EXAMPLES))
    try:
        import fastapi_app
    finally:
        sys.path.remove(str(EXAMPLES))
    return fastapi_app


def test_browser_uploads_a_file_through_the_page(tmp_path: Path) -> None:
    binary = _browser()
    pytest.importorskip("websocket", reason="websocket-client is not installed (test extra)")
    pytest.importorskip("uvicorn", reason="uvicorn is not installed (test extra)")
    fastapi_app = _load_example()
    db_file = tmp_path / "app.sqlite"
    app = fastapi_app.create_app(
        url=f"sqlite+aiosqlite:///{db_file}",
        store_folder=tmp_path / "store",
        download_path=tmp_path / "downloads",
    )
    upload = tmp_path / "upload" / "browser upload.bin"
    upload.parent.mkdir()
    content = os.urandom(300_000) + "ünïcode\n".encode()
    upload.write_bytes(content)

    with serve(app) as base, chromium(binary, tmp_path / "profile") as page:
        page.send("Page.enable")
        page.send("Page.navigate", url=f"{base}/")
        page.wait_event("Page.loadEventFired")
        assert page.evaluate("document.title") == "sa_djblob uploads"
        doc = page.send("DOM.getDocument")
        node = page.send("DOM.querySelector", nodeId=doc["root"]["nodeId"], selector="#file")
        page.send("DOM.setFileInputFiles", nodeId=node["nodeId"], files=[str(upload)])
        assert page.evaluate("document.getElementById('file').files[0].size") == len(content)
        page.evaluate("document.getElementById('send').click()")
        page.wait_event("Page.loadEventFired")
        # the result page shows the upload and links to it
        link = page.evaluate("document.getElementById('download').getAttribute('href')")
        answer = {
            "id": int(page.evaluate("document.getElementById('doc-id').textContent")),
            "name": page.evaluate("document.getElementById('download').textContent"),
            "size": int(page.evaluate("document.getElementById('size').dataset.bytes")),
        }
        assert link == f"/files/{answer['id']}"
        assert answer["name"] == upload.name and answer["size"] == len(content)
        # the browser downloads it back: the bytes the app streams from the store
        digest = page.evaluate(
            f"fetch('/files/{answer['id']}').then(r => r.arrayBuffer())"
            ".then(b => crypto.subtle.digest('SHA-256', b))"
            ".then(d => Array.from(new Uint8Array(d), x => x.toString(16).padStart(2, '0'))"
            ".join(''))",
            await_promise=True,
        )
        assert digest == hashlib.sha256(content).hexdigest()

    engine = sa.create_engine(f"sqlite:///{db_file}")
    try:
        Document = fastapi_app.Document
        with engine.connect() as conn:
            row = conn.execute(
                sa.select(Document.id, Document.name, Document.size, djb.stored(Document.file))
            ).one()
        assert (row.id, row.name, row.size) == (answer["id"], upload.name, len(content))
        obj = row[3]
        assert obj.store == "files" and obj.name == upload.name and obj.size == len(content)
        with obj.open() as f:
            assert f.read() == content
    finally:
        engine.dispose()
