"""An amd64 image in the generic cloud-image form, for the test that archq boots such images with its NIC and
seed: one qcow2 with an MBR partition table, a FAT boot partition holding syslinux (BIOS), the kernel and
initrd, and the debian-12 root filesystem as the second partition. Made from the debian-12 image's own files
without loop devices or mounts (sfdisk, mkfs.fat and syslinux on image files, debugfs for the root's fstab),
cached in the test cache beside it, keyed by the debian-12 image's SHA256s and this recipe."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.conftest import IMAGES_CACHE
from tests.support.debian_image import debian_image
from workers.file_lock import locked

MIB = 1024 * 1024
BOOT_START_MIB = 1
BOOT_SIZE_MIB = 64
ROOT_START_MIB = BOOT_START_MIB + BOOT_SIZE_MIB
# No timeout: the one entry boots at once. The root is the second partition of the VM's virtio disk.
SYSLINUX_CFG = """DEFAULT linux
PROMPT 0
TIMEOUT 0
LABEL linux
  KERNEL /vmlinuz
  APPEND initrd=/initrd.img root=/dev/vda2 rw console=ttyS0
"""
# The debian-12 root names /dev/vda (it is the whole disk there); by label it mounts in either layout.
FSTAB = "LABEL=debroot / ext4 defaults 0 1\n"
_RECIPE = 1


def generic_cloud_image() -> Path:
    """The qcow2 (built once; later calls return the cached file)."""
    source = debian_image("amd64")
    manifest = json.loads((source / "manifest.json").read_text())
    recipe = json.dumps([_RECIPE, SYSLINUX_CFG, FSTAB, manifest["files"]], sort_keys=True)
    target = IMAGES_CACHE / "generic-cloud" / f"amd64-{hashlib.sha256(recipe.encode()).hexdigest()[:16]}.qcow2"
    target.parent.mkdir(parents=True, exist_ok=True)
    with locked(target.parent / ".lock"):
        if not target.exists():
            with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
                _build(source, Path(tmp), target)
    return target


def _run(*argv: str, stdin: str | None = None) -> None:
    subprocess.run(list(argv), input=stdin, text=True, check=True, capture_output=True, timeout=600)


def _build(source: Path, work: Path, target: Path) -> None:
    root = work / "root.raw"
    _run("qemu-img", "convert", "-O", "raw", str(source / "disk.qcow2"), str(root))
    (work / "fstab").write_text(FSTAB)
    _run("debugfs", "-w", "-R", "rm /etc/fstab", str(root))
    _run("debugfs", "-w", "-R", f"write {work / 'fstab'} /etc/fstab", str(root))

    boot = work / "boot.raw"
    with boot.open("wb") as fh:
        fh.truncate(BOOT_SIZE_MIB * MIB)
    _run("mkfs.fat", "-F", "16", "-n", "BOOT", str(boot))
    (work / "syslinux.cfg").write_text(SYSLINUX_CFG)
    for name in ("vmlinuz", "initrd.img"):
        shutil.copyfile(source / name, work / name)
    _run("mcopy", "-i", str(boot), str(work / "vmlinuz"), str(work / "initrd.img"), str(work / "syslinux.cfg"), "::/")
    # The mtools build of syslinux installs into a FAT image file: no mount, no loop device.
    _run("syslinux", "--install", str(boot))

    disk = work / "disk.raw"
    root_mib = root.stat().st_size // MIB
    with disk.open("wb") as fh:
        fh.truncate((ROOT_START_MIB + root_mib) * MIB)
    _run(
        "sfdisk", "--quiet", str(disk),
        stdin=f"label: dos\nstart={BOOT_START_MIB}MiB, size={BOOT_SIZE_MIB}MiB, type=6, bootable\n"
        f"start={ROOT_START_MIB}MiB, type=83\n",
    )  # fmt: skip
    for part, start_mib in ((boot, BOOT_START_MIB), (root, ROOT_START_MIB)):
        _run("dd", f"if={part}", f"of={disk}", "bs=1M", f"seek={start_mib}", "conv=notrunc,sparse", "status=none")
    # syslinux's MBR code: boots the partition marked bootable.
    _run("dd", "if=/usr/lib/syslinux/mbr/mbr.bin", f"of={disk}", "bs=440", "count=1", "conv=notrunc", "status=none")
    partial = work / "disk.qcow2"
    _run("qemu-img", "convert", "-c", "-O", "qcow2", str(disk), str(partial))
    partial.chmod(0o644)
    partial.rename(target)
