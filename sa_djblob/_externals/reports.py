"""The reports of the upkeep operations (sweep, verify)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import PurePosixPath

__all__ = ["SweepReport", "VerifyReport"]


@dataclass
class SweepReport:
    """What a sweep removed (or, with ``dry_run``, would remove)."""

    dry_run: bool = False
    rows_deleted: int = 0
    payloads_deleted: int = 0
    orphans_deleted: int = 0
    bytes_freed: int = 0
    skipped_referenced: int = 0
    orphans_kept: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass
class VerifyReport:
    """What ``verify`` found: payloads that are missing or do not match their hash."""

    checked: int = 0
    missing: list[tuple[uuid.UUID, PurePosixPath]] = field(default_factory=list)
    corrupt: list[tuple[uuid.UUID, PurePosixPath]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.corrupt or self.errors)
