"""What every built guest shares: built once per architecture into a cache directory that concurrent workers
(and `archq` commands) share, in a temporary directory renamed into place under a file lock, and verified by
the SHA256s of its manifest before it is reused."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from workers.file_lock import locked

log = logging.getLogger(__name__)

T = TypeVar("T")

TOOL_TIMEOUT_S = 300

_VERIFIED: dict[tuple[str, int, int, int], str] = {}


def sha256_of(path: Path) -> str:
    """SHA256 of a file, remembered while the file is unchanged (same inode, size and mtime): every create
    checks the guest, and hashing 15-200 MB each time would be most of a create's own cost."""
    stat = path.stat()
    key = (str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns)
    known = _VERIFIED.get(key)
    if known is None:
        known = _VERIFIED[key] = hash_file(path)
    return known


def hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def build_once(
    *,
    cache_dir: Path,
    name: str,
    what: str,
    load: Callable[[Path], T | None],
    build: Callable[[Path], None],
    error: type[Exception],
) -> T:
    """The guest `load(cache_dir/name)` finds, else build it: `build(out)` fills a fresh directory that is
    then renamed to cache_dir/name, all under cache_dir/.name.lock so concurrent builders build it once.
    `load` returns None for a missing, stale or corrupt guest; after a build it must not."""
    cache_dir = Path(cache_dir)
    target = cache_dir / name
    found = load(target)
    if found is not None:
        return found
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise error(f"cannot create the {what} cache directory {cache_dir}: {exc}") from exc
    with locked(cache_dir / f".{name}.lock"):
        # Another process may have finished the build while this one waited for the lock.
        found = load(target)
        if found is not None:
            return found
        _remove_leftovers(cache_dir, name)
        started = time.monotonic()
        log.info("building the %s into %s", what, target)
        try:
            build_dir = Path(tempfile.mkdtemp(prefix=f".build-{name}-", dir=cache_dir))
            try:
                out = build_dir / "out"
                out.mkdir()
                build(out)
                # mkdtemp makes 0700 directories; QEMU started by libvirt runs as another user and must read.
                out.chmod(0o755)
                _install(out, target, cache_dir, name)
            finally:
                remove_tree(build_dir)
        except OSError as exc:
            raise error(
                f"building the {what} in {cache_dir} failed: {exc} (check free space and permissions there)"
            ) from exc
        found = load(target)
        if found is None:
            raise error(f"the {what} was built into {target} but does not verify")
        log.info("built the %s in %.1f s", what, time.monotonic() - started)
        return found


def _remove_leftovers(cache_dir: Path, name: str) -> None:
    # Only called under the lock, so these belong to builders that died mid-way.
    for pattern in (f".build-{name}-*", f".old-{name}-*"):
        for stale in cache_dir.glob(pattern):
            log.info("removing leftover %s", stale)
            remove_tree(stale)


def _mounts_under(path: Path) -> list[str]:
    root = str(path.resolve())
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    # Field 5 is the mount point, with spaces and other bytes escaped as octal (\\040).
    points = [line.split()[4].encode().decode("unicode_escape") for line in lines]
    return sorted((p for p in points if p == root or p.startswith(root + "/")), key=len, reverse=True)


def remove_tree(path: Path) -> None:
    """rmtree that first detaches whatever is still mounted below `path`: a builder killed mid-way
    (mmdebstrap in root mode) leaves the chroot's proc, sys, dev/pts and a bind of the host's /dev/shm
    mounted, and a plain rmtree would delete the host's shared memory files through that bind."""
    for point in _mounts_under(path):
        log.warning("detaching %s, left mounted by a builder that did not finish", point)
        subprocess.run(["umount", "--lazy", point], check=False, capture_output=True)
    if _mounts_under(path):
        log.error("not removing %s: something is still mounted below it", path)
        return
    shutil.rmtree(path, ignore_errors=True)


def _install(out: Path, target: Path, cache_dir: Path, name: str) -> None:
    """Move a finished guest into place with directory renames, so readers see all of it or none of it."""
    old: Path | None = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".old-{name}-", dir=cache_dir)) / name
        target.rename(old)
    out.rename(target)
    if old is not None:
        remove_tree(old.parent)


def run_tool(
    argv: Sequence[str],
    *,
    what: str,
    error: type[Exception],
    cwd: Path | None = None,
    timeout: float = TOOL_TIMEOUT_S,
    stdin: bytes | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run a command; on failure raise `error` naming the command and the tail of its stderr."""
    command = " ".join(argv)
    log.debug("running %s", command)
    # Parsed output (apt-cache, qemu-img) must not be translated.
    full_env = {**os.environ, "LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive", **(env or {})}
    try:
        proc = subprocess.run(
            list(argv), cwd=cwd, input=stdin, capture_output=True, timeout=timeout, env=full_env, check=False
        )
    except FileNotFoundError as exc:
        raise error(f"{what}: `{argv[0]}` is not installed ({exc})") from exc
    except subprocess.TimeoutExpired as exc:
        raise error(f"{what}: `{command}` did not finish within {timeout:.0f} s") from exc
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.decode(errors="replace").strip().splitlines()[-15:])
        raise error(f"{what}: `{command}` exited with {proc.returncode}:\n{tail}")
    return proc
