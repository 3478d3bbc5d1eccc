"""Big arrays read by range: ``djb.Blob(store=..., compress=False)`` keeps every value
uncompressed, and ``djb.lazy(column)`` selects a :class:`djb.LazyBlob` that reads only the
header for ``.shape`` and only the byte ranges a slice needs."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import sa_djblob as djb
from sa_djblob._codec import ZL123


class Base(DeclarativeBase):
    pass


class Recording(Base):
    __tablename__ = "recording"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    plain: Mapped[Any] = mapped_column(djb.Blob(store="big", compress=False), nullable=True)
    packed: Mapped[Any] = mapped_column(djb.Blob(store="big"), nullable=True)
    inrow: Mapped[Any] = mapped_column(djb.Blob(), nullable=True)


def _file_store(tmp_path: Path) -> None:
    djb.config["stores"] = {"big": {"protocol": "file", "location": str(tmp_path / "big")}}


def _payloads(tmp_path: Path) -> list[bytes]:
    return [p.read_bytes() for p in (tmp_path / "big").rglob("*") if p.is_file() and "owner" not in str(p)]


# -- compress=False ------------------------------------------------------------------


def test_uncompressed_column_never_compresses_its_values(
    engine: sa.Engine, tmp_path: Path
) -> None:
    _file_store(tmp_path)
    Base.metadata.create_all(engine)
    djb.install(engine)
    value = np.zeros((1000, 20))  # compresses to almost nothing
    with Session(engine) as s:
        s.add(Recording(id=1, plain=value))
        s.commit()
    (payload,) = _payloads(tmp_path)
    assert not payload.startswith(ZL123)
    assert payload == djb.pack(value, compress=False)
    with Session(engine) as s:
        np.testing.assert_array_equal(s.get(Recording, 1).plain, value)


def test_uncompressed_blob_type_rebuilds_from_its_repr() -> None:
    t = djb.Blob(store="big", compress=False)
    assert repr(t) == "Blob(store='big', compress=False)"
    assert repr(eval(repr(t), {"Blob": djb.Blob})) == repr(t)
    assert repr(djb.Blob(store="big")) == "Blob(store='big')"
