"""Where an image artifact may come from: an http(s) URL, or a local path under a directory the operator
allowed. Checked by the API when an image is registered and again by the worker before it reads one."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

MAX_SOURCE_LENGTH = 2048


def validate_source(source: str, allowed_dirs: Iterable[Path]) -> str:
    """The source in canonical form (a URL as given, a local path resolved); ValueError with a message for the
    user when it is neither an http(s) URL nor a path inside one of `allowed_dirs`."""
    if not isinstance(source, str) or not source.strip():
        raise ValueError("must be an http(s):// URL or an absolute local path")
    if len(source) > MAX_SOURCE_LENGTH or any(ord(c) < 32 for c in source):
        raise ValueError(f"must be at most {MAX_SOURCE_LENGTH} printable characters")
    parts = urlsplit(source)
    if parts.scheme in ("http", "https"):
        if not parts.hostname:
            raise ValueError("the URL names no host")
        return source
    if parts.scheme not in ("", "file"):
        raise ValueError(f"scheme {parts.scheme!r} is not allowed; use http, https or a local path")
    if parts.scheme == "file" and parts.netloc:
        raise ValueError("a file:// URL must name a local path (file:///...)")
    path_text = parts.path if parts.scheme == "file" else source
    if not os.path.isabs(path_text):
        raise ValueError("a local path must be absolute")
    if ".." in Path(path_text).parts:
        raise ValueError("a local path must not contain '..'")
    # Resolving follows symlinks: a link inside an allowed directory that points out of it is refused too.
    resolved = Path(path_text).resolve()
    roots = [Path(d).resolve() for d in allowed_dirs]
    if not any(resolved == root or resolved.is_relative_to(root) for root in roots):
        allowed = ", ".join(str(r) for r in roots) or "none configured"
        raise ValueError(f"local path {resolved} is outside the allowed image directories ({allowed})")
    return str(resolved)
