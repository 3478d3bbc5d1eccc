"""Every example runs as a test: the walkthrough (SQLite, and MariaDB / PostgreSQL via
``--url``), the FastAPI app over HTTP, and the DataJoint interop example."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from conftest import Database
from helpers.asgi import serve

import sa_djblob as djb

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


_EXAMPLE_ENV = ("SA_DJBLOB_URL", "SA_DJBLOB_S3_ENDPOINT", "SA_DJBLOB_APP_URL")


def run_example(script: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={k: v for k, v in os.environ.items() if k not in _EXAMPLE_ENV},
    )
    assert r.returncode == 0, f"{script} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def check_walkthrough(out: Path, stdout: str) -> None:
    for expected in (
        "every fetched blob equals the inserted array, every attachment the inserted file",
        "~external_shared: 8 objects, 8 used, 0 unused",
        "~external_local: 8 objects, 8 used, 0 unused",
        "sweep of 'shared': would remove 2 entries",
        "sweep of 'local': removed 2 entries and 2 payloads",
        "deleted 1 row(s) from extracted",
        "store 'shared': 0 objects left, verify ok: True",
        "store 'local': 0 objects left, verify ok: True",
        "the local store folder holds 0 files",
        "S3: the moto server is stopped",
    ):
        assert expected in stdout, expected
    figure = out / "extracted.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "secret" not in stdout


def test_walkthrough_sqlite(tmp_path: Path) -> None:
    out = tmp_path / "out"
    start = time.monotonic()
    r = run_example("walkthrough.py", "--output", str(out))
    assert time.monotonic() - start < 60
    check_walkthrough(out, r.stdout)
    assert (out / "walkthrough.sqlite").is_file()
    # a second run starts afresh in the same folder
    r = run_example("walkthrough.py", "--output", str(out))
    check_walkthrough(out, r.stdout)


@pytest.mark.backends("mysql", "postgresql")
def test_walkthrough_server(database: Database, tmp_path: Path) -> None:
    out = tmp_path / "out"
    url = database.url.render_as_string(hide_password=False)
    r = run_example("walkthrough.py", "--url", url, "--output", str(out))
    check_walkthrough(out, r.stdout)
    assert not (out / "walkthrough.sqlite").exists()


# -- the FastAPI app ---------------------------------------------------------------


def make_app(tmp_path: Path) -> Any:
    sys.path.insert(0, str(EXAMPLES))
    try:
        import fastapi_app
    finally:
        sys.path.remove(str(EXAMPLES))
    return fastapi_app.create_app(
        url=f"sqlite+aiosqlite:///{tmp_path / 'app.sqlite'}",
        store_folder=tmp_path / "store",
        download_path=tmp_path / "downloads",
    )


def drive(tmp_path: Path, scenario: Callable[[httpx.AsyncClient], Awaitable[None]]) -> None:
    """Run *scenario* against the app over HTTP (ASGI transport), lifespan included."""

    async def main() -> None:
        app = make_app(tmp_path)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
                await scenario(client)

    asyncio.run(main())


def test_fastapi_files(tmp_path: Path) -> None:
    drive(tmp_path, lambda client: _files(client, tmp_path))


async def _files(client: httpx.AsyncClient, tmp_path: Path) -> None:
    body = b"hello\0world\n" * 1000
    r = await client.post("/files", files={"file": ("../../report.txt", body, "text/plain")})
    assert r.status_code == 201, r.text
    doc = r.json()
    assert doc["name"] == "report.txt" and doc["size"] == len(body)
    stored = [
        p
        for p in (tmp_path / "store").rglob("*")
        if p.is_file() and ".sa_djblob-owner" not in p.parts
    ]
    assert [p.name.split(".", 1)[1] for p in stored] == ["report.txt"]
    r = await client.get(f"/files/{doc['id']}")
    assert r.status_code == 200
    assert r.content == body
    assert "report.txt" in r.headers["content-disposition"]
    assert (await client.get("/files/999")).status_code == 404
    # the same contents again: a second row, one stored object
    assert (await client.post("/files", files={"file": ("report.txt", body)})).status_code == 201
    assert (await client.get("/stats")).json() == {"objects": 1, "used": 1, "unused": 0}


def test_fastapi_upload_page_shows_the_upload_and_links_to_it(tmp_path: Path) -> None:
    """A browser's upload (Accept: text/html) gets a page, not raw JSON: the file's name
    (escaped), size and a link to it, with an image shown inline or the start of a text."""
    png = b"\x89PNG\r\n\x1a\n" + os.urandom(2000)
    text = "<script>alert(1)</script> & notes\n" * 3

    async def scenario(client: httpx.AsyncClient) -> None:
        browser = {"accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
        r = await client.post(
            "/files", files={"file": ("a<b>.txt", text.encode())}, headers=browser
        )
        assert r.status_code == 201 and r.headers["content-type"].startswith("text/html")
        page = r.text
        doc_id = int(page.split('id="doc-id">', 1)[1].split("<", 1)[0])
        assert f'<a id="download" href="/files/{doc_id}" download>a&lt;b&gt;.txt</a>' in page
        assert f'data-bytes="{len(text.encode())}"' in page
        assert '<pre id="preview">&lt;script&gt;alert(1)&lt;/script&gt; &amp; notes' in page
        assert "<script>" not in page
        assert (await client.get(f"/files/{doc_id}")).content == text.encode()

        r = await client.post("/files", files={"file": ("photo.png", png)}, headers=browser)
        page = r.text
        doc_id = int(page.split('id="doc-id">', 1)[1].split("<", 1)[0])
        assert f'<img id="preview" src="/files/{doc_id}?inline=1" alt="photo.png">' in page
        r = await client.get(f"/files/{doc_id}?inline=1")
        assert r.content == png and r.headers["content-type"] == "image/png"
        assert r.headers["content-disposition"].startswith("inline")
        assert r.headers["x-content-type-options"] == "nosniff"
        # a text file is never served inline (only raster images are)
        r = await client.get("/files/1?inline=1")
        assert r.headers["content-disposition"].startswith("attachment")

    drive(tmp_path, scenario)


def test_fastapi_arrays(tmp_path: Path) -> None:
    drive(tmp_path, _arrays)


async def _arrays(client: httpx.AsyncClient) -> None:
    arr = np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 3
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    r = await client.post("/arrays", files={"file": ("a.npy", buf.getvalue())})
    assert r.status_code == 201, r.text
    info = r.json()
    assert info["dtype"] == "float32" and info["shape"] == [2, 3, 4]
    r = await client.get(f"/arrays/{info['id']}.npy")
    back = np.load(io.BytesIO(r.content), allow_pickle=False)
    assert back.dtype == arr.dtype and np.array_equal(back, arr)
    got = (await client.get(f"/arrays/{info['id']}")).json()
    assert np.array_equal(np.asarray(got["data"], dtype=got["dtype"]), arr)

    doc = {"data": [[1, 2], [3, 4]], "dtype": "int16"}
    r = await client.post("/arrays", content=json.dumps(doc))
    assert r.status_code == 201, r.text
    got = (await client.get(f"/arrays/{r.json()['id']}")).json()
    assert got["dtype"] == "int16" and got["data"] == [[1, 2], [3, 4]]

    # pickles and non-numeric data are refused
    obj = io.BytesIO()
    np.save(obj, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    r = await client.post("/arrays", files={"file": ("o.npy", obj.getvalue())})
    assert r.status_code == 400
    assert (await client.post("/arrays", content=b'{"data": ["x", "y"]}')).status_code == 400
    assert (await client.post("/arrays", content=b"not json")).status_code == 400
    assert (await client.get("/arrays/999")).status_code == 404
    assert (await client.get("/stats")).json()["objects"] == 2
    assert djb.config["stores"]["files"]["protocol"] == "file"


def test_datajoint_interop_example_sqlite(tmp_path: Path) -> None:
    """The interop example on SQLite, where it creates the DataJoint-style tables itself
    (tests/test_datajoint_interop.py runs it on a schema that DataJoint 0.14 declared)."""
    r = run_example("datajoint_interop.py", "--output", str(tmp_path))
    assert "read back identical" in r.stdout
    assert "session 1/2: notes 'notes-2.txt'" in r.stdout
    assert "~external_local: 2 objects, 0 unused" in r.stdout


class _SlowPuts(djb.MemoryStore):
    """A remote-looking memory store whose writes wait, blocking their thread, until the
    test opens the gate."""

    protocol = "slow-put-memory"  # registers the kind
    gate = threading.Event()
    puts_started = 0

    @property
    def is_remote(self) -> bool:
        return True

    def put(self, path: Any, data: bytes | memoryview) -> None:
        _SlowPuts.puts_started += 1
        if not _SlowPuts.gate.wait(60):
            raise TimeoutError("the test never opened the gate")
        super().put(path, data)


def test_fastapi_slow_upload_does_not_block_other_requests(tmp_path: Path) -> None:
    """While an upload waits in a store's put that does not return, GET /stats answers: the
    app's event loop is not blocked by store I/O. The put returns only after /stats has
    answered, so the order proves it, not a clock."""
    djb.config["stores"] = {"files": {"protocol": "slow-put-memory", "location": str(tmp_path)}}
    body = os.urandom(3 << 20)  # past Starlette's 1 MiB spool: the upload is on disk

    async def scenario(client: httpx.AsyncClient) -> None:
        upload = asyncio.create_task(
            client.post("/files", files={"file": ("big.bin", body)}, timeout=90)
        )
        try:
            while _SlowPuts.puts_started == 0:  # the upload is now in the store's put
                assert not upload.done(), upload.result().text
                await asyncio.sleep(0.01)
            # A blocked loop would never answer while the put waits for the gate.
            r = await asyncio.wait_for(client.get("/stats"), 30)
            assert r.status_code == 200
            assert not upload.done()  # /stats answered while the upload was still running
        finally:
            _SlowPuts.gate.set()
        r = await upload
        assert r.status_code == 201, r.text
        doc = r.json()
        assert doc["size"] == len(body)
        r = await client.get(f"/files/{doc['id']}")
        assert r.status_code == 200 and r.content == body
        assert r.headers["content-length"] == str(len(body))

    _SlowPuts.puts_started = 0
    _SlowPuts.gate.clear()
    try:
        drive(tmp_path, scenario)
    finally:
        _SlowPuts.gate.set()


def test_fastapi_serves_s3_attachments_by_presigned_redirect(
    tmp_path: Path, s3_server: Any, s3_bucket: str
) -> None:
    djb.config["stores"] = {"files": s3_server.store_spec(s3_bucket)}
    body = b"stored in S3\n" * 100

    async def scenario(client: httpx.AsyncClient) -> None:
        r = await client.post("/files", files={"file": ("s3 file.txt", body)})
        assert r.status_code == 201, r.text
        r = await client.get(f"/files/{r.json()['id']}")
        assert r.status_code == 307
        url = r.headers["location"]
        assert url.startswith(s3_server.endpoint_url)
        async with httpx.AsyncClient() as s3:
            got = await s3.get(url)
        assert got.status_code == 200 and got.content == body
        assert "s3 file.txt" in got.headers["content-disposition"]

    drive(tmp_path, scenario)


def test_fastapi_ends_the_download_of_a_corrupt_file_with_an_error_the_client_sees(
    tmp_path: Path,
) -> None:
    """Served by uvicorn over real HTTP: a stored file corrupted in place (same size) is
    never received whole; the response ends short of its Content-Length, which the HTTP
    client reports as an error instead of handing over a complete, corrupt body."""
    pytest.importorskip("uvicorn", reason="uvicorn is not installed (test extra)")

    app = make_app(tmp_path)
    body = os.urandom(3 << 20)
    with serve(app) as base, httpx.Client(base_url=base, timeout=30) as client:
        r = client.post("/files", files={"file": ("scan.bin", body)})
        assert r.status_code == 201, r.text
        url = f"/files/{r.json()['id']}"
        assert client.get(url).content == body
        (stored,) = (
            p for p in (tmp_path / "store").rglob("*.scan.bin") if ".sa_djblob-owner" not in p.parts
        )
        data = bytearray(stored.read_bytes())
        data[len(data) // 2] ^= 0xFF
        stored.write_bytes(bytes(data))
        received = 0
        with (
            pytest.raises(httpx.RemoteProtocolError, match="complete message body"),
            client.stream("GET", url) as response,
        ):
            assert response.headers["content-length"] == str(len(body))
            for chunk in response.iter_bytes():
                received += len(chunk)
        assert received < len(body)
