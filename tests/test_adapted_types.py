"""A user's TypeDecorator over a sa_djblob type (an adapter between the stored value and
a domain object, as DataJoint's adapted types are) works both ways: its
``process_bind_param`` on write and its ``process_result_value`` on read, in the row and in
a store, through the ORM and Core."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.types import TypeDecorator

import sa_djblob as djb


@dataclass(frozen=True)
class Graph:
    """A domain object stored as its edge list (DataJoint's adapted-type example)."""

    edges: frozenset[tuple[int, int]]


@dataclass(frozen=True)
class Note:
    """A domain object stored as a file."""

    text: str


@dataclass(frozen=True)
class Staged:
    """A domain object over a file of the stage."""

    path: Path


class GraphType(TypeDecorator[Any]):
    impl = djb.Blob
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        return None if value is None else np.array(sorted(value.edges), dtype=np.int64)

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        return None if value is None else Graph(frozenset(map(tuple, value.tolist())))


class NoteType(TypeDecorator[Any]):
    impl = djb.Attach
    cache_ok = True
    folder: Path = Path(".")

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        path = self.folder / "note.txt"
        path.write_text(value.text)
        return path

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        return None if value is None else Note(Path(value).read_text())


class StagedType(TypeDecorator[Any]):
    impl = djb.Filepath
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        return None if value is None else value.path

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        return None if value is None else Staged(Path(value))


class LabelledGraphType(TypeDecorator[Any]):
    """An adapter over an adapter."""

    impl = GraphType
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        return None if value is None else value[1]

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        return None if value is None else ("graph", value)


class Base(DeclarativeBase):
    # declared tables: a Table (sa.insert, CreateTable), not just a FromClause
    __table__: ClassVar[sa.Table]


class Network(Base):
    __tablename__ = "network"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    inrow: Mapped[Any] = mapped_column(GraphType(), nullable=True)
    graph: Mapped[Any] = mapped_column(GraphType(store="shared"), nullable=True)
    labelled: Mapped[Any] = mapped_column(LabelledGraphType(store="shared"), nullable=True)
    note: Mapped[Any] = mapped_column(NoteType(store="shared"), nullable=True)
    staged: Mapped[Any] = mapped_column(StagedType(store="shared"), nullable=True)


G1 = Graph(frozenset({(1, 2), (2, 3)}))
G2 = Graph(frozenset({(4, 5)}))


@pytest.fixture
def stage(engine: sa.Engine, tmp_path: Path) -> Iterator[Path]:
    stage = tmp_path / "stage"
    (stage / "run1").mkdir(parents=True)
    djb.config["stores"] = {
        "shared": {"protocol": "file", "location": str(tmp_path / "store"), "stage": str(stage)}
    }
    NoteType.folder = tmp_path
    Base.metadata.create_all(engine)
    djb.install(engine)
    yield stage
    Base.metadata.drop_all(engine)


def _row(stage: Path) -> dict[str, Any]:
    raw = stage / "run1" / "raw.dat"
    raw.write_bytes(b"samples")
    return {
        "id": 1,
        "inrow": G1,
        "graph": G2,
        "labelled": ("graph", G1),
        "note": Note("electrode 3 was noisy"),
        "staged": Staged(raw),
    }


def _check(got: Any, stage: Path) -> None:
    kinds = {k: type(getattr(got, k)).__name__ for k in ("inrow", "graph", "note", "staged")}
    assert kinds == {"inrow": "Graph", "graph": "Graph", "note": "Note", "staged": "Staged"}
    assert got.inrow == G1
    assert got.graph == G2
    assert got.labelled == ("graph", G1)
    assert got.note == Note("electrode 3 was noisy")
    assert got.staged == Staged(stage / "run1" / "raw.dat")


def test_adapter_over_external_types_gets_its_value_back_through_the_orm(
    engine: sa.Engine, stage: Path
) -> None:
    with Session(engine) as s:
        s.add(Network(**_row(stage)))
        s.commit()
    with Session(engine) as s:
        got = s.get(Network, 1)
        assert got is not None
        _check(got, stage)
        (via_select,) = s.scalars(sa.select(Network)).all()
        _check(via_select, stage)


def test_adapter_over_external_types_gets_its_value_back_through_core(
    engine: sa.Engine, stage: Path
) -> None:
    table = Network.__table__
    with engine.begin() as conn:
        conn.execute(sa.insert(table), [_row(stage)])
    with engine.connect() as conn:
        _check(conn.execute(sa.select(table)).one(), stage)
        sub = sa.select(table).subquery()
        _check(conn.execute(sa.select(sub)).one(), stage)
        assert conn.execute(sa.select(table.c.graph)).scalar_one() == G2
