"""Insert one row and stop between the upload and the commit (the test SIGKILLs us).

python writer_killed.py URL STORE_SPEC_JSON TABLE ID SEED [dj2]

The table is ``TABLE(id, b blob@shared, a attach@shared)`` as ``make_table`` declares it,
or with ``dj2`` ``TABLE(id, b <blob@shared>)`` through ``sa_djblob.dj2``.
"""

from __future__ import annotations

import json
import sys
import time

import sqlalchemy as sa

import sa_djblob as djb
from sa_djblob import dj2

sys.path.insert(0, __file__.rsplit("/", 2)[0])
from helpers.common import value


def columns(kind: str) -> list[sa.Column[object]]:
    if kind == "dj2":
        return [sa.Column("b", dj2.Blob(store="shared"))]
    return [sa.Column("b", djb.Blob(store="shared")), sa.Column("a", djb.Attach(store="shared"))]


def main() -> None:
    url, spec, name, row_id, seed = sys.argv[1:6]
    kind = sys.argv[6] if len(sys.argv) > 6 else "djb"
    djb.config["stores"] = {"shared": json.loads(spec)}
    engine = sa.create_engine(url)
    djb.install(engine)
    table = sa.Table(
        name, sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True), *columns(kind)
    )
    conn = engine.connect()
    conn.begin()
    conn.execute(sa.insert(table), {"id": int(row_id), "b": value(int(seed))})
    print("UPLOADED", flush=True)  # the payload is in the store, the row is not committed
    time.sleep(120)


if __name__ == "__main__":
    main()
