"""What users get is the built package: build the wheel and the sdist, install each into a
fresh virtualenv outside the checkout (not editable), and use it from there."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import venv
import zipfile
from pathlib import Path

import pytest

import sa_djblob as djb

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow

# Run by the installed interpreter, from a folder outside the checkout.
_ROUND_TRIP = """
import sys
from pathlib import Path

import numpy as np
import sqlalchemy as sa

import sa_djblob as djb

assert "/sa_djblob/" not in sys.argv[1]
assert Path(djb.__file__).resolve().is_relative_to(Path(sys.prefix).resolve()), djb.__file__
here = Path(sys.argv[1])
djb.config["stores"] = {"local": {"protocol": "file", "location": str(here / "store")}}
djb.config["download_path"] = str(here / "downloads")
md = sa.MetaData()
t = sa.Table(
    "t", md,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("b", djb.Blob(store="local")),
    sa.Column("a", djb.Attach(store="local")),
)
engine = sa.create_engine(f"sqlite:///{here / 'db.sqlite'}")
djb.install(engine)
md.create_all(engine)
src = here / "notes.txt"
src.write_bytes(b"hello from the wheel")
value = np.arange(12.0).reshape(3, 4)
with engine.begin() as conn:
    conn.execute(t.insert(), [{"id": 1, "b": value, "a": src}])
with engine.connect() as conn:
    b, a = conn.execute(sa.select(t.c.b, t.c.a)).one()
assert np.array_equal(b, value) and b.dtype == value.dtype
assert a.read_bytes() == b"hello from the wheel" and a.name == "notes.txt"
assert djb.externals(engine)["local"].verify(progress=False).ok
print("round trip ok", djb.__version__)
"""


def _tracked_modules() -> set[str]:
    out = subprocess.run(
        ["git", "ls-files", "sa_djblob"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    if not out:
        pytest.skip("not a git checkout: cannot list the tracked modules")
    return {name for name in out if name.endswith((".py", ".typed"))}


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    return out


def _install(target: Path, tmp: Path) -> Path:
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            f"{target}[cli]",
        ],
        check=True,
        cwd=tmp,
        env=_clean_env(),  # (a PYTHONPATH naming the checkout would make pip skip the install)
    )
    return python


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


def test_wheel_holds_every_tracked_module(dist: Path) -> None:
    (wheel,) = dist.glob("sa_djblob-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = _tracked_modules() - names
    assert not missing, f"the wheel lacks {sorted(missing)}"
    assert any(n.endswith("licenses/LICENSE") for n in names)


def test_sdist_holds_every_tracked_module(dist: Path) -> None:
    (sdist,) = dist.glob("sa_djblob-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    missing = _tracked_modules() - names
    assert not missing, f"the sdist lacks {sorted(missing)}"


@pytest.mark.parametrize("kind", ["whl", "tar.gz"])
def test_installed_package_imports_and_round_trips(dist: Path, kind: str, tmp_path: Path) -> None:
    (target,) = dist.glob(f"sa_djblob-*.{kind}")
    python = _install(target, tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    done = subprocess.run(
        [str(python), "-c", _ROUND_TRIP, str(run)],
        cwd=run,
        env=_clean_env(),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"round trip ok {djb.__version__}"
    cli = subprocess.run(
        [str(python.parent / "sa-djblob"), "--version"],
        cwd=run,
        env=_clean_env(),
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout.strip() == f"sa-djblob, version {djb.__version__}"
