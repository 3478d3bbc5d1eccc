"""Stores of external payloads (file, S3, fsspec, memory), the local cache, and their registry.

``get_store(name)`` builds a store from ``djb.config["stores"][name]`` and keeps it
while those settings stay the same; ``get_cache()`` does the same for the cache.

A store kind is one module defining a ``Store`` subclass with its ``protocol`` and
``settings``: defining the class registers it. The kinds of this package are imported
below (one line per kind); other distributions use the entry-point group
``sa_djblob.stores``.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from .._config import config, use_store_rules
from .base import (
    ObjectInfo,
    Setting,
    Store,
    redact_store_spec,
    registered_protocols,
    store_class,
    validate_store_spec,
)
from .cache import Cache

# the store kinds of this package: importing a module registers its class
from .file import FileStore
from .fsspec import FsspecStore
from .memory import MemoryStore
from .s3 import S3Store

__all__ = [
    "Cache",
    "FileStore",
    "FsspecStore",
    "MemoryStore",
    "ObjectInfo",
    "S3Store",
    "Setting",
    "Store",
    "build_store",
    "get_cache",
    "get_store",
    "registered_protocols",
    "store_class",
    "validate_store_spec",
]


class _Rules:
    """How ``djb.config`` validates and masks store settings: by asking the store kinds."""

    validate = staticmethod(validate_store_spec)
    redact = staticmethod(redact_store_spec)
    protocols = staticmethod(registered_protocols)


use_store_rules(_Rules())

_lock = threading.Lock()
_stores: dict[str, tuple[dict[str, Any], Store]] = {}
_cache: tuple[tuple[str, int | None], Cache] | None = None


def build_store(name: str, spec: Mapping[str, Any]) -> Store:
    """A new store named *name* from its settings (validated first)."""
    settings = validate_store_spec(name, spec)
    cls = store_class(settings.pop("protocol"))
    return cls(name, **settings)


def get_store(name: str) -> Store:
    """The store *name* of ``djb.config["stores"]``, reused while its settings are unchanged.

    Raises ``StoreNotConfiguredError`` if there is no such store.
    """
    spec = config.store_spec(name)
    with _lock:
        cached = _stores.get(name)
        if cached is not None and cached[0] == spec:
            return cached[1]
        store = build_store(name, spec)
        _stores[name] = (spec, store)
        # the replaced store is not closed: another thread may still be using it
        return store


def get_cache() -> Cache | None:
    """The cache of ``djb.config["cache"]`` (bounded by ``["cache_limit"]``), or None."""
    global _cache
    root = config["cache"]
    if root is None:
        return None
    ident = (str(root), config["cache_limit"])
    with _lock:
        if _cache is None or _cache[0] != ident:
            _cache = (ident, Cache(ident[0], ident[1]))
        return _cache[1]
