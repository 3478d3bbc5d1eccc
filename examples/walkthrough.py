"""Blobs and attachments, in and out of the database: a walkthrough of sa_djblob.

DataJoint's tutorial on blobs, attachments and external storage, redone with plain
SQLAlchemy 2 and sa_djblob. It

1. configures two external stores: ``local`` (a folder) and ``shared`` (S3, at the endpoint
   in ``SA_DJBLOB_S3_ENDPOINT`` / ``_ACCESS_KEY`` / ``_SECRET_KEY`` / ``_BUCKET``, or, when
   none is given, a moto S3 server started on loopback for the demo and stopped at the end);
2. inserts rows into ``test`` (blobs b0..b2 and attachments a0..a2: in the row, in S3,
   in the folder), fetches them back and compares;
3. lists the externals (paths, used, unused), deletes rows and sweeps the stores;
4. runs a small image pipeline: ``image`` (a lookup), ``image_file`` (each image as a PNG
   attachment in S3), ``extracted`` (each image decoded into a blob in the folder store),
   and saves a figure of the extracted images;
5. measures fetch time from S3 with and without ``djb.config["cache"]``;
6. deletes down the dependency graph (what DataJoint calls a cascade) and cleans up.

Run it with ``make demo`` or ``python examples/walkthrough.py [--url URL] [--output DIR]``.
It uses SQLite (a file in the output folder, recreated each run) unless a database URL is
given with ``--url`` or ``SA_DJBLOB_URL``; on a server database it drops and recreates its
tables. Everything it writes goes to the output folder (default ``examples/output/``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

sys.path.insert(0, str(Path(__file__).resolve().parent))
from models import Base, Extracted, Image, ImageFile, Test

import sa_djblob as djb

HERE = Path(__file__).resolve().parent


def say(text: str = "") -> None:
    print(text, flush=True)


def step(title: str) -> None:
    say()
    say(f"== {title}")


# -- the S3 store ------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def s3_endpoint() -> Iterator[dict[str, Any]]:
    """The S3 settings of the ``shared`` store: from the environment, or a moto server."""
    endpoint = os.environ.get("SA_DJBLOB_S3_ENDPOINT")
    if endpoint:
        say(f"S3: using the endpoint {endpoint} from SA_DJBLOB_S3_ENDPOINT")
        yield dict(
            endpoint=endpoint.split("://")[-1],
            secure=endpoint.startswith("https://"),
            access_key=os.environ.get("SA_DJBLOB_S3_ACCESS_KEY", ""),
            secret_key=os.environ.get("SA_DJBLOB_S3_SECRET_KEY", ""),
            bucket=os.environ.get("SA_DJBLOB_S3_BUCKET", "sa-djblob-walkthrough"),
            create_bucket=False,
        )
        return
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the moto S3 server did not start") from None
                time.sleep(0.1)
        say(f"S3: no SA_DJBLOB_S3_ENDPOINT given; started a moto S3 server on 127.0.0.1:{port}")
        yield dict(
            endpoint=f"127.0.0.1:{port}",
            secure=False,
            access_key="walkthrough",
            secret_key="walkthrough-secret",
            bucket="sa-djblob-walkthrough",
            create_bucket=True,
        )
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        say("S3: the moto server is stopped")


def make_bucket(s3: dict[str, Any]) -> None:
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=f"{'https' if s3['secure'] else 'http'}://{s3['endpoint']}",
        aws_access_key_id=s3["access_key"],
        aws_secret_access_key=s3["secret_key"],
        region_name="us-east-1",
    )
    client.create_bucket(Bucket=s3["bucket"])


# -- helpers -------------------------------------------------------------------------


def count_files(folder: Path) -> int:
    """Payload files in a store folder (not the sweep's owner marker)."""
    if not folder.exists():
        return 0
    return sum(1 for p in folder.rglob("*") if p.is_file() and ".sa_djblob-owner" not in p.parts)


def describe_externals(engine: sa.Engine) -> None:
    for name, ext in djb.externals(engine).items():
        paths = ext.paths()
        say(
            f"  {ext.name}: {len(paths)} objects, {len(ext.used())} used,"
            f" {len(ext.unused())} unused"
        )
        for key, path in paths[:2]:
            say(f"    {str(key)[:8]}...  {path}")
        if len(paths) > 2:
            say(f"    ... and {len(paths) - 2} more in store {name!r}")


def sweep_all(engine: sa.Engine, **kw: Any) -> None:
    for name, ext in djb.externals(engine).items():
        rep = ext.sweep(progress=False, **kw)
        verb = "would remove" if rep.dry_run else "removed"
        say(
            f"  sweep of {name!r}: {verb} {rep.rows_deleted} entries and"
            f" {rep.payloads_deleted} payloads ({rep.bytes_freed} bytes)"
        )
        if rep.errors:
            raise SystemExit(f"sweep of {name!r} failed: {rep.errors}")


def delete_cascade(session: Session, table: sa.Table, where: sa.ColumnElement[bool]) -> None:
    """Delete the rows of *table* matched by *where* and every row that depends on them.

    DataJoint's ``delete()`` walks the dependency graph; here the foreign keys of the
    metadata give the same graph: collect the dependent keys first, then delete from the
    leaves up.
    """
    plan: list[tuple[sa.Table, sa.ColumnElement[bool]]] = [(table, where)]
    frontier = [(table, where)]
    while frontier:
        parent, cond = frontier.pop()
        for child in Base.metadata.sorted_tables:
            for fk in child.foreign_keys:
                if fk.column.table is parent and not child.name.startswith("~"):
                    sub = sa.select(fk.column).where(cond).scalar_subquery()
                    child_cond = fk.parent.in_(sub)
                    keys = sa.select(*child.primary_key.columns).where(child_cond)
                    pk = list(child.primary_key.columns)
                    rows = session.execute(keys).all()
                    if not rows:
                        continue
                    if len(pk) == 1:
                        c = pk[0].in_([r[0] for r in rows])
                    else:
                        c = sa.tuple_(*pk).in_(rows)
                    plan.append((child, c))
                    frontier.append((child, c))
    for t, cond in reversed(plan):
        n = session.execute(sa.delete(t).where(cond)).rowcount
        say(f"  deleted {n} row(s) from {t.name}")


def make_images(folder: Path) -> dict[str, Path]:
    """Four small grayscale pictures, computed with numpy and written as PNG files."""
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[-1:1:96j, -1:1:128j]
    r = np.hypot(xx, yy)
    pictures = {
        "gaussian": np.exp(-(xx**2 + yy**2) / 0.2),
        "rings": 0.5 + 0.5 * np.cos(18 * r),
        "stripes": 0.5 + 0.5 * np.sin(12 * (xx + 0.5 * yy)),
        "checkers": ((np.floor(4 * (xx + 1)) + np.floor(3 * (yy + 1))) % 2).astype(float),
    }
    files = {}
    for name, pic in pictures.items():
        path = folder / f"{name}.png"
        plt.imsave(path, pic, cmap="gray", vmin=0.0, vmax=1.0)
        files[name] = path
    return files


def timed_fetch(engine: sa.Engine, repeats: int) -> float:
    """Seconds per fetch of every S3 value of ``test`` and ``image_file`` (fresh session)."""
    start = time.perf_counter()
    for _ in range(repeats):
        with Session(engine) as session:
            list(session.scalars(sa.select(Test.b1)))
            list(session.scalars(sa.select(Test.a1)))
            list(session.scalars(sa.select(ImageFile.file)))
    return (time.perf_counter() - start) / repeats


# -- the walkthrough ----------------------------------------------------------------


def run(url: str | None, out: Path, s3: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for sub in ("local-store", "downloads", "cache", "inputs", "images"):
        shutil.rmtree(out / sub, ignore_errors=True)
    if url is None:
        db_file = out / "walkthrough.sqlite"
        db_file.unlink(missing_ok=True)
        url = f"sqlite:///{db_file}"
    say(f"database: {make_url(url).render_as_string(hide_password=True)}")

    if s3.pop("create_bucket"):
        make_bucket(s3)
    location = "walkthrough-" + uuid.uuid4().hex[:8]
    djb.config["stores"] = {
        "shared": dict(protocol="s3", location=location, **s3),
        "local": dict(protocol="file", location=str(out / "local-store")),
    }
    djb.config["download_path"] = str(out / "downloads")
    djb.config["cache"] = None
    say(f"stores: 'shared' = S3 bucket {s3['bucket']!r} under {location!r},")
    say(f"        'local'  = the folder {out / 'local-store'}")

    engine = sa.create_engine(url)
    djb.install(engine)
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    say("tables: " + ", ".join(t.name for t in Base.metadata.sorted_tables))
    try:
        walk(engine, out)
    finally:
        djb.uninstall(engine)
        engine.dispose()


def walk(engine: sa.Engine, out: Path) -> None:
    local_store = out / "local-store"
    rng = np.random.default_rng(2024)

    step("1. Insert rows with blobs and attachments")
    inputs = out / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    arrays = {}
    with Session(engine) as session:
        for i in range(1, 4):
            arr = rng.standard_normal((200, 200 + 10 * i))
            arrays[i] = arr
            f = inputs / f"outfile{i}.npy"
            np.save(f, arr, allow_pickle=False)
            # b0/a0 in the row, b1/a1 in S3 ('shared'), b2/a2 in the folder ('local')
            session.add(Test(id=i, b0=arr, b1=arr, b2=arr, a0=f, a1=f, a2=f))
        session.commit()
    say("inserted 3 rows into test: each holds one array three times (b0, b1, b2)")
    say("and the same .npy file three times (a0, a1, a2)")

    step("2. Fetch and compare")
    with Session(engine) as session:
        for row in session.scalars(sa.select(Test).order_by(Test.id)):
            same = all(np.array_equal(arrays[row.id], b) for b in (row.b0, row.b1, row.b2))
            files = [row.a0, row.a1, row.a2]
            same_files = all(
                np.array_equal(np.load(p, allow_pickle=False), arrays[row.id]) for p in files
            )
            if not (same and same_files):
                raise SystemExit(f"row {row.id}: fetched values differ from the inserted ones")
            say(
                f"  row {row.id}: b0 == b1 == b2 == inserted array {arrays[row.id].shape};"
                f" attachments restored as {files[0].name} in {files[0].parent}"
            )
    say("every fetched blob equals the inserted array, every attachment the inserted file")

    step("3. The externals: where the objects are, which are used")
    describe_externals(engine)
    say(f"  the local store folder holds {count_files(local_store)} files")

    step("4. Deleting rows leaves unused objects; a sweep removes them")
    with Session(engine) as session:
        session.execute(sa.delete(Test).where(Test.id == 2))
        session.commit()
    say("deleted row 2 of test")
    describe_externals(engine)
    say("a dry run says what a sweep would do, and changes nothing:")
    sweep_all(engine, dry_run=True)
    say("the real sweep:")
    sweep_all(engine, grace=timedelta(hours=1))
    describe_externals(engine)
    say(f"  the local store folder now holds {count_files(local_store)} files")

    step("5. An image pipeline: image -> image_file (PNG in S3) -> extracted (blob in folder)")
    files = make_images(out / "images")
    with Session(engine) as session:
        for i, (name, path) in enumerate(sorted(files.items())):
            session.add(Image(id=i, name=name))
            session.add(ImageFile(image_id=i, file=path))
        session.commit()
    say(f"inserted {len(files)} images and their PNG files: {', '.join(sorted(files))}")
    with Session(engine) as session:
        todo = session.scalars(
            sa.select(ImageFile).where(~sa.exists().where(Extracted.image_id == ImageFile.image_id))
        ).all()
        for image_file in todo:
            pixels = mpimg.imread(image_file.file)  # RGBA floats from the fetched PNG
            gray = pixels[..., :3].mean(axis=-1).astype(np.float32)
            session.add(Extracted(image_id=image_file.image_id, features=gray))
        session.commit()
    say(f"extracted {len(todo)} images into float32 arrays in the local store")
    with Session(engine) as session:
        rows = session.execute(
            sa.select(Image.name, Extracted.features)
            .join(Extracted, Extracted.image_id == Image.id)
            .order_by(Image.id)
        ).all()
    fig, axes = plt.subplots(1, len(rows), figsize=(3 * len(rows), 3.0), layout="constrained")
    for ax, (name, features) in zip(np.atleast_1d(axes), rows, strict=True):
        ax.imshow(features, cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"{name} {features.shape[1]}x{features.shape[0]}")
        ax.axis("off")
    fig.suptitle("extracted: images fetched back from the local store")
    figure = out / "extracted.png"
    fig.savefig(figure, dpi=80)
    plt.close(fig)
    say(f"saved the figure {figure}")
    describe_externals(engine)

    step("6. The cache of remote payloads")
    repeats = 5
    timed_fetch(engine, 1)  # warm up connections
    without = timed_fetch(engine, repeats)
    cache = out / "cache"
    djb.config["cache"] = str(cache)
    timed_fetch(engine, 1)  # fills the cache
    with_cache = timed_fetch(engine, repeats)
    djb.config["cache"] = None
    say(
        f"fetching every S3 value of test and image_file takes {1000 * without:.1f} ms"
        f" from S3 and {1000 * with_cache:.1f} ms from the cache"
        f" ({without / max(with_cache, 1e-9):.1f}x faster); the cache holds"
        f" {count_files(cache)} verified copies in {cache}"
    )

    step("7. Cascading deletes: deleting an image deletes what depends on it")
    with Session(engine) as session:
        delete_cascade(session, Image.__table__, Image.name == "rings")  # type: ignore[arg-type]
        session.commit()
    describe_externals(engine)
    sweep_all(engine)

    step("8. Clean up: delete every row, sweep, verify")
    with Session(engine) as session:
        delete_cascade(session, Image.__table__, sa.true())  # type: ignore[arg-type]
        n = session.execute(sa.delete(Test)).rowcount
        say(f"  deleted {n} row(s) from test")
        session.commit()
    sweep_all(engine)
    for name, ext in djb.externals(engine).items():
        rep = ext.verify(progress=False)
        left = len(ext.paths())
        say(f"  store {name!r}: {left} objects left, verify ok: {rep.ok}")
        if left or not rep.ok:
            raise SystemExit(f"store {name!r} is not clean after the sweep")
    say(f"  the local store folder holds {count_files(local_store)} files")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--url",
        default=os.environ.get("SA_DJBLOB_URL") or None,
        help="database URL (default: $SA_DJBLOB_URL, else SQLite in the output folder)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=Path(os.environ.get("SA_DJBLOB_OUTPUT", HERE / "output")),
        help="folder for the database file, the stores, downloads and the figure",
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    with s3_endpoint() as s3:
        run(args.url, args.output.resolve(), s3)
    say()
    say(f"done in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
