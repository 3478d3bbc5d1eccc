"""Attachments from memory and from file objects: ``(name, bytes)`` and ``(name, binary
file object)`` besides paths, in the row and in every store kind: exactly the bytes given,
stored under the name given (checked as a path's name is), read once while hashing."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import sa_djblob as djb
from sa_djblob._layout import attachment_prefix, content_hash


def _table(engine: sa.Engine) -> sa.Table:
    meta = sa.MetaData()
    t = sa.Table(
        "doc",
        meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("ext", djb.Attach(store="shared"), nullable=True),
        sa.Column("inrow", djb.Attach(), nullable=True),
    )
    meta.create_all(engine)
    djb.install(engine)
    return t


def _spooled(data: bytes) -> Any:
    """What FastAPI's UploadFile.file is: a SpooledTemporaryFile (on disk past 1 MiB)."""
    f = tempfile.SpooledTemporaryFile(max_size=1 << 20)  # noqa: SIM115 - closed by the test
    f.write(data)
    f.seek(0)
    return f


@pytest.mark.usefixtures("shared_store")
def test_attachment_from_bytes_or_file_object_stores_exactly_those_bytes_under_its_name(
    engine: sa.Engine, tmp_path: Path
) -> None:
    t = _table(engine)
    big = os.urandom(3 << 20)  # above the in-memory limit: streamed through a snapshot
    files = contextlib.ExitStack()  # the spooled uploads, closed at the end as FastAPI does
    given = {  # name, and contents made afresh for each column (a file object is read once)
        1: ("notes.txt", lambda: b"hello\x00world"),
        2: ("empty.bin", lambda: b""),
        3: ("view.bin", lambda: memoryview(b"from a memoryview")),
        4: ("stream.csv", lambda: io.BytesIO(b"a,b\n1,2\n")),
        5: ("upload.bin", lambda: files.enter_context(_spooled(big))),
        6: ("données é.txt", lambda: bytearray(b"unicode name")),
    }
    expected = {
        1: b"hello\x00world",
        2: b"",
        3: b"from a memoryview",
        4: b"a,b\n1,2\n",
        5: big,
        6: b"unicode name",
    }
    with files, engine.begin() as conn:
        for i, (name, contents) in given.items():
            ext = (name, contents())
            inrow = (name, contents()) if i != 5 else None
            conn.execute(t.insert().values(id=i, ext=ext, inrow=inrow))
        conn.execute(
            t.insert().values(id=7, ext=("upload.bin", big), inrow=("upload.bin", big[:1000]))
        )
    with engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(sa.select(t))}
        raw = sa.select(t.c.id, sa.type_coerce(t.c.ext, sa.LargeBinary))
        keys = {i: key for i, key in conn.execute(raw)}
    for i, data in expected.items():
        name = given[i][0]
        assert rows[i].ext.name == name and rows[i].ext.read_bytes() == data, i
        # the key is that of a file of this name and contents (a path bound the same)
        assert bytes(keys[i]) == content_hash(attachment_prefix(name), data).bytes
        if i != 5:
            assert rows[i].inrow.name == name and rows[i].inrow.read_bytes() == data
    assert rows[7].ext.read_bytes() == big and bytes(keys[7]) == bytes(keys[5])
    assert rows[7].inrow.read_bytes() == big[:1000]


@pytest.mark.parametrize(
    "name",
    ["", ".", "..", "sub/dir.txt", "back\\slash.txt", "line\nbreak.txt", "nul\0.txt"],
)
@pytest.mark.parametrize("column", ["ext", "inrow"])
@pytest.mark.usefixtures("shared_store")
@pytest.mark.parametrize("store_kind", ["file"], indirect=True)
def test_attachment_contents_need_a_plain_file_name_as_paths_do(
    engine: sa.Engine, name: str, column: str
) -> None:
    t = _table(engine)
    refused = pytest.raises(djb.UnsupportedTypeError, match="attachment name")
    with refused, engine.begin() as conn:
        conn.execute(t.insert().values(id=1, **{column: (name, b"data")}))
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(t)).scalar() == 0


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (("a.txt", io.StringIO("text")), "open the file in binary mode"),
        (("a.txt", "text"), "must be bytes or a binary file object"),
        (("a.txt", b"x", "extra"), r"is \(name, contents\)"),
        ((b"a.txt", b"x"), "whose name is a bytes"),
        (12, "or \\(name, contents\\) pairs"),
    ],
)
@pytest.mark.parametrize("column", ["ext", "inrow"])
@pytest.mark.usefixtures("shared_store")
@pytest.mark.parametrize("store_kind", ["file"], indirect=True)
def test_attachment_values_that_are_not_a_path_or_name_and_contents_are_refused(
    engine: sa.Engine, value: Any, message: str, column: str
) -> None:
    t = _table(engine)
    with pytest.raises(djb.UnsupportedTypeError, match=message), engine.begin() as conn:
        conn.execute(t.insert().values(id=1, **{column: value}))


@pytest.mark.usefixtures("shared_store")
@pytest.mark.parametrize("store_kind", ["file", "s3"], indirect=True)
def test_large_file_object_is_streamed_not_read_into_memory(
    engine: sa.Engine, tmp_path: Path
) -> None:
    t = _table(engine)
    src = tmp_path / "big.bin"
    chunk = os.urandom(1 << 20)
    with src.open("wb") as f:
        for _ in range(40):
            f.write(chunk)
    tracemalloc.start()
    try:
        with src.open("rb") as f, engine.begin() as conn:
            conn.execute(t.insert().values(id=1, ext=("big.bin", f)))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 24 << 20, peak  # (S3: a few multipart parts in flight)
    with engine.connect() as conn:
        got = conn.execute(sa.select(t.c.ext)).scalar_one()
    assert got.stat().st_size == 40 << 20 and got.read_bytes()[: 1 << 20] == chunk
