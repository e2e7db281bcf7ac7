"""What a VM boots from on this host: its image's artifact from the store, and its own disk."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from queues.arch import Arch
from queues.images import KERNEL_INITRD, files_of
from workers.artifacts import ArtifactStore, create_overlay, create_state_disk

DISK_NAME = "disk.qcow2"
NVRAM_NAME = "nvram.fd"
CONSOLE_NAME = "console.log"
SEED_NAME = "seed.iso"


@dataclass(frozen=True)
class Boot:
    kernel: Path | None
    initrd: Path | None
    cmdline: str
    disk: Path
    disk_format: str
    nvram: Path | None


def fetch_artifact(store: ArtifactStore, artifact: dict) -> dict[str, Path]:
    """Every file of the artifact in the store, verified, keyed by role (`disk`, `kernel`, `initrd`). Nothing
    about the VM exists yet when this fails."""
    return {role: store.ensure(source, sha256) for role, source, sha256 in files_of(artifact)}


def prepare_disk(
    store: ArtifactStore,
    artifact: dict,
    files: dict[str, Path],
    vm_dir: Path,
    arch: Arch,
    size_gib: int | None = None,
) -> Boot:
    """The VM's own disk in its directory: a qcow2 overlay on the shared base (`size_gib` large when that is
    larger than the base), or a blank state disk for a kernel+initrd guest. A disk artifact that carries a
    kernel boots it directly with the overlay as its root disk (no firmware, so no nvram). Calling it again for
    the same VM keeps the disk it made."""
    disk = vm_dir / DISK_NAME
    if artifact["format"] == KERNEL_INITRD:
        create_state_disk(store, disk)
        return Boot(files["kernel"], files["initrd"], artifact.get("cmdline") or "", disk, "qcow2", None)
    create_overlay(disk, files["disk"], artifact["format"], size_gib)
    if artifact.get("kernel"):
        return Boot(files["kernel"], files["initrd"], artifact.get("cmdline") or "", disk, "qcow2", None)
    return Boot(None, None, "", disk, "qcow2", vm_dir / NVRAM_NAME if arch is Arch.ARM64 else None)
