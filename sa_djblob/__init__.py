"""sa_djblob: DataJoint's blob and attach attributes for SQLAlchemy 2.x.

Use it as ``import sa_djblob as djb``. Importing it registers nothing; call
``djb.install(engine)`` to activate the write path of external values on an engine.
"""

from __future__ import annotations

from importlib import metadata as _metadata

from ._codec import MatCell, MatStruct, pack, unpack
from ._config import config
from ._exceptions import (
    BlobFormatError,
    ConfigError,
    DownloadError,
    IntegrityError,
    MissingPayloadError,
    NotInstalledError,
    NotSliceableError,
    SaDjblobError,
    StageError,
    StoreError,
    StoreNotConfiguredError,
    TransactionRequiredError,
    UnreadableFileError,
    UnsupportedDialectError,
    UnsupportedTypeError,
)
from ._externals import (
    CopyReport,
    ExternalTable,
    SweepReport,
    VerifyReport,
    externals,
    install,
    uninstall,
)
from ._externals.aio import AsyncExternalTable
from ._externals.lazy import LazyBlob, lazy
from ._externals.move import MoveReport, move
from ._externals.stored import StoredObject, stored
from .stores import Cache, FileStore, MemoryStore, S3Store, Store, get_store
from .types import Attach, Blob, Filepath

try:
    __version__: str = _metadata.version("sa_djblob")
except _metadata.PackageNotFoundError:  # a checkout on sys.path, never installed
    __version__ = "0+unknown"

__all__ = [
    "AsyncExternalTable",
    "Attach",
    "Blob",
    "BlobFormatError",
    "Cache",
    "ConfigError",
    "CopyReport",
    "DownloadError",
    "ExternalTable",
    "FileStore",
    "Filepath",
    "IntegrityError",
    "LazyBlob",
    "MatCell",
    "MatStruct",
    "MemoryStore",
    "MissingPayloadError",
    "MoveReport",
    "NotInstalledError",
    "NotSliceableError",
    "S3Store",
    "SaDjblobError",
    "StageError",
    "Store",
    "StoreError",
    "StoreNotConfiguredError",
    "StoredObject",
    "SweepReport",
    "TransactionRequiredError",
    "UnreadableFileError",
    "UnsupportedDialectError",
    "UnsupportedTypeError",
    "VerifyReport",
    "__version__",
    "config",
    "externals",
    "get_store",
    "install",
    "lazy",
    "move",
    "pack",
    "stored",
    "uninstall",
    "unpack",
]

# Reprs and tracebacks name the public path (sa_djblob.SweepReport, sa_djblob.StoreError), not
# the private module a class happens to live in (as httpx does).
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type):
        _obj.__module__ = __name__
del _name, _obj
