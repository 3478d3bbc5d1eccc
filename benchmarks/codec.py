"""Throughput of ``djb.pack`` / ``djb.unpack`` next to baselines measured in the same run.

Run: ``.venv/bin/python benchmarks/codec.py``. Cases:

(a) a 16 MB random float64 array (incompressible),
(b) a 16 MB compressible uint8 image (smooth gradients plus a little noise),
(c) 5,000 small nested dicts.

Baselines: ``ndarray.tobytes()`` + ``np.frombuffer(...).copy()``, and pickle (here only,
as a speed yardstick; the package never uses pickle). For (c) the DataJoint 0.14 figure is
measured when ``datajoint`` is importable, else the reference 2.1 s of this machine is used.
"""

from __future__ import annotations

import pickle
import time
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np

import sa_djblob as djb

MB = 1 << 20
DATAJOINT_DICTS_SECONDS = 2.1  # DataJoint 0.14 pack+unpack of case (c) on this machine


def best_of(fn: Callable[[], Any], repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def image(rng: np.random.Generator) -> np.ndarray[Any, Any]:
    h, w = 4096, 4096
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    smooth = 128 + 60 * np.sin(x / 300.0) + 50 * np.cos(y / 200.0) + 10 * np.sin((x + y) / 90.0)
    noise = rng.integers(-1, 2, size=(h, w))
    return (smooth + noise).clip(0, 255).astype(np.uint8)


def small_dicts(n: int) -> list[dict[str, Any]]:
    return [{"a": i, "b": [1.5, "x"], "c": {"d": np.arange(3)}} for i in range(n)]


def main() -> None:
    rng = np.random.default_rng(0)
    floats = rng.random(16 * MB // 8)
    img = image(rng)
    dicts = small_dicts(5000)
    rows: list[tuple[str, str, str, str]] = []
    verdicts: list[tuple[str, bool, str]] = []

    def mbps(nbytes: int, seconds: float) -> str:
        return f"{nbytes / MB / seconds:8.0f} MB/s"

    for label, arr in (("(a) float64 16 MB", floats), ("(b) uint8 image 16 MB", img)):
        blob = djb.pack(arr)
        t_pack = best_of(lambda arr=arr: djb.pack(arr))
        t_unpack = best_of(lambda blob=blob: djb.unpack(blob))
        assert np.array_equal(djb.unpack(blob), arr)
        raw = arr.tobytes()
        t_tobytes = best_of(arr.tobytes)
        t_frombuffer = best_of(lambda raw=raw, arr=arr: np.frombuffer(raw, arr.dtype).copy())
        pickled = pickle.dumps(arr, protocol=5)
        t_pdump = best_of(lambda arr=arr: pickle.dumps(arr, protocol=5))
        t_pload = best_of(lambda pickled=pickled: pickle.loads(pickled))  # noqa: S301
        n = arr.nbytes
        rows.append((label, "djb.pack / unpack", mbps(n, t_pack), mbps(n, t_unpack)))
        rows.append((label, "tobytes / frombuffer.copy", mbps(n, t_tobytes), mbps(n, t_frombuffer)))
        rows.append((label, "pickle dumps / loads", mbps(n, t_pdump), mbps(n, t_pload)))
        if arr is floats:
            ratio = (t_tobytes + t_frombuffer) / (t_pack + t_unpack)
            verdicts.append(
                (
                    "(a) pack+unpack >= 25% of tobytes+frombuffer.copy throughput",
                    ratio >= 0.25,
                    f"{ratio:.0%} (stored {len(blob) / n:.3f} of raw)",
                )
            )
        else:
            level6 = len(zlib.compress(djb.pack(arr, compress=False), 6))
            ratio = len(blob) / level6
            verdicts.append(
                (
                    "(b) stored size within 10% of zlib level 6",
                    ratio <= 1.10,
                    f"{len(blob):,} vs {level6:,} bytes = {ratio:.3f}x"
                    f" ({len(blob) / n:.3f} of raw)",
                )
            )

    blobs = [djb.pack(d) for d in dicts]
    t_pack = best_of(lambda: [djb.pack(d) for d in dicts], 3)
    t_unpack = best_of(lambda: [djb.unpack(b) for b in blobs], 3)
    pickled_dicts = [pickle.dumps(d) for d in dicts]
    t_pdump = best_of(lambda: [pickle.dumps(d) for d in dicts], 3)
    t_pload = best_of(lambda: [pickle.loads(p) for p in pickled_dicts], 3)  # noqa: S301
    reference = DATAJOINT_DICTS_SECONDS
    source = "reference figure"
    try:
        from datajoint import blob as dj_blob  # type: ignore[import-not-found]
    except ImportError:
        pass
    else:
        dj_blobs = [dj_blob.pack(d) for d in dicts]
        reference = best_of(lambda: [dj_blob.pack(d) for d in dicts], 3) + best_of(
            lambda: [dj_blob.unpack(b) for b in dj_blobs], 3
        )
        source = "measured"

    def per_s(seconds: float) -> str:
        return f"{5000 / seconds:8.0f} obj/s"

    label = "(c) 5,000 small dicts"
    rows.append((label, "djb.pack / unpack", per_s(t_pack), per_s(t_unpack)))
    rows.append((label, "pickle dumps / loads", per_s(t_pdump), per_s(t_pload)))
    total = t_pack + t_unpack
    speedup = reference / total
    verdicts.append(
        (
            "(c) pack+unpack >= 2x faster than DataJoint 0.14",
            speedup >= 2.0,
            f"{total:.3f} s vs {reference:.1f} s ({source}) = {speedup:.1f}x",
        )
    )

    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    header = ("case", "codec", "pack / dumps", "unpack / loads")
    widths = [max(w, len(h)) for w, h in zip(widths, header, strict=True)]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    print(line)
    print("-" * len(line))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    print()
    for target, met, detail in verdicts:
        print(f"[{'MET' if met else 'MISSED'}] {target}: {detail}")


if __name__ == "__main__":
    main()
