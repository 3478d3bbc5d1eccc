"""What ``pack`` writes, ``unpack`` reads with the same settings (the defaults included).

The reader refuses blobs whose decoded value needs more memory than ``max_expansion``
times their stored size, larger than ``max_blob_size``, or with many keys on one hash
value; the writer keeps its blobs within those limits, or refuses the value.
"""

from __future__ import annotations

import re
import struct
import tracemalloc
import uuid
import zlib
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from helpers.codec import assert_same

import sa_djblob as djb
from sa_djblob import MatCell, MatStruct, UnsupportedTypeError, pack, unpack
from sa_djblob._codec import _Packer, _read_cost

U64 = struct.Struct("<Q")
#: on 64-bit CPython, ints that differ by a multiple of this share one hash value
MODULUS = 2**61 - 1


def _plain_size(blob: bytes) -> int:
    if blob.startswith(b"ZL123\0"):
        size: int = U64.unpack_from(blob, 6)[0]
        return size
    return len(blob)


# values whose objects take far more memory than their compressed bytes
HIGHLY_COMPRESSIBLE: dict[str, tuple[Any, str]] = {
    "500,000 Decimal('0')": ([Decimal("0")] * 500_000, "fast"),
    "Decimals, DataJoint's compression": ([Decimal("0")] * 100_000, "datajoint"),
    "empty unicode strings, DataJoint's compression": (np.zeros(200_000, "U1"), "datajoint"),
    "empty sets": ([set()] * 100_000, "fast"),
}


@pytest.mark.parametrize("name", list(HIGHLY_COMPRESSIBLE))
def test_unpack_reads_what_pack_writes_with_the_default_limits(name: str) -> None:
    value, compression = HIGHLY_COMPRESSIBLE[name]
    with djb.config.override(compression=compression):
        blob = pack(value)
    back = unpack(blob)
    assert len(back) == len(value)
    assert_same(back[:3], value[:3] if isinstance(value, list) else value[:3].astype(object))
    # still compressed: no more than the reader's limit needs
    assert blob.startswith(b"ZL123\0")
    assert len(blob) * 3 < _plain_size(blob)
    assert zlib.decompress(blob[14:]) == pack(value, compress=False)


def test_unpack_reads_what_pack_writes_with_a_lowered_max_expansion() -> None:
    zeros = np.zeros(1_000_000)
    with djb.config.override(max_expansion=50):
        blob = pack(zeros)
        assert_same(unpack(blob), zeros)
    assert len(blob) * 50 >= zeros.nbytes
    # the same blob as the default settings give when their limit is not reached
    assert pack(np.arange(1000.0)) == pack(np.arange(1000.0), compress=True)


def _peak(fn: Callable[[], Any]) -> tuple[int, Any]:
    tracemalloc.start()
    try:
        try:
            result: Any = fn()
        except UnsupportedTypeError as exc:
            result = exc
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, result


def test_pack_refuses_a_value_unpack_could_not_read_in_any_form() -> None:
    # a cell reads as np.array(items): one long string among many empty ones makes
    # every element as wide as it, far more than max_expansion times even the plain blob
    cell = MatCell((20_001,), dtype=object)
    cell[:] = [""] * 20_000 + ["x" * 20_000]
    peak, result = _peak(lambda: pack(cell))
    assert isinstance(result, UnsupportedTypeError)
    assert re.search(r"max_expansion=1100.*raise djb\.config", str(result))
    assert peak < 32 << 20  # refused before numpy allocates the 1.6 GB array
    with pytest.raises(UnsupportedTypeError, match="max_expansion"):
        pack(cell, compress=False)
    with djb.config.override(max_expansion=100_000):
        assert unpack(pack(cell)).dtype == np.dtype("<U20000")


def test_pack_refuses_a_blob_larger_than_max_blob_size() -> None:
    with djb.config.override(max_blob_size=1000):
        with pytest.raises(UnsupportedTypeError, match=r"max_blob_size=1000"):
            pack(np.zeros(200))
        with pytest.raises(UnsupportedTypeError, match=r"max_blob_size=1000"):
            pack(np.zeros(200), compress=False)
        assert_same(unpack(pack(np.zeros(100))), np.zeros(100))


@pytest.mark.parametrize("kind", ["set", "dict"])
def test_pack_refuses_keys_that_share_one_hash_value(kind: str) -> None:
    keys = [k * MODULUS for k in range(17)]
    value: Any = set(keys) if kind == "set" else dict.fromkeys(keys)
    with pytest.raises(UnsupportedTypeError, match="share one hash value"):
        pack(value)
    fewer = set(keys[:16]) if kind == "set" else dict.fromkeys(keys[:16])
    assert unpack(pack(fewer)) == fewer


def _struct_of(value: Any, n: int) -> MatStruct:
    arr = MatStruct((n,), dtype=[("a", object), ("b", object)])
    for i in range(n):
        arr[i] = (value, value)
    return arr


def _record_of_sets(n: int) -> Any:
    arr = np.empty(n, dtype=[("a", object), ("b", "i1")])
    for i in range(n):
        arr[i] = (set(), 1)
    return arr


# the values that need the most memory per byte of their blob; test_codec_fuzz.py checks
# generated values the same way
DENSE = {
    "empty sets in a list": [set()] * 1000,
    "empty dicts in a tuple": ({},) * 1000,
    "empty lists in an object array": np.array([[]] * 1000 + [None], dtype=object)[:-1],
    "sets of small ints": [{0}] * 1000,
    "dict of empty sets": {i: set() for i in range(1000)},
    "struct of empty sets": _struct_of(set(), 500),
    "records holding empty sets": _record_of_sets(500),
    "records of unicode and int8": np.zeros(500, dtype=[("u", "U1"), ("i", "i1")]),
    "0-d arrays in a list": [np.float64(1)] * 1000,
    "Decimals, UUIDs, big ints": [Decimal("0"), uuid.UUID(int=1), 2**200] * 300,
    "complex and char arrays": [np.ones(3, "c8"), np.array([[b"a"], [b"b"]], "S1")] * 100,
    "empty strings": [""] * 1000,
}


def packer_cost(value: Any) -> tuple[int, bool]:
    packer = _Packer(256)
    packer.item(value, 0)
    return packer.cost, packer.cells


@pytest.mark.parametrize("name", list(DENSE))
def test_the_writer_counts_at_least_the_memory_the_reader_charges(name: str) -> None:
    cost, cells = packer_cost(DENSE[name])
    assert not cells
    spent = _read_cost(pack(DENSE[name], compress=False))
    assert spent <= cost
    if "records" not in name:  # records: unicode fields read as object fields (a bound)
        assert spent == cost


def test_unpack_reads_a_cell_pack_writes_with_squeeze_too() -> None:
    # squeezed, the 0-d object array is a str: numpy makes every number of the cell text
    cell = MatCell((100_001,), dtype=object)
    cell[:] = [np.array("x" * 100, dtype=object)] + [1.0] * 100_000
    blob = pack(cell)
    assert unpack(blob).dtype == object
    squeezed = unpack(blob, squeeze=True)
    assert squeezed.dtype == np.dtype("<U100") and squeezed[1] == "1.0"
