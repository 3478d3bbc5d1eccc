"""Big arrays in one copy of memory: a streaming writer and a reader that fills the result.

:func:`pack_parts` serializes a large numeric array (the bytes :func:`~sa_djblob._codec.pack`
gives, byte for byte) as a :class:`Packed`: the blob header and then the array's own buffer
in Fortran order, as memoryviews (an array that is not Fortran-contiguous is copied a
bounded piece at a time). Compression, when it pays, deflates those pieces as a stream.
Nothing joins the value into one bytes object: the write path hashes the pieces and then
streams them to the store (:meth:`Packed.reader`).

:func:`read_value` reads a stored blob from a stream: for one numeric array it allocates the
final array once and reads (or decompresses, a bounded piece at a time) into its buffer,
hashing the stored bytes as they arrive. Anything else is read whole and unpacked as before.
"""

from __future__ import annotations

import io
import math
import struct
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
from numpy.typing import NDArray

from . import _codec, _framing
from ._blobheader import Header, NeedMore, parse_frame, parse_header
from ._codec import _COMPLEX_PARTS, _MAX_NDIM, _READ_DTYPES, _WRITE_IDS, DJ0, MYM
from ._config import config
from ._exceptions import BlobFormatError, IntegrityError, StoreError
from ._layout import FIRST_CHUNK, new_hasher

__all__ = ["STREAM_ABOVE", "Packed", "Unpacked", "pack_parts", "read_value"]

#: arrays of at least this many bytes are packed and read as streams
STREAM_ABOVE = 1 << 20
#: the largest piece copied at once (a piece of an array that is not Fortran-contiguous,
#: a decompressed piece, a read)
PIECE = 8 << 20
#: the largest piece decompressed at once (copied into the result, then let go)
INFLATE_PIECE = 1 << 20
_U64 = struct.Struct("<Q")
_TWO_U32 = struct.Struct("<II")
_CHAR = 4
_OBJECT = 5


# -- writing ----------------------------------------------------------------------------


def _pieces(arr: NDArray[Any], start: int, stop: int) -> Iterator[memoryview]:
    """The bytes ``[start, stop)`` of ``arr.ravel(order="F")``, as memoryviews of at most
    about :data:`PIECE` bytes: views of the array's buffer when it is Fortran-contiguous,
    else copies of one block of its last axis at a time."""
    if stop <= start:
        return
    if arr.flags.f_contiguous:
        mv = arr.reshape(-1, order="F").view(np.uint8).data
        for at in range(start, stop, PIECE):
            yield mv[at : min(stop, at + PIECE)]
        return
    last = arr.shape[-1]
    per = arr.nbytes // last  # bytes of one position of the last axis (its slowest)
    step = 1 if per >= PIECE else PIECE // per
    for j in range(start // per // step * step, last, step):
        at = j * per
        if at >= stop:
            break
        lo, hi = max(start - at, 0), min(stop - at, per * min(step, last - j))
        if step == 1:
            yield from _pieces(arr[..., j], lo, hi)
        else:
            yield arr[..., j : j + step].ravel(order="F").view(np.uint8).data[lo:hi]


@dataclass
class _Part:
    """A run of the serialized blob: literal bytes, or an array plane in Fortran order."""

    data: bytes | None = None
    plane: NDArray[Any] | None = None

    @property
    def nbytes(self) -> int:
        return len(self.data) if self.data is not None else self.plane.nbytes  # type: ignore[union-attr]

    def pieces(self, start: int, stop: int) -> Iterator[memoryview]:
        if self.data is not None:
            if start < stop:
                yield memoryview(self.data)[start:stop]
            return
        assert self.plane is not None
        yield from _pieces(self.plane, start, stop)


class Packed:
    """A serialized blob as the header and the array's buffer: never joined."""

    def __init__(self, parts: list[_Part]) -> None:
        self.parts = parts
        self.size = sum(p.nbytes for p in parts)

    def pieces(self, start: int = 0, stop: int | None = None) -> Iterator[memoryview]:
        """The bytes ``[start, stop)`` as memoryviews (bounded copies at most)."""
        stop = self.size if stop is None else stop
        at = 0
        for part in self.parts:
            n = part.nbytes
            if at + n > start and at < stop:
                yield from part.pieces(max(start - at, 0), min(stop - at, n))
            at += n

    def read(self, start: int, stop: int) -> bytes:
        return b"".join(self.pieces(start, stop))

    def digest(self, algorithm: str) -> uuid.UUID:
        h = new_hasher(algorithm)
        for piece in self.pieces():
            h.update(piece)
        return uuid.UUID(bytes=h.digest()[:16])

    def joined(self) -> bytes:
        return b"".join(self.pieces())

    def reader(self, key: uuid.UUID, algorithm: str, what: str) -> io.BufferedReader:
        """A stream of the bytes for upload that fails, before its last byte is handed on,
        if they no longer hash to *key* (the array changed after it was bound)."""
        return io.BufferedReader(_PackedReader(self, key, algorithm, what), 1 << 20)


class _PackedReader(io.RawIOBase):
    def __init__(self, packed: Packed, key: uuid.UUID, algorithm: str, what: str) -> None:
        self._it = packed.pieces()
        self._cur = memoryview(b"")
        self._h = new_hasher(algorithm)
        self._key = key
        self._left = packed.size
        self._what = what

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._left <= 0:
            return 0
        view = memoryview(buffer).cast("B")
        n = 0
        while n < len(view) and self._left > 0:
            if not self._cur:
                self._cur = next(self._it)
            k = min(len(view) - n, len(self._cur))
            view[n : n + k] = self._cur[:k]
            self._cur = self._cur[k:]
            self._h.update(view[n : n + k])  # what is handed on, not what was hashed before
            n += k
            self._left -= k
        if self._left == 0 and uuid.UUID(bytes=self._h.digest()[:16]) != self._key:
            self._left = -1
            raise StoreError(
                f"{self._what} changed while it was being stored (the array was modified"
                " after it was bound): nothing was stored; do not modify an array while"
                " the statement that writes it runs"
            )
        return n


def _header(arr: NDArray[Any]) -> tuple[bytes, list[NDArray[Any]]] | None:
    """The blob bytes before the elements of a numeric array, and its planes; None if the
    array is not one that :func:`pack_parts` streams."""
    dt = arr.dtype
    if dt.names is not None or dt.byteorder == ">":
        return None
    real = _COMPLEX_PARTS.get(dt.str)
    class_id = _WRITE_IDS[real.str] if real is not None else _WRITE_IDS.get(dt.str)
    if class_id is None or class_id in (_CHAR, _OBJECT):
        return None
    ndim = arr.ndim
    dj0 = ndim == 0 or class_id >= 65536
    head = (
        (DJ0 if dj0 else MYM)
        + b"A"
        + struct.pack(f"<{ndim + 1}Q", ndim, *arr.shape)
        + _TWO_U32.pack(class_id, 0 if real is None else 1)
    )
    planes = [arr.real, arr.imag] if real is not None else [arr]
    if dt.kind == "b":
        planes = [arr.view(np.uint8)]
    return head, planes


def pack_parts(obj: Any, compress: bool = True) -> Packed | bytes:
    """``pack(obj, compress)``: the same bytes, but a large numeric array comes back as a
    :class:`Packed` (header and the array's buffer) when it is stored uncompressed, and is
    compressed as a stream otherwise. Anything else is ``pack``'s bytes."""
    if type(obj) not in (np.ndarray, np.memmap) or obj.nbytes < STREAM_ABOVE:
        return _codec.pack(obj, compress=compress)
    found = _header(obj)
    if found is None:
        return _codec.pack(obj, compress=compress)
    head, planes = found
    packed = Packed([_Part(data=head), *(_Part(plane=p) for p in planes)])
    if not compress or packed.size <= _codec.COMPRESS_THRESHOLD:
        return packed
    if config["compression"] == "datajoint":
        comp = zlib.compressobj()
        stream = [comp.compress(piece) for piece in packed.pieces()]
        stream.append(comp.flush())
        n = _framing.HEAD + sum(len(s) for s in stream)
        return _framing.frame(packed.size, *stream) if n < packed.size else packed
    if not _compressible(packed):
        return packed
    body = _deflate(packed)
    if _framing.HEAD + len(body) < packed.size:
        return _framing.frame(packed.size, body)
    return packed


def _compressible(packed: Packed) -> bool:
    """``_framing.compressible`` on the joined bytes, from samples (no join)."""
    size = packed.size
    if size <= _framing._PROBE_ABOVE:  # (arrays this small are streamed only in tests)
        return _framing.compressible(packed.joined())
    step = (size - _framing._PROBE_CHUNK) // (_framing._PROBE_COUNT - 1)
    raw = out = 0
    for k in range(_framing._PROBE_COUNT):
        chunk = packed.read(k * step, k * step + _framing._PROBE_CHUNK)
        raw += len(chunk)
        out += len(zlib.compress(chunk, 1))
    return out < raw * _framing._INCOMPRESSIBLE


def _deflate(packed: Packed) -> bytes:
    """The zlib stream ``_framing.compress`` makes of the joined bytes, fed piece by piece
    (deflate's output does not depend on how its input is cut)."""
    level, mem = _framing._LEVEL, _framing._MEM_LEVEL
    size = packed.size
    if size <= _framing._PARALLEL_ABOVE:
        comp = zlib.compressobj(level, zlib.DEFLATED, 15, mem)
        out = [comp.compress(p) for p in packed.pieces()]
        out.append(comp.flush())
        return b"".join(out)
    from concurrent.futures import ThreadPoolExecutor

    mid = size // 2

    def first() -> bytes:
        comp = zlib.compressobj(level, zlib.DEFLATED, -15, mem)
        out = [comp.compress(p) for p in packed.pieces(0, mid)]
        out.append(comp.flush(zlib.Z_SYNC_FLUSH))
        return b"".join(out)

    def second() -> bytes:
        zdict = packed.read(mid - 32768, mid)
        comp = zlib.compressobj(level, zlib.DEFLATED, -15, mem, zdict=zdict)
        out = [comp.compress(p) for p in packed.pieces(mid)]
        out.append(comp.flush(zlib.Z_FINISH))
        return b"".join(out)

    with ThreadPoolExecutor(max_workers=2) as pool:
        head = pool.submit(first)
        tail = second()
        checksum = 1
        for piece in packed.pieces():
            checksum = zlib.adler32(piece, checksum)
        body = head.result()
    return b"".join((_framing._ZLIB_HEADER, body, tail, struct.pack(">I", checksum)))


# -- reading ----------------------------------------------------------------------------


@dataclass
class Unpacked:
    """A blob read by :func:`read_value` into its final array (before ``squeeze``)."""

    array: NDArray[Any]

    def value(self, squeeze: bool = False) -> Any:
        """What ``unpack(..., squeeze=squeeze)`` gives for the blob."""
        result: Any = self.array
        if squeeze:
            result = result.squeeze()
            if result.ndim == 0:
                return result.item()
        if result.ndim == 0 and result.dtype.kind in "biufcM":
            return result[()]
        return result


def _implied_size(prefix: bytes) -> int | None:
    """The plain size a numeric array's header implies; None if it is not one (yet)."""
    if len(prefix) < 13 or prefix[4:5] != b"A":
        return None
    (ndim,) = _U64.unpack_from(prefix, 5)
    at = 13 + 8 * ndim
    if ndim > _MAX_NDIM or len(prefix) < at + 8:
        return None
    shape = struct.unpack_from(f"<{ndim}Q", prefix, 13)
    class_id, is_complex = _TWO_U32.unpack_from(prefix, at)
    dtype = _READ_DTYPES.get(class_id)
    if dtype is None or is_complex > 1:
        return None
    return int(at + 8 + math.prod(shape) * dtype.itemsize * (2 if is_complex else 1))


class _Filler:
    """Writes the element bytes of a numeric array, in their stored order, into the final
    array (for a complex value: its real plane, then its imaginary plane)."""

    def __init__(self, header: Header) -> None:
        assert header.shape is not None and header.dtype is not None
        self.header = header
        self.array: NDArray[Any] = np.empty(header.shape, header.dtype, order="F")
        flat = self.array.reshape(-1, order="F")
        plane = header.plane
        if header.complex:
            self.planes = [flat.real, flat.imag]
        else:
            self.planes = [flat.view(plane)]
        self.itemsize = plane.itemsize
        self.per = flat.size * self.itemsize
        self.total = self.per * len(self.planes)
        self.at = 0
        self._carry = b""

    def raw(self) -> memoryview | None:
        """The array's own buffer, when the stored bytes are exactly its bytes."""
        if self.header.complex:
            return None
        return self.planes[0].view(np.uint8).data

    def feed(self, data: bytes | memoryview) -> None:
        if len(data) > self.total - self.at:
            raise BlobFormatError(f"more than the {self.total} bytes of the array's elements")
        if self._carry:
            data = self._carry + bytes(data)
            self.at -= len(self._carry)
            self._carry = b""
        view = memoryview(data)
        while view:
            p, off = divmod(self.at, self.per)
            n = min(len(view), self.per - off)
            whole = n // self.itemsize * self.itemsize
            if whole:
                i = off // self.itemsize
                dest = self.planes[p][i : i + whole // self.itemsize]
                dest[...] = np.frombuffer(view[:whole], self.planes[p].dtype)
            if whole < n:  # a partial element at the end of the piece
                self._carry = bytes(view[whole:n])
            self.at += n
            view = view[n:]

    def done(self) -> NDArray[Any]:
        if self.at != self.total or self._carry:
            raise BlobFormatError(
                f"array of shape {self.header.shape} ends after {self.at} of its"
                f" {self.total} element bytes (truncated)"
            )
        if self.header.dtype is not None and self.header.dtype.kind == "b":
            raw = self.array.view(np.uint8)
            np.not_equal(raw, 0, out=self.array)  # any nonzero byte is True, as unpack
        return self.array


class _Verifier:
    """Reads a stored payload, hashing every byte as it arrives."""

    def __init__(self, f: BinaryIO, key: uuid.UUID, algorithm: str, corrupt: Callable[[], str]):
        self.f = f
        self.h = new_hasher(algorithm)
        self.key = key
        self.size = 0
        self.corrupt = corrupt

    def read(self, n: int) -> bytes:
        out = []
        left = n
        # these return less than asked only at their end: no second read (another
        # BufferedIOBase may return less before it, as an interactive stream)
        whole = isinstance(self.f, io.BufferedReader | io.BytesIO)
        while left > 0:
            chunk = self.f.read(left)
            if not chunk:
                break
            out.append(chunk)
            left -= len(chunk)
            if whole:
                break
        data = out[0] if len(out) == 1 else b"".join(out)
        self.h.update(data)
        self.size += len(data)
        return data

    def readinto(self, view: memoryview) -> int:
        """Fill *view* from the stream; the number of bytes read (short at the end)."""
        readinto = getattr(self.f, "readinto", None)
        got = 0
        while got < len(view):
            if readinto is not None:
                n = readinto(view[got : got + PIECE]) or 0
            else:
                chunk = self.f.read(min(PIECE, len(view) - got))
                n = len(chunk)
                view[got : got + n] = chunk
            if not n:
                break
            self.h.update(view[got : got + n])
            got += n
        self.size += got
        return got

    def drain(self) -> None:
        while self.read(PIECE):
            pass

    def check(self) -> None:
        if self.h.digest()[:16] != self.key.bytes:
            raise IntegrityError(self.corrupt())


def read_value(
    f: BinaryIO,
    key: uuid.UUID,
    algorithm: str,
    corrupt: Callable[[], str],
    stored_size: Callable[[], int | None],
) -> bytes | Unpacked:
    """The verified stored bytes of a blob (small values, values that are not one numeric
    array), or its array read into its final buffer as the bytes arrive (:class:`Unpacked`).

    *corrupt* gives the ``IntegrityError`` message; *stored_size* the payload's size (asked
    only for a large compressed blob, whose declared size is checked against it).
    """
    v = _Verifier(f, key, algorithm, corrupt)
    # Most payloads are small: a first read of 64 KiB spares them a 1 MiB buffer each
    # (a short read means the end of the payload).
    first = min(FIRST_CHUNK, STREAM_ABOVE)
    head = v.read(first)
    if len(head) == first < STREAM_ABOVE:
        head += v.read(STREAM_ABOVE - first)
    more = v.read(1) if len(head) == STREAM_ABOVE else b""
    head += more
    frame = _framing.HEAD
    big = len(head) >= frame and _U64.unpack_from(head, len(_framing.ZL123))[0] >= STREAM_ABOVE
    if not (big and head.startswith(_framing.ZL123)) and not more:
        v.check()  # a small value, whole: unpacked as before
        return head
    try:
        if head.startswith(_framing.ZL123):  # (a small payload may hold a large array of zeros)
            return _read_compressed(v, head, stored_size if more else lambda: len(head))
        return _read_plain(v, head)
    except BlobFormatError:
        v.drain()  # a payload that does not match its hash is corrupt, not malformed
        v.check()
        raise


def _whole(v: _Verifier, *pieces: bytes) -> bytes:
    rest = []
    while chunk := v.read(PIECE):
        rest.append(chunk)
    v.check()
    return b"".join([*pieces, *rest])


def _read_plain(v: _Verifier, head: bytes) -> bytes | Unpacked:
    size = _implied_size(head) if not config["legacy_u32"] else None
    if size is None or size > int(config["max_blob_size"]):
        return _whole(v, head)
    try:
        header = parse_header(head, size)
    except (BlobFormatError, NeedMore):
        return _whole(v, head)
    if not header.numeric:
        return _whole(v, head)
    filler = _Filler(header)
    body = memoryview(head)[header.data_at :]
    raw = filler.raw()
    if raw is None:
        filler.feed(body[: filler.total])
        while filler.at < filler.total and (chunk := v.read(min(PIECE, filler.total - filler.at))):
            filler.feed(chunk)
    else:
        n = min(len(body), len(raw))
        raw[:n] = body[:n]
        filler.at = n + v.readinto(raw[n:])
    if len(body) > filler.total or v.read(1):
        v.drain()
        v.check()
        raise BlobFormatError(f"trailing bytes after the array of shape {header.shape}")
    v.check()  # a short payload fails here: its hash cannot match
    return Unpacked(filler.done())


def _read_compressed(
    v: _Verifier, head: bytes, stored_size: Callable[[], int | None]
) -> bytes | Unpacked:
    legacy = bool(config["legacy_u32"])
    if legacy:
        return _whole(v, head)
    size = stored_size()
    if size is None or size < len(head):  # (-1: the store cannot tell)
        return _whole(v, head)
    frame = parse_frame(head, size)
    max_size = int(config["max_blob_size"])
    if frame.plain_size > max_size or frame.plain_size > size * int(config["max_expansion"]):
        return _whole(v, head)  # unpack says why
    if frame.plain_size > (size - frame.start) * _framing.MAX_INFLATE_RATIO + 1024:
        return _whole(v, head)
    inflater = zlib.decompressobj()
    consumed = [head]  # the stored bytes, until the value is known to be a numeric array
    plain = b""
    header: Header | None = None
    pending: list[bytes] = []

    def inflate(data: bytes | memoryview) -> Iterator[bytes]:
        try:
            while data:
                out = inflater.decompress(data, INFLATE_PIECE)
                if out:
                    yield out
                data = inflater.unconsumed_tail
        except zlib.error as exc:
            raise BlobFormatError(f"corrupt zlib stream: {exc}") from None

    source: Iterator[bytes | memoryview] = iter([memoryview(head)[frame.start :]])
    filler: _Filler | None = None
    produced = 0
    while True:
        data = next(source, None)
        if data is None:
            data = v.read(PIECE)
            if not data:
                break
            if filler is None:
                consumed.append(data)
        for out in inflate(data):
            produced += len(out)
            if produced > frame.plain_size:
                raise BlobFormatError(
                    f"zlib stream decompresses beyond the declared {frame.plain_size} bytes"
                )
            if filler is not None:
                filler.feed(out)
                continue
            pending.append(out)
            plain = b"".join(pending)
            pending = [plain]
            try:
                header = parse_header(plain, frame.plain_size)
            except NeedMore:
                continue
            if not header.numeric:
                return _whole(v, *consumed)
            filler = _Filler(header)
            filler.feed(memoryview(plain)[header.data_at :])
            consumed = pending = []
            plain = b""
        if inflater.eof and inflater.unused_data:
            raise BlobFormatError("trailing bytes after the zlib stream")
    if filler is None:
        return _whole(v, *consumed)
    if not inflater.eof:
        raise BlobFormatError(
            f"zlib stream ends after {produced} of the declared {frame.plain_size} bytes"
            " (truncated)"
        )
    v.check()
    return Unpacked(filler.done())
