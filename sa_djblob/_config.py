"""``djb.config``: a validated, dict-like settings object.

Keys (all optional):

``stores``
    ``{name: {protocol, location, ...}}`` with DataJoint 0.14's store keys.
``cache``
    folder of the local cache of remote payloads, or ``None``.
``cache_limit``
    the cache's size bound in bytes (least recently used entries go first), or ``None``.
``download_path``
    folder where fetched attachments are written (default ``"."``).
``max_blob_size``
    the largest decompressed blob the reader accepts, in bytes.
``max_depth``
    the deepest nesting the blob reader accepts.
``max_expansion``
    how many times its stored size a blob may grow to when read (decompressed bytes and
    the objects built from them); default 1100, above zlib's own limit of ~1032:1.
``legacy_u32``
    read blobs as written by old 32-bit mym builds (u32 lengths and dimensions) when
    ``unpack`` is not told otherwise; default ``False``.
``threads``
    how many store requests run at once in the write and read paths.
``compression``
    ``"fast"`` (default: zlib level 2, incompressible data stored as is) or
    ``"datajoint"`` (zlib's default level, as DataJoint does: the same bytes and keys).

The environment variable ``SA_DJBLOB_CONFIG`` may name a JSON or TOML file whose
top-level keys are these; it is read on first access.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import json
import os
import threading
from collections.abc import Iterator, Mapping, MutableMapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol

from ._exceptions import ConfigError, StoreNotConfiguredError

__all__ = ["CONFIG_ENV", "Config", "StoreRules", "config", "use_store_rules"]

CONFIG_ENV = "SA_DJBLOB_CONFIG"

_DEFAULTS: dict[str, Any] = {
    "stores": {},
    "cache": None,
    "cache_limit": None,
    "download_path": ".",
    "max_blob_size": 8 << 30,
    "max_depth": 256,
    "max_expansion": 1100,
    "legacy_u32": False,
    "threads": 16,
    "compression": "fast",
}


class StoreRules(Protocol):
    """What the configuration needs to know about store kinds; :mod:`sa_djblob.stores`
    registers it (:func:`use_store_rules`), so this module imports nothing of the stores."""

    def validate(self, name: str, spec: Any) -> dict[str, Any]:
        """One store's settings, checked and normalized."""
        ...

    def redact(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        """One store's (validated) settings with its secrets masked."""
        ...

    def protocols(self) -> list[str]:
        """The registered store kinds."""
        ...


_store_rules: StoreRules | None = None


def use_store_rules(rules: StoreRules) -> None:
    """Called once by :mod:`sa_djblob.stores` when it is imported (by ``import sa_djblob``)."""
    global _store_rules
    _store_rules = rules


def _rules() -> StoreRules:
    if _store_rules is None:  # pragma: no cover - sa_djblob/__init__ imports the stores
        raise ConfigError("store settings need sa_djblob.stores: import sa_djblob first")
    return _store_rules


def _validate(key: str, value: Any) -> Any:
    if key == "stores":
        if not isinstance(value, Mapping):
            raise ConfigError("config['stores'] must be a dict of store name to settings")
        return {name: _rules().validate(name, spec) for name, spec in value.items()}
    if key in ("cache", "download_path"):
        if value is None and key == "cache":
            return None
        if not isinstance(value, str | os.PathLike):
            raise ConfigError(f"config[{key!r}] must be a path, got {type(value).__name__}")
        return os.fspath(value)
    if key == "compression":
        if value not in ("fast", "datajoint"):
            raise ConfigError(f"config['compression'] must be 'fast' or 'datajoint', got {value!r}")
        return value
    if key == "legacy_u32":
        if not isinstance(value, bool):
            raise ConfigError(f"config['legacy_u32'] must be True or False, got {value!r}")
        return value
    if key in ("cache_limit", "max_blob_size", "max_depth", "max_expansion", "threads"):
        if value is None and key == "cache_limit":
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(f"config[{key!r}] must be a positive integer, got {value!r}")
        return value
    raise ConfigError(f"unknown config key {key!r} (known: {', '.join(sorted(_DEFAULTS))})")


def _redact(data: Mapping[str, Any]) -> dict[str, Any]:
    """*data* with every store's secret settings masked (each store class says which)."""
    out = dict(data)
    out["stores"] = {name: _rules().redact(spec) for name, spec in data["stores"].items()}
    return out


class Config(MutableMapping[str, Any]):
    """Settings of sa_djblob; every assignment is validated."""

    def __init__(self) -> None:
        self._data: dict[str, Any] = copy.deepcopy(_DEFAULTS)
        # override()'s changes: context-local, so concurrent requests (threads, asyncio
        # tasks) never see each other's; sa_djblob's worker threads copy the caller's context.
        self._overrides: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
            "sa_djblob_config_overrides", default=MappingProxyType({})
        )
        self._lock = threading.RLock()
        self._loaded_env = False

    # -- the mapping protocol ------------------------------------------------
    def _ensure_env(self) -> None:
        if not self._loaded_env:
            self._loaded_env = True
            path = os.environ.get(CONFIG_ENV)
            if path:
                self.load(path)

    def __getitem__(self, key: str) -> Any:
        self._ensure_env()
        overrides = self._overrides.get()
        if key in overrides:
            return overrides[key]
        return self._data[key]

    def _get_many(self, *keys: str) -> tuple[Any, ...]:
        """Several settings with one look-up of the overrides (``unpack`` per value)."""
        self._ensure_env()
        overrides = self._overrides.get()
        data = self._data
        return tuple(overrides[k] if k in overrides else data[k] for k in keys)

    def __setitem__(self, key: str, value: Any) -> None:
        self._ensure_env()
        value = _validate(key, value)
        with self._lock:
            self._data[key] = value

    def __delitem__(self, key: str) -> None:
        """Deleting a key restores its default."""
        if key not in _DEFAULTS:
            raise KeyError(key)
        with self._lock:
            self._data[key] = copy.deepcopy(_DEFAULTS[key])

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        self._ensure_env()
        return f"Config({_redact({**self._data, **self._overrides.get()})!r})"

    def store_spec(self, name: str) -> dict[str, Any]:
        """The validated settings of store *name*."""
        stores = self["stores"]
        if name not in stores:
            raise StoreNotConfiguredError(
                f"store {name!r} is not configured: set djb.config['stores'][{name!r}]"
                " = {'protocol': 'file', 'location': ...} (or another protocol:"
                f" {', '.join(_rules().protocols())})"
            )
        return dict(stores[name])

    def load(self, path: str | os.PathLike[str]) -> None:
        """Update the settings from a JSON or TOML file."""
        p = Path(path)
        try:
            raw = p.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read config file {p}: {exc.strerror}") from None
        try:
            if p.suffix.lower() == ".toml":
                import tomllib

                data = tomllib.loads(raw.decode("utf-8"))
            else:
                data = json.loads(raw)
        except ValueError as exc:
            raise ConfigError(
                f"config file {p} is not valid {p.suffix[1:] or 'JSON'}: {exc}"
            ) from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {p} must hold a table of settings")
        data = dict(data)
        data.pop("$schema", None)
        self._loaded_env = True
        try:
            validated = {k: _validate(k, v) for k, v in data.items()}
        except ConfigError as exc:
            raise ConfigError(f"config file {p}: {exc}") from None
        with self._lock:
            self._data.update(validated)

    @contextlib.contextmanager
    def override(self, **changes: Any) -> Iterator[Config]:
        """Change some settings for the duration of a ``with`` block, in this context only.

        The changes are seen by the current thread or asyncio task (and by the work
        sa_djblob hands to its own threads), not by other threads or tasks running at the
        same time: two requests of a web app can each override ``download_path``. Inside the
        block an overridden key keeps its overridden value even if ``config[key]`` is
        assigned (assignments change the global settings, seen once the block ends).
        """
        self._ensure_env()
        validated = {k: _validate(k, v) for k, v in changes.items()}
        token = self._overrides.set({**self._overrides.get(), **validated})
        try:
            yield self
        finally:
            self._overrides.reset(token)


config = Config()
