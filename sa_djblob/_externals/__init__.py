"""Externals: the externals table, the write and read paths, and their upkeep."""

from __future__ import annotations

from .lookup import externals
from .maintenance import ExternalTable
from .relocate import CopyReport
from .reports import SweepReport, VerifyReport
from .table import Reference, external_table, external_table_name
from .write import install, installed, uninstall

__all__ = [
    "CopyReport",
    "ExternalTable",
    "Reference",
    "SweepReport",
    "VerifyReport",
    "external_table",
    "external_table_name",
    "externals",
    "install",
    "installed",
    "uninstall",
]
