"""The image pipeline: ``image`` -> ``image_file`` (attach@shared) -> ``extracted`` (blob@local)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 14:52:30.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import sa_djblob

# revision identifiers, used by Alembic.
revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "image",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_image")),
        sa.UniqueConstraint("name", name=op.f("uq_image_name")),
    )
    op.create_table(
        "image_file",
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column(
            "file",
            sa_djblob.Attach(store="shared", foreign_key=False),
            nullable=False,
            comment=":attach@shared:",
        ),
        sa.ForeignKeyConstraint(
            ["file"],
            ["~external_shared.hash"],
            name=op.f("fk_image_file_file_~external_shared"),
            onupdate="RESTRICT",
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["image_id"], ["image.id"], name=op.f("fk_image_file_image_id_image")
        ),
        sa.PrimaryKeyConstraint("image_id", name=op.f("pk_image_file")),
    )
    op.create_index("ix_image_file_file", "image_file", ["file"], unique=False)
    op.create_table(
        "extracted",
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column(
            "features",
            sa_djblob.Blob(store="local", foreign_key=False),
            nullable=False,
            comment=":blob@local:",
        ),
        sa.ForeignKeyConstraint(
            ["features"],
            ["~external_local.hash"],
            name=op.f("fk_extracted_features_~external_local"),
            onupdate="RESTRICT",
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["image_id"],
            ["image_file.image_id"],
            name=op.f("fk_extracted_image_id_image_file"),
        ),
        sa.PrimaryKeyConstraint("image_id", name=op.f("pk_extracted")),
    )
    op.create_index("ix_extracted_features", "extracted", ["features"], unique=False)


def downgrade() -> None:
    # The indexes go with their table (MySQL refuses to drop an index a foreign key uses).
    op.drop_table("extracted")
    op.drop_table("image_file")
    op.drop_table("image")
