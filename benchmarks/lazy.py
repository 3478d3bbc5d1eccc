"""Lazy references on S3: what ``ref.shape`` and slices transfer and take, next to baselines.

    python benchmarks/lazy.py [--rows N] [--delay-ms 20] [--repeat 3]

One ``Blob(store="s3", compress=False)`` value, a float64 array of shape (N, 8) (default
N = 4,194,304: 256 MiB), is inserted through SQLite into a moto S3 server on loopback
behind ``shared/tools/latency_proxy.py`` (20 ms per request, as a remote S3 adds). Then,
each case on a fresh reference from ``select(djb.lazy(Recording.trace))`` (best of
``--repeat`` runs):

- ``ref.shape``; ``ref[1000:2000]`` (1,000 rows: 64,000 bytes); ``ref[:, 3]`` (a column:
  N x 8 bytes); ``ref.load()`` (the whole value, verified);
- baselines: one raw boto3 ranged GET of 64,000 bytes through the same proxy; the full
  fetch of the same value by a plain ``select(Recording.trace)``; ``np.load`` of the
  array saved as ``.npy`` on the local disk (and ``np.load(mmap_mode="r")[1000:2000]``).

"transferred" counts the bodies of the GET responses (boto3's ``after-call`` event) and
the requests (each adds some 500 bytes of HTTP headers). Targets (issue 17): ``ref.shape``
under 64 KiB; each slice under twice its own size + 64 KiB and under 5 % of the time of
a full ``ref.load()`` in the same run.

moto copies an object's whole value out of its buffer for every GET, ranged or not (about
0.17 s for a 256 MiB object): a figure for slices against stock moto measures moto. The
server here is moto with ``FakeKey.value`` kept once in memory (see
``shared/notes/measuring-range-reads.md``), as S3 and MinIO charge only the range.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _servers import PROXY, free_port, s3_client, s3_spec, stop, wait_port

import sa_djblob as djb

MIB = 1 << 20

_MOTO_KEEPING_VALUES = """
import sys
import moto.s3.models as m
from moto.server import main

plain = m.FakeKey.value

def get(self):
    v = self.__dict__.get("_bench_value")
    if v is None:
        v = self.__dict__["_bench_value"] = plain.fget(self)
    return v

def set_(self, value):
    self.__dict__.pop("_bench_value", None)
    plain.fset(self, value)

m.FakeKey.value = property(get, set_)
main(sys.argv[1:])
"""


@contextlib.contextmanager
def moto_keeping_values() -> Iterator[str]:
    """A moto server whose objects' bytes are read out of their buffer once."""
    port = free_port()
    argv = [sys.executable, "-c", _MOTO_KEEPING_VALUES, "-H", "127.0.0.1", "-p", str(port)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, proc, "moto server")
        yield f"127.0.0.1:{port}"
    finally:
        stop(proc)


def _proxy_script() -> Path:
    """``shared/tools/latency_proxy.py`` beside the checkout (or a worktree of it)."""
    for folder in Path(__file__).resolve().parents:
        found = folder / "shared" / "tools" / "latency_proxy.py"
        if found.is_file():
            return found
    return PROXY


@contextlib.contextmanager
def latency_proxy(target: str, delay_ms: int) -> Iterator[str]:
    port = free_port()
    argv = [sys.executable, str(_proxy_script()), str(port), target.rsplit(":", 1)[1]]
    proc = subprocess.Popen([*argv, str(delay_ms)], stdout=subprocess.DEVNULL)
    try:
        wait_port(port, proc, "latency proxy")
        yield f"127.0.0.1:{port}"
    finally:
        stop(proc)


class Base(DeclarativeBase):
    pass


class Recording(Base):
    __tablename__ = "recording"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    trace: Mapped[Any] = mapped_column(djb.Blob(store="s3", compress=False))


class Meter:
    """Counts the GET requests of boto3 clients and the bytes of their bodies."""

    def __init__(self) -> None:
        self.requests = 0
        self.bytes = 0

    def hook(self, client: Any) -> None:
        client.meta.events.register("after-call.s3.GetObject", self._count)

    def _count(self, parsed: Any, **_: Any) -> None:
        self.requests += 1
        self.bytes += int(parsed.get("ContentLength", 0))

    @contextlib.contextmanager
    def measure(self) -> Iterator[dict[str, float]]:
        out: dict[str, float] = {}
        r0, b0, t0 = self.requests, self.bytes, time.perf_counter()
        yield out
        out.update(
            seconds=time.perf_counter() - t0,
            requests=self.requests - r0,
            bytes=self.bytes - b0,
        )


def best(repeat: int, meter: Meter, fn: Callable[[], Any]) -> dict[str, float]:
    runs = []
    for _ in range(repeat):
        with meter.measure() as m:
            fn()
        runs.append(m)
    return min(runs, key=lambda m: m["seconds"])


def row(name: str, m: dict[str, float], own: int | None = None) -> str:
    size = f"{m['bytes'] / 1024:10.1f} KiB" if "bytes" in m else " " * 14
    reqs = f"{int(m['requests']):4d} GET" if "requests" in m else " " * 8
    mine = f"  (own size {own / 1024:.1f} KiB)" if own is not None else ""
    return f"  {name:<38} {m['seconds'] * 1000:9.1f} ms {size} {reqs}{mine}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=4_194_304)
    ap.add_argument("--delay-ms", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    n = args.rows
    value = np.arange(n * 8, dtype="<f8").reshape(n, 8)
    print(f"array: float64 {value.shape}, {value.nbytes / MIB:.0f} MiB; S3 (moto) behind a"
          f" {args.delay_ms} ms latency proxy; best of {args.repeat}")  # fmt: skip
    meter = Meter()
    with (
        moto_keeping_values() as direct,
        latency_proxy(direct, args.delay_ms) as endpoint,
        tempfile.TemporaryDirectory() as tmp,
    ):
        s3_client(direct).create_bucket(Bucket="lazy")
        djb.config["stores"] = {"s3": s3_spec(endpoint, "lazy")}
        djb.config["cache"] = None
        store = djb.get_store("s3")
        meter.hook(store.client)
        engine = sa.create_engine(f"sqlite:///{tmp}/lazy.db")
        Base.metadata.create_all(engine)
        djb.install(engine)
        t0 = time.perf_counter()
        with Session(engine) as s:
            s.add(Recording(id=1, trace=value))
            s.commit()
        print(f"  (insert: {time.perf_counter() - t0:.1f} s)")

        def ref() -> djb.LazyBlob:
            with engine.connect() as conn:
                got: djb.LazyBlob = conn.execute(sa.select(djb.lazy(Recording.trace))).scalar_one()
            return got

        results: dict[str, dict[str, float]] = {}
        results["select(djb.lazy(...)) (no store I/O)"] = best(args.repeat, meter, ref)
        results["ref.shape"] = best(args.repeat, meter, lambda: ref().shape)

        def check(key: Any) -> Callable[[], None]:
            def run() -> None:
                r = ref()
                r.shape  # noqa: B018 - the header, read apart from the slice
                with meter.measure() as m:
                    got = r[key]
                results.setdefault(f"_{key}", m)
                np.testing.assert_array_equal(got, value[key])

            return run

        slices = {"ref[1000:2000]": np.s_[1000:2000], "ref[:, 3]": np.s_[:, 3]}
        for name, key in slices.items():
            runs = []
            for _ in range(args.repeat):
                results.pop(f"_{key}", None)
                check(key)()
                runs.append(results.pop(f"_{key}"))
            results[name] = min(runs, key=lambda m: m["seconds"])

        results["ref.load() (whole value, verified)"] = best(
            args.repeat, meter, lambda: ref().load()
        )
        np.testing.assert_array_equal(ref().load(), value)

        print("\nlazy references")
        own = {"ref[1000:2000]": 1000 * 8 * 8, "ref[:, 3]": n * 8}
        for name, m in results.items():
            print(row(name, m, own.get(name)))

        print("\nbaselines")
        key = store.key(djb.externals(engine)["s3"].paths()[0][1])
        raw = s3_client(endpoint)
        meter.hook(raw)
        start = 1000 * 8 + 4096  # somewhere inside the object

        def ranged_get() -> None:
            body = raw.get_object(Bucket="lazy", Key=key, Range=f"bytes={start}-{start + 63_999}")
            body["Body"].read()

        base: dict[str, dict[str, float]] = {}
        base["boto3 ranged GET of 64,000 bytes"] = best(args.repeat, meter, ranged_get)

        def plain_select() -> None:
            with engine.connect() as conn:
                conn.execute(sa.select(Recording.trace)).scalar_one()

        base["full fetch: select(Recording.trace)"] = best(args.repeat, meter, plain_select)
        npy = Path(tmp) / "trace.npy"
        np.save(npy, value)
        base["np.load(.npy), local disk"] = best(args.repeat, meter, lambda: np.load(npy))
        base["np.load(.npy, mmap_mode='r')[1000:2000]"] = best(
            args.repeat, meter, lambda: np.array(np.load(npy, mmap_mode="r")[1000:2000])
        )
        for name, m in base.items():
            if not m["requests"]:
                m = {"seconds": m["seconds"]}
            print(row(name, m))

        load_s = results["ref.load() (whole value, verified)"]["seconds"]
        print("\ntargets")
        shape_b = results["ref.shape"]["bytes"]
        print(f"  ref.shape transfers {shape_b / 1024:.1f} KiB  (< 64 KiB: {shape_b < 64 * 1024})")
        for name in slices:
            m = results[name]
            limit = 2 * own[name] + 64 * 1024
            share = m["seconds"] / load_s
            print(
                f"  {name} transfers {m['bytes'] / 1024:.1f} KiB (< {limit / 1024:.1f} KiB:"
                f" {m['bytes'] < limit}); takes {share:.1%} of ref.load() (< 5 %: {share < 0.05})"
            )
        engine.dispose()


if __name__ == "__main__":
    main()
