"""The real DataJoint for the interop tests: a virtualenv per pinned version, and its scripts.

``datajoint_python`` creates the virtualenv on first use, installs the requirement and
keeps it (``.venv-dj`` for 0.14, ``.venv-dj2`` for 2.3.5 at the repository root, or the
folders named by ``SA_DJBLOB_DJ_VENV`` / ``SA_DJBLOB_DJ2_VENV``); the session fixtures
``dj_python`` / ``dj2_python`` in ``tests/conftest.py`` call it. ``run_side`` runs one of
the DataJoint-side scripts of this folder with that interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess
import venv
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from sqlalchemy.engine import URL

HELPERS = Path(__file__).resolve().parent
ROOT = HELPERS.parent.parent
DJ_VENV = Path(os.environ.get("SA_DJBLOB_DJ_VENV", ROOT / ".venv-dj"))
DJ_REQUIREMENT = "datajoint>=0.14,<0.15"
DJ2_VENV = Path(os.environ.get("SA_DJBLOB_DJ2_VENV", ROOT / ".venv-dj2"))
DJ2_REQUIREMENT = "datajoint[postgres]==2.3.5"


class DataJointUnavailable(Exception):
    """The virtualenv cannot be made, or does not hold the required DataJoint."""


def _version(python: Path) -> str | None:
    if not python.exists():
        return None
    r = subprocess.run(
        [str(python), "-W", "ignore", "-c", "import datajoint; print(datajoint.__version__)"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return r.stdout.strip() if r.returncode == 0 else None


def datajoint_python(venv_dir: Path, requirement: str) -> Path:
    """The interpreter of ``venv_dir`` with DataJoint as ``requirement`` pins it.

    The virtualenv is created and the requirement installed only when ``venv_dir`` does
    not hold a matching DataJoint yet; raises ``DataJointUnavailable`` saying why not.
    """
    python = venv_dir / "bin" / "python"
    specifier = Requirement(requirement).specifier
    version = _version(python)
    if version is None:
        try:
            if not python.exists():
                venv.EnvBuilder(with_pip=True, clear=True).create(venv_dir)
            r = subprocess.run(
                [str(python), "-m", "pip", "install", "-q", requirement],
                capture_output=True,
                text=True,
                timeout=900,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise DataJointUnavailable(
                f"cannot create the DataJoint virtualenv {venv_dir}: {exc}"
            ) from exc
        if r.returncode != 0:
            tail = (r.stderr or r.stdout).strip().splitlines()[-5:]
            raise DataJointUnavailable(f"pip install {requirement!r} failed: {' | '.join(tail)}")
        version = _version(python)
    if version is None or not specifier.contains(version, prereleases=True):
        raise DataJointUnavailable(
            f"{requirement!r} is not importable in {venv_dir} (found {version!r})"
        )
    return python


def side_config(url: URL, backend: str, schema: str, tmp_path: Path) -> dict[str, Any]:
    """A DataJoint side's CONFIG.json: the test database, its schema (``schema``, and
    ``database`` as DataJoint 0.14 names it), and two new folders under ``tmp_path``: the
    file store (``store``) and the files exchanged with the test (``io``)."""
    store = tmp_path / "store"
    store.mkdir()
    io = tmp_path / "io"
    io.mkdir()
    mysql = backend == "mysql"
    return {
        "backend": backend,
        "host": url.host or "127.0.0.1",
        "port": url.port or (3306 if mysql else 5432),
        "user": url.username or ("root" if mysql else "postgres"),
        "password": url.password or "",
        "dbname": url.database,
        "database": schema,
        "schema": schema,
        "store": str(store),
        "io": str(io),
    }


def run_side(
    python: Path, script: str, command: str, cfg: dict[str, Any], io: Path
) -> dict[str, Any]:
    """Run ``helpers/<script> <command> CONFIG.json`` in ``io``; its ``<command>-result.json``.

    The configuration (credentials included) travels in a file, never on the command line.
    """
    cfg_file = io / f"{command}-config.json"
    cfg_file.write_text(json.dumps(cfg))
    r = subprocess.run(
        [str(python), "-W", "ignore", str(HELPERS / script), command, str(cfg_file)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=io,
    )
    assert r.returncode == 0, f"DataJoint side {script} '{command}' failed:\n{r.stderr[-4000:]}"
    result: dict[str, Any] = json.loads((io / f"{command}-result.json").read_text())
    return result
