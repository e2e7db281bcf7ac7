"""The databases archq supports, for tests that must hold on both: a fresh SQLite file, or a fresh database
on the PostgreSQL server at ARCHQ_TEST_POSTGRES (default 127.0.0.1:5432, trust auth as user postgres),
dropped afterwards."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql

POSTGRES = os.environ.get("ARCHQ_TEST_POSTGRES", "postgres@127.0.0.1:5432")
KINDS = ("sqlite", "postgresql")


@contextmanager
def fresh_database(kind: str, tmp_path: Path) -> Iterator[str]:
    """Yields the SQLAlchemy URL of an empty database of this kind."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'archq.db'}"
        return
    name = f"archq_test_{uuid.uuid4().hex[:12]}"
    admin = f"postgresql://{POSTGRES}/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield f"postgresql+psycopg://{POSTGRES}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
