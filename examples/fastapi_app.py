"""A small FastAPI service that keeps uploads in an sa_djblob store, with ``AsyncSession``.

- ``POST /files`` (multipart ``file``): the file goes into an ``Attach(store="files")``
  column; ``GET /files/{id}`` serves it back under its original name.
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
project), or drive it in-process as ``tests/test_examples.py`` does. Store reads and
writes are blocking calls made inside the request (simple, and fine for small files).
"""

import io
import json
import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import sqlalchemy as sa
from fastapi import Depends, FastAPI, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from starlette.datastructures import UploadFile as FormFile

import sa_djblob as djb

HERE = Path(__file__).resolve().parent
STORE = "files"
MAX_UPLOAD = 64 << 20


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

    @app.post("/files", status_code=201)
    async def upload_file(file: UploadFile, db: DB) -> dict[str, Any]:
        name = _safe_name(file.filename)
        data = await read_upload(file)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name  # the attachment keeps this name
            path.write_bytes(data)
            doc = Document(name=name, size=len(data), file=path)
            db.add(doc)
            await db.commit()  # uploads the file into the store, then commits the row
        return {"id": doc.id, "name": name, "size": len(data)}

    @app.get("/files/{doc_id}")
    async def get_file(doc_id: int, db: DB) -> FileResponse:
        doc = await db.get(Document, doc_id)
        if doc is None:
            raise HTTPException(404, f"no file {doc_id}")
        return FileResponse(doc.file, filename=doc.name, media_type="application/octet-stream")

    @app.post("/arrays", status_code=201)
    async def upload_array(request: Request, db: DB) -> dict[str, Any]:
        if request.headers.get("content-type", "").startswith("multipart/"):
            form = await request.form()
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
        def count(_: Any) -> dict[str, int]:
            ext = djb.externals(engine)[STORE]
            return {
                "objects": len(ext.paths()),
                "used": len(ext.used()),
                "unused": len(ext.unused()),
            }

        async with engine.connect() as conn:  # run the sync maintenance API off the loop's way
            return await conn.run_sync(count)

    return app


def make_path(url: str) -> str:
    return sa.engine.make_url(url).database or ""
