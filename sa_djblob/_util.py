"""Two small helpers used across the package."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TypeVar

__all__ = ["chunks", "discard"]

T = TypeVar("T")


def chunks(seq: Sequence[T], n: int) -> Iterator[Sequence[T]]:
    """*seq* in consecutive slices of at most *n* items."""
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


def discard(path: Path) -> None:
    """Remove a (temporary or partial) local file, if it is there and can be removed."""
    with contextlib.suppress(OSError):
        path.unlink()
