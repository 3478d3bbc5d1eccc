"""Each rule of the code is written in one place: a second copy would drift from the first."""

from __future__ import annotations

import re
from pathlib import Path

import sa_djblob

PACKAGE = Path(sa_djblob.__file__).parent


def _sources() -> dict[str, str]:
    return {
        str(p.relative_to(PACKAGE)): p.read_text(encoding="utf-8")
        for p in sorted(PACKAGE.rglob("*.py"))
    }


def _modules_containing(pattern: str) -> list[str]:
    rx = re.compile(pattern)
    return [name for name, text in _sources().items() if rx.search(text)]


def test_the_payload_name_grammar_is_defined_only_in_the_layout_module() -> None:
    assert _modules_containing(r"\[0-9a-f\]\{32\}") == ["_layout.py"]
