"""Secrets `archq up` keeps in the data directory for its operator, and the SQLite database (tokens' hashes,
VMs' user data): files readable by their owner only."""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

from sqlalchemy.engine import make_url

from queues.config import Settings

FLOWER_CREDENTIALS_FILE = "flower-credentials"
UI_SECRET_KEY_FILE = "ui-secret-key"


def write_private(path: Path, text: str) -> None:
    """Write `text` to a file created 0600 from the start: never a moment when another user could read it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    path.chmod(0o600)


def flower_basic_auth(settings: Settings) -> str:
    """`user:password` for Flower: ARCHQ_FLOWER_BASIC_AUTH, else one generated on the first start and kept in
    `$ARCHQ_DATA_DIR/flower-credentials`, so Flower never runs without a password."""
    if settings.flower_basic_auth:
        return settings.flower_basic_auth
    path = settings.data_dir / FLOWER_CREDENTIALS_FILE
    if path.exists():
        return path.read_text().strip()
    credentials = f"admin:{secrets.token_urlsafe(18)}"
    write_private(path, credentials + "\n")
    return credentials


def ui_secret_key(settings: Settings) -> str:
    """The web UI's signing key: ARCHQ_UI_SECRET_KEY, else one generated once into
    `$ARCHQ_DATA_DIR/ui-secret-key` (0600). Every API process on the data directory must use the same key, so
    the first to start creates the file exclusively and the others read it."""
    if settings.ui_secret_key:
        return settings.ui_secret_key
    path = settings.data_dir / UI_SECRET_KEY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_when_written(path)
    key = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    return key


def _read_when_written(path: Path) -> str:
    """The key another process created; it may still be writing it (a few microseconds)."""
    for _ in range(100):
        if key := path.read_text().strip():
            return key
        time.sleep(0.01)
    raise RuntimeError(f"{path} stays empty; remove it to have a new key generated")


def private_database_file(database_url: str) -> None:
    """A SQLite database file exists 0600 before anything opens it (SQLite gives its -wal and -shm files the
    same mode); one made by an earlier version is made so. Other databases keep their data elsewhere."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return
    path = Path(url.database)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    for each in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if each.exists():
            each.chmod(0o600)
