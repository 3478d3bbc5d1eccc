"""The Alembic environment of the example models (``examples/models.py``).

The database URL comes from ``alembic -x url=...``, then the environment variable
``SA_DJBLOB_URL``, then ``sqlalchemy.url`` in ``alembic.ini``
(``sqlite:///sa_djblob_demo.sqlite``).

sa_djblob takes part through :mod:`sa_djblob.alembic_helpers`: ``render_item`` writes its
types into migrations (and ``import sa_djblob``), and its autogenerate plugin (Alembic >=
1.18; the ``compare_type`` hook before that) compares them with what the database reports;
its ``process_revision_directives`` orders the generated drops so that downgrades (and
table removals) run on MySQL / MariaDB too.
The externals tables ``~external_<store>`` are ordinary tables of the models' MetaData.
"""

from __future__ import annotations

import os
import sys
from logging.config import fileConfig
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import context

from sa_djblob import alembic_helpers

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from examples.models import metadata as target_metadata  # noqa: E402

DEFAULT_URL = "sqlite:///sa_djblob_demo.sqlite"


def database_url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url")
    return (
        url
        or os.environ.get("SA_DJBLOB_URL")
        or config.get_main_option("sqlalchemy.url", DEFAULT_URL)
        or DEFAULT_URL
    )


def configure_options(dialect_name: str) -> dict[str, Any]:
    """The ``context.configure`` options that sa_djblob's types need (and SQLite's ALTERs)."""
    opts: dict[str, Any] = {
        "target_metadata": target_metadata,
        "render_item": alembic_helpers.render_item,
        # drop_index before DROP TABLE / before its foreign key: MySQL error 1553
        "process_revision_directives": alembic_helpers.process_revision_directives,
        "render_as_batch": dialect_name == "sqlite",
    }
    if alembic_helpers.register_plugin():
        opts["autogenerate_plugins"] = ["alembic.autogenerate.*", alembic_helpers.PLUGIN_NAME]
    else:
        opts["compare_type"] = alembic_helpers.compare_type
    return opts


def run_migrations_offline() -> None:
    """Emit the SQL to stdout instead of running it (``alembic upgrade head --sql``)."""
    url = sa.engine.make_url(database_url())
    context.configure(
        url=url,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        **configure_options(url.get_backend_name()),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connectable = config.attributes.get("connection")
    if connectable is not None:  # a connection handed over by a caller of the command API
        context.configure(connection=connectable, **configure_options(connectable.dialect.name))
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = sa.create_engine(database_url(), poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            context.configure(connection=connection, **configure_options(connection.dialect.name))
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
