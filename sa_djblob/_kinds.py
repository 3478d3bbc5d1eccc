"""The kinds of external values: what each stores, how it is hashed, selected and read.

A kind (``blob``, ``attach``) is one object that the column types, the write path and
the read path all ask; nothing else tests which kind a column is. Preparing a value is
pure (pack, or hash a file); store I/O happens in :meth:`Payload.upload` (the write
path) and :meth:`Kind.load` (the read path).
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import uuid
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, ClassVar

from . import _attach
from ._codec import pack, unpack
from ._exceptions import IntegrityError, SaDjblobError, StoreError, UnsupportedTypeError
from ._layout import HASH_CHUNK, attachment_prefix, content_hash, hash_stream, new_hasher

if TYPE_CHECKING:
    from ._area import Area
    from .stores import Store

__all__ = ["KINDS", "AttachKind", "BlobKind", "Kind", "Payload", "kind"]


@dataclass
class Payload:
    """One value to keep in a store, keyed by the hash of its bytes."""

    key: uuid.UUID
    size: int
    attachment_name: str | None = None
    data: bytes | None = None
    file: Path | None = None
    #: *file* is a private copy of the attachment, made while hashing it
    snapshot: bool = False

    def __post_init__(self) -> None:
        if self.snapshot and self.file is not None:
            weakref.finalize(self, _unlink, self.file)

    def row(self) -> dict[str, Any]:
        """The externals row's columns besides ``hash``."""
        return {"size": self.size, "attachment_name": self.attachment_name}

    def upload(self, area: Area) -> None:
        """Put the payload at its path in *area*: exactly the bytes that were hashed."""
        path = area.path(self.key, self.attachment_name)
        store = area.store
        if self.data is not None:
            store.put(path, self.data)
            return
        assert self.file is not None and self.attachment_name is not None
        if self.snapshot:  # nobody else writes to it: it holds the hashed bytes
            store.upload_file(path, self.file)
            return
        try:
            f = self.file.open("rb")
        except OSError as exc:
            raise StoreError(f"cannot read attachment {self.file}: {exc.strerror}") from None
        with f:
            reader = _VerifyingReader(f, self, store.hash)
            store.put_file(path, io.BufferedReader(reader, HASH_CHUNK))


class _VerifyingReader(io.RawIOBase):
    """Reads an attachment for upload and fails, before its last byte is handed on, if
    the bytes read do not hash to the key (the file changed after it was hashed): the
    store then drops the write, so no payload ever differs from its key."""

    def __init__(self, f: io.BufferedReader, payload: Payload, algorithm: str) -> None:
        self._f = f
        self._p = payload
        self._h = new_hasher(algorithm)
        assert payload.attachment_name is not None
        self._h.update(attachment_prefix(payload.attachment_name))
        self._left = payload.size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._left < 0:
            return 0  # verified: the end
        view = memoryview(buffer).cast("B")
        want = min(len(view), self._left)
        n = self._f.readinto(view[:want]) if want else 0
        n = n or 0
        self._left -= n
        self._h.update(view[:n])
        if self._left == 0 or n == 0:
            if self._left or uuid.UUID(bytes=self._h.digest()[:16]) != self._p.key:
                raise StoreError(
                    f"attachment {self._p.file} changed while it was being stored (its"
                    " contents no longer match the hash taken when it was added): nothing"
                    " was stored; write it again once the file is complete"
                )
            self._left = -1  # verified; further reads see the end
        return n


class Kind:
    """What one kind of external value needs from the write and read paths."""

    name: ClassVar[str]
    python_type: ClassVar[type[Any]] = object

    def comment(self, store: str | None) -> str:
        """DataJoint's column comment for this kind (``:blob@store:`` ...)."""
        return "" if store is None else f":{self.name}@{store}:"

    # -- in the row -------------------------------------------------------------
    def encode_inrow(self, value: Any) -> bytes:
        raise NotImplementedError

    def decode_inrow(self, value: bytes, options: dict[str, Any]) -> Any:
        raise NotImplementedError

    # -- external ---------------------------------------------------------------
    def prepare(self, value: Any, store: Store) -> Payload:
        """Pack or hash *value* for *store* (no I/O on the store)."""
        raise NotImplementedError

    def load(self, area: Area, key: uuid.UUID, name: str | None) -> Any:
        """Read the payload of *key* (verified): what :meth:`finish` turns into the value."""
        raise NotImplementedError

    def finish(self, loaded: Any, options: dict[str, Any]) -> Any:
        """The value from what :meth:`load` returned."""
        return loaded


class BlobKind(Kind):
    name = "blob"

    def encode_inrow(self, value: Any) -> bytes:
        return pack(value)

    def decode_inrow(self, value: bytes, options: dict[str, Any]) -> Any:
        return unpack(value, **options)

    def prepare(self, value: Any, store: Store) -> Payload:
        data = pack(value)
        return Payload(content_hash(data, algorithm=store.hash), len(data), data=data)

    def load(self, area: Area, key: uuid.UUID, name: str | None) -> bytes:
        from ._externals.fetch import fetch_bytes

        return fetch_bytes(area, key)

    def finish(self, loaded: Any, options: dict[str, Any]) -> Any:
        return unpack(loaded, **options)


class AttachKind(Kind):
    name = "attach"
    python_type = Path

    def comment(self, store: str | None) -> str:
        return ":attach:" if store is None else super().comment(store)

    @staticmethod
    def _file(value: Any) -> Path:
        if not isinstance(value, str | os.PathLike):
            raise UnsupportedTypeError(
                f"Attach values are file paths (str or PathLike), got {type(value).__name__}"
            )
        return Path(os.fspath(value))

    def encode_inrow(self, value: Any) -> bytes:
        file = self._file(value)
        _attach.check_name(_attach.attachment_name(file))
        return _attach.encode_inrow(file)

    def decode_inrow(self, value: bytes, options: dict[str, Any]) -> Path:
        name, contents = _attach.decode_inrow(value)

        def fill(f: BinaryIO) -> None:
            f.write(contents)

        return _attach.write_download(name, _attach.same_bytes(contents), fill)

    def prepare(self, value: Any, store: Store) -> Payload:
        """Hash the file. What is uploaded later must be exactly what was hashed: a local
        store checks the bytes as it writes them (and drops the write if they changed);
        for a remote store, a small file is read into memory and a large one copied to a
        private snapshot while it is hashed, and that is what is uploaded."""
        file = self._file(value)
        name = _attach.attachment_name(file)
        _attach.check_name(name, max_object_name=store.max_object_name)
        prefix = attachment_prefix(name)
        try:
            with file.open("rb") as f:
                if not store.is_remote:
                    key, total = hash_stream(f, prefix=prefix, algorithm=store.hash)
                    return Payload(key, total - len(prefix), attachment_name=name, file=file)
                head = f.read(_IN_MEMORY + 1)
                if len(head) <= _IN_MEMORY:
                    key = content_hash(prefix, head, algorithm=store.hash)
                    return Payload(key, len(head), attachment_name=name, data=head)
                return _snapshot(f, head, prefix, name, store.hash)
        except OSError as exc:
            raise FileNotFoundError(
                exc.errno, f"cannot read attachment: {exc.strerror}", str(file)
            ) from None

    def load(self, area: Area, key: uuid.UUID, name: str | None) -> Path:
        from ._externals.fetch import fetch_attachment

        if name is None:
            raise SaDjblobError(
                f"external attachment {key} was selected without its name: select the column"
                " through its table (the name comes from the externals table)"
            )
        return fetch_attachment(area, key, name)


_IN_MEMORY = 1 << 20  # attachments for remote stores up to this size are read into memory


def _snapshot(f: BinaryIO, head: bytes, prefix: bytes, name: str, algorithm: str) -> Payload:
    """Copy the rest of *f* (after *head*) to a private temporary file while hashing."""
    h = new_hasher(algorithm)
    h.update(prefix)
    fd, tmp = tempfile.mkstemp(prefix=".djb-snapshot-")
    try:
        with os.fdopen(fd, "wb") as out:
            size = 0
            chunk = head
            while chunk:
                h.update(chunk)
                out.write(chunk)
                size += len(chunk)
                chunk = f.read(HASH_CHUNK)
    except BaseException:
        _unlink(Path(tmp))
        raise
    key = uuid.UUID(bytes=h.digest()[:16])
    return Payload(key, size, attachment_name=name, file=Path(tmp), snapshot=True)


def _unlink(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


KINDS: dict[str, Kind] = {k.name: k for k in (BlobKind(), AttachKind())}


def kind(name: str) -> Kind:
    """The kind called *name*."""
    return KINDS[name]


def verify(store: Store, key: uuid.UUID, where: object, data: bytes) -> bytes:
    """*data* if it hashes to *key* with the store's algorithm, else ``IntegrityError``."""
    if content_hash(data, algorithm=store.hash) != key:
        raise IntegrityError(
            f"payload {key} in store {store.name!r} at {where} does not match its hash"
            f" ({store.hash}): it was changed or corrupted"
        )
    return data
