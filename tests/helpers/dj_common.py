"""Values and descriptions shared by the DataJoint side and the sa_djblob side.

Both processes import this module (it needs numpy only), build the same values from
arithmetic (no random streams, which may differ between numpy versions), and compare
what they read through :func:`describe`, a JSON-able canonical form.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import numpy as np


def blob_values() -> dict[str, Any]:
    """Blob values by name: arrays of several dtypes and a native Python structure."""
    grid = np.arange(12, dtype=np.float64).reshape(3, 4) / 7.0
    yy, xx = np.mgrid[0:16, 0:24]
    image = ((xx * 11 + yy * 5) % 256).astype(np.uint8)
    return {
        "matrix": grid,
        "image": image,
        "ints": np.arange(-5, 5, dtype=np.int32),
        "fortran": np.asfortranarray(np.arange(24, dtype=np.int16).reshape(2, 3, 4)),
        "big": np.linspace(0.0, 1.0, 4000),  # compressed by both packers
        "struct": {
            "name": "trial-7",
            "n": 3,
            "weights": [0.5, 1.25, -2.0],
            "trace": np.arange(6, dtype=np.float32) * 0.5,
            "flag": True,
        },
        "scalar": np.float64(2.5),
    }


def attachment_contents() -> dict[str, bytes]:
    """Attachment file names and their contents."""
    return {
        "notes.txt": b"recorded by the rig on day 3\nline two\n",
        "trace.bin": bytes(range(256)) * 8,
        "empty.dat": b"",
    }


def write_attachments(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, data in attachment_contents().items():
        p = folder / name
        p.write_bytes(data)
        out[name] = p
    return out


def describe(obj: Any) -> Any:
    """A JSON-able description that is equal iff the values are equal (type, dtype, shape)."""
    if isinstance(obj, np.ndarray) and obj.dtype.names is None and obj.dtype != object:
        return {
            "array": str(obj.dtype),
            "shape": list(obj.shape),
            "data": np.ascontiguousarray(obj).ravel().tolist(),
        }
    if isinstance(obj, np.ndarray):
        return {"objects": [describe(x) for x in obj.ravel()], "shape": list(obj.shape)}
    if isinstance(obj, np.generic):  # a numpy scalar is packed as, and reads back as, a 0-d array
        return describe(np.asarray(obj))
    if isinstance(obj, dict):
        return {"dict": {str(k): describe(v) for k, v in obj.items()}}
    if isinstance(obj, list | tuple):
        return {type(obj).__name__: [describe(x) for x in obj]}
    if isinstance(obj, uuid.UUID):
        return {"uuid": str(obj)}
    if isinstance(obj, bool | int | float | str) or obj is None:
        return {type(obj).__name__: obj}
    if isinstance(obj, bytes):
        return {"bytes": obj.hex()}
    raise TypeError(f"cannot describe {type(obj).__name__}")


def describe_file(path: str | Path) -> dict[str, str]:
    p = Path(path)
    return {"name": p.name, "contents": p.read_bytes().hex()}
