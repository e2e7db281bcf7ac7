"""Where an image may come from, checked before anything is fetched: an `http`/`https` URL, or a local file
under one of the configured directories (`Settings.image_dirs`, ARCHQ_IMAGE_DIRS). Every image needs its
SHA-256, and its size is bounded (`Settings.max_image_bytes`, ARCHQ_MAX_IMAGE_BYTES). Pure functions: each
raises ValueError with a message for the user, or returns the value to store.

    validate_source(source, allowed_dirs) -> str   # the URL, or the resolved absolute path
    validate_sha256(text) -> str                   # 64 lowercase hex digits
    validate_size(size_bytes, max_bytes) -> int    # a declared or downloaded size within the limit
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

URL_SCHEMES = ("http", "https")
MAX_SOURCE_LENGTH = 2048
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def validate_source(source: str, allowed_dirs: Sequence[Path]) -> str:
    if not isinstance(source, str) or not source.strip():
        raise ValueError("the source must be an http(s) URL or a local path")
    if len(source) > MAX_SOURCE_LENGTH or any(ord(c) < 0x20 or ord(c) == 0x7F for c in source):
        raise ValueError(f"the source must be at most {MAX_SOURCE_LENGTH} printable characters")
    if "://" in source or source.lower().startswith(("file:", "ftp:", "data:")):
        return _validate_url(source)
    return _validate_path(source, allowed_dirs)


def _validate_url(source: str) -> str:
    parts = urlsplit(source)
    if parts.scheme.lower() not in URL_SCHEMES:
        raise ValueError(f"only http and https URLs are accepted, not {parts.scheme or 'this scheme'}")
    if not parts.hostname:
        raise ValueError("the URL has no host")
    if parts.username or parts.password:
        raise ValueError("the URL must not carry credentials")
    try:
        parts.port  # noqa: B018  (raises on a port out of range)
    except ValueError as exc:
        raise ValueError(f"the URL's port is invalid: {exc}") from None
    return source


def _validate_path(source: str, allowed_dirs: Sequence[Path]) -> str:
    path = Path(source)
    if not path.is_absolute():
        raise ValueError("a local image path must be absolute")
    if ".." in path.parts:
        raise ValueError("a local image path must not contain '..'")
    # Resolved, so a symlink out of an allowed directory is refused like a `..`.
    resolved = path.resolve()
    for directory in allowed_dirs:
        if resolved.is_relative_to(Path(directory).resolve()):
            return str(resolved)
    allowed = ", ".join(str(d) for d in allowed_dirs) or "none configured"
    raise ValueError(f"local images must be under one of the image directories ({allowed}; ARCHQ_IMAGE_DIRS)")


def validate_sha256(text: str) -> str:
    if not isinstance(text, str) or not _SHA256.match(text.strip().lower()):
        raise ValueError("sha256 must be the image's SHA-256: 64 hexadecimal digits")
    return text.strip().lower()


def validate_size(size_bytes: int, max_bytes: int) -> int:
    if isinstance(size_bytes, bool) or not isinstance(size_bytes, int) or size_bytes < 0:
        raise ValueError("the size must be a non-negative number of bytes")
    if size_bytes > max_bytes:
        raise ValueError(f"the image is {size_bytes} bytes, over the limit of {max_bytes} (ARCHQ_MAX_IMAGE_BYTES)")
    return size_bytes
