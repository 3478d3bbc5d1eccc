"""Run a dj2 sweep that stops after deleting its first batch's objects, before the
commit (the test SIGKILLs us there).

    python dj2_sweep_killed.py URL STORE_SPEC_JSON
"""

from __future__ import annotations

import datetime
import json
import sys
import time

import sqlalchemy as sa

import sa_djblob as djb
from sa_djblob import dj2
from sa_djblob._dj2 import sweep as sweep_mod


def _stop(deleted: list[str]) -> None:
    print(f"DELETED {len(deleted)}", flush=True)
    time.sleep(120)


def main() -> None:
    url, spec = sys.argv[1:3]
    djb.config["stores"] = {"shared": json.loads(spec)}
    engine = sa.create_engine(url)
    sweep_mod._after_delete = _stop
    dj2.sweep(engine, "shared", grace=datetime.timedelta(0))
    print("FINISHED", flush=True)


if __name__ == "__main__":
    main()
