"""The codec against the real DataJoint 0.14 packer and reader (no database needed).

DataJoint runs in its own virtualenv (the ``dj_python`` fixture of ``conftest.py``).
Each value below is given as an expression that both sides evaluate; DataJoint packs it
and reads back our bytes, and we compare types, dtypes and values both ways: numpy
scalars come back as numpy scalars on both sides.
"""

from __future__ import annotations

import datetime
import json
import subprocess
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers.codec import assert_same

import sa_djblob as djb
from sa_djblob import MatCell, pack, unpack

# DataJoint runs in its own virtualenv: not in `make test-fast`
pytestmark = pytest.mark.slow

NAMES = {"np": np, "datetime": datetime, "uuid": uuid, "Decimal": Decimal, "MatCell": MatCell}

EXPRESSIONS = [
    *(
        f"np.{name}(3)"
        for name in (
            "int8",
            "uint8",
            "int16",
            "uint16",
            "int32",
            "uint32",
            "int64",
            "uint64",
            "float32",
            "float64",
        )
    ),
    "np.float64(-0.0)",
    "np.float32('nan')",
    "np.complex64(1-2j)",
    "np.complex128(1+2j)",
    "np.bool_(True)",
    "np.bool_(False)",
    "np.datetime64('2024-01-01T12:30', 'm')",
    "np.datetime64('2024-01-01', 'D')",
    "np.datetime64('NaT', 'ns')",
    "np.array(2.5)",
    "np.array(7, dtype=np.uint16)",
    "np.array([[2.5]])",
    "np.array([2.5])",
    "[np.float32(1.5), (np.int8(-1), {'k': np.uint64(2**64 - 1)})]",
    "{np.int16(3): np.complex64(1j)}",
    "np.array([np.float32(2.0), 'x', None], dtype=object)",
    "np.array(None, dtype=object)",
]

# DataJoint's side: pack each expression, read back the bytes we packed, describe both
DJ_SCRIPT = r"""
import datetime, json, sys, uuid
from decimal import Decimal
import numpy as np
from datajoint import blob
from datajoint.settings import config
config["enable_python_native_blobs"] = True
names = {"np": np, "datetime": datetime, "uuid": uuid, "Decimal": Decimal,
         "MatCell": blob.MatCell}
job = json.load(sys.stdin)

def describe(v):
    if isinstance(v, np.ndarray):
        return ["ndarray", str(v.dtype), list(v.shape),
                [describe(x) for x in v.ravel()] if v.dtype == object
                else repr(v.tolist())]
    if isinstance(v, (list, tuple)):
        return [type(v).__name__, [describe(x) for x in v]]
    if isinstance(v, dict):
        return ["dict", [[describe(k), describe(x)] for k, x in v.items()]]
    return [type(v).__name__, repr(v)]

out = {"packed": {}, "read": {}}
for expr in job["expressions"]:
    out["packed"][expr] = blob.pack(eval(expr, names), compress=False).hex()
for expr, hexed in job["ours"].items():
    out["read"][expr] = describe(blob.unpack(bytes.fromhex(hexed)))
json.dump(out, sys.stdout)
"""


def _describe(v: Any) -> Any:
    """The same description as DJ_SCRIPT's, on our side."""
    if isinstance(v, np.ndarray):
        return [
            "ndarray",
            str(v.dtype),
            list(v.shape),
            [_describe(x) for x in v.ravel()] if v.dtype == object else repr(v.tolist()),
        ]
    if isinstance(v, list | tuple):
        return [type(v).__name__, [_describe(x) for x in v]]
    if isinstance(v, dict):
        return ["dict", [[_describe(k), _describe(x)] for k, x in v.items()]]
    return [type(v).__name__, repr(v)]


@pytest.fixture(scope="module")
def datajoint_side(dj_python: Path) -> dict[str, Any]:
    job = {
        "expressions": EXPRESSIONS,
        "ours": {e: pack(eval(e, NAMES), compress=False).hex() for e in EXPRESSIONS},
    }
    r = subprocess.run(
        [str(dj_python), "-c", DJ_SCRIPT],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert r.returncode == 0, r.stderr[-4000:]
    result: dict[str, Any] = json.loads(r.stdout)
    return result


@pytest.mark.parametrize("expr", EXPRESSIONS)
def test_numpy_scalars_like_datajoint(expr: str, datajoint_side: dict[str, Any]) -> None:
    value = eval(expr, NAMES)
    dj_bytes = bytes.fromhex(datajoint_side["packed"][expr])
    # the same bytes as DataJoint's packer
    assert pack(value, compress=False) == dj_bytes
    # we read DataJoint's bytes as DataJoint reads them: numpy scalars stay numpy scalars
    ours = unpack(dj_bytes)
    assert _describe(ours) == datajoint_side["read"][expr]
    assert_same(ours, value)
    if isinstance(value, np.generic):
        assert type(ours) is type(value)


# ------------------------------------------------------------------------------------------
# cell arrays: DataJoint builds them with numpy's rule for a list of items


def _cell(items: list[Any], shape: tuple[int, ...] | None = None) -> MatCell:
    cell = MatCell((len(items),), dtype=object)
    for i, item in enumerate(items):
        cell[i] = item
    if shape is None:
        return cell
    reshaped = cell.reshape(shape, order="F")
    assert isinstance(reshaped, MatCell)
    return reshaped


def _char(text: str) -> Any:
    """A MATLAB char row (1xN), as MATLAB's mym writes it."""
    return np.frombuffer(text.encode("latin-1"), dtype="S1").reshape(1, -1)


# what MATLAB writes ({1, 2, 3}, {'a', 'bc'}) and what Python writes into a MatCell
CELLS: dict[str, Any] = {
    "matlab numbers": _cell([np.array([[1.0]]), np.array([[2.0]]), np.array([[3.0]])], (1, 3)),
    "matlab strings": _cell([_char("a"), _char("bc")], (1, 2)),
    "matlab 2x2 numbers": _cell([np.array([[float(i)]]) for i in range(4)], (2, 2)),
    "matlab int32 and float": _cell([np.array([[1]], dtype=np.int32), np.array([[2.5]])]),
    "python ints": _cell([1, 2, 3]),
    "python str": _cell(["a", "bc"]),
    "python numbers and None": _cell([None, 1]),
    "python dicts": _cell([{"a": 1}, {"b": 2}]),
    "numpy float32": _cell([np.float32(1), np.float32(2)]),
    "empty": _cell([], (1, 0)),
    "one-element lists": _cell([[1], [2]]),
    # DataJoint 0.14 fails on these (numpy cannot stack them into one element each):
    # they stay object cells
    "matlab rows": _cell([np.array([[1.0, 2.0]]), np.array([[3.0, 4.0]])], (1, 2)),
    "ragged": _cell([np.array([[1.0, 2.0]]), np.array([[3.0]])], (1, 2)),
}

DJ_CELL_SCRIPT = r"""
import json, sys
import numpy as np
from datajoint import blob
from datajoint.settings import config
config["enable_python_native_blobs"] = True

def describe(v):
    if isinstance(v, np.ndarray):
        return ["ndarray", type(v).__name__, str(v.dtype), list(v.shape),
                [describe(x) for x in v.ravel()] if v.dtype == object
                else repr(v.tolist())]
    if isinstance(v, (list, tuple)):
        return [type(v).__name__, [describe(x) for x in v]]
    if isinstance(v, dict):
        return ["dict", [[describe(k), describe(x)] for k, x in v.items()]]
    return [type(v).__name__, repr(v)]

out = {}
for name, hexed in json.load(sys.stdin).items():
    for squeeze in (False, True):
        try:
            out[f"{name} {squeeze}"] = describe(blob.unpack(bytes.fromhex(hexed), squeeze=squeeze))
        except ValueError as exc:
            out[f"{name} {squeeze}"] = ["fails", type(exc).__name__]
json.dump(out, sys.stdout)
"""


def _describe_cell(v: Any) -> Any:
    """DJ_CELL_SCRIPT's description, on our side."""
    if isinstance(v, np.ndarray):
        return [
            "ndarray",
            type(v).__name__,
            str(v.dtype),
            list(v.shape),
            [_describe_cell(x) for x in v.ravel()] if v.dtype == object else repr(v.tolist()),
        ]
    if isinstance(v, list | tuple):
        return [type(v).__name__, [_describe_cell(x) for x in v]]
    if isinstance(v, dict):
        return ["dict", [[_describe_cell(k), _describe_cell(x)] for k, x in v.items()]]
    return [type(v).__name__, repr(v)]


@pytest.fixture(scope="module")
def datajoint_cells(dj_python: Path) -> dict[str, Any]:
    job = {name: pack(cell, compress=False).hex() for name, cell in CELLS.items()}
    r = subprocess.run(
        [str(dj_python), "-c", DJ_CELL_SCRIPT],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert r.returncode == 0, r.stderr[-4000:]
    result: dict[str, Any] = json.loads(r.stdout)
    return result


@pytest.mark.parametrize("squeeze", [False, True])
@pytest.mark.parametrize("name", list(CELLS))
def test_cell_arrays_read_back_as_datajoint_reads_them(
    name: str, squeeze: bool, datajoint_cells: dict[str, Any]
) -> None:
    ours = unpack(pack(CELLS[name], compress=False), squeeze=squeeze)
    assert type(ours) is MatCell
    theirs = datajoint_cells[f"{name} {squeeze}"]
    if theirs[0] == "fails":  # DataJoint cannot read it; we keep the items as they are
        assert ours.dtype == object
        assert ours.size == CELLS[name].size
    else:
        assert _describe_cell(ours) == theirs


def test_matlab_cells_of_numbers_and_strings_read_as_numpy_arrays() -> None:
    numbers = pack(CELLS["matlab numbers"], compress=False)
    assert numbers[:5] == b"mYm\0C"
    assert_same(unpack(numbers), np.array([[1.0, 2.0, 3.0]]).view(MatCell))
    assert type(unpack(numbers)) is MatCell
    assert_same(unpack(numbers, squeeze=True), np.array([1.0, 2.0, 3.0]).view(MatCell))
    strings = pack(CELLS["matlab strings"], compress=False)
    assert_same(unpack(strings, squeeze=True), np.array(["a", "bc"]).view(MatCell))
    assert unpack(strings, squeeze=True).dtype == np.dtype("<U2")
    assert (
        "`MatCell of strings`"
        in (Path(__file__).resolve().parent.parent / "docs" / "format.md").read_text()
    )


def test_datajoint_reads_the_blobs_pack_keeps_readable(dj_python: Path) -> None:
    # compressed as DataJoint does, this value would need more than max_expansion times
    # its blob to read; pack leaves the blob's end uncompressed, DataJoint reads it as is
    value = [Decimal("0")] * 100_000
    with djb.config.override(compression="datajoint"):
        blob = pack(value)
    assert blob.startswith(b"ZL123\0") and unpack(blob) == value
    script = (
        "import sys\nfrom decimal import Decimal\nfrom datajoint import blob\n"
        "v = blob.unpack(sys.stdin.buffer.read())\n"
        "print(len(v), v[0] == Decimal('0'), all(x == v[0] for x in v))"
    )
    r = subprocess.run([str(dj_python), "-c", script], input=blob, capture_output=True, timeout=240)
    assert r.returncode == 0, r.stderr[-4000:]
    assert r.stdout.split() == [b"100000", b"True", b"True"]
