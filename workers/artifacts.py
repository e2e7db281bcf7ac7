"""A host's content-addressed store of image artifacts, and the per-VM disks made from them.

`<images_dir>/store/sha256/<hex>` holds each artifact once, read-only (0444), whatever the number of VMs
or images that use it. A worker fetches a missing artifact (download or local copy) into a temporary name,
hashing while it writes, and renames it into place only when the hash matches: a concurrent reader sees
the whole file or none. A lock file per hash makes concurrent creates on one host fetch it once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from queues.image_sources import validate_source
from workers.errors import WorkerError
from workers.file_lock import locked

log = logging.getLogger(__name__)

CHUNK = 1 << 20
DOWNLOAD_TIMEOUT_S = 60
STATE_DISK_MIB = 64
_QEMU_IMG_TIMEOUT_S = 120


class ArtifactError(WorkerError):
    """An artifact could not be provided; `code` is the job's error code."""


# (path, inode, size, mtime) of store files this process has hashed: a file is verified before its first use
# by each worker process, not re-hashed for every VM.
_VERIFIED: set[tuple[str, int, int, int]] = set()


class ArtifactStore:
    def __init__(self, images_dir: Path, allowed_dirs: Iterable[Path], max_bytes: int) -> None:
        self.root = Path(images_dir) / "store"
        self.allowed_dirs = tuple(allowed_dirs)
        self.max_bytes = max_bytes

    def path_of(self, sha256: str) -> Path:
        return self.root / "sha256" / sha256.lower()

    def ensure(self, source: str, sha256: str) -> Path:
        """The verified store file of this artifact, fetching it first if the host does not have it."""
        sha256 = sha256.lower()
        final = self.path_of(sha256)
        if self._verified(final, sha256):
            return final
        for sub in ("sha256", ".tmp", ".locks"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        # QEMU runs as an unprivileged user and must reach the files through these directories.
        for directory in (self.root, self.root / "sha256"):
            directory.chmod(0o755)
        with locked(self.root / ".locks" / f"{sha256}.lock"):
            # Another worker may have fetched it while this one waited for the lock.
            if self._verified(final, sha256):
                return final
            # Under the lock, any partial file of this hash belongs to a fetcher that died (kill -9) mid-way.
            for stale in (self.root / ".tmp").glob(f"{sha256}.*.part"):
                stale.unlink(missing_ok=True)
            final.unlink(missing_ok=True)
            self._fetch(source, sha256, final)
        return final

    def _verified(self, path: Path, sha256: str) -> bool:
        try:
            stat = path.stat()
        except FileNotFoundError:
            return False
        key = (str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns)
        if key in _VERIFIED:
            return True
        if _hash_file(path) != sha256:
            log.warning("store file %s does not match its name; fetching it again", path)
            return False
        _VERIFIED.add(key)
        return True

    def _fetch(self, source: str, sha256: str, final: Path) -> None:
        try:
            source = validate_source(source, self.allowed_dirs)
        except ValueError as exc:
            raise ArtifactError("image_source_refused", f"image source {source!r} refused on this host: {exc}") from exc
        tmp = self.root / ".tmp" / f"{sha256}.{uuid.uuid4().hex}.part"
        try:
            with tmp.open("wb") as out:
                digest = _copy_from(source, out, self.max_bytes)
            if digest != sha256:
                raise ArtifactError(
                    "image_checksum_mismatch",
                    f"{source} has SHA256 {digest}, but the image catalog says {sha256}; the download was discarded "
                    "and nothing was booted. Fix the image's sha256 (or its source) in the catalog and retry",
                )
            tmp.chmod(0o444)
            os.replace(tmp, final)
            _VERIFIED.add(_key(final))
            log.info("stored %s as %s", source, final)
        finally:
            tmp.unlink(missing_ok=True)


def _key(path: Path) -> tuple[str, int, int, int]:
    stat = path.stat()
    return (str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns)


def _copy_from(source: str, out: BinaryIO, max_bytes: int) -> str:
    """Copy a source into `out`, refusing more than `max_bytes`; returns the SHA256 of what was copied."""
    digest = hashlib.sha256()
    written = 0
    with _open_source(source, max_bytes) as stream:
        for chunk in iter(lambda: stream.read(CHUNK), b""):
            written += len(chunk)
            if written > max_bytes:
                raise ArtifactError(
                    "image_too_large", f"{source} is larger than ARCHQ_MAX_IMAGE_BYTES ({max_bytes} bytes); refused"
                )
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def _open_source(source: str, max_bytes: int) -> Iterator[BinaryIO]:
    if source.startswith(("http://", "https://")):
        try:
            response = urllib.request.urlopen(source, timeout=DOWNLOAD_TIMEOUT_S)
        except (urllib.error.URLError, OSError) as exc:
            if isinstance(exc, urllib.error.HTTPError):
                exc.close()  # an HTTP error answer holds its connection open until closed
            raise ArtifactError("image_download_failed", f"downloading {source} failed: {exc}") from exc
        with response:
            length = response.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > max_bytes:
                raise ArtifactError(
                    "image_too_large",
                    f"{source} is {length} bytes, more than ARCHQ_MAX_IMAGE_BYTES ({max_bytes}); refused",
                )
            yield response
        return
    try:
        stream = open(source, "rb")  # noqa: SIM115 (closed below)
    except OSError as exc:
        raise ArtifactError(
            "image_unavailable", f"cannot read image source {source} on this host: {exc.strerror or exc}"
        ) from exc
    with stream:
        yield stream


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --- per-VM disks --------------------------------------------------------------------------------------------


def create_overlay(disk: Path, base: Path, base_format: str, size_gib: int | None = None) -> None:
    """A qcow2 overlay backed by a store file: the VM writes only to its overlay, never to the shared base.
    With `size_gib` larger than the base's virtual size the overlay is that large (the guest grows its
    filesystem into it); never smaller, which would cut off the end of the base. Made under a temporary name,
    so a crash never leaves a half-made disk in place."""
    if disk.exists():
        return
    trailing: tuple[str, ...] = ()
    if size_gib is not None and size_gib * 2**30 > virtual_size(base, base_format):
        trailing = (f"{size_gib}G",)
    _qemu_img_into(disk, ["create", "-q", "-f", "qcow2", "-F", base_format, "-b", str(base)], *trailing)


def virtual_size(image: Path, image_format: str) -> int:
    """The size in bytes the guest sees of a disk image (`qemu-img info`)."""
    argv = ["qemu-img", "info", "--output=json", "-f", image_format, str(image)]
    try:
        proc = subprocess.run(argv, check=True, capture_output=True, timeout=_QEMU_IMG_TIMEOUT_S)
        return int(json.loads(proc.stdout)["virtual-size"])
    except FileNotFoundError as exc:
        raise ArtifactError("disk_create_failed", "qemu-img is not installed (apt-get install qemu-utils)") from exc
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, ValueError, KeyError) as exc:
        raise ArtifactError("disk_create_failed", f"cannot read the virtual size of {image}: {exc}") from exc


def create_state_disk(store: ArtifactStore, disk: Path, size_mib: int = STATE_DISK_MIB) -> None:
    """A small blank qcow2 for a direct-boot guest: somewhere for internal snapshots to keep memory state.
    Copied from a blank template the store makes once (a copy costs ~0.1 ms, `qemu-img create` ~7 ms)."""
    if disk.exists():
        return
    template = store.root / "blank" / f"qcow2-{size_mib}M"
    if not template.exists():
        template.parent.mkdir(parents=True, exist_ok=True)
        _qemu_img_into(template, ["create", "-q", "-f", "qcow2"], f"{size_mib}M")
    tmp = disk.with_name(f".{disk.name}.{uuid.uuid4().hex}")
    try:
        shutil.copyfile(template, tmp)
        os.replace(tmp, disk)
    finally:
        tmp.unlink(missing_ok=True)


def _qemu_img_into(disk: Path, args: list[str], *trailing: str) -> None:
    tmp = disk.with_name(f".{disk.name}.{uuid.uuid4().hex}")
    argv = ["qemu-img", *args, str(tmp), *trailing]
    try:
        subprocess.run(argv, check=True, capture_output=True, timeout=_QEMU_IMG_TIMEOUT_S)
        os.replace(tmp, disk)
    except FileNotFoundError as exc:
        raise ArtifactError("disk_create_failed", "qemu-img is not installed (apt-get install qemu-utils)") from exc
    except subprocess.CalledProcessError as exc:
        raise ArtifactError(
            "disk_create_failed", f"`{' '.join(argv)}` failed: {exc.stderr.decode(errors='replace').strip()}"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise ArtifactError("disk_create_failed", f"`{' '.join(argv)}` did not finish in time") from exc
    finally:
        tmp.unlink(missing_ok=True)
