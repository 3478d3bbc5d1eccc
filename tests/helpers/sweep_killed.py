"""Run a sweep that stops after deleting its first batch's payloads, before the commit
(the test SIGKILLs us there).

    python sweep_killed.py URL STORE_SPEC_JSON
"""

from __future__ import annotations

import datetime
import json
import sys
import time
from pathlib import PurePosixPath

import sqlalchemy as sa

import sa_djblob as djb
from sa_djblob._externals import sweep as sweep_mod


def _stop(phase: str, removed: list[PurePosixPath]) -> None:
    print(f"REMOVED {phase} {len(removed)}", flush=True)
    time.sleep(120)


def main() -> None:
    url, spec = sys.argv[1:3]
    djb.config["stores"] = {"shared": json.loads(spec)}
    engine = sa.create_engine(url)
    sweep_mod._after_remove = _stop
    djb.externals(engine)["shared"].sweep(grace=datetime.timedelta(0), progress=False)
    print("FINISHED", flush=True)


if __name__ == "__main__":
    main()
