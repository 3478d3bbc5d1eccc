"""The exception tree of sa_djblob: one root, subclasses that say what to do."""

from __future__ import annotations

__all__ = [
    "BlobFormatError",
    "ConfigError",
    "IntegrityError",
    "MissingPayloadError",
    "NotInstalledError",
    "SaDjblobError",
    "StoreError",
    "StoreNotConfiguredError",
    "UnsupportedTypeError",
]


class SaDjblobError(Exception):
    """Root of every error raised by sa_djblob."""


class BlobFormatError(SaDjblobError, ValueError):
    """The bytes are not a valid DataJoint blob (corrupt, truncated or hostile)."""


class UnsupportedTypeError(SaDjblobError, TypeError):
    """A value that the blob format cannot hold; the message names it and where it sits."""


class ConfigError(SaDjblobError, ValueError):
    """An invalid ``djb.config`` setting; the message names the key."""


class StoreError(SaDjblobError):
    """A store could not be reached or refused an operation."""


class StoreNotConfiguredError(StoreError, ConfigError):
    """A column names a store that ``djb.config["stores"]`` does not define."""


class MissingPayloadError(StoreError):
    """A referenced payload is not in its store."""


class IntegrityError(StoreError):
    """A payload read from a store or the cache does not match its hash."""


class NotInstalledError(SaDjblobError):
    """An external value reached the database on an engine without ``djb.install``."""
