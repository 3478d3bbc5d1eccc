"""The exception tree of sa_djblob: one root, subclasses that say what to do."""

from __future__ import annotations

from sqlalchemy.exc import DontWrapMixin

__all__ = [
    "BlobFormatError",
    "ConfigError",
    "DownloadError",
    "IntegrityError",
    "MissingPayloadError",
    "NotInstalledError",
    "NotSliceableError",
    "SaDjblobError",
    "StageError",
    "StoreError",
    "StoreNotConfiguredError",
    "TransactionRequiredError",
    "UnreadableFileError",
    "UnsupportedDialectError",
    "UnsupportedTypeError",
]


class SaDjblobError(DontWrapMixin, Exception):
    """Root of every error raised by sa_djblob.

    SQLAlchemy passes these through as they are (``DontWrapMixin``) when they are raised
    while a statement's values are converted, so ``except djb.UnsupportedTypeError``
    catches them there too, not a ``sqlalchemy.exc.StatementError`` around them.
    """


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


class DownloadError(SaDjblobError, OSError):
    """A fetched file could not be written into its download folder (full, read-only, ...);
    the message names the folder."""


class NotInstalledError(SaDjblobError):
    """An external value reached the database on an engine without ``djb.install``."""


class UnsupportedDialectError(SaDjblobError):
    """A database that sa_djblob has no SQL for (external values need its row locks)."""


class UnreadableFileError(SaDjblobError, OSError):
    """The file bound to an ``Attach`` or ``Filepath`` column cannot be read (it does not
    exist, is a directory, or may not be read); the message names it and ``errno`` and
    ``filename`` are set as on the ``OSError`` behind it."""

    def __str__(self) -> str:
        # the message, not OSError's "[Errno 2] ...: 'file'" built from the attributes
        return str(self.args[0]) if self.args else super().__str__()


class TransactionRequiredError(SaDjblobError):
    """External values were written on a connection in AUTOCOMMIT mode: write them in a
    transaction (``engine.begin()``, a Session)."""


class NotSliceableError(SaDjblobError, TypeError):
    """A :class:`~sa_djblob.LazyBlob` was indexed (or asked its shape) but its blob is not
    one numeric array (a dict, a cell array, a string ...): ``load()`` it instead."""


class StageError(SaDjblobError):
    """A ``Filepath`` file in the stage folder was not replaced by the stored version: it
    differs from it (local edits are kept), or its path leads out of the stage."""
