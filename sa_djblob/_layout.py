"""DataJoint 0.14's storage layout: content hashes and object paths. Pure functions."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import Any, BinaryIO

__all__ = [
    "HASH_CHUNK",
    "attachment_prefix",
    "cache_path",
    "content_hash",
    "hash_stream",
    "new_hasher",
    "object_path",
    "subfold",
]

HASH_CHUNK = 1 << 20


def new_hasher(algorithm: str = "md5") -> Any:
    """A hashlib object for a store's ``hash`` setting (``md5`` or ``sha256``)."""
    if algorithm == "md5":
        return hashlib.md5(usedforsecurity=False)
    if algorithm == "sha256":
        return hashlib.sha256()
    raise ValueError(f"unknown hash algorithm {algorithm!r}")


def _to_uuid(digest: bytes) -> uuid.UUID:
    return uuid.UUID(bytes=digest[:16])


def content_hash(*parts: bytes | memoryview, algorithm: str = "md5") -> uuid.UUID:
    """The 16-byte key of the concatenation of *parts*, as a UUID."""
    h = new_hasher(algorithm)
    for part in parts:
        h.update(part)
    return _to_uuid(h.digest())


def hash_stream(
    stream: BinaryIO, *, prefix: bytes = b"", algorithm: str = "md5"
) -> tuple[uuid.UUID, int]:
    """Hash ``prefix`` + everything read from *stream* in chunks; return (key, size)."""
    h = new_hasher(algorithm)
    h.update(prefix)
    size = len(prefix)
    while chunk := stream.read(HASH_CHUNK):
        h.update(chunk)
        size += len(chunk)
    return _to_uuid(h.digest()), size


def attachment_prefix(name: str) -> bytes:
    """What an attachment's key hashes before its contents: ``name + "\\0"``."""
    return name.encode("utf-8") + b"\0"


def subfold(name: str, folds: Sequence[int]) -> tuple[str, ...]:
    """DataJoint's subfolding: ``subfold('abcdef', (2, 2)) == ('ab', 'cd')``."""
    out, start = [], 0
    for n in folds:
        out.append(name[start : start + n])
        start += n
    return tuple(out)


def object_path(
    location: str,
    schema: str,
    key: uuid.UUID,
    attachment_name: str | None = None,
    subfolding: Sequence[int] = (2, 2),
    protocol: str = "file",
) -> PurePosixPath:
    """``<location>/<schema>/<h0h1>/<h2h3>/<hex>[.<attachment_name>]``."""
    name = key.hex
    if attachment_name is not None:
        name = f"{name}.{attachment_name}"
    return PurePosixPath(location, schema, *subfold(key.hex, subfolding), name)


def cache_path(key: uuid.UUID, subfolding: Sequence[int] = (2, 2)) -> PurePosixPath:
    """The cache-relative path of a payload: ``<h0h1>/<h2h3>/<hex>``."""
    return PurePosixPath(*subfold(key.hex, subfolding), key.hex)
