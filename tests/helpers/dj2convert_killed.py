"""Run a conversion that stops after placing its second object, before writing its pointer
(the test SIGKILLs us there).

    python dj2convert_killed.py URL STORE_SPEC_JSON SCHEMA
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import sqlalchemy as sa

import sa_djblob as djb
from sa_djblob import dj2convert


def main() -> None:
    url, spec, schema = sys.argv[1:4]
    djb.config["stores"] = {"local": json.loads(spec)}
    engine = sa.create_engine(url)
    real = dj2convert._copy
    calls = [0]

    def copy(*args: Any) -> Any:
        out = real(*args)
        calls[0] += 1
        if calls[0] == 2:
            print("COPIED", flush=True)
            time.sleep(120)
        return out

    dj2convert._copy = copy  # type: ignore[assignment]
    dj2convert.convert(engine, schema)
    print("FINISHED", flush=True)


if __name__ == "__main__":
    main()
