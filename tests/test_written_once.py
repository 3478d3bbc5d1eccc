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


def test_the_zl123_framing_is_written_and_read_only_in_the_framing_module() -> None:
    # the magic bytes and both halves: compressing into a frame, decompressing one
    assert _modules_containing(r'b"ZL123') == ["_framing.py"]
    assert _modules_containing(r"def _?(de)?compress(_\w+)?\(") == ["_framing.py"]
    assert _modules_containing(r"b\"\"\.join\(\(?\[?ZL123") == ["_framing.py"]


def test_a_length_prefixed_item_is_written_by_one_packer_method() -> None:
    # reserve a slot for the u64 length, pack the item, fill the slot in: _Packer.item(sized=True)
    codec = (PACKAGE / "_codec.py").read_text(encoding="utf-8")
    assert codec.count("out[slot] = ") == 1


def test_uploads_and_downloads_are_verified_by_the_one_verifying_reader() -> None:
    # a reader that hashes what passes and checks it against the key before the last byte
    # (dj2convert._Verified checks two hashes at once, a 0.14 key and a 2.x name)
    readers = _modules_containing(r"class _?Verif\w*\(io\.RawIOBase\)")
    assert set(readers) - {"dj2convert.py"} == {"_verify.py"}
    users = _modules_containing(r"\bVerifyingReader\(")
    assert {"_kinds.py", "_externals/stored.py"} <= set(users)
