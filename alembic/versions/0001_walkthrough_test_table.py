"""DataJoint's walkthrough table ``test``, and the externals tables of both stores

Revision ID: 0001
Revises:
Create Date: 2026-11-27 14:51:56.755996

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

import sa_djblob

# revision identifiers, used by Alembic.
revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _externals_table(store: str) -> None:
    op.create_table(
        f"~external_{store}",
        sa.Column(
            "hash",
            sa_djblob.types.HashType(),
            nullable=False,
            comment=":uuid:hash of contents (blob), of filename + contents (attach),"
            " or relative filepath (filepath)",
        ),
        sa.Column(
            "size",
            sa.BigInteger()
            .with_variant(mysql.BIGINT(unsigned=True), "mariadb")
            .with_variant(mysql.BIGINT(unsigned=True), "mysql"),
            nullable=False,
            comment="size of object in bytes",
        ),
        sa.Column(
            "attachment_name",
            sa.String(length=255),
            nullable=True,
            comment="the filename of an attachment",
        ),
        sa.Column(
            "filepath",
            sa.String(length=1000),
            nullable=True,
            comment="relative filepath or attachment filename",
        ),
        sa.Column(
            "contents_hash",
            sa_djblob.types.HashType(),
            nullable=True,
            comment=":uuid:used for the filepath datatype",
        ),
        sa.Column(
            "timestamp",
            sa.TIMESTAMP(),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
            comment="automatic timestamp",
        ),
        sa.PrimaryKeyConstraint("hash", name=op.f(f"pk_~external_{store}")),
        comment="external storage tracking",
        mysql_engine="InnoDB",
    )


def upgrade() -> None:
    _externals_table("local")
    _externals_table("shared")
    op.create_table(
        "test",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("b0", sa_djblob.Blob(), nullable=False),
        sa.Column(
            "b1",
            sa_djblob.Blob(store="shared", foreign_key=False),
            nullable=False,
            comment=":blob@shared:",
        ),
        sa.Column(
            "b2",
            sa_djblob.Blob(store="local", foreign_key=False),
            nullable=False,
            comment=":blob@local:",
        ),
        sa.Column("a0", sa_djblob.Attach(), nullable=False, comment=":attach:"),
        sa.Column(
            "a1",
            sa_djblob.Attach(store="shared", foreign_key=False),
            nullable=False,
            comment=":attach@shared:",
        ),
        sa.Column(
            "a2",
            sa_djblob.Attach(store="local", foreign_key=False),
            nullable=False,
            comment=":attach@local:",
        ),
        sa.ForeignKeyConstraint(
            ["a1"],
            ["~external_shared.hash"],
            name=op.f("fk_test_a1_~external_shared"),
            onupdate="RESTRICT",
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["a2"],
            ["~external_local.hash"],
            name=op.f("fk_test_a2_~external_local"),
            onupdate="RESTRICT",
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["b1"],
            ["~external_shared.hash"],
            name=op.f("fk_test_b1_~external_shared"),
            onupdate="RESTRICT",
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["b2"],
            ["~external_local.hash"],
            name=op.f("fk_test_b2_~external_local"),
            onupdate="RESTRICT",
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_test")),
    )
    op.create_index("ix_test_a1", "test", ["a1"], unique=False)
    op.create_index("ix_test_a2", "test", ["a2"], unique=False)
    op.create_index("ix_test_b1", "test", ["b1"], unique=False)
    op.create_index("ix_test_b2", "test", ["b2"], unique=False)


def downgrade() -> None:
    # The indexes go with their table (MySQL refuses to drop an index a foreign key uses).
    op.drop_table("test")
    op.drop_table("~external_shared")
    op.drop_table("~external_local")
