"""The wheel holds sa_djblob and nothing else (not the top-level alembic/ folder)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

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


_REGISTRY_CHECK = """
import importlib, pkgutil, sys
import sqlalchemy as sa, sqlalchemy.event as ev
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

def ours():
    # every listener SQLAlchemy would call on these targets, class-level ones included
    # (iterating a dispatch collection yields the class's listeners, then the instance's)
    class Base(DeclarativeBase):
        pass
    class M(Base):
        __tablename__ = "m"
        id: Mapped[int] = mapped_column(primary_key=True)
    engine = sa.create_engine("sqlite://")
    targets = [engine, engine.pool, Session(engine), sessionmaker()(), sa.inspect(M),
               Base.metadata, M.__table__, M.__table__.c.id, engine.connect()]
    found = []
    for target in targets:
        dispatch = target.dispatch
        for name in dir(dispatch):
            if name.startswith("_"):
                continue
            collection = getattr(dispatch, name)
            try:
                listeners = list(collection)
            except TypeError:
                continue
            for fn in listeners:
                if is_ours(fn):
                    found.append((type(target).__name__, name))
    return found

def is_ours(fn, depth=0):
    # SQLAlchemy wraps some listeners (e.g. before_execute without retval): look inside
    if getattr(fn, "__module__", "").startswith("sa_djblob"):
        return True
    cells = getattr(fn, "__closure__", None) or ()
    return depth < 3 and any(
        callable(c.cell_contents) and is_ours(c.cell_contents, depth + 1)
        for c in cells
        if c.cell_contents is not None
    )

import sa_djblob
for mod in pkgutil.walk_packages(sa_djblob.__path__, "sa_djblob."):
    if mod.name.endswith("cli") or "alembic" in mod.name:
        continue  # need the optional extras; imported below when present
    importlib.import_module(mod.name)
for extra in ("sa_djblob.cli", "sa_djblob.alembic_helpers"):
    try:
        importlib.import_module(extra)
    except ImportError:
        pass
print("after import:", ours())
if len(sys.argv) > 1:  # the control: a class-level listener of ours is seen
    def spy(*args, **kw):
        pass
    spy.__module__ = "sa_djblob.spy"
    ev.listen(sa.engine.Engine, "before_execute", spy)
    print("control:", ours())
"""


def test_import_registers_nothing() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _REGISTRY_CHECK, "control"],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = dict(line.split(":", 1) for line in out.stdout.strip().splitlines())
    assert lines["after import"].strip() == "[]"
    # the check sees a class-level listener, so it can fail
    assert "before_execute" in lines["control"]


def test_no_pickle_in_package() -> None:
    for path in (ROOT / "sa_djblob").rglob("*.py"):
        text = path.read_text()
        assert "import pickle" not in text and "allow_pickle=True" not in text, path


def test_public_classes_are_named_by_their_public_path() -> None:
    assert djb.UnsupportedDialectError in djb.SaDjblobError.__subclasses__()
    for name in djb.__all__:
        obj = getattr(djb, name)
        if isinstance(obj, type):
            assert obj.__module__ == "sa_djblob", name
    assert repr(djb.SweepReport).startswith("<class 'sa_djblob.SweepReport'")


def _modules() -> list[str]:
    import pkgutil

    return sorted(m.name for m in pkgutil.walk_packages(djb.__path__, "sa_djblob."))


@pytest.mark.slow
@pytest.mark.parametrize("module", _modules())
def test_every_module_imports_on_its_own(module: str) -> None:
    """Each module imports first in a fresh interpreter: an import cycle hidden by import
    order, or by imports inside functions, shows up here."""
    done = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
