"""SQLAlchemy models over tables that DataJoint created, read and written with sa_djblob.

The DataJoint 0.14 pipeline this example mirrors (schema = one MySQL database)::

    dj.config["stores"] = {"local": {"protocol": "file", "location": "/data/dj-store"}}
    schema = dj.Schema("lab")

    @schema
    class Subject(dj.Lookup):          # table `#subject`
        definition = '''
        subject_id : int
        ---
        species    : varchar(32)
        '''

    @schema
    class Session(dj.Manual):          # table `session`
        definition = '''
        -> Subject
        session_id : int
        ---
        notes      : attach            # a file, in the row
        stimulus   : longblob          # an array, in the row
        '''

    @schema
    class Recording(dj.Imported):      # table `_recording`
        definition = '''
        -> Session
        ---
        trace      : blob@local        # an array, in the 'local' store
        raw        : attach@local      # a file, in the 'local' store
        '''

How DataJoint's declarations map to SQLAlchemy:

- Table names carry the tier as a prefix: Manual ``session``, Lookup ``#subject``,
  Imported ``_recording``, Computed ``__name``, Part ``master__part``. Class names are the
  CamelCase of the rest. ``__tablename__`` takes the name as it is (quoted by SQLAlchemy).
- ``-> Parent`` copies the parent's primary key and adds a foreign key: a composite
  ``ForeignKeyConstraint`` here.
- ``longblob`` / ``blob`` -> ``djb.Blob()``; ``blob@s`` -> ``djb.Blob(store="s")``;
  ``attach`` -> ``djb.Attach()``; ``attach@s`` -> ``djb.Attach(store="s")``. DataJoint
  records these types in the column comments (``:blob@local:``, ``:attach:``,
  ``:attach@local:``); sa_djblob writes the same comments when it creates tables.
- ``blob@s`` / ``attach@s`` columns are ``BINARY(16)`` hashes with a foreign key to the
  externals table ``~external_s``, which sa_djblob declares with DataJoint's DDL; a
  DataJoint-made one is used as it is (``create_all`` skips existing tables).
- ``djb.config["stores"]`` takes the same settings as ``dj.config["stores"]``; objects
  land at the same paths (``<location>/<database>/<h0h1>/<h2h3>/<hash>[.<name>]``).

Run ``python examples/datajoint_interop.py --url mysql+pymysql://user@host/lab --store
/data/dj-store`` against a DataJoint database, or with no ``--url`` on SQLite (in
``examples/output/``), where this script creates the tables the way DataJoint would.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import sa_djblob as djb

HERE = Path(__file__).resolve().parent


class Base(DeclarativeBase):
    pass


class Subject(Base):
    __tablename__ = "#subject"  # dj.Lookup

    subject_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    species: Mapped[str] = mapped_column(sa.String(32))


class LabSession(Base):
    __tablename__ = "session"  # dj.Manual

    subject_id: Mapped[int] = mapped_column(
        sa.ForeignKey(Subject.subject_id, onupdate="CASCADE", ondelete="RESTRICT"),
        primary_key=True,
        autoincrement=False,
    )
    session_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    notes: Mapped[Path] = mapped_column(djb.Attach())  # attach
    stimulus: Mapped[Any] = mapped_column(djb.Blob())  # longblob


class Recording(Base):
    __tablename__ = "_recording"  # dj.Imported
    __table_args__ = (
        sa.ForeignKeyConstraint(
            ["subject_id", "session_id"],
            [LabSession.subject_id, LabSession.session_id],
            onupdate="CASCADE",
            ondelete="RESTRICT",
        ),
    )

    subject_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    session_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    trace: Mapped[Any] = mapped_column(djb.Blob(store="local"))  # blob@local
    raw: Mapped[Path] = mapped_column(djb.Attach(store="local"))  # attach@local


def show(engine: sa.Engine) -> None:
    with Session(engine) as s:
        for subject in s.scalars(sa.select(Subject).order_by(Subject.subject_id)):
            print(f"  subject {subject.subject_id}: {subject.species}")
        q = (
            sa.select(LabSession, Recording)
            .join(Recording, isouter=True)
            .order_by(LabSession.subject_id, LabSession.session_id)
        )
        for sess, rec in s.execute(q):
            line = (
                f"  session {sess.subject_id}/{sess.session_id}: notes {sess.notes.name!r}"
                f" ({sess.notes.stat().st_size} bytes), stimulus {np.shape(sess.stimulus)}"
            )
            if rec is not None:
                line += f"; recording: trace {np.shape(rec.trace)}, raw {rec.raw.name!r}"
            print(line)
    for ext in djb.externals(engine).values():
        print(f"  {ext.name}: {len(ext.paths())} objects, {len(ext.unused())} unused")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("SA_DJBLOB_URL") or None)
    parser.add_argument("--store", type=Path, default=None, help="the 'local' store folder")
    parser.add_argument("--output", type=Path, default=HERE / "output")
    parser.add_argument("--session-id", type=int, default=2)
    args = parser.parse_args(argv)
    out = args.output.resolve()
    out.mkdir(parents=True, exist_ok=True)
    url = args.url
    if url is None:
        db = out / "interop.sqlite"
        db.unlink(missing_ok=True)
        url = f"sqlite:///{db}"
    store = (args.store or out / "interop-store").resolve()
    djb.config["stores"] = {"local": {"protocol": "file", "location": str(store)}}
    djb.config["download_path"] = str(out / "interop-downloads")
    print(f"database {make_url(url).render_as_string(hide_password=True)}, store 'local' = {store}")

    engine = sa.create_engine(url)
    djb.install(engine)
    Base.metadata.create_all(engine)  # creates only the tables DataJoint has not
    print("before:")
    show(engine)

    files = out / "interop-inputs"
    files.mkdir(exist_ok=True)
    notes = files / f"notes-{args.session_id}.txt"
    notes.write_text(f"session {args.session_id}: written through SQLAlchemy\n")
    raw = files / f"raw-{args.session_id}.bin"
    raw.write_bytes(np.arange(1000, dtype=np.int16).tobytes())
    trace = np.sin(np.linspace(0, 20, 5000)).reshape(50, 100)
    with Session(engine) as s:
        if s.get(Subject, 1) is None:
            s.add(Subject(subject_id=1, species="mouse"))
            s.flush()  # no relationship() here: flush parents before children
        s.add(LabSession(subject_id=1, session_id=args.session_id, notes=notes, stimulus=np.eye(3)))
        s.flush()
        s.add(Recording(subject_id=1, session_id=args.session_id, trace=trace, raw=raw))
        s.commit()
    print(f"inserted session 1/{args.session_id} and its recording")
    with Session(engine) as s:
        rec = s.get(Recording, (1, args.session_id))
        assert rec is not None
        if not (np.array_equal(rec.trace, trace) and rec.raw.read_bytes() == raw.read_bytes()):
            raise SystemExit("the values read back differ from the ones written")
    print("read back identical; after:")
    show(engine)
    djb.uninstall(engine)
    engine.dispose()


if __name__ == "__main__":
    main()
