"""``djb.stored(column).open()``: a stream of the payload that never hands out the last
byte of an object that does not verify against its hash."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from helpers.common import make_table

import sa_djblob as djb

SIZE = 300_000


@pytest.fixture
def stored_objects(
    engine: sa.Engine, shared_store: dict[str, Any], tmp_path: Path
) -> tuple[djb.StoredObject, djb.StoredObject, bytes]:
    """A stored attachment and a stored blob; the attachment's contents."""
    djb.install(engine)
    table = make_table(engine)
    contents = os.urandom(SIZE)
    att = tmp_path / "movie.bin"
    att.write_bytes(contents)
    with engine.begin() as conn:
        conn.execute(sa.insert(table), [{"id": 1, "a": str(att), "b": list(range(50_000))}])
        row = conn.execute(sa.select(djb.stored(table.c.a), djb.stored(table.c.b))).one()
    return row[0], row[1], contents


def _corrupt_in_place(obj: djb.StoredObject, at: int) -> None:
    """Flip one byte of the stored object: same size, other contents."""
    store = djb.get_store(obj.store)
    data = bytearray(store.get(obj.path))
    data[at] ^= 0xFF
    store.put(obj.path, bytes(data))


def test_open_reads_an_intact_payload_whole(stored_objects: Any) -> None:
    att, blob, contents = stored_objects
    with att.open() as f:
        assert f.read(att.size) == contents  # every byte without reading to EOF first
        assert f.read() == b""
    with blob.open() as f:
        chunks = []
        while chunk := f.read(4096):
            chunks.append(chunk)
    assert len(b"".join(chunks)) == blob.size


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_read_of_size_never_returns_a_corrupt_payload(stored_objects: Any, where: str) -> None:
    """``f.read(size)`` raises instead of returning the bytes of a payload corrupted in
    place, without the stream being closed or read to EOF."""
    att, _, _ = stored_objects
    _corrupt_in_place(att, {"first": 0, "middle": SIZE // 2, "last": SIZE - 1}[where])
    f = att.open()
    try:
        with pytest.raises(djb.IntegrityError, match="does not match its hash"):
            f.read(att.size)
    finally:
        f.close()


@pytest.mark.parametrize("chunk", [1, 1000, 4096])
def test_a_reader_never_receives_the_last_byte_of_a_corrupt_payload(
    stored_objects: Any, chunk: int
) -> None:
    """Read in chunks (1000 divides the size: the reader asks for exactly the last
    bytes), the stream raises before the reader has all ``size`` bytes."""
    att, blob, _ = stored_objects
    for obj in (att, blob):
        _corrupt_in_place(obj, obj.size // 3)
        received = 0
        with obj.open() as f, pytest.raises(djb.IntegrityError):
            while data := f.read(chunk):
                received += len(data)
        assert received < obj.size


def test_download_of_a_corrupt_payload_leaves_no_file(stored_objects: Any, tmp_path: Path) -> None:
    att, _, _ = stored_objects
    _corrupt_in_place(att, 7)
    folder = tmp_path / "served"
    with pytest.raises(djb.IntegrityError):
        att.download(folder)
    assert [p for p in folder.iterdir()] == []
