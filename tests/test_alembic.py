"""The Alembic environment in ``alembic/`` and ``sa_djblob.alembic_helpers``, on every backend."""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata, produce_migrations, render_python_code
from alembic.config import Config
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext

import sa_djblob as djb
from sa_djblob import alembic_helpers
from sa_djblob.types import HashType

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from examples import models  # noqa: E402

EXTERNAL_COLUMNS = {
    ("test", "b1"): "~external_shared",
    ("test", "b2"): "~external_local",
    ("test", "a1"): "~external_shared",
    ("test", "a2"): "~external_local",
    ("image_file", "file"): "~external_shared",
    ("extracted", "features"): "~external_local",
}


def url_string(url: sa.URL) -> str:
    return url.render_as_string(hide_password=False)


def alembic_config(url: sa.URL, versions: Path | None = None) -> Config:
    """The repository's alembic.ini, pointed at *url* the way ``-x url=...`` does."""
    cfg = Config(
        str(ROOT / "alembic.ini"), cmd_opts=argparse.Namespace(x=[f"url={url_string(url)}"])
    )
    cfg.attributes["configure_logger"] = False
    if versions is not None:
        cfg.set_main_option("version_locations", str(versions))
    return cfg


def context_options(mode: str) -> dict[str, Any]:
    """``context.configure`` options as env.py sets them (plugin) or as an older Alembic would."""
    opts: dict[str, Any] = {"render_item": alembic_helpers.render_item}
    if mode == "plugin":
        assert alembic_helpers.register_plugin()
        opts["autogenerate_plugins"] = ["alembic.autogenerate.*", alembic_helpers.PLUGIN_NAME]
    else:
        opts["compare_type"] = alembic_helpers.compare_type
    return opts


def diffs(url: sa.URL, metadata: sa.MetaData, mode: str = "plugin") -> list[Any]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts=context_options(mode))
            return list(compare_metadata(ctx, metadata))
    finally:
        engine.dispose()


def table_names(url: sa.URL) -> set[str]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


# -- rendering --------------------------------------------------------------------


class _Ctx:
    def __init__(self) -> None:
        self.imports: set[str] = set()
        self.opts: dict[str, Any] = {}
        self.metadata: Any = None


@pytest.mark.parametrize(
    ("typ", "source"),
    [
        (djb.Blob(), "sa_djblob.Blob()"),
        (djb.Attach(), "sa_djblob.Attach()"),
        (djb.Blob(store="shared"), "sa_djblob.Blob(store='shared', foreign_key=False)"),
        (djb.Attach(store="local"), "sa_djblob.Attach(store='local', foreign_key=False)"),
        (djb.Filepath(store="x"), "sa_djblob.Filepath(store='x', foreign_key=False)"),
        (
            djb.Filepath(store="x", foreign_key=False),
            "sa_djblob.Filepath(store='x', foreign_key=False)",
        ),
        (
            djb.Blob(store="shared", foreign_key=False),
            "sa_djblob.Blob(store='shared', foreign_key=False)",
        ),
        (HashType(), "sa_djblob.types.HashType()"),
    ],
)
def test_render_item_types(typ: Any, source: str) -> None:
    ctx: Any = _Ctx()
    assert alembic_helpers.render_item("type", typ, ctx) == source
    assert ctx.imports == {"import sa_djblob"}
    import sa_djblob

    rebuilt = eval(source, {"sa_djblob": sa_djblob})  # the migration's view of the column
    assert type(rebuilt) is type(typ)
    assert getattr(rebuilt, "store", None) == getattr(typ, "store", None)


# -- the foreign_key keyword of the types -------------------------------------------


@pytest.mark.parametrize(
    ("typ", "text"),
    [
        (djb.Blob(), "Blob()"),
        (djb.Blob(store="shared"), "Blob(store='shared')"),
        (djb.Blob(store="shared", foreign_key=False), "Blob(store='shared', foreign_key=False)"),
        (djb.Attach(store="local", foreign_key=True), "Attach(store='local')"),
        (djb.Attach(store="local", foreign_key=False), "Attach(store='local', foreign_key=False)"),
        (djb.Filepath(store="x"), "Filepath(store='x')"),
        (djb.Filepath(store="x", foreign_key=False), "Filepath(store='x', foreign_key=False)"),
    ],
)
def test_foreign_key_keyword_repr_rebuilds(typ: Any, text: str) -> None:
    assert repr(typ) == text
    rebuilt = eval(repr(typ), {"Blob": djb.Blob, "Attach": djb.Attach, "Filepath": djb.Filepath})
    assert (type(rebuilt), rebuilt.store, rebuilt.foreign_key) == (
        type(typ),
        typ.store,
        typ.foreign_key,
    )
    assert typ.cache_ok is True
    hash(typ.foreign_key)


def test_foreign_key_keyword_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="foreign_key"):
        djb.Blob(store="shared", foreign_key="no")  # type: ignore[arg-type]


def _table(md: sa.MetaData, typ: Any) -> sa.Table:
    return sa.Table("t", md, sa.Column("id", sa.Integer, primary_key=True), sa.Column("x", typ))


@pytest.mark.parametrize("kind", [djb.Blob, djb.Attach, djb.Filepath])
def test_foreign_key_false_adds_no_foreign_key_index_or_externals_table(kind: Any) -> None:
    md = sa.MetaData()
    table = _table(md, kind(store="shared", foreign_key=False))
    assert table.foreign_key_constraints == set()
    assert table.indexes == set()
    assert list(md.tables) == ["t"]
    assert table.c.x.comment == f":{kind.kind_name}@shared:"  # DataJoint's type comment stays
    # A copy (Table.to_metadata, Alembic's batch mode) keeps the keyword.
    copy = table.to_metadata(sa.MetaData())
    assert isinstance(copy.c.x.type, kind) and copy.c.x.type.foreign_key is False
    assert copy.foreign_key_constraints == set() and copy.indexes == set()

    md2 = sa.MetaData()
    wired = _table(md2, kind(store="shared"))
    assert [fk.referred_table.name for fk in wired.foreign_key_constraints] == ["~external_shared"]
    assert [[c.name for c in ix.columns] for ix in wired.indexes] == [["x"]]


@pytest.mark.parametrize("dialect_name", ["sqlite", "mysql", "mariadb", "postgresql"])
def test_rendered_external_type_compares_equal_to_the_model_type(dialect_name: str) -> None:
    """No phantom diff between ``Blob(store='x')`` of the models and the rendered type."""
    ctx = MigrationContext.configure(dialect_name=dialect_name)
    for model in (djb.Blob(store="shared"), djb.Attach(store="local"), djb.Filepath(store="x")):
        source = alembic_helpers.render_item("type", model, _Ctx())  # type: ignore[arg-type]
        assert isinstance(source, str)
        rendered = eval(source, {"sa_djblob": djb})
        col: sa.Column[Any] = sa.Column("x", model)
        assert alembic_helpers.compare_type(ctx, col, col, rendered, model) is False
        assert alembic_helpers.compare_type(ctx, col, col, model, rendered) is False
        want = alembic_helpers.expected_type(model, ctx.dialect)
        got = alembic_helpers.expected_type(rendered, ctx.dialect)
        assert want is not None and got is not None
        assert want.compile(dialect=ctx.dialect) == got.compile(dialect=ctx.dialect)


def test_render_item_leaves_other_things_to_alembic() -> None:
    ctx: Any = _Ctx()
    assert alembic_helpers.render_item("type", sa.Integer(), ctx) is False
    assert alembic_helpers.render_item("server_default", sa.text("1"), ctx) is False
    table = models.metadata.tables["extracted"]
    (fk,) = [c for c in table.foreign_key_constraints if c.referred_table.name == "image_file"]
    assert alembic_helpers.render_item("foreign_key", fk, ctx) is False
    assert ctx.imports == set()


def test_rendered_migration_is_frozen_ddl() -> None:
    """Autogenerate against the models: one named FK per external column, no duplicates."""
    engine = sa.create_engine("sqlite://")
    with engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn, opts={**context_options("plugin"), "target_metadata": models.metadata}
        )
        upgrade_ops = produce_migrations(ctx, models.metadata).upgrade_ops
        assert upgrade_ops is not None
        code = render_python_code(
            upgrade_ops,
            render_item=alembic_helpers.render_item,
            migration_context=ctx,
        )
    for (table, column), ext in EXTERNAL_COLUMNS.items():
        name = f"fk_{table}_{column}_{ext}"
        fk = f"sa.ForeignKeyConstraint(['{column}'], ['{ext}.hash'], name=op.f('{name}')"
        assert code.count(f"['{column}'], ['{ext}.hash']") == 1, (table, column)
        assert fk in code
        assert f"op.create_index('ix_{table}_{column}', '{table}', ['{column}']" in code
    # HashType only for the externals tables' hash and contents_hash columns.
    assert code.count("sa_djblob.types.HashType()") == 2 * 2
    assert code.count("foreign_key=False") == len(EXTERNAL_COLUMNS)
    assert "sa.Column('b1', sa_djblob.Blob(store='shared', foreign_key=False)" in code
    assert "sa.Column('a2', sa_djblob.Attach(store='local', foreign_key=False)" in code
    assert "sa.Column('b0', sa_djblob.Blob()" in code
    assert "sa.Column('a0', sa_djblob.Attach()" in code
    assert "comment=':blob@shared:'" in code


def test_register_plugin_is_idempotent() -> None:
    assert alembic_helpers.register_plugin() is True
    assert alembic_helpers.register_plugin() is True


# -- the environment on every backend ----------------------------------------------


@pytest.mark.parametrize("mode", ["plugin", "compare_type"])
def test_upgrade_autogenerate_downgrade(database: Any, mode: str) -> None:
    cfg = alembic_config(database.url)
    command.upgrade(cfg, "head")

    names = table_names(database.url)
    assert {
        "test",
        "image",
        "image_file",
        "extracted",
        "~external_shared",
        "~external_local",
    } <= names

    assert diffs(database.url, models.metadata, mode) == []

    engine = sa.create_engine(database.url, poolclass=sa.pool.NullPool)
    try:
        insp = sa.inspect(engine)
        for (table, column), ext in EXTERNAL_COLUMNS.items():
            fks = [
                fk for fk in insp.get_foreign_keys(table) if fk["constrained_columns"] == [column]
            ]
            assert [fk["referred_table"] for fk in fks] == [ext], (table, column)
            assert any(ix["column_names"][:1] == [column] for ix in insp.get_indexes(table))
    finally:
        engine.dispose()

    command.downgrade(cfg, "base")
    assert table_names(database.url) == {"alembic_version"}


def test_autogenerate_sees_real_changes(database: Any) -> None:
    """The comparison is not blind: a new external column and a new table show up."""
    command.upgrade(alembic_config(database.url), "head")
    md = sa.MetaData(naming_convention=models.NAMING_CONVENTION)
    for t in models.metadata.sorted_tables:
        t.to_metadata(md)
    sa.Table(
        "newtable",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("x", djb.Blob(store="shared")),
    )
    found = diffs(database.url, md)
    kinds = [d[0] if isinstance(d, tuple) else d[0][0] for d in found]
    assert "add_table" in kinds
    added = [d[1] for d in found if isinstance(d, tuple) and d[0] == "add_table"]
    assert [t.name for t in added] == ["newtable"]
    assert diffs(database.url, sa.MetaData()) != []


@pytest.mark.backends("mysql")
def test_in_row_to_external_is_a_type_change(database: Any) -> None:
    """On MySQL LONGBLOB and BINARY(16) differ: moving a column to a store is a type change
    (compare_type), and a move_payloads with the autogenerate plugin."""
    command.upgrade(alembic_config(database.url), "head")
    md = sa.MetaData(naming_convention=models.NAMING_CONVENTION)
    for t in models.metadata.sorted_tables:
        t.to_metadata(md)
    test = md.tables["test"]
    test.c.b0.type = djb.Blob(store="shared")
    found = [
        d
        for group in diffs(database.url, md, "compare_type")
        if isinstance(group, list)
        for d in group
    ]
    changed = [d for d in found if d[0] == "modify_type" and d[3] == "b0"]
    assert changed, found
    # the autogenerate plugin renders it as the move it is (tests/test_move_alembic.py)
    moves = [d for d in diffs(database.url, md, "plugin") if d[0] == "move_payloads"]
    assert moves == [("move_payloads", None, "test", "b0", None, "shared")]


def test_autogenerate_from_empty_database(database: Any, tmp_path: Path) -> None:
    versions = tmp_path / "versions"
    versions.mkdir()
    cfg = alembic_config(database.url, versions)
    script = command.revision(
        cfg, message="everything", autogenerate=True, version_path=str(versions)
    )
    assert script is not None and not isinstance(script, list)
    source = Path(script.path).read_text()
    assert "import sa_djblob\n" in source
    assert "sa_djblob.Blob()" in source and "sa_djblob.Attach()" in source
    assert "sa_djblob.Blob(store='shared'" in source
    assert "sa_djblob.Attach(store='local'" in source
    assert "HashType()" not in source.split("'~external_local'", 1)[0]  # not on user columns
    assert "'~external_shared'" in source and "'~external_local'" in source
    # The migration imports on its own, and its tables carry no type-made constraints.
    spec = importlib.util.spec_from_file_location("generated_migration", script.path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.sa_djblob is djb

    command.upgrade(cfg, "head")
    assert diffs(database.url, models.metadata) == []
    # Nothing more to generate: a second autogenerate finds no operations.
    command.check(cfg)
    # The generated downgrade runs as generated, on MySQL / MariaDB too (error 1553 before
    # process_revision_directives): DROP TABLE takes the table's indexes with it.
    downgrade = source.split("def downgrade()", 1)[1]
    assert "drop_index(" not in downgrade
    command.downgrade(cfg, "base")
    assert table_names(database.url) == {"alembic_version"}


def test_alembic_command_line(tmp_path: Path) -> None:
    """The real ``alembic`` CLI from the repository root: the top-level alembic/ folder does
    not shadow the package, and SA_DJBLOB_URL picks the database."""
    db = tmp_path / "cli.sqlite"
    env = {**os.environ, "SA_DJBLOB_URL": f"sqlite:///{db}"}

    def alembic(*args: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "alembic", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        return out.stdout + out.stderr

    alembic("upgrade", "head")
    assert "0002 (head)" in alembic("current")
    assert "No new upgrade operations detected" in alembic("check")
    sql = alembic("upgrade", "0001:head", "--sql")
    assert "CREATE TABLE image_file" in sql and '"~external_shared"' in sql
    alembic("downgrade", "base")
    assert table_names(sa.make_url(f"sqlite:///{db}")) == {"alembic_version"}


def test_new_external_column_on_an_existing_table(database: Any) -> None:
    """``add_column`` with the rendered type, then its foreign key and index (batch mode on
    SQLite): the rendered operations run, and autogenerate then finds nothing."""
    command.upgrade(alembic_config(database.url), "head")
    md = sa.MetaData(naming_convention=models.NAMING_CONVENTION)
    for t in models.metadata.sorted_tables:
        t.to_metadata(md)
    md.tables["image"].append_column(sa.Column("thumb", djb.Blob(store="shared")))
    engine = sa.create_engine(database.url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            batch = conn.dialect.name == "sqlite"
            opts = {**context_options("plugin"), "target_metadata": md, "render_as_batch": batch}
            ctx = MigrationContext.configure(conn, opts=opts)
            script = produce_migrations(ctx, md)
            alembic_helpers.process_revision_directives(ctx, None, [script])
            upgrade_ops, downgrade_ops = script.upgrade_ops, script.downgrade_ops
            assert upgrade_ops is not None and downgrade_ops is not None
            code, back = (
                render_python_code(
                    ops,
                    render_item=alembic_helpers.render_item,
                    migration_context=ctx,
                    render_as_batch=batch,
                )
                for ops in (upgrade_ops, downgrade_ops)
            )
            assert "sa.Column('thumb', sa_djblob.Blob(store='shared', foreign_key=False)" in code
            assert code.count("create_foreign_key(") == 1
            assert code.count("create_index(") == 1
            # the downgrade drops the foreign key before the index it needs (MySQL: 1553)
            assert back.index("drop_constraint(") < back.index("drop_index(")
            namespace: dict[str, Any] = {"op": Operations(ctx), "sa": sa, "sa_djblob": djb}
            exec("def upgrade():\n" + code, namespace)
            exec("def downgrade():\n" + back, namespace)
            namespace["upgrade"]()
        insp = sa.inspect(engine)
        fks = [
            fk for fk in insp.get_foreign_keys("image") if fk["constrained_columns"] == ["thumb"]
        ]
        assert [fk["referred_table"] for fk in fks] == ["~external_shared"]
        assert any(ix["column_names"][:1] == ["thumb"] for ix in insp.get_indexes("image"))
        assert diffs(database.url, md) == []
        with engine.begin() as conn:
            namespace["op"] = Operations(MigrationContext.configure(conn))
            namespace["downgrade"]()
        assert "thumb" not in {c["name"] for c in sa.inspect(engine).get_columns("image")}
    finally:
        engine.dispose()
    assert diffs(database.url, models.metadata) == []


def _ops(*names: str) -> list[Any]:
    from alembic.operations import ops

    made: dict[str, Any] = {
        "ix_t": ops.DropIndexOp("ix_t_x", table_name="t"),
        "fk_t": ops.DropConstraintOp("fk_t_x", "t", type_="foreignkey"),
        "uq_t": ops.DropConstraintOp("uq_t_y", "t", type_="unique"),
        "col_t": ops.DropColumnOp("t", "x"),
        "drop_t": ops.DropTableOp("t"),
        "ix_u": ops.DropIndexOp("ix_u_x", table_name="u"),
        "ix_t_s": ops.DropIndexOp("ix_t_x", table_name="t", schema="s"),
    }
    return [made[n] for n in names]


def _names(container: Any) -> list[Any]:
    out: list[Any] = []
    for op in container.ops:
        if hasattr(op, "ops"):
            out.append([_names(op)])
        else:
            name = getattr(op, "index_name", None) or getattr(op, "constraint_name", None)
            out.append(f"{type(op).__name__}:{op.table_name}:{name or ''}")
    return out


def test_fix_drop_order() -> None:
    from alembic.operations import ops

    # indexes of a dropped table go (same schema only); other tables' stay
    down = ops.DowngradeOps(
        ops=[
            ops.ModifyTableOps("t", _ops("ix_t")),
            *_ops("ix_u", "ix_t_s", "drop_t"),
        ]
    )
    alembic_helpers.fix_drop_order(down)
    assert _names(down) == [
        "DropIndexOp:u:ix_u_x",
        "DropIndexOp:t:ix_t_x",  # schema 's': another table
        "DropTableOp:t:",
    ]
    # a foreign key is dropped before the index it needs; the rest keeps its order
    up = ops.UpgradeOps(ops=[ops.ModifyTableOps("t", _ops("uq_t", "ix_t", "col_t", "fk_t"))])
    alembic_helpers.fix_drop_order(up)
    assert _names(up) == [
        [
            [
                "DropConstraintOp:t:uq_t_y",
                "DropConstraintOp:t:fk_t_x",
                "DropIndexOp:t:ix_t_x",
                "DropColumnOp:t:",
            ]
        ]
    ]
    flat = ops.UpgradeOps(ops=_ops("ix_t", "ix_u", "fk_t"))
    alembic_helpers.fix_drop_order(flat)
    assert _names(flat) == [
        "DropConstraintOp:t:fk_t_x",
        "DropIndexOp:t:ix_t_x",
        "DropIndexOp:u:ix_u_x",
    ]
