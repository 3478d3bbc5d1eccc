"""DataJoint's ``ZL123`` framing of a compressed blob, both halves: ``b"ZL123\\0"``, the
plain blob's size (u64; u32 in old 32-bit mym builds) and one zlib stream.

:func:`compress` (and its DataJoint-compatible and padded variants) writes it,
:func:`decompress` reads it back with every bound checked. Pure functions, no I/O.
"""

from __future__ import annotations

import math
import struct
import zlib

import numpy as np

from ._exceptions import BlobFormatError

__all__ = [
    "HEAD",
    "MAX_INFLATE_RATIO",
    "ZL123",
    "compress",
    "compress_like_datajoint",
    "compress_with_raw_tail",
    "compressible",
    "decompress",
    "frame",
]

ZL123 = b"ZL123\0"
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
#: the size of a (u64) frame's header: the magic and the plain size
HEAD = len(ZL123) + _U64.size


def frame(plain_size: int, *stream: bytes) -> bytes:
    """A framed blob: the header for a plain blob of *plain_size* bytes, then *stream*."""
    return b"".join((ZL123, _U64.pack(plain_size), *stream))


# -- compression ---------------------------------------------------------------------------

#: blobs up to this size are probed without zlib (where zlib's setup dominates)
_SMALL = 1 << 12
#: ``x * log2(x)`` for the byte counts of a blob up to _SMALL bytes (0 for 0)
_XLOG2X = np.arange(_SMALL + 1, dtype=np.float64)
_XLOG2X[1:] *= np.log2(_XLOG2X[1:])
#: blobs up to this size (and above _SMALL) are compressed outright; larger ones are
#: sampled first
_PROBE_ABOVE = 1 << 18
_PROBE_CHUNK = 1 << 14
_PROBE_COUNT = 4
#: a sample that level-1 zlib cannot shrink below this ratio is deemed incompressible
_INCOMPRESSIBLE = 0.88
#: zlib level 2 with memLevel 9: close to level 1's speed, within a few % of level 6's size
_LEVEL = 2
_MEM_LEVEL = 9
#: the zlib stream header (CMF, FLG) that zlib writes for _LEVEL
_ZLIB_HEADER = zlib.compressobj(_LEVEL, zlib.DEFLATED, 15, _MEM_LEVEL).flush()[:2]
#: above this size the deflate work is split over two threads (one zlib stream)
_PARALLEL_ABOVE = 1 << 22


def _small_compressible(plain: bytes) -> bool:
    """Whether deflate can shrink a small blob below ``_INCOMPRESSIBLE``, without zlib.

    Deflate saves through repeats (matches of 3 bytes or more) and through the byte
    distribution (Huffman codes). The estimate charges the bytes that start no repeated
    3-byte string at their order-0 entropy, which deflate cannot beat on them; for such
    small inputs that is cheaper than zlib's setup, and random numbers (the usual
    incompressible payload) are recognised without calling zlib at all.
    """
    size = len(plain)
    data = np.frombuffer(plain, np.uint8)
    counts = np.bincount(data, minlength=256)
    bits = size * math.log2(size) - float(_XLOG2X[counts].sum())
    if bits < _INCOMPRESSIBLE * 8 * size:
        return True  # a skewed byte distribution: Huffman codes alone pay off
    wide = data.astype(np.uint32)
    grams = wide[:-2] << 16
    grams |= wide[1:-1] << 8
    grams |= wide[2:]
    grams.sort()
    repeats = int(np.count_nonzero(grams[1:] == grams[:-1]))
    return bits * (size - repeats) < _INCOMPRESSIBLE * 8 * size * size


def compressible(plain: bytes) -> bool:
    size = len(plain)
    if size <= _SMALL:
        return _small_compressible(plain)
    if size <= _PROBE_ABOVE:
        return True
    view = memoryview(plain)
    step = (size - _PROBE_CHUNK) // (_PROBE_COUNT - 1)
    raw = packed = 0
    for k in range(_PROBE_COUNT):
        chunk = view[k * step : k * step + _PROBE_CHUNK]
        raw += len(chunk)
        packed += len(zlib.compress(chunk, 1))
    return packed < raw * _INCOMPRESSIBLE


def _deflate_parallel(plain: bytes) -> bytes:
    """One zlib stream made of two raw-deflate halves compressed on two threads.

    The second half is primed with the 32 KiB before it (as pigz does), so the ratio
    is that of a single pass; the halves meet at a byte boundary (sync flush).
    """
    from concurrent.futures import ThreadPoolExecutor

    view = memoryview(plain)
    mid = len(plain) // 2

    def first() -> bytes:
        comp = zlib.compressobj(_LEVEL, zlib.DEFLATED, -15, _MEM_LEVEL)
        return comp.compress(view[:mid]) + comp.flush(zlib.Z_SYNC_FLUSH)

    def second() -> bytes:
        comp = zlib.compressobj(
            _LEVEL, zlib.DEFLATED, -15, _MEM_LEVEL, zdict=view[mid - 32768 : mid]
        )
        return comp.compress(view[mid:]) + comp.flush(zlib.Z_FINISH)

    with ThreadPoolExecutor(max_workers=2) as pool:
        head = pool.submit(first)
        tail = second()
        checksum = zlib.adler32(view)
        body = head.result()
    return _ZLIB_HEADER + body + tail + struct.pack(">I", checksum)


def compress_like_datajoint(plain: bytes) -> bytes:
    """DataJoint's own choice: zlib's default level, kept when shorter (same keys as
    DataJoint's for the same zlib build, at DataJoint's speed)."""
    framed = frame(len(plain), zlib.compress(plain))
    return framed if len(framed) < len(plain) else plain


def compress_with_raw_tail(plain: bytes, at_least: int, datajoint: bool) -> bytes:
    """A ``ZL123`` blob of at least ``at_least`` bytes: the head of ``plain`` deflated,
    its last ``at_least`` bytes in stored (uncompressed) deflate blocks."""
    level, mem_level = (zlib.Z_DEFAULT_COMPRESSION, 8) if datajoint else (_LEVEL, _MEM_LEVEL)
    split = max(len(plain) - at_least, 0)
    view = memoryview(plain)
    head = zlib.compressobj(level, zlib.DEFLATED, -15, mem_level)
    tail = zlib.compressobj(0, zlib.DEFLATED, -15)
    stream = b"".join(
        (
            zlib.compressobj(level, zlib.DEFLATED, 15, mem_level).flush()[:2],
            head.compress(view[:split]),
            head.flush(zlib.Z_SYNC_FLUSH),
            tail.compress(view[split:]),
            tail.flush(zlib.Z_FINISH),
            struct.pack(">I", zlib.adler32(view)),
        )
    )
    return frame(len(plain), stream)


def compress(plain: bytes) -> bytes:
    """*plain* framed and deflated at sa_djblob's level, or *plain* itself when a probe
    finds it incompressible or the framed stream is not shorter."""
    if not compressible(plain):
        return plain
    if len(plain) > _PARALLEL_ABOVE:
        stream = _deflate_parallel(plain)
    else:
        comp = zlib.compressobj(_LEVEL, zlib.DEFLATED, 15, _MEM_LEVEL)
        stream = comp.compress(plain) + comp.flush()
    if HEAD + len(stream) < len(plain):
        return frame(len(plain), stream)
    return plain


#: deflate cannot expand more than ~1032:1; a declared size beyond that is a lie
MAX_INFLATE_RATIO = 1040


def decompress(buf: bytes, max_size: int, legacy_u32: bool, max_expansion: int) -> bytes:
    dim, dim_size = (_U32, 4) if legacy_u32 else (_U64, 8)
    head = len(ZL123) + dim_size
    if len(buf) < head:
        raise BlobFormatError(
            f"truncated ZL123 header: needs {head} bytes, the blob has {len(buf)}"
        )
    size: int = dim.unpack_from(buf, len(ZL123))[0]
    if size > max_size:
        raise BlobFormatError(
            f"compressed blob declares {size} bytes, more than max_size={max_size}"
            " (raise djb.config['max_blob_size'] to read it)"
        )
    stream = memoryview(buf)[head:]
    if size > len(buf) * max_expansion:
        raise BlobFormatError(
            f"compressed blob of {len(buf)} bytes declares {size} bytes, more than"
            f" max_expansion={max_expansion} times its size (if the blob is trusted,"
            " raise djb.config['max_expansion'])"
        )
    if size > len(stream) * MAX_INFLATE_RATIO + 1024:
        raise BlobFormatError(
            f"compressed blob declares {size} bytes, more than its {len(stream)}-byte"
            " zlib stream can hold"
        )
    inflater = zlib.decompressobj()
    try:
        plain = inflater.decompress(stream, max(size, 1))
        if len(plain) > size:
            raise BlobFormatError(
                f"zlib stream at byte {head} decompresses beyond the declared {size} bytes"
            )
        if len(plain) < size:
            raise BlobFormatError(
                f"zlib stream at byte {head} ends after {len(plain)} of the declared"
                f" {size} bytes" + ("" if inflater.eof else " (truncated)")
            )
        if not inflater.eof:
            if inflater.decompress(inflater.unconsumed_tail, 1):
                raise BlobFormatError(
                    f"zlib stream at byte {head} decompresses beyond the declared {size} bytes"
                )
            if not inflater.eof:
                raise BlobFormatError(f"zlib stream at byte {head} is truncated")
    except zlib.error as exc:
        raise BlobFormatError(f"corrupt zlib stream at byte {head}: {exc}") from None
    if inflater.unused_data:
        extra = len(inflater.unused_data)
        raise BlobFormatError(
            f"{extra} trailing bytes after the zlib stream at byte {len(buf) - extra}"
        )
    return plain
