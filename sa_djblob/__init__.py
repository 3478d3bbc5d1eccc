"""sa_djblob: DataJoint's blob and attach attributes for SQLAlchemy 2.x.

Use it as ``import sa_djblob as djb``. Importing it registers nothing; call
``djb.install(engine)`` to activate the write path of external values on an engine.
"""

from __future__ import annotations

from ._codec import MatCell, MatStruct, pack, unpack
from ._config import config
from ._exceptions import (
    BlobFormatError,
    ConfigError,
    IntegrityError,
    MissingPayloadError,
    NotInstalledError,
    SaDjblobError,
    StageError,
    StoreError,
    StoreNotConfiguredError,
    UnsupportedTypeError,
)
from ._externals import (
    ExternalTable,
    SweepReport,
    VerifyReport,
    externals,
    install,
    uninstall,
)
from ._externals.aio import AsyncExternalTable
from ._externals.stored import StoredObject, stored
from .stores import Cache, FileStore, MemoryStore, S3Store, Store, get_store
from .types import Attach, Blob, Filepath

__version__ = "0.1.0"

__all__ = [
    "AsyncExternalTable",
    "Attach",
    "Blob",
    "BlobFormatError",
    "Cache",
    "ConfigError",
    "ExternalTable",
    "FileStore",
    "Filepath",
    "IntegrityError",
    "MatCell",
    "MatStruct",
    "MemoryStore",
    "MissingPayloadError",
    "NotInstalledError",
    "S3Store",
    "SaDjblobError",
    "StageError",
    "Store",
    "StoreError",
    "StoreNotConfiguredError",
    "StoredObject",
    "SweepReport",
    "UnsupportedTypeError",
    "VerifyReport",
    "__version__",
    "config",
    "externals",
    "get_store",
    "install",
    "pack",
    "stored",
    "uninstall",
    "unpack",
]
