from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

import web.models  # noqa: F401  (registers the tables on the metadata)
from web.extensions import db

config = context.config
target_metadata = db.metadata


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    try:
        with engine.connect() as connection:
            # Batch mode lets later revisions alter columns on SQLite, which has no ALTER COLUMN.
            context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        # The pool would keep its connection open until garbage collection (a ResourceWarning, and a
        # PostgreSQL backend held by a finished migration).
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
