"""Copy a store elsewhere and stop (the test SIGKILLs us) once N payloads were copied,
while other copies of the same batch are still on the wire.

    python copy_killed.py URL OLD_SPEC_JSON NEW_SPEC_JSON N
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import PurePosixPath

import sqlalchemy as sa

import sa_djblob as djb
from sa_djblob._externals import relocate

_lock = threading.Lock()
_count = 0


def main() -> None:
    url, old, new, n = sys.argv[1:5]
    stop_after = int(n)

    def copied(path: PurePosixPath) -> None:
        global _count
        with _lock:
            _count += 1
            reached = _count == stop_after
        if reached:
            print(f"COPIED {_count}", flush=True)
        if _count >= stop_after:
            time.sleep(120)

    djb.config["stores"] = {"shared": json.loads(old)}
    engine = sa.create_engine(url)
    relocate._after_copy = copied
    djb.externals(engine)["shared"].copy_to(json.loads(new), progress=False, batch=5)
    print("FINISHED", flush=True)


if __name__ == "__main__":
    main()
