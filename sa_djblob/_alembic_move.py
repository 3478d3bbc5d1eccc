"""``op.move_payloads(...)``: :func:`sa_djblob.move` as an Alembic operation, registered
through Alembic's operations plugin API (as GeoAlchemy2 registers its own), with its
renderer and the autogenerate comparison that emits it. Imported by
:mod:`sa_djblob.alembic_helpers` (so ``env.py`` registers it) and by migrations that use it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from alembic.autogenerate import renderers
from alembic.operations import MigrateOperation, Operations, ops

from ._externals.move import move
from ._externals.table import EXTERNAL_PREFIX, _index_name
from .types import Attach, Blob, ExternalType

if TYPE_CHECKING:
    from alembic.autogenerate.api import AutogenContext
    from alembic.util import PriorityDispatchResult

__all__ = ["MovePayloadsOp", "compare_moves", "hoist_moves"]


@Operations.register_operation("move_payloads")
class MovePayloadsOp(MigrateOperation):
    """Move the values of ``table.column`` to store *to_store* (None: into the row)."""

    def __init__(
        self,
        table_name: str,
        column_name: str,
        *,
        to_store: str | None,
        from_store: str | None,
        kind: str = "blob",
        schema: str | None = None,
    ) -> None:
        if kind not in ("blob", "attach"):
            raise ValueError(f"kind must be 'blob' or 'attach', got {kind!r}")
        self.table_name = table_name
        self.column_name = column_name
        self.to_store = to_store
        self.from_store = from_store
        self.kind = kind
        self.schema = schema

    @classmethod
    def move_payloads(
        cls,
        operations: Operations,
        table_name: str,
        column_name: str,
        *,
        to_store: str | None,
        from_store: str | None,
        kind: str = "blob",
        schema: str | None = None,
    ) -> Any:
        """``op.move_payloads("recording", "trace", to_store="s3", from_store="local")``:
        ``djb.move`` on the migration's connection. *from_store* is where the values are
        before (the downgrade moves them back there); *kind* is ``"blob"`` or
        ``"attach"`` (it matters into and out of the row)."""
        op = cls(
            table_name,
            column_name,
            to_store=to_store,
            from_store=from_store,
            kind=kind,
            schema=schema,
        )
        return operations.invoke(op)

    def reverse(self) -> MovePayloadsOp:
        return MovePayloadsOp(
            self.table_name,
            self.column_name,
            to_store=self.from_store,
            from_store=self.to_store,
            kind=self.kind,
            schema=self.schema,
        )

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return (
            "move_payloads",
            self.schema,
            self.table_name,
            self.column_name,
            self.from_store,
            self.to_store,
        )


@Operations.implementation_for(MovePayloadsOp)
def _move_payloads(operations: Operations, operation: MovePayloadsOp) -> None:
    if operations.migration_context.as_sql:
        raise NotImplementedError(
            "op.move_payloads copies payloads between stores: it cannot be written out as SQL"
            " (--sql); run this migration online"
        )
    type_ = (Attach if operation.kind == "attach" else Blob)(foreign_key=False)
    table = sa.Table(
        operation.table_name,
        sa.MetaData(),
        sa.Column(operation.column_name, type_),
        schema=operation.schema,
    )
    move(operations.get_bind(), table.c[operation.column_name], operation.to_store)


@renderers.dispatch_for(MovePayloadsOp)
def _render_move_payloads(autogen_context: AutogenContext, op: MovePayloadsOp) -> str:
    autogen_context.imports.add("import sa_djblob.alembic_helpers  # registers op.move_payloads")
    args = [repr(op.table_name), repr(op.column_name), f"to_store={op.to_store!r}"]
    args += [f"from_store={op.from_store!r}", f"kind={op.kind!r}"]
    if op.schema:
        args.append(f"schema={op.schema!r}")
    return f"op.move_payloads({', '.join(args)})"


# -- autogenerate --------------------------------------------------------------------


def _conn_store(conn_col: sa.Column[Any]) -> str | None:
    for fk in conn_col.foreign_keys:
        target = fk.target_fullname.rsplit(".", 1)[0].rsplit(".", 1)[-1]
        if target.startswith(EXTERNAL_PREFIX):
            return target[len(EXTERNAL_PREFIX) :]
    return None


def _is_columns_fk(op: Any, column: str) -> bool:
    """A create or drop of the foreign key of *column* to an externals table."""
    if isinstance(op, ops.CreateForeignKeyOp):
        return list(op.local_cols) == [column] and op.referent_table.startswith(EXTERNAL_PREFIX)
    if isinstance(op, ops.DropConstraintOp) and op.constraint_type == "foreignkey":
        rev = op._reverse
        if rev is None:
            return False
        fk = rev.to_constraint()
        if not isinstance(fk, sa.ForeignKeyConstraint):
            return False
        return list(fk.column_keys) == [column] and fk.elements[0].target_fullname.split(".")[
            -2
        ].startswith(EXTERNAL_PREFIX)
    return False


def compare_moves(
    autogen_context: AutogenContext,
    modify_table_ops: ops.ModifyTableOps,
    schema: str | None,
    tname: str,
    conn_table: sa.Table | None,
    metadata_table: sa.Table | None,
) -> PriorityDispatchResult:
    """A Blob or Attach column whose store differs from the database's: one
    ``move_payloads`` in place of the type, comment, foreign key and index changes that
    Alembic found (they would fail: the keys are not in the new externals table)."""
    from alembic.util import PriorityDispatchResult

    if conn_table is None or metadata_table is None:
        return PriorityDispatchResult.CONTINUE
    for column in metadata_table.columns:
        type_ = column.type
        if not isinstance(type_, ExternalType) or type_.kind.name not in ("blob", "attach"):
            continue
        if column.name not in conn_table.c:
            continue
        current = _conn_store(conn_table.c[column.name])
        if current == type_.store:
            continue
        index = _index_name(metadata_table, column)
        kept: list[Any] = []
        for op in modify_table_ops.ops:
            if isinstance(op, ops.AlterColumnOp) and op.column_name == column.name:
                op.modify_type = None
                op.modify_comment = False
                if not op.has_changes():
                    continue
            elif _is_columns_fk(op, column.name) or (
                isinstance(op, ops.CreateIndexOp | ops.DropIndexOp) and op.index_name == index
            ):
                continue
            kept.append(op)
        kept.append(
            MovePayloadsOp(
                tname,
                column.name,
                to_store=type_.store,
                from_store=current,
                kind=type_.kind.name,
                schema=schema,
            )
        )
        modify_table_ops.ops = kept
    return PriorityDispatchResult.CONTINUE


def hoist_moves(
    autogen_context: AutogenContext, upgrade_ops: ops.UpgradeOps, schemas: Any
) -> PriorityDispatchResult:
    """Take the moves out of their table's container, to the top level after it: a move is
    not one of the ALTERs that batch mode (SQLite) collects and replays."""
    from alembic.util import PriorityDispatchResult

    out: list[Any] = []
    for container in upgrade_ops.ops:
        if isinstance(container, ops.ModifyTableOps):
            moves = [o for o in container.ops if isinstance(o, MovePayloadsOp)]
            container.ops = [o for o in container.ops if not isinstance(o, MovePayloadsOp)]
            if container.ops:
                out.append(container)
            out.extend(moves)
        else:
            out.append(container)
    upgrade_ops.ops = out
    return PriorityDispatchResult.CONTINUE
