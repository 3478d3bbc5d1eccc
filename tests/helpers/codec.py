"""Shared helpers of the codec tests: a deep equality that knows numpy and the format."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import numpy as np


def assert_same(got: Any, want: Any, where: str = "value") -> None:
    """Deep equality: same types (up to numpy subclasses), dtypes, shapes and values.

    A plain 0-d numeric, bool, complex or datetime64 array reads back as the numpy scalar
    of its dtype (DataJoint 0.14's rule), so such a ``want`` is compared as ``want[()]``.
    """
    if type(want) is np.ndarray and want.ndim == 0 and want.dtype.kind in "biufcM":
        want = want[()]
    if isinstance(want, np.ndarray):
        assert isinstance(got, np.ndarray), f"{where}: {type(got).__name__} is not an array"
        assert got.dtype == want.dtype, f"{where}: dtype {got.dtype} != {want.dtype}"
        assert got.shape == want.shape, f"{where}: shape {got.shape} != {want.shape}"
        if want.dtype.names is not None:
            for name in want.dtype.names:
                assert_same(np.asarray(got[name]), np.asarray(want[name]), f"{where}[{name!r}]")
        elif want.dtype.kind == "O":
            for index in np.ndindex(want.shape):
                assert_same(got[index], want[index], f"{where}{list(index)}")
        else:
            nan = want.dtype.kind in "fcM"
            assert np.array_equal(got, want, equal_nan=nan), f"{where}: {got!r} != {want!r}"
        return
    assert type(got) is type(want), f"{where}: {type(got).__name__} != {type(want).__name__}"
    if isinstance(want, np.generic):  # a numpy scalar: same type (checked), same value
        assert np.array_equal(
            np.asarray(got), np.asarray(want), equal_nan=want.dtype.kind in "fcM"
        ), f"{where}: {got!r} != {want!r}"
        return
    if isinstance(want, dict):
        assert list(got) == list(want), f"{where}: keys {list(got)} != {list(want)}"
        for key in want:
            assert_same(got[key], want[key], f"{where}[{key!r}]")
    elif isinstance(want, list | tuple):
        assert len(got) == len(want), f"{where}: length {len(got)} != {len(want)}"
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_same(g, w, f"{where}[{i}]")
    elif isinstance(want, float) and math.isnan(want):
        assert math.isnan(got), f"{where}: {got!r} is not nan"
    elif isinstance(want, complex):
        assert (got.real == want.real or (math.isnan(got.real) and math.isnan(want.real))) and (
            got.imag == want.imag or (math.isnan(got.imag) and math.isnan(want.imag))
        ), f"{where}: {got!r} != {want!r}"
    elif isinstance(want, Decimal) and want.is_nan():
        assert got.is_nan(), f"{where}: {got!r} is not NaN"
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"
