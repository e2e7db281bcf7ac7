"""Secrets `archq up` keeps in the data directory for its operator: files readable by their owner only."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from queues.config import Settings

FLOWER_CREDENTIALS_FILE = "flower-credentials"


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
