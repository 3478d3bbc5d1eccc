"""Progress bars of long operations: drawn on stderr when it is a terminal, unless asked."""

from __future__ import annotations

import sys
from typing import Protocol

__all__ = ["Bar", "bar"]


class Bar(Protocol):
    def update(self, n: int = 1) -> object: ...

    def close(self) -> None: ...


class _NoBar:
    def update(self, n: int = 1) -> object:
        return None

    def close(self) -> None:
        return None


def bar(progress: bool | None, total: int | None, desc: str) -> Bar:
    """A tqdm bar on stderr; *progress=None* draws it only when stderr is a terminal (so logs,
    services and captured notebook output get no bars unless asked for)."""
    if progress is None:
        progress = sys.stderr.isatty()
    if not progress:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar()
    drawn: Bar = tqdm(total=total, desc=desc, unit="entry", leave=False)
    return drawn
