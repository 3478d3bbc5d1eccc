"""Every SQL difference between databases, one module per dialect behind one lookup.

``dialect_support(dialect)`` gives the :class:`~.base.DialectSupport` of a SQLAlchemy
dialect (or dialect name). A database without a module here is refused by ``install()``
and by ``create_all`` of a table with external columns, with the supported names:
the locking protocol depends on SQL that each database spells differently, and a
silent fallback would lose the invariant. Adding a database is one new module here
(subclass ``DialectSupport``) plus one line in ``_MODULES`` and the test matrix.
"""

from __future__ import annotations

import importlib
from typing import Any

from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from .._exceptions import UnsupportedDialectError
from .base import DialectSupport

__all__ = ["SUPPORTED", "DialectSupport", "concat_ref", "dialect_support", "find_support"]

# dialect name -> module defining ``support``
_MODULES = {
    "sqlite": "sqlite",
    "mysql": "mysql",
    "mariadb": "mysql",
    "postgresql": "postgresql",
}
SUPPORTED = tuple(sorted(_MODULES))

_loaded: dict[str, DialectSupport] = {}


def dialect_support(dialect: Any) -> DialectSupport:
    """The SQL of *dialect* (a SQLAlchemy ``Dialect`` or its name) for sa_djblob."""
    name = dialect if isinstance(dialect, str) else dialect.name
    found = _loaded.get(name)
    if found is not None:
        return found
    module = _MODULES.get(name)
    if module is None:
        raise UnsupportedDialectError(
            f"sa_djblob does not support the {name!r} database: external values need"
            f" row locks and upserts written for each database (supported: {', '.join(SUPPORTED)})"
        )
    support: DialectSupport = importlib.import_module(f"{__name__}.{module}").support
    _loaded[name] = support
    return support


def find_support(dialect: Any) -> DialectSupport | None:
    """Like :func:`dialect_support`, None for a database without support: statements still
    print (``str(stmt)`` compiles with SQLAlchemy's generic dialect) with generic types."""
    try:
        return dialect_support(dialect)
    except UnsupportedDialectError:
        return None


class concat_ref(FunctionElement[Any]):
    """``hash || text`` as bytes (each dialect spells it): a reference and what the reader
    needs with it (an attachment's name, a filepath) in one selected value."""

    inherit_cache = True
    name = "djb_attach_ref"


@compiles(concat_ref)
def _compile_concat_ref(element: concat_ref, compiler: SQLCompiler, **kw: Any) -> str:
    h, name = (compiler.process(c, **kw) for c in element.clauses.clauses)
    support = find_support(compiler.dialect)
    if support is None:  # str(statement): SQLAlchemy's generic dialect
        return f"({h} || {name})"
    return support.attachment_ref_sql(h, name)
