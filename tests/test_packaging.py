"""The wheel holds sa_djblob and nothing else (not the top-level alembic/ folder)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import sa_djblob as djb

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_contains_only_the_package(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
    )
    (wheel,) = tmp_path.glob("sa_djblob-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert top == {"sa_djblob", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}
    assert "sa_djblob/py.typed" in names
    assert not any(n.startswith(("alembic/", "tests/", "examples/", "benchmarks/")) for n in names)


def test_public_api_is_curated() -> None:
    for name in djb.__all__:
        assert hasattr(djb, name), name
    for name in (
        "pack",
        "unpack",
        "MatCell",
        "MatStruct",
        "Blob",
        "Attach",
        "install",
        "uninstall",
        "externals",
        "config",
        "SaDjblobError",
        "BlobFormatError",
        "UnsupportedTypeError",
        "StoreError",
        "StoreNotConfiguredError",
        "MissingPayloadError",
        "IntegrityError",
        "NotInstalledError",
    ):
        assert name in djb.__all__


def test_import_registers_nothing() -> None:
    code = (
        "import sqlalchemy as sa, sqlalchemy.event as ev\n"
        "import sa_djblob\n"
        "e = sa.create_engine('sqlite://')\n"
        "from sa_djblob._externals.write import _before_execute\n"
        "print(ev.contains(e, 'before_execute', _before_execute))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_no_pickle_in_package() -> None:
    for path in (ROOT / "sa_djblob").rglob("*.py"):
        text = path.read_text()
        assert "import pickle" not in text and "allow_pickle=True" not in text, path
