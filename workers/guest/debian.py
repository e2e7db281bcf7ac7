"""A real Debian 12 (bookworm) guest: systemd, cloud-init (NoCloud), OpenSSH, the QEMU guest agent, booted
by direct kernel boot from its own raw-ext4 root disk. Built from Debian's packages only with mmdebstrap
(arm64 through qemu-user-static and binfmt_misc on an x86-64 host), without loop devices or mounts:
`mkfs.ext4 -d` fills the filesystem from the directory tree, and `qemu-img convert -c` compresses it.

Layout of `<cache_dir>/debian-12/<arch>/`: disk.qcow2, vmlinuz, initrd.img and manifest.json (what
`queues.images.built_artifacts` reads to put the image in the catalog)."""

from __future__ import annotations

import hashlib
import json
import logging
import shlex
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from queues.arch import Arch
from workers.guest.build_cache import build_once, remove_tree, run_tool, sha256_of

log = logging.getLogger(__name__)

NAME = "debian-12"
SUITE = "bookworm"
LOGIN_USER = "debian"  # Debian's cloud-init default user.

DISK_NAME = "disk.qcow2"
KERNEL_NAME = "vmlinuz"
INITRD_NAME = "initrd.img"
MANIFEST_NAME = "manifest.json"
FILES = (DISK_NAME, KERNEL_NAME, INITRD_NAME)

ROOT_LABEL = "debroot"
ROOT_SIZE = "2G"

# Bump when the build changes in a way the package list and hooks do not capture.
_FORMAT_VERSION = 1

# Point releases and security updates too: a guest should not boot with fixes Debian already shipped.
MIRROR = "http://deb.debian.org/debian"
SECURITY_MIRROR = "http://deb.debian.org/debian-security"

_PACKAGES = (
    "systemd-sysv", "udev", "dbus", "libpam-systemd", "cloud-init", "openssh-server", "qemu-guest-agent",
    "ifupdown", "isc-dhcp-client", "sudo", "e2fsprogs", "iproute2", "netbase", "ca-certificates",
    # growpart, which cloud-init's growpart module calls: a no-op on this image's unpartitioned root disk,
    # but a user who puts a partitioned disk behind it gets the usual cloud behaviour.
    "cloud-guest-utils",
)  # fmt: skip

# The raw ext4 root has no partition table, so root is the whole disk; `rw` skips the remount systemd-remount-fs
# would do. No `quiet`: measured under TCG here it made boot slower, not faster (amd64 userspace at 26-31 s
# instead of 19-21 s; arm64 48 s instead of 38 s; SSH 5-20 s later). `mitigations=off` gained ~5 s more on
# amd64 TCG but is left out: the same image runs under KVM, where the guest needs its mitigations.
_CMDLINES: dict[Arch, str] = {
    Arch.AMD64: "root=/dev/vda rw console=ttyS0",
    Arch.ARM64: "root=/dev/vda rw console=ttyAMA0",
}

_CLOUD_CFG = """\
# archq: the seed is a NoCloud ISO (volume id cidata); no network metadata service is probed.
datasource_list: [ NoCloud, None ]
# The root filesystem is the whole of /dev/vda (no partition table): growpart has nothing to grow, resize2fs
# grows the filesystem to a per-VM overlay larger than the 2 GiB base.
growpart:
  mode: "off"
resize_rootfs: true
"""

_INTERFACES = """\
# cloud-init writes the NIC's stanza into interfaces.d.
source /etc/network/interfaces.d/*

auto lo
iface lo inet loopback
"""

# Each hook is run by mmdebstrap with the root directory as "$1". Their text is part of the recipe id.
_HOOKS = (
    # Every VM must make its own SSH host keys (cloud-init does on first boot).
    'rm -f "$1"/etc/ssh/ssh_host_*',
    "printf '/dev/vda / ext4 defaults 0 1\\n' > \"$1/etc/fstab\"",
    f'printf %s {shlex.quote(_INTERFACES)} > "$1/etc/network/interfaces"',
    f'printf %s {shlex.quote(_CLOUD_CFG)} > "$1/etc/cloud/cloud.cfg.d/90_archq.cfg"',
    # C.UTF-8 ships with libc, so no locales package is needed.
    "printf 'LANG=C.UTF-8\\n' > \"$1/etc/default/locale\"",
    "printf 'debian\\n' > \"$1/etc/hostname\"",
    # Nothing in a fresh guest should wake up to download package lists while a user waits for SSH.
    'rm -f "$1"/etc/systemd/system/timers.target.wants/apt-daily*.timer',
)

_MMDEBSTRAP_TIMEOUT_S = 3600


class DebianImageError(RuntimeError):
    """The Debian image could not be built; the message says which step failed and how to fix it."""


@dataclass(frozen=True)
class DebianImage:
    arch: Arch
    directory: Path
    disk: Path
    kernel: Path
    initrd: Path
    cmdline: str
    login_user: str
    manifest: dict


def cmdline_for(arch: Arch) -> str:
    """Kernel command line for the Debian image of an architecture."""
    return _CMDLINES[Arch(arch)]


def packages(arch: Arch) -> tuple[str, ...]:
    """Everything mmdebstrap installs for `arch` besides the apt variant's essentials."""
    return (f"linux-image-cloud-{Arch(arch).value}", *_PACKAGES)


def recipe_id(arch: Arch) -> str:
    """Hash of what decides the built image: package list, hooks, kernel command line, suite and sizes."""
    parts = [str(_FORMAT_VERSION), SUITE, ROOT_SIZE, ROOT_LABEL, cmdline_for(arch), *packages(arch), *_HOOKS]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def ensure_debian_image(arch: Arch, cache_dir: Path) -> DebianImage:
    """Build once into cache_dir/debian-12/<arch>/ and return it; a cached build from the same recipe whose
    files match their manifest is reused."""
    arch = Arch(arch)
    return build_once(
        cache_dir=Path(cache_dir) / NAME,
        name=arch.value,
        what=f"{arch.value} {NAME} image",
        load=lambda target: load_cached(arch, target),
        build=lambda out: _build(arch, out),
        error=DebianImageError,
    )


def load_cached(arch: Arch, target: Path) -> DebianImage | None:
    """The image in `target` if it is complete, from the current recipe and intact; None means build it."""
    try:
        manifest = json.loads((target / MANIFEST_NAME).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("unreadable %s manifest in %s (%s); rebuilding", NAME, target, exc)
        return None
    if manifest.get("arch") != arch.value or manifest.get("recipe") != recipe_id(arch):
        log.info("%s image in %s is from another recipe; rebuilding", NAME, target)
        return None
    files = manifest.get("files") or {}
    for name in FILES:
        try:
            digest = sha256_of(target / name)
        except OSError as exc:
            log.warning("%s image in %s is incomplete (%s); rebuilding", NAME, target, exc)
            return None
        if digest != (files.get(name) or {}).get("sha256"):
            log.warning("%s in %s does not match its manifest; rebuilding", name, target)
            return None
    return DebianImage(
        arch=arch,
        directory=target,
        disk=target / DISK_NAME,
        kernel=target / KERNEL_NAME,
        initrd=target / INITRD_NAME,
        cmdline=manifest["cmdline"],
        login_user=manifest["login_user"],
        manifest=manifest,
    )


# --- build ---------------------------------------------------------------------------------------------


def _run(argv: list[str], *, what: str, timeout: float = 600) -> bytes:
    return run_tool(argv, what=what, error=DebianImageError, timeout=timeout).stdout


def ensure_foreign_arch_runs(arch: Arch) -> None:
    """mmdebstrap runs the guest's maintainer scripts: a foreign architecture needs qemu-user-static
    registered in binfmt_misc with the F flag (the chroot then needs no copy of the emulator), and arch-test,
    which mmdebstrap uses to check that it runs."""
    native = _run(["dpkg", "--print-architecture"], what="reading dpkg's architecture").decode().strip()
    if arch.value == native:
        return
    binfmt = Path("/proc/sys/fs/binfmt_misc")
    if not (binfmt / "status").exists():
        _run(
            ["mount", "-t", "binfmt_misc", "binfmt_misc", str(binfmt)],
            what="mounting binfmt_misc (needs root), to run foreign-architecture programs",
        )
    entry = binfmt / "qemu-aarch64" if arch is Arch.ARM64 else binfmt / "qemu-x86_64"
    if not entry.exists() and shutil.which("update-binfmts"):
        run_tool(["update-binfmts", "--enable", entry.name], what=f"enabling {entry.name}", error=DebianImageError)
    if not entry.exists():
        raise DebianImageError(
            f"building an {arch.value} image on {native} needs {entry} registered: run "
            "`apt-get install qemu-user-static binfmt-support arch-test`"
        )


def _build(arch: Arch, out: Path) -> None:
    started = time.monotonic()
    ensure_foreign_arch_runs(arch)
    work = out.parent
    root = work / "root"
    argv = [
        "mmdebstrap",
        "--mode=root",
        "--variant=apt",
        f"--architectures={arch.value}",
        "--components=main",
        f"--include={','.join(packages(arch))}",
        *(f"--customize-hook={hook}" for hook in _HOOKS),
        SUITE,
        str(root),
        f"deb {MIRROR} {SUITE} main",
        f"deb {MIRROR} {SUITE}-updates main",
        f"deb {SECURITY_MIRROR} {SUITE}-security main",
    ]
    log.info("mmdebstrap %s %s into %s", SUITE, arch.value, root)
    _run(argv, what=f"building the {arch.value} root filesystem with mmdebstrap", timeout=_MMDEBSTRAP_TIMEOUT_S)
    log.info("root filesystem for %s in %.0f s", arch.value, time.monotonic() - started)

    # The kernel and initrd boot from outside the disk (direct kernel boot), so they leave the root filesystem.
    for pattern, name in (("vmlinuz-*", KERNEL_NAME), ("initrd.img-*", INITRD_NAME)):
        found = sorted((root / "boot").glob(pattern))
        if len(found) != 1:
            raise DebianImageError(f"{root}/boot holds {len(found)} {pattern} files, expected one")
        shutil.move(found[0], out / name)
        (out / name).chmod(0o644)
    kernel_version = sorted((root / "lib" / "modules").iterdir())[0].name

    raw = work / "rootfs.raw"
    _run(
        ["mkfs.ext4", "-q", "-F", "-L", ROOT_LABEL, "-d", str(root), str(raw), ROOT_SIZE],
        what="making the ext4 root filesystem from the tree (e2fsprogs >= 1.43 for -d)",
    )
    remove_tree(root)
    _run(
        ["qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", str(raw), str(out / DISK_NAME)],
        what="compressing the root filesystem into qcow2",
    )
    raw.unlink()
    (out / DISK_NAME).chmod(0o644)
    info = json.loads(_run(["qemu-img", "info", "--output=json", str(out / DISK_NAME)], what="qemu-img info"))

    manifest = {
        "format": _FORMAT_VERSION,
        "name": NAME,
        "recipe": recipe_id(arch),
        "arch": arch.value,
        "suite": SUITE,
        "packages": list(packages(arch)),
        "kernel_version": kernel_version,
        "disk_format": "qcow2",
        "virtual_size": info["virtual-size"],
        "files": {name: {"sha256": sha256_of(out / name), "bytes": (out / name).stat().st_size} for name in FILES},
        "cmdline": cmdline_for(arch),
        "login_user": LOGIN_USER,
        "build_seconds": round(time.monotonic() - started, 1),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
