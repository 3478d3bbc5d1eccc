"""SQLAlchemy models that mirror DataJoint's blobs-and-attachments walkthrough.

``Test`` is the walkthrough's table with one column of every kind: in-row blob and
attachment, and both in the external stores ``shared`` (S3) and ``local`` (a folder).
``Image`` -> ``ImageFile`` -> ``Extracted`` is a small image pipeline: a lookup of image
names, the image files as attachments, and features computed from them as blobs.

Importing this module only defines tables on ``Base.metadata`` (including the externals
tables ``~external_shared`` and ``~external_local``); it connects to nothing and
configures no store. The Alembic environment in ``alembic/`` migrates these models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

import sa_djblob as djb

__all__ = ["Base", "Extracted", "Image", "ImageFile", "Test", "metadata"]

# Named constraints, so that migrations can drop and alter them on every database.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


metadata = Base.metadata


class Test(Base):
    """``# test external storage``: DataJoint's ``Test`` table."""

    __tablename__ = "test"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    b0: Mapped[Any] = mapped_column(djb.Blob())  # longblob
    b1: Mapped[Any] = mapped_column(djb.Blob(store="shared"))  # blob@shared
    b2: Mapped[Any] = mapped_column(djb.Blob(store="local"))  # blob@local
    a0: Mapped[Path] = mapped_column(djb.Attach())  # attach
    a1: Mapped[Path] = mapped_column(djb.Attach(store="shared"))  # attach@shared
    a2: Mapped[Path] = mapped_column(djb.Attach(store="local"))  # attach@local


class Image(Base):
    """A lookup of images by name."""

    __tablename__ = "image"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(sa.String(255), unique=True)

    file: Mapped[ImageFile | None] = relationship(back_populates="image")


class ImageFile(Base):
    """The image file of an image, kept as an attachment in the ``shared`` store."""

    __tablename__ = "image_file"

    image_id: Mapped[int] = mapped_column(sa.ForeignKey(Image.id), primary_key=True)
    file: Mapped[Path] = mapped_column(djb.Attach(store="shared"))  # attach@shared

    image: Mapped[Image] = relationship(back_populates="file")
    extracted: Mapped[Extracted | None] = relationship(back_populates="image_file")


class Extracted(Base):
    """Features extracted from an image file, kept as a blob in the ``local`` store."""

    __tablename__ = "extracted"

    image_id: Mapped[int] = mapped_column(sa.ForeignKey(ImageFile.image_id), primary_key=True)
    features: Mapped[Any] = mapped_column(djb.Blob(store="local"))  # blob@local

    image_file: Mapped[ImageFile] = relationship(back_populates="extracted")
