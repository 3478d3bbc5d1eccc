"""A small FastAPI service that keeps uploads in an sa_djblob store, with ``AsyncSession``.

- ``GET /``: an HTML page with an upload form (it posts to ``POST /files``).
- ``POST /files`` (multipart ``file``): the upload goes into an ``Attach(store="files")``
  column as ``(file.filename, file.file)``, streamed from Starlette's spooled upload to
  the store and hashed on the way (never whole in memory, no temporary copy of our own).
  A browser (``Accept: text/html``) gets a result page that shows the upload (an image,
  or the start of a text file) and links to it; other clients get JSON. ``GET
  /files/{id}`` serves it back under its original name: streamed from the store and
  verified against its hash as it goes (``djb.stored(...).open()``), or, for an S3 store,
  by a redirect to a presigned URL (``.url()``). Nothing is written to ``download_path``.
- ``POST /arrays`` (multipart ``file``: a ``.npy`` file, read with
  ``np.load(allow_pickle=False)``; or a JSON body ``{"data": [[1, 2], [3, 4]], "dtype": "int32"}``):
  the array goes into a ``Blob(store="files")`` column; ``GET /arrays/{id}`` returns it as
  JSON, ``GET /arrays/{id}.npy`` as a ``.npy`` file.
- ``GET /stats``: the externals of the store (objects, used, unused).

The database is ``sqlite+aiosqlite`` in ``examples/output/`` by default (``SA_DJBLOB_APP_URL``
or ``create_app(url=...)`` for another async URL); the ``files`` store is a local folder
unless ``djb.config["stores"]`` already names one. ``djb.install`` is called on the
``AsyncEngine``: the write path runs on the sync connection underneath, inside the
session's transaction.

Importing this module changes nothing; ``create_app()`` builds the app. Run it with
``uvicorn --factory examples.fastapi_app:create_app`` (uvicorn is not a dependency of the
project), or drive it as ``tests/test_examples.py`` does. The event loop is never
blocked by store I/O: under ``AsyncSession`` sa_djblob runs store requests on its
thread pool and awaits them, file copies run in Starlette's thread pool, and the
maintenance queries of ``/stats`` are awaited (``djb.externals(async_engine)``).
"""

import html
import io
import json
import os
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import sqlalchemy as sa
from fastapi import Depends, FastAPI, HTTPException, Request, UploadFile
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile as FormFile

import sa_djblob as djb

HERE = Path(__file__).resolve().parent
STORE = "files"
MAX_UPLOAD = 64 << 20
CHUNK = 1 << 20

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>sa_djblob uploads</title></head>
<body>
<h1>Upload a file</h1>
<form id="upload" action="/files" method="post" enctype="multipart/form-data">
  <input id="file" type="file" name="file" required>
  <button id="send" type="submit">Upload</button>
</form>
</body></html>
"""


RESULT = """<!doctype html>
<html><head><meta charset="utf-8"><title>Uploaded: {name}</title></head>
<body>
<h1>Uploaded</h1>
<p><a id="download" href="/files/{id}" download>{name}</a>
  (<span id="size" data-bytes="{size}">{size} bytes</span>,
  document <span id="doc-id">{id}</span>)</p>
{preview}
<p><a href="/">Upload another file</a></p>
</body></html>
"""

#: images a browser may show inline (no SVG or HTML: they could run scripts on this origin)
IMAGES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif"}
IMAGES[".webp"] = "image/webp"
PREVIEW = 2000


def _preview(doc_id: int, name: str, head: bytes) -> str:
    """How the result page shows an upload: an image, the start of a text, or nothing."""
    if Path(name).suffix.lower() in IMAGES:
        return f'<img id="preview" src="/files/{doc_id}?inline=1" alt="{html.escape(name)}">'
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:  # binary, or a character cut at the end
        text = head[: exc.start].decode("utf-8") if exc.start > len(head) - 4 else ""
    if not text or "\0" in text:
        return ""
    return f'<pre id="preview">{html.escape(text[:PREVIEW])}</pre>'


class Base(DeclarativeBase):
    pass


class Document(Base):
    __tablename__ = "document"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(255))
    size: Mapped[int]
    file: Mapped[Path] = mapped_column(djb.Attach(store=STORE))  # attach@files


class ArrayRow(Base):
    __tablename__ = "array"

    id: Mapped[int] = mapped_column(primary_key=True)
    dtype: Mapped[str] = mapped_column(sa.String(32))
    shape: Mapped[str] = mapped_column(sa.String(255))
    data: Mapped[Any] = mapped_column(djb.Blob(store=STORE))  # blob@files


def _safe_name(filename: str | None) -> str:
    name = Path((filename or "").replace("\\", "/")).name
    if not name or name in (".", "..") or len(name) > 255:
        raise HTTPException(400, "the upload needs a file name")
    return name


def _parse_array(payload: bytes, filename: str | None) -> np.ndarray:
    """A numeric array from ``.npy`` bytes (no pickles) or a JSON document."""
    if (filename or "").endswith(".npy") or payload[:6] == b"\x93NUMPY":
        try:
            arr = np.load(io.BytesIO(payload), allow_pickle=False)
        except ValueError as exc:
            raise HTTPException(400, f"not a .npy array without objects: {exc}") from None
    else:
        try:
            doc = json.loads(payload)
        except ValueError:
            raise HTTPException(400, "send a .npy file or JSON {'data': [...]}") from None
        data = doc.get("data") if isinstance(doc, dict) else doc
        dtype = doc.get("dtype") if isinstance(doc, dict) else None
        try:
            arr = np.asarray(data, dtype=dtype)
        except (TypeError, ValueError) as exc:
            raise HTTPException(400, f"not a rectangular numeric array: {exc}") from None
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biufc":
        raise HTTPException(400, "only numeric and boolean arrays are accepted")
    return arr


def create_app(
    url: str | None = None,
    store_folder: str | os.PathLike[str] | None = None,
    download_path: str | os.PathLike[str] | None = None,
) -> FastAPI:
    """The app, on the async database *url*, with the ``files`` store in *store_folder*."""
    out = HERE / "output"
    url = url or os.environ.get("SA_DJBLOB_APP_URL") or f"sqlite+aiosqlite:///{out / 'app.sqlite'}"
    if STORE not in djb.config["stores"]:
        folder = Path(store_folder) if store_folder else out / "app-store"
        djb.config["stores"] = {
            **djb.config["stores"],
            STORE: {"protocol": "file", "location": str(folder)},
        }
    if download_path is not None:
        djb.config["download_path"] = str(download_path)
    engine = create_async_engine(url)
    djb.install(engine)
    sessions = async_sessionmaker(engine, expire_on_commit=False)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if url.startswith("sqlite"):
            Path(make_path(url)).parent.mkdir(parents=True, exist_ok=True)
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        try:
            yield
        finally:
            djb.uninstall(engine)
            await engine.dispose()

    app = FastAPI(title="sa_djblob uploads", lifespan=lifespan)
    app.state.engine = engine

    async def session() -> AsyncIterator[AsyncSession]:
        async with sessions() as s:
            yield s

    # (no "from __future__ import annotations" here: FastAPI reads these at definition time)
    DB = Annotated[AsyncSession, Depends(session)]

    async def read_upload(upload: UploadFile) -> bytes:
        data = await upload.read(MAX_UPLOAD + 1)
        if len(data) > MAX_UPLOAD:
            raise HTTPException(413, f"uploads are limited to {MAX_UPLOAD} bytes")
        return data

    def upload_size(src: Any) -> int:
        """The size of a spooled upload (its end), leaving it at its start."""
        size = int(src.seek(0, os.SEEK_END))
        src.seek(0)
        return size

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return PAGE

    @app.post("/files", status_code=201)
    async def upload_file(file: UploadFile, db: DB, request: Request) -> Response:
        name = _safe_name(file.filename)
        size = await run_in_threadpool(upload_size, file.file)
        if size > MAX_UPLOAD:
            raise HTTPException(413, f"uploads are limited to {MAX_UPLOAD} bytes")
        head = await file.read(PREVIEW)
        await file.seek(0)
        # the attachment is the upload itself: (name, binary file object)
        doc = Document(name=name, size=size, file=(name, file.file))
        db.add(doc)
        await db.commit()  # streams the upload into the store, then commits the row
        if "text/html" in request.headers.get("accept", ""):
            page = RESULT.format(
                id=doc.id, name=html.escape(name), size=size, preview=_preview(doc.id, name, head)
            )
            return HTMLResponse(page, status_code=201)
        return JSONResponse({"id": doc.id, "name": name, "size": size}, status_code=201)

    def stream(src: Any) -> Any:
        """The chunks of an open StoredObject stream (verified as they are read), closed
        at the end; Starlette iterates it in its thread pool.

        A stored file that does not match its hash raises ``djb.IntegrityError`` before
        its last byte is read: the server then drops the connection short of the
        ``Content-Length`` sent below, and the client reports an incomplete response
        instead of keeping a complete, corrupt file. (Keep the ``Content-Length``: it
        is how a client tells a cut response from a whole one.)"""
        with src:
            while chunk := src.read(CHUNK):
                yield chunk

    @app.get("/files/{doc_id}")
    async def get_file(doc_id: int, db: DB, inline: bool = False) -> Response:
        q = sa.select(djb.stored(Document.file), Document.name).where(Document.id == doc_id)
        row = (await db.execute(q)).one_or_none()
        if row is None:
            raise HTTPException(404, f"no file {doc_id}")
        obj, name = row
        image = IMAGES.get(Path(name).suffix.lower()) if inline else None
        if isinstance(djb.get_store(obj.store), djb.S3Store) and image is None:
            return RedirectResponse(obj.url(expires_in=300), status_code=307)
        src = await run_in_threadpool(obj.open)
        quoted = urllib.parse.quote(name)
        disposition = "inline" if image else "attachment"
        return StreamingResponse(
            stream(src),
            media_type=image or "application/octet-stream",
            headers={
                "Content-Disposition": f"{disposition}; filename*=UTF-8''{quoted}",
                "Content-Length": str(obj.size),
                "X-Content-Type-Options": "nosniff",
            },
        )

    @app.post("/arrays", status_code=201)
    async def upload_array(request: Request, db: DB) -> dict[str, Any]:
        if request.headers.get("content-type", "").startswith("multipart/"):
            async with request.form() as form:  # closes the spooled upload files
                upload = form.get("file")
                if not isinstance(upload, FormFile):
                    raise HTTPException(400, "send the array as the multipart field 'file'")
                payload, filename = await read_upload(upload), upload.filename
        else:
            payload, filename = await request.body(), None
        arr = _parse_array(payload, filename)
        row = ArrayRow(dtype=str(arr.dtype), shape=json.dumps(list(arr.shape)), data=arr)
        db.add(row)
        await db.commit()
        return {"id": row.id, "dtype": row.dtype, "shape": list(arr.shape)}

    async def load_array(db: AsyncSession, array_id: int) -> np.ndarray:
        row = await db.get(ArrayRow, array_id)
        if row is None:
            raise HTTPException(404, f"no array {array_id}")
        return np.asarray(row.data)

    @app.get("/arrays/{array_id}.npy")
    async def get_array_npy(array_id: int, db: DB) -> Response:
        buf = io.BytesIO()
        np.save(buf, await load_array(db, array_id), allow_pickle=False)
        return Response(buf.getvalue(), media_type="application/octet-stream")

    @app.get("/arrays/{array_id}")
    async def get_array(array_id: int, db: DB) -> dict[str, Any]:
        arr = await load_array(db, array_id)
        data = arr.tolist() if arr.dtype.kind != "c" else [str(x) for x in arr.ravel()]
        return {"id": array_id, "dtype": str(arr.dtype), "shape": list(arr.shape), "data": data}

    @app.get("/stats")
    async def stats() -> dict[str, Any]:
        ext = djb.externals(engine)[STORE]  # awaitable methods on an AsyncEngine
        return {
            "objects": len(await ext.paths()),
            "used": len(await ext.used()),
            "unused": len(await ext.unused()),
        }

    return app


def make_path(url: str) -> str:
    return sa.engine.make_url(url).database or ""
