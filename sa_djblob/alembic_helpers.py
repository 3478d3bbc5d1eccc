"""Alembic support: render sa_djblob types in migrations and compare them without phantom diffs.

Wire it into ``env.py``::

    from sa_djblob import alembic_helpers

    opts = {
        "render_item": alembic_helpers.render_item,
        "process_revision_directives": alembic_helpers.process_revision_directives,
    }
    if alembic_helpers.register_plugin():  # Alembic >= 1.18: the plugin system
        opts["autogenerate_plugins"] = ["alembic.autogenerate.*", alembic_helpers.PLUGIN_NAME]
    else:  # older Alembic: the compare_type hook
        opts["compare_type"] = alembic_helpers.compare_type
    context.configure(connection=connection, target_metadata=target_metadata, **opts)

``render_item`` writes ``sa_djblob.Blob()`` / ``sa_djblob.Attach()`` for in-row columns,
``sa_djblob.Blob(store='shared', foreign_key=False)`` / ``sa_djblob.Attach(store='local',
foreign_key=False)`` / ``sa_djblob.Filepath(store='raw', foreign_key=False)`` for external
ones and ``sa_djblob.types.HashType()`` for the externals
tables' own hash columns, and adds ``import sa_djblob`` to the migration. A migration is
frozen DDL: Alembic renders the foreign key of an external column to ``~external_<store>``
and its index as ordinary operations next to it (and the ``:blob@shared:`` comment on the
column), so the rendered type must not add them again. ``foreign_key=False`` says exactly
that: the column gets no automatic foreign key, index or externals table on the
migration's MetaData, and is otherwise the ``Blob(store=...)`` of the models (same column
type, same values). The externals tables are ordinary tables of the models' MetaData, so
autogenerate creates them, their foreign keys and indexes like any other.

Type comparison knows that ``Blob()`` is LONGBLOB / BYTEA / BLOB and that an external
column (with or without ``foreign_key=False``) or a ``HashType`` is BINARY(16) / BYTEA /
BLOB; a column that changes between in-row and external storage shows up as a type change
where the database can tell them apart (MySQL), and through its foreign key everywhere.

Drop order on MySQL / MariaDB: autogenerate drops a table's indexes before the table, and
an index before the foreign key that uses it; MySQL refuses both (error 1553, "needed in a
foreign key constraint") and every external column has such a foreign key and index.
``process_revision_directives`` rewrites the generated operations so they run everywhere:
a ``drop_index`` of a table that the same migration drops goes (``DROP TABLE`` drops its
indexes), and a table's foreign-key drops move before its index drops. Pass it to
``context.configure(process_revision_directives=...)``; to combine it with a hook of your
own, call it from yours (it only edits ``directives`` in place)::

    def my_directives(context, revision, directives):
        alembic_helpers.process_revision_directives(context, revision, directives)
        ...

Moving a column's values: ``op.move_payloads("recording", "trace", to_store="s3",
from_store="local", kind="blob")`` runs :func:`sa_djblob.move` on the migration's
connection (``to_store=None``: into the row); its downgrade moves them back. Importing this
module registers it (Alembic's operations plugin API). With the autogenerate plugin, a
Blob or Attach column whose ``store`` differs from the database's is rendered as this
operation instead of a foreign-key swap (which would fail: the keys are not in the new
externals table yet). It cannot run offline (``--sql``).

Registration: Alembic 1.18 added autogenerate plugins, named in ``context.configure(
autogenerate_plugins=[...])``. This module is such a plugin (its ``setup(plugin)``
registers the type comparator); ``register_plugin()`` registers it under ``PLUGIN_NAME``
unless an ``alembic.plugins`` entry point already did, and returns False on an older
Alembic, where ``compare_type`` is the hook to pass instead. Alembic has no plugin hook for
rendering, so ``render_item`` is always passed to ``context.configure``. To combine it with
a ``render_item`` of your own, call ours first and fall back to yours when it returns False.
"""

from __future__ import annotations

import contextlib
import sys
from typing import TYPE_CHECKING, Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeEngine

from ._externals.table import EXTERNAL_PREFIX
from .types import ExternalType, HashType

if TYPE_CHECKING:
    from alembic.autogenerate.api import AutogenContext
    from alembic.operations.ops import AlterColumnOp
    from alembic.runtime.migration import MigrationContext
    from alembic.runtime.plugins import Plugin
    from alembic.util import PriorityDispatchResult
    from sqlalchemy.sql.schema import Column

__all__ = [
    "PLUGIN_NAME",
    "compare_type",
    "expected_type",
    "fix_drop_order",
    "process_revision_directives",
    "register_plugin",
    "render_item",
    "setup",
]

with contextlib.suppress(ImportError):  # Alembic installed: register op.move_payloads
    from . import _alembic_move  # noqa: F401

PLUGIN_NAME = "sa_djblob.types"
"""The name to list in ``context.configure(autogenerate_plugins=[...])``."""

_IMPORT = "import sa_djblob"


def render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """Alembic's ``render_item`` hook: Python source for sa_djblob types, False otherwise."""
    if type_ == "foreign_key":
        return _render_external_fk(obj, autogen_context)
    if type_ != "type":
        return False
    if isinstance(obj, ExternalType):
        autogen_context.imports.add(_IMPORT)
        if obj.store is None:
            return f"sa_djblob.{type(obj).__name__}()"
        # The foreign key and index are rendered next to the column, as operations.
        return f"sa_djblob.{type(obj).__name__}(store={obj.store!r}, foreign_key=False)"
    if isinstance(obj, HashType):
        autogen_context.imports.add(_IMPORT)
        return "sa_djblob.types.HashType()"
    from .dj2 import Dj2Type  # DataJoint 2.x's layout

    if isinstance(obj, Dj2Type):
        autogen_context.imports.add("import sa_djblob.dj2")
        store = "" if obj.store is None else f"store={obj.store!r}"
        return f"sa_djblob.dj2.{type(obj).__name__}({store})"
    return False


def _render_external_fk(fk: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """The foreign key of an external column, under the name the models' MetaData gives it.

    Alembic renders copies of the models' tables in a MetaData without their naming
    convention; the column's type makes the foreign key again there, without a name.
    """
    if not isinstance(fk, sa.ForeignKeyConstraint) or len(fk.elements) != 1:
        return False
    element = fk.elements[0]
    target = element.target_fullname
    table_part = target.rsplit(".", 2)[-2]
    if not table_part.startswith(EXTERNAL_PREFIX) or fk.table is None:
        return False
    name: Any = fk.name
    metadata: Any = autogen_context.metadata
    if metadata is None and autogen_context.migration_context is not None:
        metadata = autogen_context.migration_context.opts.get("target_metadata")
    source = None
    if metadata is not None and not isinstance(metadata, sa.MetaData):
        metadata = next(iter(metadata), None)
    if isinstance(metadata, sa.MetaData):
        source = metadata.tables.get(fk.table.fullname)
    if source is not None and not isinstance(name, str):
        for other in source.foreign_key_constraints:
            if (
                [c.name for c in other.columns] == [c.name for c in fk.columns]
                and other.elements[0].target_fullname == target
                and isinstance(other.name, str)
            ):
                name = other.name
    sa_prefix = autogen_context.opts.get("sqlalchemy_module_prefix") or ""
    op_prefix = autogen_context.opts.get("alembic_module_prefix") or ""
    args = [repr([c.name for c in fk.columns]), repr([target])]
    if isinstance(name, str):
        args.append(f"name={op_prefix}f({str(name)!r})")
    for opt in ("onupdate", "ondelete", "deferrable", "initially"):
        value = getattr(fk, opt)
        if value is not None:
            args.append(f"{opt}={value!r}")
    return f"{sa_prefix}ForeignKeyConstraint({', '.join(args)})"


def expected_type(type_: TypeEngine[Any], dialect: Dialect) -> TypeEngine[Any] | None:
    """The database column type of an sa_djblob type on *dialect*; None for other types."""
    if isinstance(type_, ExternalType | HashType):
        impl: TypeEngine[Any] = type_.load_dialect_impl(dialect)
        return impl
    return None


def _ddl(type_: TypeEngine[Any], dialect: Dialect) -> str:
    return " ".join(type_.compile(dialect=dialect).upper().split())


def _differs(
    inspected_type: TypeEngine[Any], metadata_type: TypeEngine[Any], dialect: Dialect
) -> bool | None:
    want = expected_type(metadata_type, dialect)
    if want is None:
        return None
    try:
        got = _ddl(inspected_type, dialect)
    except Exception:  # a reflected type this dialect cannot render: a real difference
        return True
    return got != _ddl(want, dialect)


def compare_type(
    context: MigrationContext,
    inspected_column: Column[Any],
    metadata_column: Column[Any],
    inspected_type: TypeEngine[Any],
    metadata_type: TypeEngine[Any],
) -> bool | None:
    """Alembic's ``compare_type`` hook: True / False for sa_djblob types, None for others
    (Alembic then compares them its own way)."""
    return _differs(inspected_type, metadata_type, context.dialect)


# -- drop order (MySQL error 1553) ------------------------------------------------------


def _is_fk_drop(op: Any) -> bool:
    from alembic.operations import ops

    return isinstance(op, ops.DropConstraintOp) and op.constraint_type == "foreignkey"


def fix_drop_order(container: Any) -> None:
    """Rewrite the operations of one ``UpgradeOps`` / ``DowngradeOps`` in place: drop the
    ``drop_index`` of every table that the same operations drop, and move each table's
    foreign-key drops before its first index drop."""
    from alembic.operations import ops

    dropped = {
        (op.schema, op.table_name) for op in container.ops if isinstance(op, ops.DropTableOp)
    }

    def goes_with_its_table(op: Any) -> bool:
        return isinstance(op, ops.DropIndexOp) and (op.schema, op.table_name) in dropped

    kept: list[Any] = []
    for op in container.ops:
        if goes_with_its_table(op):
            continue
        if isinstance(op, ops.ModifyTableOps):
            op.ops = _fk_drops_first([o for o in op.ops if not goes_with_its_table(o)])
            if not op.ops:
                continue
        kept.append(op)
    container.ops[:] = _fk_drops_first(kept)


def _fk_drops_first(operations: list[Any]) -> list[Any]:
    """Move foreign-key drops before the first index drop of the same table."""
    from alembic.operations import ops

    out = list(operations)
    for fk in [op for op in operations if _is_fk_drop(op)]:
        table = (fk.schema, fk.table_name)
        first = next(
            (
                i
                for i, op in enumerate(out)
                if isinstance(op, ops.DropIndexOp) and (op.schema, op.table_name) == table
            ),
            None,
        )
        at = out.index(fk)
        if first is not None and first < at:
            out.insert(first, out.pop(at))
    return out


def process_revision_directives(context: Any, revision: Any, directives: list[Any]) -> None:
    """Alembic's ``process_revision_directives`` hook: :func:`fix_drop_order` on the
    upgrade and downgrade operations of every generated migration."""
    for script in directives:
        for container in [*script.upgrade_ops_list, *script.downgrade_ops_list]:
            fix_drop_order(container)


# -- the autogenerate plugin (Alembic >= 1.18) ----------------------------------------


def _compare_column_type(
    autogen_context: AutogenContext,
    alter_column_op: AlterColumnOp,
    schema: str | None,
    tname: str,
    cname: str,
    conn_col: Column[Any],
    metadata_col: Column[Any],
) -> PriorityDispatchResult:
    from alembic.util import PriorityDispatchResult

    diff = _differs(conn_col.type, metadata_col.type, autogen_context.dialect)
    if diff is None:
        return PriorityDispatchResult.CONTINUE
    if diff:
        alter_column_op.existing_type = conn_col.type
        alter_column_op.modify_type = metadata_col.type
    return PriorityDispatchResult.STOP


def setup(plugin: Plugin) -> None:
    """The plugin's setup, called by Alembic for an ``alembic.plugins`` entry point."""
    from alembic.util import DispatchPriority

    from ._alembic_move import compare_moves, hoist_moves

    # After a user compare_type (FIRST), before Alembic's own comparison (LAST).
    plugin.add_autogenerate_comparator(
        _compare_column_type, "column", "types", priority=DispatchPriority.MEDIUM
    )
    # After Alembic's foreign key and index comparison: a column that changes store is one
    # move_payloads, not a foreign-key swap that would fail.
    plugin.add_autogenerate_comparator(
        compare_moves, "table", "sa_djblob_moves", priority=DispatchPriority.LAST
    )
    plugin.add_autogenerate_comparator(
        hoist_moves, "schema", "sa_djblob_moves", priority=DispatchPriority.LAST
    )


def register_plugin() -> bool:
    """Register this module as the autogenerate plugin ``PLUGIN_NAME`` (idempotent).

    Returns False when the installed Alembic has no plugin system (before 1.18).
    """
    try:
        from alembic.runtime.plugins import Plugin
    except ImportError:
        return False
    # ValueError: already registered (by an entry point, or an earlier call).
    with contextlib.suppress(ValueError):
        Plugin.setup_plugin_from_module(sys.modules[__name__], PLUGIN_NAME)
    return True
