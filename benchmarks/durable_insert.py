"""Durable inserts (group commit) and reading them back, next to DataJoint 0.14 and the floor.

    python benchmarks/durable_insert.py [--repeat N] [--folder DIR] [--no-datajoint]

All in one run, on MariaDB (SA_DJBLOB_BENCH_MYSQL_URL, default the loopback server; scratch
databases are created and dropped), 1,000 rows of ~1 KB float64 arrays (120 values) in
``Blob(store="local")``, a file store in a fresh temp folder below ``--folder``:

* sa_djblob: the rows inserted in one commit with ``fsync`` on (the default: the
  statement's payloads are made durable together before it is sent, by two syncfs(2)
  calls on ext4/xfs/btrfs, else by concurrent fsyncs) and off, and the
  1,000 values read back (``select``, the values unpacked);
* DataJoint 0.14, the same rows inserted in one transaction (``insert`` inside
  ``conn.transaction``) and fetched back (``fetch("v")``), in the virtualenv the interop
  tests use (``.venv-dj``, or SA_DJBLOB_DJ_VENV; made with pip if missing). DataJoint
  never fsyncs;
* the raw floor of the files alone: 1,000 files written (temporary file, rename into
  ``ab/cd/`` subfolders), without fsync, made durable together (their fsyncs and their
  folders' issued from 16 threads; or two syncfs calls), and one by one.

Each figure is the best of ``--repeat`` (default 3), the sa_djblob and DataJoint runs
interleaved so that both see the same disk load. Every run writes into a folder of its
own and nothing is deleted until the end: ext4's inode allocator skips inodes freed in
the last 30 seconds or so, scanning past them one by one (``recently_deleted`` in the
kernel's profile), so creating 1,000 files right after deleting thousands took 1-2 s of
system time here instead of 0.1 s, for whichever side came after a cleanup.

Targets: fsync on within 1.5x of fsync off; the insert >= 4x faster than DataJoint's;
the read >= 2x faster than DataJoint's.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _servers import mysql_database
from helpers.dj_venv import DJ_REQUIREMENT, DJ_VENV, DataJointUnavailable, datajoint_python

import sa_djblob as djb

HERE = Path(__file__).resolve().parent
ROWS = 1000
SIZE = 120  # float64 values: 960 bytes + header, ~1 KB


def values() -> list[Any]:
    rng = np.random.default_rng(7)
    return [rng.random(SIZE) for _ in range(ROWS)]


# -- sa_djblob ------------------------------------------------------------------------


def fresh(folder: Path, name: str) -> Path:
    """A new folder below *folder* (kept until the run ends: see the module docstring)."""
    return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=folder))


def sa_djblob_once(url: str, rows: list[dict[str, Any]], fsync: bool, folder: Path) -> list[float]:
    """[insert seconds, read seconds] for one fresh table and store folder."""
    store = fresh(folder, f"store-{'on' if fsync else 'off'}")
    djb.config["stores"] = {"local": {"protocol": "file", "location": str(store), "fsync": fsync}}
    engine = sa.create_engine(url)
    djb.install(engine)
    md = sa.MetaData()
    table = sa.Table(
        "bench_durable",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("v", djb.Blob(store="local")),
    )
    md.drop_all(engine)
    md.create_all(engine)
    try:
        t0 = time.perf_counter()
        with engine.begin() as conn:
            conn.execute(sa.insert(table), rows)
        t_insert = time.perf_counter() - t0
        t0 = time.perf_counter()
        with engine.connect() as conn:
            got = conn.execute(sa.select(table.c.id, table.c.v)).all()
        t_read = time.perf_counter() - t0
        assert len(got) == len(rows)
        return [t_insert, t_read]
    finally:
        md.drop_all(engine)
        djb.uninstall(engine)
        engine.dispose()


# -- DataJoint 0.14 -------------------------------------------------------------------


def dj_python() -> Path | None:
    """The DataJoint 0.14 interpreter: the interop tests' virtualenv (made once)."""
    print(f"DataJoint 0.14 from {DJ_VENV} ...", flush=True)
    try:
        return datajoint_python(DJ_VENV, DJ_REQUIREMENT)
    except DataJointUnavailable as exc:
        print(f"no DataJoint 0.14 ({exc}): its columns are left out")
        return None


def datajoint_once(python: Path, url: str, folder: Path) -> dict[str, Any]:
    """DataJoint's insert and fetch times (one run, its own scratch schema)."""
    u = sa.make_url(url)
    cfg = {
        "host": u.host or "127.0.0.1",
        "port": u.port or 3306,
        "user": u.username or "root",
        "password": u.password or "",
        "database": "djb_bench_dj_" + uuid.uuid4().hex[:8],
        "store": str(fresh(folder, "dj-store")),
        "rows": ROWS,
        "size": SIZE,
        "repeat": 1,
    }
    cfg_file = folder / "dj-config.json"
    cfg_file.write_text(json.dumps(cfg))
    try:
        proc = subprocess.run(
            [str(python), str(HERE / "_dj_durable_insert.py"), str(cfg_file)],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    finally:
        cfg_file.unlink()
    if proc.returncode != 0:
        raise RuntimeError(f"the DataJoint side failed:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


# -- the floor ------------------------------------------------------------------------


def _sync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _syncfs(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        if ctypes.CDLL(None, use_errno=True).syncfs(fd) != 0:
            raise OSError(ctypes.get_errno(), "syncfs failed", path)
    finally:
        os.close(fd)


HAVE_SYNCFS = sys.platform.startswith("linux")


def floor_once(folder: Path, payloads: list[bytes], how: str) -> float:
    """1,000 files written and renamed into ``ab/cd/`` folders; *how*: "none" (no
    fsync), "together" (fsyncs from 16 threads), "syncfs" (one syncfs(2) for the data,
    one for the renames; Linux) or "one by one" (as without group commit)."""
    root = fresh(folder, "floor") / "schema"
    t0 = time.perf_counter()
    moves: list[tuple[Path, Path]] = []
    for data in payloads:
        h = uuid.uuid4().hex
        dest = root / h[:2] / h[2:4] / h
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{h}.tmp")
        with open(tmp, "xb") as f:
            f.write(data)
            if how == "one by one":
                f.flush()
                os.fsync(f.fileno())
        if how == "one by one":
            os.replace(tmp, dest)
            for d in (dest.parent, dest.parent.parent):
                _sync_path(str(d))
        else:
            moves.append((tmp, dest))
    if how == "together":
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(_sync_path, [str(tmp) for tmp, _ in moves]))
            for tmp, dest in moves:
                os.replace(tmp, dest)
            folders = {str(d.parent) for _, d in moves} | {str(d.parent.parent) for _, d in moves}
            list(pool.map(_sync_path, sorted(folders)))
    elif how == "syncfs":
        _syncfs(str(root))
        for tmp, dest in moves:
            os.replace(tmp, dest)
        _syncfs(str(root))
    elif how == "none":
        for tmp, dest in moves:
            os.replace(tmp, dest)
    return time.perf_counter() - t0


# -- the report -----------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (best kept)")
    parser.add_argument("--folder", default=None, help="where the store folders go")
    parser.add_argument("--no-datajoint", action="store_true", help="leave DataJoint out")
    args = parser.parse_args()
    python = None if args.no_datajoint else dj_python()
    vals = values()
    rows = [{"id": i, "v": v} for i, v in enumerate(vals)]
    payloads = [djb.pack(v) for v in vals]
    best: dict[str, float] = {}

    def keep(name: str, seconds: float) -> None:
        best[name] = min(best.get(name, seconds), seconds)

    with tempfile.TemporaryDirectory(dir=args.folder) as tmp, mysql_database() as url:
        folder = Path(tmp)
        print(
            f"sa_djblob {djb.__version__}, MariaDB, {ROWS:,} x ~1 KB Blob(store='local') in"
            f" one commit, store folder {folder}, best of {args.repeat}",
            flush=True,
        )
        for _ in range(args.repeat):
            for fsync in (True, False):
                t_insert, t_read = sa_djblob_once(url, rows, fsync, folder)
                keep(f"insert {'on' if fsync else 'off'}", t_insert)
                keep("read", t_read)
            if python is not None:
                dj = datajoint_once(python, url, folder)
                keep("dj insert", dj["insert"][0])
                keep("dj read", dj["fetch"][0])
            for how in ("none", "together", "one by one") + (("syncfs",) if HAVE_SYNCFS else ()):
                keep(f"floor {how}", floor_once(folder, payloads, how))
    on, off, read = best["insert on"], best["insert off"], best["read"]
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    print(f"  {'work':<44} {'seconds':>8}   comparison (load average {load})")
    print(f"  {'raw floor: 1,000 files, no fsync':<44} {best['floor none']:8.3f}")
    together, serial = best["floor together"], best["floor one by one"]
    print(
        f"  {'raw floor: made durable together':<44} {together:8.3f}"
        f"   {serial / together:.1f}x faster than one by one ({serial:.3f} s)"
    )
    if "floor syncfs" in best:
        by_syncfs = best["floor syncfs"]
        print(
            f"  {'raw floor: made durable by two syncfs':<44} {by_syncfs:8.3f}"
            f"   {serial / by_syncfs:.1f}x faster than one by one"
        )
    print(f"  {'insert, fsync off':<44} {off:8.3f}")
    print(
        f"  {'insert, fsync on (group commit)':<44} {on:8.3f}   {on / off:.2f}x fsync off"
        f" (target <= 1.5x: {verdict(on / off <= 1.5)})"
    )
    if "dj insert" in best:
        dj_ins = best["dj insert"]
        print(
            f"  {'DataJoint 0.14 insert (never fsyncs)':<44} {dj_ins:8.3f}"
            f"   {dj_ins / on:.1f}x sa_djblob's with fsync on"
            f" (target >= 4x: {verdict(dj_ins / on >= 4)})"
        )
    print(f"  {'read back 1,000 values':<44} {read:8.3f}")
    if "dj read" in best:
        dj_read = best["dj read"]
        print(
            f"  {'DataJoint 0.14 fetch':<44} {dj_read:8.3f}"
            f"   {dj_read / read:.1f}x sa_djblob's"
            f" (target >= 2x: {verdict(dj_read / read >= 2)})"
        )


if __name__ == "__main__":
    main()
