"""Where DataJoint 2.x keeps a value and how it names it: pure, no I/O.

* hash: ``base32(md5(stored bytes))``, lower case, without padding: 26 characters;
* hash-addressed objects (``<blob@s>``, ``<attach@s>``, ``<hash@s>``):
  ``_hash/<schema>/<hash>`` below the store's root (DataJoint's default: no subfolding);
* schema-addressed objects (``<npy@s>``, ``<object@s>``):
  ``_schema/<schema>/<table>/<primary key>/<attribute>_<token>[.ext]``;
* the column holds a JSON pointer; readers follow its ``path`` (never rebuilt from the
  hash) and check the hash.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any

from .._exceptions import SaDjblobError
from ..stores import Store

__all__ = [
    "HASH_NAME",
    "HASH_PREFIX",
    "SCHEMA_PREFIX",
    "Pointer",
    "dj2_hash",
    "hash_path",
    "object_key",
    "pointer",
]

HASH_PREFIX = "_hash"
SCHEMA_PREFIX = "_schema"
#: the name of a hash-addressed object: what DataJoint's garbage collector lists
HASH_NAME = re.compile(r"[a-z2-7]{26}")

Pointer = dict[str, Any]


def dj2_hash(data: bytes | memoryview) -> str:
    """DataJoint 2.x's content hash of *data*."""
    digest = hashlib.md5(data, usedforsecurity=False).digest()
    return base64.b32encode(digest).decode("ascii").rstrip("=").lower()


def hash_path(schema: str, content_hash: str) -> str:
    """The store-relative path of a hash-addressed object of *schema*."""
    if not HASH_NAME.fullmatch(content_hash):
        raise SaDjblobError(f"{content_hash!r} is not a DataJoint 2.x content hash")
    return f"{HASH_PREFIX}/{schema}/{content_hash}"


def hash_area(schema: str) -> str:
    """The folder of *schema*'s hash-addressed objects (what its sweep may touch)."""
    return f"{HASH_PREFIX}/{schema}"


def object_key(store: Store, path: str) -> PurePosixPath:
    """The object of a store-relative *path*: ``<store root>/<path>``. A path that could
    leave the root (absolute, or with ``..`` or ``.`` parts) is refused: it comes from a
    row, and rows can be written by anyone."""
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise SaDjblobError(
            f"the path {path!r} of a DataJoint 2.x pointer is not a plain relative path"
            f" inside store {store.name!r}: the row was changed by hand; fix or delete it"
        )
    return store.root.joinpath(*parts)


def pointer(value: Any, what: str) -> Mapping[str, Any]:
    """The pointer of a selected JSON value (a dict, or its text where a driver gives
    text), checked for the keys every pointer has."""
    if isinstance(value, str | bytes | bytearray):
        import json

        try:
            value = json.loads(value)
        except ValueError:
            raise SaDjblobError(f"a {what} value is not JSON: {str(value)[:60]!r}") from None
    if not isinstance(value, Mapping) or not isinstance(value.get("path"), str):
        raise SaDjblobError(
            f"a {what} value is not a DataJoint 2.x pointer (a JSON object with a 'path'):"
            f" {str(value)[:80]!r}"
        )
    return value
