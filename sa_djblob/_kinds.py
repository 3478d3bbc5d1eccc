"""The kinds of external values: what each stores, how it is hashed, selected and read.

A kind (``blob``, ``attach``, ``filepath``; plus ``UNCOMPRESSED_BLOB``, the blob kind of
``Blob(compress=False)`` columns, not registered by name) is one object that
the column types, the write path and the read path ask for what differs between kinds
(:data:`KINDS`, :func:`kind`). Preparing a value is pure (pack, or hash a file); store
I/O happens in :meth:`Payload.upload` (the write path) and :meth:`Kind.load` (the read
path).
"""

from __future__ import annotations

import errno
import io
import os
import tempfile
import uuid
import weakref
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, BinaryIO, ClassVar, cast

import sqlalchemy as sa

from . import _attach
from ._bigvalues import Packed, Unpacked, pack_parts
from ._codec import pack, unpack
from ._dialects import concat_ref
from ._exceptions import (
    BlobFormatError,
    SaDjblobError,
    StoreError,
    UnreadableFileError,
    UnsupportedTypeError,
)
from ._fetch import (
    FileRef,
    fetch_attachment,
    fetch_blob,
    fetch_filepath,
    filepath_object,
    same_file,
    stage_folder,
)
from ._layout import (
    HASH_CHUNK,
    attachment_prefix,
    content_hash,
    file_matches,
    hash_stream,
    new_hasher,
    reserved_path,
)
from ._pool import check_cancelled
from ._util import discard as _unlink
from ._verify import VerifyingReader

if TYPE_CHECKING:
    from ._area import Area
    from .stores import Store

__all__ = [
    "KINDS",
    "AttachKind",
    "BlobKind",
    "FilepathKind",
    "Kind",
    "Payload",
    "check_filepath",
    "kind",
]

#: the longest relative path a filepath may have: the externals table's ``filepath``
#: column is DataJoint's ``VARCHAR(1000)`` (characters)
MAX_FILEPATH = 1000


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
    #: filepath kind: the path relative to the stage folder (also the object path below
    #: the store's root) and the hash of the file's bare contents
    filepath: str | None = None
    contents_hash: uuid.UUID | None = None
    #: a large array's blob as its header and the array's own buffer (never joined)
    packed: Packed | None = None

    def __post_init__(self) -> None:
        if self.snapshot and self.file is not None:
            weakref.finalize(self, _unlink, self.file)

    def row(self) -> dict[str, Any]:
        """The externals row's columns besides ``hash``."""
        return {
            "size": self.size,
            "attachment_name": self.attachment_name,
            "filepath": self.filepath,
            "contents_hash": self.contents_hash,
        }

    def path(self, area: Area) -> PurePosixPath:
        """Where the payload lives: its layout path in *area*, or, for a filepath,
        ``<store root>/<relative path>`` (DataJoint's ``_make_external_filepath``)."""
        if self.filepath is not None:
            return filepath_object(area.store, self.filepath)
        return area.path(self.key, self.attachment_name)

    def check(self, area: Area) -> None:
        """Refuse a filepath that must not be written (:func:`check_filepath`)."""
        if self.filepath is not None:
            check_filepath(self.filepath, area.store)

    def _expected(self) -> tuple[bytes, uuid.UUID]:
        """What the uploaded bytes must hash to: (prefix, key)."""
        if self.filepath is not None:
            assert self.contents_hash is not None
            return b"", self.contents_hash
        assert self.attachment_name is not None
        return attachment_prefix(self.attachment_name), self.key

    def is_own_object(self, area: Area) -> bool:
        """Whether the user's file is itself the object (a file store whose location is
        the stage): then an edit before the commit would change what gets committed."""
        return (
            self.file is not None
            and not self.snapshot
            and area.store.local_paths
            and same_file(Path(self.path(area)), self.file)
        )

    def unchanged(self, algorithm: str) -> bool:
        """Whether the user's file still holds the bytes that were hashed."""
        assert self.file is not None
        prefix, key = self._expected()
        return file_matches(self.file, key, prefix=prefix, algorithm=algorithm)

    def upload(self, area: Area) -> None:
        """Put the payload at its path in *area*: exactly the bytes that were hashed."""
        path = self.path(area)
        store = area.store
        if self.data is not None:
            store.put(path, self.data)
            return
        if self.packed is not None:  # streamed from the array's buffer, checked as it goes
            store.put_file(path, self.packed.reader(self.key, store.hash, f"blob {self.key}"))
            return
        assert self.file is not None
        if self.snapshot:  # nobody else writes to it: it holds the hashed bytes
            store.upload_file(path, self.file)
            return
        if self.is_own_object(area):
            return  # a file store on the stage itself: checked again at the commit
        what = "attachment" if self.filepath is None else "file"
        try:
            f = self.file.open("rb")
        except OSError as exc:
            raise unreadable_file(exc, self.file, what, bound=True) from None
        prefix, key = self._expected()
        with f:
            reader = VerifyingReader(
                f,
                key=key,
                algorithm=store.hash,
                prefix=prefix,
                size=self.size,
                stop_at_size=True,
                error=lambda: StoreError(
                    f"{what} {self.file} changed while it was being stored (its contents no"
                    " longer match the hash taken when it was added): nothing was stored;"
                    " write it again once the file is complete"
                ),
            )
            store.put_file(path, io.BufferedReader(reader, HASH_CHUNK))


def unreadable_file(
    exc: OSError, file: Path, what: str, *, bound: bool = False
) -> UnreadableFileError:
    """The documented error for a bound *file* that cannot be read, saying what to do
    (*bound*: it was read when the value was bound, and no longer can be)."""
    if exc.errno == errno.ENOENT and bound:
        reason = (
            "does not exist any more (it was removed after the value was bound, before it"
            " was stored): keep the file until the statement has run"
        )
    elif exc.errno == errno.ENOENT:
        reason = "does not exist: check the path (relative paths start in the working folder)"
    elif exc.errno == errno.EISDIR:
        reason = "is a directory: bind the path of a regular file"
    elif exc.errno in (errno.EACCES, errno.EPERM):
        reason = "may not be read: give this process read permission"
    else:
        reason = f"cannot be read ({exc.strerror or exc}): bind the path of a readable file"
    error = UnreadableFileError(f"{what} {file} {reason}")
    error.errno = exc.errno
    error.strerror = exc.strerror
    error.filename = str(file)
    return error


class Kind:
    """What one kind of external value needs from the write and read paths."""

    name: ClassVar[str]
    python_type: ClassVar[type[Any]] = object
    #: the reader needs the value's externals row (:meth:`select` reads from it)
    selects_entry: ClassVar[bool] = False
    #: the payload is a hashed object of its area that ``djb.stored()`` can point at
    stored_object: ClassVar[bool] = True
    #: the object's name carries the value's attachment name
    named: ClassVar[bool] = False
    #: the payload is a packed blob (``djb.lazy()`` reads its header and slices)
    packed: ClassVar[bool] = False

    def select(self, colexpr: Any, entries: sa.Table) -> sa.ColumnElement[Any]:
        """What a SELECT reads in place of the column, when :attr:`selects_entry`: the
        reference and, from its externals row in *entries*, what :meth:`reference` needs."""
        raise NotImplementedError

    @staticmethod
    def for_entry(attachment_name: str | None, filepath: str | None) -> Kind:
        """The kind of an externals row, from its columns (a row does not name its kind)."""
        if filepath and not attachment_name:
            return KINDS["filepath"]
        return KINDS["attach"] if attachment_name else KINDS["blob"]

    def entry_path(self, area: Area, key: uuid.UUID, row: Any) -> PurePosixPath:
        """The object of the externals row *row* (``attachment_name``, ``filepath``) of
        *key* in *area*."""
        return area.path(key, row["attachment_name"] if self.named else None)

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

    def reference(self, raw: bytes, store: Store) -> tuple[uuid.UUID, Any]:
        """The key and what else the reader selected (an attachment's name) of a selected
        reference: ``hash`` or ``hash || utf8(name)``."""
        key = uuid.UUID(bytes=raw[:16])
        if self.name != "attach" or len(raw) == 16:
            return key, None
        try:
            return key, raw[16:].decode("utf-8")
        except UnicodeDecodeError:
            raise SaDjblobError(f"attachment name of {key} is not valid UTF-8") from None

    def load(self, area: Area, key: uuid.UUID, name: Any) -> Any:
        """Read the payload of *key* (verified): what :meth:`finish` turns into the value."""
        raise NotImplementedError

    def finish(self, loaded: Any, options: dict[str, Any]) -> Any:
        """The value from what :meth:`load` returned."""
        return loaded


class BlobKind(Kind):
    name = "blob"
    packed = True
    #: whether values are packed compressed (``Blob(compress=False)``: never, so every
    #: slice of them can be read by range)
    compress: ClassVar[bool] = True

    def encode_inrow(self, value: Any) -> bytes:
        return pack(value, compress=self.compress)

    def decode_inrow(self, value: bytes, options: dict[str, Any]) -> Any:
        return unpack(value, **options)

    def prepare(self, value: Any, store: Store) -> Payload:
        data = pack_parts(value, compress=self.compress)
        if isinstance(data, Packed):  # a large array: hashed in place, streamed on upload
            return Payload(data.digest(store.hash), data.size, packed=data)
        return Payload(content_hash(data, algorithm=store.hash), len(data), data=data)

    def load(self, area: Area, key: uuid.UUID, name: str | None) -> Any:
        try:
            return fetch_blob(area, key)
        except BlobFormatError as exc:  # raised when its row is read, as unpack's errors
            return _Malformed(exc)

    def finish(self, loaded: Any, options: dict[str, Any]) -> Any:
        if isinstance(loaded, _Malformed):
            raise loaded.error
        if isinstance(loaded, Unpacked):
            return loaded.value(squeeze=bool(options.get("squeeze", False)))
        return unpack(loaded, **options)


@dataclass(frozen=True)
class _Malformed:
    """A payload that matches its hash but is not a valid blob."""

    error: BlobFormatError


class AttachKind(Kind):
    name = "attach"
    python_type = Path
    selects_entry = True
    named = True

    def select(self, colexpr: Any, entries: sa.Table) -> sa.ColumnElement[Any]:
        """``hash || attachment_name``: the name comes from the externals row."""
        name = sa.select(entries.c.attachment_name).where(entries.c.hash == colexpr)
        return concat_ref(colexpr, name.scalar_subquery())

    def comment(self, store: str | None) -> str:
        return ":attach:" if store is None else super().comment(store)

    @staticmethod
    def _file(value: Any) -> Path:
        if not isinstance(value, str | os.PathLike):
            raise UnsupportedTypeError(
                "Attach values are file paths (str or PathLike) or (name, contents) pairs"
                " whose contents are bytes or a binary file object, got"
                f" {type(value).__name__}"
            )
        return Path(os.fspath(value))

    @staticmethod
    def _pair(value: tuple[Any, ...]) -> tuple[str, bytes | BinaryIO]:
        """The name and contents of an attachment bound as ``(name, bytes)`` or ``(name,
        binary file object)`` (FastAPI's ``UploadFile`` as ``(f.filename, f.file)``)."""
        if len(value) != 2 or not isinstance(value[0], str):
            raise UnsupportedTypeError(
                "an Attach value given as a tuple is (name, contents): a file name (str) and"
                f" bytes or a binary file object, got a tuple of {len(value)} item(s)"
                + ("" if len(value) != 2 else f" whose name is a {type(value[0]).__name__}")
            )
        name, contents = value
        if isinstance(contents, bytes):
            return name, contents
        if isinstance(contents, bytearray | memoryview):
            return name, bytes(contents)  # a copy: what is hashed is what is stored
        if callable(getattr(contents, "read", None)):
            return name, contents
        raise UnsupportedTypeError(
            f"the contents of attachment {name[:60]!r} must be bytes or a binary file object"
            f" (with read()), got {type(contents).__name__}"
        )

    def encode_inrow(self, value: Any) -> bytes:
        if isinstance(value, tuple):
            name, contents = self._pair(value)
            _attach.check_new_name(name)
            if not isinstance(contents, bytes):
                contents = _read_all(contents, name)
            return name.encode("utf-8") + b"\0" + contents
        file = self._file(value)
        _attach.check_new_name(_attach.attachment_name(file))
        try:
            return _attach.encode_inrow(file)
        except OSError as exc:
            raise unreadable_file(exc, file, "attachment") from None

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
        if isinstance(value, tuple):
            return self._prepare_contents(value, store)
        file = self._file(value)
        name = _attach.attachment_name(file)
        _attach.check_new_name(name, max_object_name=store.max_object_name)
        prefix = attachment_prefix(name)
        try:
            with file.open("rb") as f:
                if not store.is_remote:
                    key, total = hash_stream(
                        f, prefix=prefix, algorithm=store.hash, each_chunk=check_cancelled
                    )
                    return Payload(key, total - len(prefix), attachment_name=name, file=file)
                head = f.read(_IN_MEMORY + 1)
                if len(head) <= _IN_MEMORY:
                    key = content_hash(prefix, head, algorithm=store.hash)
                    return Payload(key, len(head), attachment_name=name, data=head)
                return _snapshot(f, head, prefix, name, store.hash)
        except OSError as exc:
            raise unreadable_file(exc, file, "attachment") from None

    def _prepare_contents(self, value: tuple[Any, ...], store: Store) -> Payload:
        """Hash ``(name, bytes)``, or read ``(name, file object)`` once while hashing it:
        a small one into memory, a large one into a private snapshot that is uploaded."""
        name, contents = self._pair(value)
        _attach.check_new_name(name, max_object_name=store.max_object_name)
        prefix = attachment_prefix(name)
        if isinstance(contents, bytes):
            key = content_hash(prefix, contents, algorithm=store.hash)
            return Payload(key, len(contents), attachment_name=name, data=contents)
        try:
            head = _binary(contents.read(_IN_MEMORY + 1), name)
            if len(head) <= _IN_MEMORY:
                key = content_hash(prefix, head, algorithm=store.hash)
                return Payload(key, len(head), attachment_name=name, data=head)
            checked = cast(BinaryIO, _BinaryCheck(contents, name))
            return _snapshot(checked, head, prefix, name, store.hash)
        except OSError as exc:
            raise _unreadable_object(exc, name) from None

    def load(self, area: Area, key: uuid.UUID, name: str | None) -> Path:
        if name is None:
            raise SaDjblobError(
                f"external attachment {key} was selected without its name: select the column"
                " through its table (the name comes from the externals table)"
            )
        return fetch_attachment(area, key, name)


def check_filepath(rel: str, store: Store) -> None:
    """Refuse, before it is written, a relative path that the externals table cannot record
    as it is, or whose object would sit on a payload or an owner marker of any area (see
    :func:`~sa_djblob._layout.reserved_path`): the two would overwrite and delete each
    other. (Only the write path asks: a SELECT may still compare such a path.)"""
    if len(rel) > MAX_FILEPATH:
        raise UnsupportedTypeError(
            f"filepath {rel[:40]!r}... is {len(rel)} characters long; the externals table"
            f" records paths of at most {MAX_FILEPATH} (DataJoint's filepath column):"
            " use a shorter path inside the stage"
        )
    reserved = reserved_path(rel)
    if reserved is not None:
        raise UnsupportedTypeError(
            f"filepath {rel[:200]!r} is where store {store.name!r} keeps {reserved}:"
            " rename the file or move it to another folder of the stage"
        )


class FilepathKind(Kind):
    """DataJoint's ``filepath@store``: a file of the store's ``stage`` folder, kept in the
    store at the same relative path. The key is the hash of the relative path; the
    externals row records the path and the hash of the file's contents. Reading returns
    the file in the stage folder, downloaded (and verified) when it is missing there or
    differs."""

    name = "filepath"
    python_type = Path

    selects_entry = True
    stored_object = False

    def select(self, colexpr: Any, entries: sa.Table) -> sa.ColumnElement[Any]:
        """``coalesce(contents_hash, hash) || filepath``: the key is the hash of the path,
        so what the file needs is selected in its place (a missing contents hash,
        DataJoint's checksum limit, reads as the key)."""
        ref = concat_ref(
            sa.func.coalesce(entries.c.contents_hash, entries.c.hash), entries.c.filepath
        )
        return sa.select(ref).where(entries.c.hash == colexpr).scalar_subquery()

    def entry_path(self, area: Area, key: uuid.UUID, row: Any) -> PurePosixPath:
        return filepath_object(area.store, row["filepath"])

    stage = staticmethod(stage_folder)

    def relative(self, value: Any, store: Store) -> tuple[Path, str]:
        """The absolute local path of *value* and its path relative to the stage."""
        if not isinstance(value, str | os.PathLike):
            raise UnsupportedTypeError(
                f"Filepath values are file paths (str or PathLike), got {type(value).__name__}"
            )
        stage = self.stage(store)
        file = Path(os.path.abspath(os.fspath(value)))
        try:
            rel = file.relative_to(stage).as_posix()
        except ValueError:
            rel = ""
        if not rel or rel == ".":
            raise UnsupportedTypeError(
                f"Filepath values must be files inside the stage folder of store"
                f" {store.name!r} ({stage}), got {file}: put the file into the stage first"
            )
        try:
            rel.encode("utf-8")
        except UnicodeEncodeError:
            shown = rel.encode("utf-8", "surrogateescape")[:80]
            raise UnsupportedTypeError(
                f"filepath {shown!r} is not valid UTF-8 (the externals table and DataJoint"
                " record paths as UTF-8): rename the file or folder"
            ) from None
        return file, rel

    def encode_inrow(self, value: Any) -> bytes:
        raise UnsupportedTypeError("Filepath columns need a store: Filepath(store='name')")

    decode_inrow = encode_inrow  # type: ignore[assignment]

    def prepare(self, value: Any, store: Store) -> Payload:
        """Hash the relative path (the key) and the file's contents; for a remote store,
        keep exactly the hashed bytes to upload (in memory, or a private snapshot)."""
        file, rel = self.relative(value, store)
        key = content_hash(rel.encode("utf-8"), algorithm=store.hash)
        extra: dict[str, Any] = {"filepath": rel}
        try:
            with file.open("rb") as f:
                if not store.is_remote:
                    contents, size = hash_stream(
                        f, algorithm=store.hash, each_chunk=check_cancelled
                    )
                    return Payload(key, size, file=file, contents_hash=contents, **extra)
                head = f.read(_IN_MEMORY + 1)
                if len(head) <= _IN_MEMORY:
                    contents = content_hash(head, algorithm=store.hash)
                    return Payload(key, len(head), data=head, contents_hash=contents, **extra)
                contents, size, tmp = _copy_hashing(f, head, b"", store.hash)
                return Payload(key, size, file=tmp, snapshot=True, contents_hash=contents, **extra)
        except OSError as exc:
            raise unreadable_file(exc, file, "file") from None

    def reference(self, raw: bytes, store: Store) -> tuple[uuid.UUID, Any]:
        """``coalesce(contents_hash, hash) || utf8(filepath)``; the key is the hash of the
        path (a bare 16-byte hash: selected without its externals row)."""
        if len(raw) == 16:
            return uuid.UUID(bytes=raw), None
        try:
            rel = raw[16:].decode("utf-8")
        except UnicodeDecodeError:
            raise SaDjblobError("a filepath in the externals table is not valid UTF-8") from None
        key = content_hash(raw[16:], algorithm=store.hash)
        contents = uuid.UUID(bytes=raw[:16])
        return key, FileRef(rel, None if contents == key else contents)

    def load(self, area: Area, key: uuid.UUID, name: Any) -> Path:
        if not isinstance(name, FileRef):
            raise SaDjblobError(
                f"external filepath {key} was selected without its path: select the column"
                " through its table (the path comes from the externals table)"
            )
        return fetch_filepath(area.store, name)


_IN_MEMORY = 1 << 20  # attachments for remote stores up to this size are read into memory


def _binary(data: Any, name: str) -> bytes:
    """What a file object's read() gave, refused unless it is bytes (a text-mode file)."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    raise UnsupportedTypeError(
        f"the file object of attachment {name[:60]!r} gave {type(data).__name__}, not bytes:"
        " open the file in binary mode ('rb')"
    )


class _BinaryCheck:
    """A file object whose reads are checked to be bytes."""

    def __init__(self, f: BinaryIO, name: str) -> None:
        self._f = f
        self._name = name

    def read(self, n: int = -1) -> bytes:
        return _binary(self._f.read(n), self._name)


def _unreadable_object(exc: OSError, name: str) -> UnreadableFileError:
    error = UnreadableFileError(
        f"the file object of attachment {name[:60]!r} cannot be read"
        f" ({exc.strerror or exc}): pass a readable binary file object"
    )
    error.errno = exc.errno
    error.strerror = exc.strerror
    return error


def _read_all(f: BinaryIO, name: str) -> bytes:
    """The rest of a binary file object (an in-row attachment is one value of the row)."""
    try:
        return _binary(f.read(), name)
    except OSError as exc:
        raise _unreadable_object(exc, name) from None


def _copy_hashing(
    f: BinaryIO, head: bytes, prefix: bytes, algorithm: str
) -> tuple[uuid.UUID, int, Path]:
    """Copy *head* and the rest of *f* to a private temporary file while hashing
    ``prefix + contents``: (hash, size of the contents, the copy)."""
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
                check_cancelled()
                chunk = f.read(HASH_CHUNK)
    except BaseException:
        _unlink(Path(tmp))
        raise
    return uuid.UUID(bytes=h.digest()[:16]), size, Path(tmp)


def _snapshot(f: BinaryIO, head: bytes, prefix: bytes, name: str, algorithm: str) -> Payload:
    """Copy the rest of *f* (after *head*) to a private temporary file while hashing."""
    key, size, tmp = _copy_hashing(f, head, prefix, algorithm)
    return Payload(key, size, attachment_name=name, file=tmp, snapshot=True)


KINDS: dict[str, Kind] = {k.name: k for k in (BlobKind(), AttachKind(), FilepathKind())}


class UncompressedBlobKind(BlobKind):
    """The blobs of ``Blob(compress=False)``: written uncompressed, read like any blob."""

    compress = False


UNCOMPRESSED_BLOB = UncompressedBlobKind()


def kind(name: str) -> Kind:
    """The kind called *name*."""
    return KINDS[name]
