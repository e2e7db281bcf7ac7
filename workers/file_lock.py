"""An exclusive lock between processes on one host (fcntl.flock on a lock file): several workers, or a
worker and `archq images build tiny`, may prepare the same file at once."""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold the lock on `path` (created if missing) for the body's duration."""
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
