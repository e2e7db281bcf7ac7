"""Images in the generic cloud-image form, for the test that archq boots such images with its NIC and seed:
one qcow2 with a partition table, a FAT boot partition holding the bootloader, the kernel and the initrd, and
the debian-12 root filesystem as the second partition. amd64: an MBR disk, syslinux booted by the BIOS. arm64:
a GPT disk whose boot partition is an EFI system partition with GRUB at the removable-media path
EFI/BOOT/BOOTAA64.EFI, which the UEFI firmware (AAVMF) boots without any boot entry in its NVRAM.

Made from the debian-12 image's own files without loop devices or mounts (sfdisk, mkfs.fat and mtools on image
files, debugfs for the root's fstab, syslinux's mtools build; GRUB's arm64 modules unpacked from Debian by
mmdebstrap's extract variant, which runs no arm64 code, and assembled by the host's grub-mkimage), cached in
the test cache beside it, keyed by the debian-12 image's SHA256s and this recipe."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from queues.arch import Arch
from tests.conftest import IMAGES_CACHE
from tests.support.debian_image import debian_image
from workers.file_lock import locked
from workers.guest.debian import MIRROR, SUITE

MIB = 1024 * 1024
BOOT_START_MIB = 1
BOOT_SIZE_MIB = 64
ROOT_START_MIB = BOOT_START_MIB + BOOT_SIZE_MIB
# Room after the root partition: GPT keeps its backup header in the disk's last sectors.
TAIL_MIB = 1
# The root is the second partition of the VM's virtio disk; the consoles are the debian-12 image's.
SYSLINUX_CFG = """DEFAULT linux
PROMPT 0
TIMEOUT 0
LABEL linux
  KERNEL /vmlinuz
  APPEND initrd=/initrd.img root=/dev/vda2 rw console=ttyS0
"""
# Read from the ESP by GRUB's normal mode: $prefix is /EFI/BOOT on the partition GRUB was loaded from, which
# is also its root. `linux` starts Debian's arm64 kernel (an uncompressed Image) through its EFI stub.
GRUB_CFG = """set timeout=0
menuentry "Debian GNU/Linux" {
  linux /vmlinuz root=/dev/vda2 rw console=ttyAMA0
  initrd /initrd.img
}
"""
GRUB_PREFIX = "/EFI/BOOT"
GRUB_MODULES = ("part_gpt", "fat", "normal", "linux")
# The debian-12 root names /dev/vda (it is the whole disk there); by label it mounts in either layout.
FSTAB = "LABEL=debroot / ext4 defaults 0 1\n"
_RECIPE = 2


def generic_cloud_image(arch: Arch) -> Path:
    """The qcow2 of `arch` (built once; later calls return the cached file)."""
    arch = Arch(arch)
    source = debian_image(arch.value)
    manifest = json.loads((source / "manifest.json").read_text())
    form = FORMS[arch]
    recipe = json.dumps([_RECIPE, form.partitions, form.configs, GRUB_MODULES, FSTAB, manifest["files"]])
    key = hashlib.sha256(recipe.encode()).hexdigest()[:16]
    target = IMAGES_CACHE / "generic-cloud" / f"{arch.value}-{key}.qcow2"
    target.parent.mkdir(parents=True, exist_ok=True)
    with locked(target.parent / ".lock"):
        if not target.exists():
            with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
                _build(arch, source, Path(tmp), target)
    return target


def _run(*argv: str, stdin: str | None = None) -> None:
    done = subprocess.run(list(argv), input=stdin, text=True, capture_output=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}")


def _build(arch: Arch, source: Path, work: Path, target: Path) -> None:
    form = FORMS[arch]
    root = work / "root.raw"
    _run("qemu-img", "convert", "-O", "raw", str(source / "disk.qcow2"), str(root))
    (work / "fstab").write_text(FSTAB)
    _run("debugfs", "-w", "-R", "rm /etc/fstab", str(root))
    _run("debugfs", "-w", "-R", f"write {work / 'fstab'} /etc/fstab", str(root))

    disk = work / "disk.raw"
    with disk.open("wb") as fh:
        fh.truncate((ROOT_START_MIB + root.stat().st_size // MIB + TAIL_MIB) * MIB)
    _run("sfdisk", "--quiet", str(disk), stdin=form.partitions)

    # The boot partition's files, staged in a directory and copied into its FAT image at once.
    tree = work / "boot"
    for name in ("vmlinuz", "initrd.img"):
        shutil.copyfile(source / name, _staged(tree, f"/{name}"))
    for path, text in form.configs.items():
        _staged(tree, path).write_text(text)
    boot = work / "boot.raw"
    with boot.open("wb") as fh:
        fh.truncate(BOOT_SIZE_MIB * MIB)
    _run("mkfs.fat", "-F", "16", "-n", "BOOT", str(boot))
    form.bootloader(work, tree, boot, disk)
    _run("mcopy", "-s", "-i", str(boot), *(str(entry) for entry in sorted(tree.iterdir())), "::/")

    for part, start_mib in ((boot, BOOT_START_MIB), (root, ROOT_START_MIB)):
        _run("dd", f"if={part}", f"of={disk}", "bs=1M", f"seek={start_mib}", "conv=notrunc,sparse", "status=none")
    partial = work / "disk.qcow2"
    _run("qemu-img", "convert", "-c", "-O", "qcow2", str(disk), str(partial))
    partial.chmod(0o644)
    partial.rename(target)


def _staged(tree: Path, path: str) -> Path:
    """Where `path` (absolute, on the boot partition) is staged under `tree`, its directory made."""
    staged = tree / path.lstrip("/")
    staged.parent.mkdir(parents=True, exist_ok=True)
    return staged


def _syslinux(work: Path, tree: Path, boot: Path, disk: Path) -> None:
    """syslinux into the boot partition's image (its mtools build installs into a FAT image file: no mount, no
    loop device), and its MBR code, which boots the partition marked bootable, into the disk's first sector."""
    _run("syslinux", "--install", str(boot))
    _run("dd", "if=/usr/lib/syslinux/mbr/mbr.bin", f"of={disk}", "bs=440", "count=1", "conv=notrunc", "status=none")


def _grub_efi(work: Path, tree: Path, boot: Path, disk: Path) -> None:
    """GRUB as an arm64 EFI application at the removable-media path of the EFI system partition, with the
    modules grub.cfg needs built in (grub-mkimage follows their dependencies). Its prefix names no device, so
    GRUB reads grub.cfg from the partition it was loaded from."""
    unpacked = work / "grub"
    _run("mmdebstrap", "--quiet", "--variant=extract", "--arch=arm64", "--include=grub-efi-arm64-bin",
         SUITE, str(unpacked), MIRROR)  # fmt: skip
    efi = _staged(tree, f"{GRUB_PREFIX}/BOOTAA64.EFI")
    _run("grub-mkimage", "--format=arm64-efi", f"--directory={unpacked / 'usr/lib/grub/arm64-efi'}",
         f"--prefix={GRUB_PREFIX}", f"--output={efi}", *GRUB_MODULES)  # fmt: skip


@dataclass(frozen=True)
class _Form:
    # sfdisk's script: the boot partition, then the root taking the rest.
    partitions: str
    # Text files on the boot partition besides the kernel and initrd: absolute path on it -> text.
    configs: dict[str, str]
    # Installs the bootloader, given a scratch directory, the boot partition's staged files, its freshly made
    # FAT image and the partitioned disk; the staged files are copied into the image after it.
    bootloader: Callable[[Path, Path, Path, Path], None]


FORMS: dict[Arch, _Form] = {
    Arch.AMD64: _Form(
        f"label: dos\nstart={BOOT_START_MIB}MiB, size={BOOT_SIZE_MIB}MiB, type=6, bootable\n"
        f"start={ROOT_START_MIB}MiB, type=83\n",
        {"/syslinux.cfg": SYSLINUX_CFG},
        _syslinux,
    ),
    Arch.ARM64: _Form(
        f"label: gpt\nstart={BOOT_START_MIB}MiB, size={BOOT_SIZE_MIB}MiB, type=U\nstart={ROOT_START_MIB}MiB, type=L\n",
        {f"{GRUB_PREFIX}/grub.cfg": GRUB_CFG},
        _grub_efi,
    ),
}
