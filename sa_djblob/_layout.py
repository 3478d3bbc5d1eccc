"""DataJoint 0.14's storage layout: content hashes and object paths. Pure functions."""

from __future__ import annotations

import functools
import hashlib
import re
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

__all__ = [
    "is_store_name",
    "HASH_CHUNK",
    "OWNER_FOLDER",
    "PAYLOAD_NAME",
    "attachment_prefix",
    "cache_path",
    "content_hash",
    "copy_hashed",
    "file_matches",
    "hash_stream",
    "new_hasher",
    "object_name",
    "object_path",
    "parse_payload_name",
    "reserved_path",
    "store_root",
    "subfold",
]

# DataJoint 0.14 declares `blob@<store>` with `[a-z][-\w]*` (its own tests use `repo-s3`);
# sa_djblob also keeps accepting any Python identifier, as 0.1 did.
_STORE_NAME = re.compile(r"[^\W\d][-\w]*")


def is_store_name(name: object) -> bool:
    """Whether *name* can name a store: a letter or ``_``, then letters, digits, ``_``, ``-``."""
    return isinstance(name, str) and _STORE_NAME.fullmatch(name) is not None


HASH_CHUNK = 1 << 20
#: the first read of a stream that is hashed (most payloads are smaller)
FIRST_CHUNK = 64 << 10

OWNER_FOLDER = ".sa_djblob-owner"
"""The folder beside the areas of a store root that holds their owner markers."""

#: a content-addressed payload's file name, ``<32 hex>[.<attachment name>]``: group 1 is the
#: key's hex digits, group 2 the attachment name (the one definition of this grammar)
PAYLOAD_NAME = re.compile(r"([0-9a-f]{32})(?:\.(.*))?", re.S)


def parse_payload_name(name: str) -> tuple[uuid.UUID, str | None] | None:
    """The key and attachment name of a payload file named *name*, or None if sa_djblob
    never gives a payload that name (upper-case digits, an empty attachment name)."""
    m = PAYLOAD_NAME.fullmatch(name)
    if m is None or m.group(2) == "":
        return None
    return uuid.UUID(hex=m.group(1)), m.group(2)


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
    stream: BinaryIO,
    *,
    prefix: bytes = b"",
    algorithm: str = "md5",
    each_chunk: Callable[[], None] | None = None,
) -> tuple[uuid.UUID, int]:
    """Hash ``prefix`` + everything read from *stream* in chunks; return (key, size).
    *each_chunk* is called before each read (it may raise to give up)."""
    h = new_hasher(algorithm)
    h.update(prefix)
    size = len(prefix)
    n = min(FIRST_CHUNK, HASH_CHUNK)  # most payloads are small: no 1 MiB buffer for them
    while True:
        if each_chunk is not None:
            each_chunk()
        chunk = stream.read(n)
        if not chunk:
            break
        h.update(chunk)
        size += len(chunk)
        n = HASH_CHUNK
    return _to_uuid(h.digest()), size


def copy_hashed(
    src: BinaryIO, out: BinaryIO, *, prefix: bytes = b"", algorithm: str = "md5"
) -> uuid.UUID:
    """Copy *src* to *out* in chunks, hashing ``prefix`` + what passes; return the key."""
    h = new_hasher(algorithm)
    h.update(prefix)
    while chunk := src.read(HASH_CHUNK):
        h.update(chunk)
        out.write(chunk)
    return _to_uuid(h.digest())


def file_matches(
    path: Path, key: uuid.UUID, *, prefix: bytes = b"", algorithm: str = "md5"
) -> bool:
    """Whether the local file *path* hashes (after *prefix*) to *key*; False if unreadable."""
    try:
        with path.open("rb") as f:
            return hash_stream(f, prefix=prefix, algorithm=algorithm)[0] == key
    except OSError:
        return False


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


_root_rules: dict[str, Callable[[str], PurePosixPath]] = {}


def register_root_rule(protocol: str, rule: Callable[[str], PurePosixPath]) -> None:
    """Called by each store class as it registers: its ``root_of``."""
    _root_rules[protocol] = rule


def store_root(location: str, protocol: str = "file") -> PurePosixPath:
    """The folder (file) or key prefix (S3) that a store's ``location`` stands for: the
    ``root_of`` rule of the store class registered for *protocol* (a POSIX path, kept as
    is, for an unknown one). See ``Store.root_of`` and ``S3Store.root_of``."""
    return _root_rules.get(protocol, PurePosixPath)(location)


def object_path(
    location: str,
    schema: str,
    key: uuid.UUID,
    attachment_name: str | None = None,
    subfolding: Sequence[int] = (2, 2),
    *,
    protocol: str = "file",
) -> PurePosixPath:
    """``<root>/<schema>/<h0h1>/<h2h3>/<hex>[.<attachment_name>]``, ``<root>`` being
    :func:`store_root` of *location* for *protocol*.

    This is the single source of truth for where a payload lives. It equals the path
    DataJoint 0.14's ``fetch_external_paths()`` reports for the same row, and it is the
    object itself: for ``file`` a file system path, for ``s3`` the object key DataJoint
    reads and writes (no leading ``/``, so it is also ``S3Store.key`` of itself).
    """
    return PurePosixPath(
        object_name(location, schema, key, attachment_name, subfolding, protocol=protocol)
    )


def object_name(
    location: str,
    schema: str,
    key: uuid.UUID,
    attachment_name: str | None = None,
    subfolding: Sequence[int] = (2, 2),
    *,
    protocol: str = "file",
) -> str:
    """:func:`object_path` as a string, joined without parsing: the read path of a local
    store opens one per row, and building the path object cost as much as a small read."""
    h = key.hex
    name = h if attachment_name is None else f"{h}.{attachment_name}"
    return _area_prefix(location, schema, protocol) + "/".join((*subfold(h, subfolding), name))


@functools.lru_cache(maxsize=1024)
def _area_prefix(location: str, schema: str, protocol: str) -> str:
    """``<root>/<schema>/`` as :func:`object_path` prints it: ``""`` for ``.``, and no
    second ``/`` after the file system root."""
    root = str(_area_root(location, schema, protocol))
    return "" if root == "." else root if root.endswith("/") else root + "/"


@functools.lru_cache(maxsize=1024)
def _area_root(location: str, schema: str, protocol: str) -> PurePosixPath:
    """``<root>/<schema>``, parsed once: object paths are built for every row."""
    return PurePosixPath(store_root(location, protocol), schema)


def reserved_path(rel: str) -> str | None:
    """What of sa_djblob's own the object ``<root>/<rel>`` could be, or None.

    Owner markers live in ``<root>/.sa_djblob-owner/``; payloads at
    ``<root>/<schema>/<folds>/<32 hex>[.<attachment name>]``, where the schema, the store's
    subfolding (``()`` too) and even the root (a store whose location lies inside another
    one's) are not known here. So every file named ``<32 hex digits>[.<anything>]`` and every
    path through a folder named ``.sa_djblob-owner`` is reserved, whoever owns it.
    """
    parts = rel.split("/")
    if any(p.lower() == OWNER_FOLDER for p in parts):
        return "the owner markers of its areas"
    # any case (a file system may not tell ``AB`` from ``ab``), any name after the dot
    if PAYLOAD_NAME.fullmatch(parts[-1].lower()):
        return "hashed payloads (<schema>/ab/cd/<32 hex digits>[.<name>])"
    return None


def cache_path(key: uuid.UUID, subfolding: Sequence[int] = (2, 2)) -> PurePosixPath:
    """The cache-relative path of a payload: ``<h0h1>/<h2h3>/<hex>``."""
    return PurePosixPath(*subfold(key.hex, subfolding), key.hex)
