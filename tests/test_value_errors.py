"""An error about a value reaches the user as a documented sa_djblob class, unwrapped
(never a ``StatementError`` around it), raised when the value is bound (before anything is
written), with a message that says what to do."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import StatementError

import sa_djblob as djb


@pytest.fixture
def table(engine: sa.Engine, tmp_path: Path) -> Iterator[sa.Table]:
    (tmp_path / "stage").mkdir()
    djb.config["stores"] = {
        "shared": {
            "protocol": "file",
            "location": str(tmp_path / "store"),
            "stage": str(tmp_path / "stage"),
        }
    }
    md = sa.MetaData()
    t = sa.Table(
        "item",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("inrow", djb.Attach(), nullable=True),
        sa.Column("ext", djb.Attach(store="shared"), nullable=True),
        sa.Column("fp", djb.Filepath(store="shared"), nullable=True),
        sa.Column("b", djb.Blob(), nullable=True),
    )
    md.create_all(engine)
    djb.install(engine)
    yield t


def _nothing_written(engine: sa.Engine, table: sa.Table, tmp_path: Path) -> None:
    ext = djb.externals(engine)["shared"].table
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one() == 0
        assert conn.execute(sa.select(sa.func.count()).select_from(ext)).scalar_one() == 0
    store = tmp_path / "store"
    payloads = [p for p in store.rglob("*") if p.is_file() and ".sa_djblob-owner" not in p.parts]
    assert payloads == []


def _insert(engine: sa.Engine, table: sa.Table, column: str, value: Any) -> None:
    with engine.begin() as conn:
        conn.execute(sa.insert(table), {"id": 1, column: value})


@pytest.mark.parametrize("column", ["inrow", "ext"])
@pytest.mark.parametrize("name", ["two\nlines.txt", "carriage\rreturn.txt", "tab\there.txt"])
def test_attachment_name_with_a_control_character_is_refused_at_bind_time(
    engine: sa.Engine, table: sa.Table, tmp_path: Path, column: str, name: str
) -> None:
    f = tmp_path / name
    f.write_bytes(b"contents")
    with pytest.raises(djb.UnsupportedTypeError, match=r"control character.*rename the file"):
        _insert(engine, table, column, f)
    _nothing_written(engine, table, tmp_path)


@pytest.mark.parametrize("column", ["inrow", "ext", "fp"])
def test_missing_file_is_a_documented_error_naming_the_file(
    engine: sa.Engine, table: sa.Table, tmp_path: Path, column: str
) -> None:
    missing = tmp_path / "stage" / "nowhere.dat"
    with pytest.raises(djb.UnreadableFileError) as info:
        _insert(engine, table, column, missing)
    assert not isinstance(info.value, StatementError)
    assert isinstance(info.value, OSError) and info.value.errno == errno.ENOENT
    assert info.value.filename == str(missing)
    assert str(missing) in str(info.value) and "does not exist" in str(info.value)
    _nothing_written(engine, table, tmp_path)


@pytest.mark.parametrize("column", ["inrow", "ext", "fp"])
def test_directory_is_a_documented_error_saying_to_bind_a_file(
    engine: sa.Engine, table: sa.Table, tmp_path: Path, column: str
) -> None:
    folder = tmp_path / "stage" / "folder"
    folder.mkdir()
    with pytest.raises(djb.UnreadableFileError, match=r"is a directory.*a regular file") as info:
        _insert(engine, table, column, folder)
    assert info.value.errno == errno.EISDIR
    _nothing_written(engine, table, tmp_path)


@pytest.mark.parametrize("column", ["inrow", "ext"])
@pytest.mark.parametrize("path", [".", "", os.sep])
def test_attachment_path_without_a_file_name_is_refused_unwrapped(
    engine: sa.Engine, table: sa.Table, tmp_path: Path, column: str, path: str
) -> None:
    with pytest.raises(djb.UnsupportedTypeError, match="has no file name"):
        _insert(engine, table, column, path)
    _nothing_written(engine, table, tmp_path)


def test_autocommit_refusal_is_a_documented_class(engine: sa.Engine, table: sa.Table) -> None:
    f = Path(djb.config["stores"]["shared"]["stage"]) / "f.txt"
    f.write_text("x")
    with engine.connect() as conn:
        auto = conn.execution_options(isolation_level="AUTOCOMMIT")
        with pytest.raises(djb.TransactionRequiredError, match=r"engine\.begin\(\)"):
            auto.execute(sa.insert(table), {"id": 1, "ext": f})


class DataFrame:
    """Stands in for pandas.DataFrame (pandas itself need not be installed)."""

    __module__ = "pandas.core.frame"

    def to_numpy(self) -> Any:
        raise AssertionError("not called")


class Series:
    __module__ = "pandas.core.series"


@pytest.mark.parametrize(
    ("value", "hint"),
    [(DataFrame(), r"df\.to_numpy\(\).*df\.to_records"), (Series(), r"\.to_numpy\(\)")],
)
def test_pandas_values_get_a_conversion_hint(
    engine: sa.Engine, table: sa.Table, value: Any, hint: str
) -> None:
    with pytest.raises(djb.UnsupportedTypeError, match=hint):
        _insert(engine, table, "b", value)


def test_attachment_removed_before_its_upload_is_a_documented_error(
    engine: sa.Engine, table: sa.Table, tmp_path: Path
) -> None:
    f = tmp_path / "vanishing.txt"
    f.write_text("here at bind time")

    def remove_it(*args: Any) -> None:
        f.unlink(missing_ok=True)  # after the value was bound, before the upload

    sa.event.listen(engine, "before_cursor_execute", remove_it, insert=True)
    try:
        with pytest.raises(djb.UnreadableFileError, match="removed after") as info:
            _insert(engine, table, "ext", f)
    finally:
        sa.event.remove(engine, "before_cursor_execute", remove_it)
    assert info.value.filename == str(f)
    _nothing_written(engine, table, tmp_path)
