"""A tiny bootable guest for direct kernel boot under QEMU: a Debian cloud kernel plus a busybox initramfs
whose /init prints a marker line and then a counter every second, with a root shell on the serial console for
interactive console sessions (docs/console.md). Beside the counter it loads the kernel's
virtio NIC drivers, takes a DHCP lease on the first ethernet interface and reports it in one console line
(see `parse_net_line`). Built from Debian packages with apt, once per architecture, into a cache directory that
concurrent workers share."""

from __future__ import annotations

import gzip
import hashlib
import ipaddress
import json
import logging
import lzma
import os
import re
import shutil
import stat
import struct
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from queues.arch import Arch, to_libvirt
from workers.file_lock import locked
from workers.guest.build_cache import TOOL_TIMEOUT_S, build_once, run_tool, sha256_of

log = logging.getLogger(__name__)

MARKER = "ARCHQ-TINY-BOOTED"
NET_TAG = "ARCHQ-TINY-NET"

KERNEL_NAME = "vmlinuz"
INITRD_NAME = "initrd.img"
MANIFEST_NAME = "manifest.json"

# Bump when the layout of the built guest changes in a way the init script hash does not capture.
_FORMAT_VERSION = 2

# The drivers a virtio NIC needs, by module name. Debian's 6.1 cloud kernels (amd64 and arm64) build all of them
# as modules; each module's modinfo names the rest (virtio, virtio_ring, virtio_pci_modern_dev,
# virtio_pci_legacy_dev, net_failover, failover), so the build follows those instead of a fixed list.
_NIC_MODULES = ("virtio_pci", "virtio_net")

# Shell scripts shipped next to this module (package data), copied into the initramfs as they are.
_SCRIPTS_DIR = Path(__file__).parent
_NET_SCRIPT = "tiny-net.sh"
_UDHCPC_SCRIPT = "tiny-udhcpc.sh"

# Serial output is slow under TCG, so kernel messages below "emergency" are kept off the console;
# panic=-1 reboots at once on a panic, which makes `-no-reboot` QEMU exit instead of hanging to a timeout;
# edd=off skips the x86 boot stub's BIOS disk probe and the half line it leaves on the serial port.
_CMDLINES: dict[Arch, str] = {
    Arch.AMD64: "console=ttyS0 loglevel=1 panic=-1 edd=off",
    Arch.ARM64: "console=ttyAMA0 loglevel=1 panic=-1",
}

# ELF e_machine values, to catch a busybox of the wrong architecture before it becomes an unbootable guest.
_ELF_MACHINE: dict[Arch, int] = {Arch.AMD64: 62, Arch.ARM64: 183}

_APT_TIMEOUT_S = 900

_INIT_SCRIPT = f"""#!/bin/busybox sh
# archq tiny guest: mount the kernel filesystems, announce the boot, start networking and a console shell,
# then tick forever (pid 1 must not exit).
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox --install -s /bin
export PATH=/bin
# Firmware and the x86 boot stub leave a half-written line on the serial port: start a fresh one.
printf '\\n%s\\n' "{MARKER} arch=$(uname -m)" > /dev/console
# In the background, so that drivers and DHCP never delay the marker or the ticks; it prints its own line.
/bin/busybox sh /etc/archq/net.sh < /dev/null > /dev/null 2>&1 &
# A root shell on the serial console for `archq vm console`; cttyhack makes the console's real tty (ttyS0,
# ttyAMA0) its controlling terminal, so Ctrl-C reaches what runs there. Restarted when it exits.
(while true; do /bin/busybox cttyhack /bin/busybox sh -i; done) < /dev/null > /dev/null 2>&1 &
n=0
while true; do
    n=$((n + 1))
    echo "archq-tiny tick $n" > /dev/console
    sleep 1
done
"""


class TinyGuestError(RuntimeError):
    """The tiny guest could not be built; the message says which step failed and how to fix it."""


@dataclass(frozen=True)
class TinyGuest:
    arch: Arch
    kernel: Path
    initrd: Path
    cmdline: str
    kernel_sha256: str
    initrd_sha256: str


@dataclass(frozen=True)
class TinyNet:
    """What the guest's one network line says. status is "up" (mac and ipv4 set), "dhcp-failed" (mac set) or
    "none" (the guest found no ethernet interface)."""

    status: str
    mac: str | None = None
    ipv4: ipaddress.IPv4Interface | None = None


_NET_LINE = re.compile(
    rf"^{NET_TAG} (?:"
    r"(?P<none>none)"
    r"|dhcp-failed mac=(?P<failed_mac>[0-9a-f]{2}(?::[0-9a-f]{2}){5})"
    r"|mac=(?P<mac>[0-9a-f]{2}(?::[0-9a-f]{2}){5}) ipv4=(?P<ipv4>\d{1,3}(?:\.\d{1,3}){3}/\d{1,2})"
    r")$"
)


def net_line_pattern() -> re.Pattern[str]:
    """The regular expression a console line matches when it is the guest's network line (one line, without
    its line ending): `ARCHQ-TINY-NET mac=<mac> ipv4=<addr>/<prefix>`, `ARCHQ-TINY-NET dhcp-failed mac=<mac>`
    or `ARCHQ-TINY-NET none`. Groups: none, failed_mac, mac, ipv4."""
    return _NET_LINE


def parse_net_line(line: str) -> TinyNet | None:
    """The network line's meaning, or None when the line is not one (a trailing CR from the serial port is
    ignored)."""
    match = _NET_LINE.match(line.rstrip("\r\n"))
    if match is None:
        return None
    if match["none"]:
        return TinyNet(status="none")
    if match["failed_mac"]:
        return TinyNet(status="dhcp-failed", mac=match["failed_mac"])
    return TinyNet(status="up", mac=match["mac"], ipv4=ipaddress.IPv4Interface(match["ipv4"]))


# A tick line, on a console log with its CRs removed. The guest writes each tick line whole (one write), but not
# always at the start of a line: the console's shell (see _INIT_SCRIPT) leaves its prompt, `/ # ` and the
# cursor position query of busybox's line editor (ESC [6n), and the echo of keys typed at it, with no newline
# after them, and a tick printed then ends that line. The log has the tick; a parser anchored at the start of
# the line misses it (seen as ticks 1, 3, 4, ... with tick 2 "lost": the shell starts between ticks 1 and 2).
_TICK_LINE = re.compile(r"archq-tiny tick (\d+)$", re.MULTILINE)


def ticks_in(console_text: str) -> list[int]:
    """The counter values the guest printed on its console, in the order printed: every line that ends with a
    tick, whatever the console's shell left before it on the line (its prompt, keys typed at it)."""
    return [int(n) for n in _TICK_LINE.findall(console_text.replace("\r", ""))]


def marker_line(arch: Arch) -> str:
    """The exact line the guest prints on its console once userspace runs."""
    return f"{MARKER} arch={to_libvirt(arch)}"


def cmdline_for(arch: Arch) -> str:
    """Kernel command line for the tiny guest of an architecture."""
    return _CMDLINES[arch]


def ensure_tiny_guest(arch: Arch, cache_dir: Path) -> TinyGuest:
    """Build once into cache_dir/<arch>/ (vmlinuz, initrd.img, plus a small manifest json), return the cached
    one after."""
    arch = Arch(arch)
    cache_dir = Path(cache_dir)

    def build(out: Path) -> None:
        _build(arch, cache_dir, out.parent, out)

    return build_once(
        cache_dir=cache_dir,
        name=arch.value,
        what=f"{arch.value} tiny guest",
        load=lambda target: _load_cached(arch, target),
        build=build,
        error=TinyGuestError,
    )


# --- cache ---------------------------------------------------------------------------------------------


def _script(name: str) -> str:
    return (_SCRIPTS_DIR / name).read_text()


def _recipe_id() -> str:
    recipe = "\n".join(
        [str(_FORMAT_VERSION), _INIT_SCRIPT, _script(_NET_SCRIPT), _script(_UDHCPC_SCRIPT), *_NIC_MODULES]
    )
    return hashlib.sha256(recipe.encode()).hexdigest()[:16]


def _load_cached(arch: Arch, target: Path) -> TinyGuest | None:
    """The cached guest if it is complete, from the current recipe and intact; None means build it."""
    try:
        manifest = json.loads((target / MANIFEST_NAME).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("unreadable tiny guest manifest in %s (%s); rebuilding", target, exc)
        return None
    if manifest.get("arch") != arch.value or manifest.get("recipe") != _recipe_id():
        log.info("tiny guest in %s is from another recipe; rebuilding", target)
        return None
    kernel, initrd = target / KERNEL_NAME, target / INITRD_NAME
    try:
        kernel_sha, initrd_sha = sha256_of(kernel), sha256_of(initrd)
    except OSError as exc:
        log.warning("tiny guest in %s is incomplete (%s); rebuilding", target, exc)
        return None
    if kernel_sha != manifest.get("kernel_sha256") or initrd_sha != manifest.get("initrd_sha256"):
        log.warning("tiny guest in %s does not match its manifest; rebuilding", target)
        return None
    return TinyGuest(
        arch=arch,
        kernel=kernel,
        initrd=initrd,
        cmdline=cmdline_for(arch),
        kernel_sha256=kernel_sha,
        initrd_sha256=initrd_sha,
    )


# --- build ---------------------------------------------------------------------------------------------


def _build(arch: Arch, cache_dir: Path, build_dir: Path, out: Path) -> None:
    downloads = build_dir / "debs"
    downloads.mkdir()
    # The apt lists are shared by all architectures, so preparing them is serialised across builders.
    with locked(cache_dir / ".apt.lock"):
        _ensure_apt_can_resolve(arch)
    kernel_pkg = _kernel_package(arch)
    kernel_deb = _apt_download(f"{kernel_pkg}:{arch.value}", downloads)
    busybox_deb = _apt_download(f"busybox-static:{arch.value}", downloads)

    kernel = _extract_kernel(kernel_deb, build_dir / "kernel-root", arch)
    shutil.copyfile(kernel, out / KERNEL_NAME)
    modules = _nic_modules(build_dir / "kernel-root", kernel_deb)
    guest_busybox = _extract_busybox(busybox_deb, build_dir / "busybox-root", arch)
    _build_initramfs(arch, guest_busybox, modules, build_dir / "initramfs", out / INITRD_NAME)

    for name in (KERNEL_NAME, INITRD_NAME):
        (out / name).chmod(0o644)
    manifest = {
        "format": _FORMAT_VERSION,
        "recipe": _recipe_id(),
        "arch": arch.value,
        "kernel_package": _deb_field(kernel_deb, "Package"),
        "kernel_version": _deb_field(kernel_deb, "Version"),
        "busybox_version": _deb_field(busybox_deb, "Version"),
        "modules": [name for name, _ in modules],
        "kernel_sha256": sha256_of(out / KERNEL_NAME),
        "initrd_sha256": sha256_of(out / INITRD_NAME),
        "cmdline": cmdline_for(arch),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def _run(
    argv: Sequence[str],
    *,
    what: str,
    cwd: Path | None = None,
    timeout: float = TOOL_TIMEOUT_S,
    stdin: bytes | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run a command; on failure raise TinyGuestError naming the command and the tail of its stderr."""
    return run_tool(argv, what=what, error=TinyGuestError, cwd=cwd, timeout=timeout, stdin=stdin)


def _native_arch() -> str:
    return _run(["dpkg", "--print-architecture"], what="reading dpkg's architecture").stdout.decode().strip()


def _resolvable(package: str) -> bool:
    try:
        _run(["apt-cache", "show", "--no-all-versions", package], what="apt-cache show")
    except TinyGuestError:
        return False
    return True


def _ensure_apt_can_resolve(arch: Arch) -> None:
    """Make apt know the guest architecture's packages, enabling it as a foreign architecture if needed."""
    probe = f"linux-image-cloud-{arch.value}:{arch.value}"
    if _resolvable(probe):
        return
    if arch.value != _native_arch():
        foreign = _run(["dpkg", "--print-foreign-architectures"], what="listing dpkg architectures")
        if arch.value not in foreign.stdout.decode().split():
            log.info("enabling %s as a dpkg foreign architecture", arch.value)
            _run(
                ["dpkg", "--add-architecture", arch.value],
                what=f"enabling {arch.value} packages (needs root)",
            )
    log.info("updating the apt package lists for %s", arch.value)
    _run(
        ["apt-get", "update", "-o", "DPkg::Lock::Timeout=120"],
        what="updating the apt package lists (check the network and /etc/apt/sources.list*)",
        timeout=_APT_TIMEOUT_S,
    )
    if not _resolvable(probe):
        raise TinyGuestError(
            f"apt cannot find {probe} even after `apt-get update`; check that the Debian sources in "
            f"/etc/apt/sources.list* serve {arch.value} (main component)"
        )


_DEPENDS = re.compile(r"^\s*\|?Depends:\s+(linux-image-\S+)", re.MULTILINE)


def _kernel_package(arch: Arch) -> str:
    """The versioned kernel package (linux-image-6.1.0-NN-cloud-<arch>) the cloud meta package points to."""
    meta = f"linux-image-cloud-{arch.value}:{arch.value}"
    out = _run(["apt-cache", "depends", meta], what=f"resolving the kernel behind {meta}").stdout.decode()
    names = [m.split(":", 1)[0].strip("<>") for m in _DEPENDS.findall(out)]
    names = [n for n in names if n.endswith(f"-cloud-{arch.value}")]
    if not names:
        raise TinyGuestError(f"`apt-cache depends {meta}` names no linux-image-*-cloud-{arch.value}:\n{out}")
    log.info("kernel package for %s: %s", arch.value, names[0])
    return names[0]


def _apt_download(package: str, dest: Path) -> Path:
    before = set(dest.glob("*.deb"))
    _run(
        ["apt-get", "download", package],
        what=f"downloading {package} (check the network and the apt sources)",
        cwd=dest,
        timeout=_APT_TIMEOUT_S,
    )
    new = sorted(set(dest.glob("*.deb")) - before)
    if len(new) != 1:
        raise TinyGuestError(f"`apt-get download {package}` left {len(new)} new .deb files in {dest}")
    log.info("downloaded %s (%.1f MiB)", new[0].name, new[0].stat().st_size / 2**20)
    return new[0]


def _deb_field(deb: Path, field: str) -> str:
    return _run(["dpkg-deb", "-f", str(deb), field], what=f"reading {deb.name}").stdout.decode().strip()


def _extract(deb: Path, root: Path) -> None:
    _run(["dpkg-deb", "-x", str(deb), str(root)], what=f"unpacking {deb.name}")


def _extract_kernel(deb: Path, root: Path, arch: Arch) -> Path:
    _extract(deb, root)
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    if len(kernels) != 1:
        raise TinyGuestError(f"{deb.name} holds {len(kernels)} boot/vmlinuz-* files, expected one")
    kernel = kernels[0]
    head = kernel.read_bytes()[:1024]
    # bzImage carries "HdrS" at 0x202; an arm64 Image "ARM\x64" at 0x38 (or it is gzip-compressed).
    ok = (
        head[0x202:0x206] == b"HdrS"
        if arch is Arch.AMD64
        else (head[0x38:0x3C] == b"ARM\x64" or head[:2] == b"\x1f\x8b")
    )
    if not ok:
        raise TinyGuestError(f"{kernel.name} from {deb.name} is not a {arch.value} kernel image")
    return kernel


def _extract_busybox(deb: Path, root: Path, arch: Arch) -> Path:
    _extract(deb, root)
    for candidate in (root / "bin" / "busybox", root / "usr" / "bin" / "busybox"):
        if candidate.is_file():
            head = candidate.read_bytes()[:20]
            if head[:4] != b"\x7fELF" or int.from_bytes(head[18:20], "little") != _ELF_MACHINE[arch]:
                raise TinyGuestError(f"busybox in {deb.name} is not an {arch.value} ELF binary")
            return candidate
    raise TinyGuestError(f"{deb.name} has no bin/busybox")


def _host_busybox(arch: Arch, guest_busybox: Path) -> str:
    """A busybox that runs here, for its cpio applet."""
    found = shutil.which("busybox")
    if found:
        return found
    if arch.value == _native_arch():
        return str(guest_busybox)
    raise TinyGuestError("building the initramfs needs a host busybox: run `apt-get install busybox-static`")


def _build_initramfs(
    arch: Arch, guest_busybox: Path, modules: Sequence[tuple[str, bytes]], root: Path, dest: Path
) -> None:
    for sub in ("bin", "dev", "proc", "sys", "tmp", "run", "etc/archq", "lib/modules"):
        (root / sub).mkdir(parents=True)
    shutil.copyfile(guest_busybox, root / "bin" / "busybox")
    (root / "bin" / "busybox").chmod(0o755)
    (root / "bin" / "sh").symlink_to("busybox")
    (root / "init").write_text(_INIT_SCRIPT)
    (root / "init").chmod(0o755)
    for source, target in ((_NET_SCRIPT, "net.sh"), (_UDHCPC_SCRIPT, "udhcpc.sh")):
        (root / "etc" / "archq" / target).write_text(_script(source))
        (root / "etc" / "archq" / target).chmod(0o755)
    for name, image in modules:
        (root / "lib" / "modules" / f"{name}.ko").write_bytes(image)
    (root / "etc" / "archq" / "modules").write_text("".join(f"{name}\n" for name, _ in modules))
    # The kernel opens /dev/console for pid 1 before /init can mount devtmpfs, so the node must be in the
    # archive or the marker never reaches the serial port.
    try:
        os.mknod(root / "dev" / "console", stat.S_IFCHR | 0o600, os.makedev(5, 1))
        os.mknod(root / "dev" / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        (root / "dev" / "null").chmod(0o666)  # mknod honours the umask
    except PermissionError as exc:
        raise TinyGuestError(
            f"creating device nodes for the initramfs needs root (CAP_MKNOD): {exc}; run the build as root"
        ) from exc

    entries = ["."]
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel = Path(dirpath).relative_to(root)
        entries.extend(str(Path(".") / rel / name) for name in sorted(dirnames + filenames))
    listing = ("\n".join(entries) + "\n").encode()
    archive = _run(
        [_host_busybox(arch, guest_busybox), "cpio", "-o", "-H", "newc"],
        what="packing the initramfs with busybox cpio",
        cwd=root,
        stdin=listing,
    ).stdout
    # mtime=0 keeps the initrd's hash a function of its content alone.
    with dest.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0) as gz:
        gz.write(archive)
    log.info("initramfs %s: %d entries, %.1f KiB", dest.name, len(entries), dest.stat().st_size / 1024)


# --- NIC drivers ---------------------------------------------------------------------------------------

_MODULE_SUFFIXES = (".ko", ".ko.xz", ".ko.gz", ".ko.zst")


def _module_name(path: Path) -> str:
    # The kernel treats - and _ in module names alike; modinfo's depends= uses _.
    name = path.name
    for suffix in _MODULE_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return name.replace("-", "_")


def _module_image(path: Path) -> bytes:
    """The module as insmod must get it: busybox insmod reads plain ELF only, so compressed modules are
    unpacked here."""
    data = path.read_bytes()
    if path.name.endswith(".ko.xz"):
        return lzma.decompress(data)
    if path.name.endswith(".ko.gz"):
        return gzip.decompress(data)
    if path.name.endswith(".ko.zst"):
        # Python 3.11 has no zstd; Debian's 6.1 kernels ship .ko (trixie's ship .ko.xz).
        return _run(["zstd", "-dc"], what=f"decompressing {path.name}", stdin=data).stdout
    return data


def _modinfo(image: bytes, what: str) -> dict[str, str]:
    """The key=value pairs of a module's .modinfo section (for keys given more than once, the last)."""
    # Both guest architectures are 64-bit little-endian, the only ELF class this reads.
    if image[:4] != b"\x7fELF" or image[4] != 2 or image[5] != 1:
        raise TinyGuestError(f"{what} is not a 64-bit little-endian ELF module")
    (shoff,) = struct.unpack_from("<Q", image, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", image, 0x3A)

    def section(index: int) -> tuple[int, int, int]:
        base = shoff + index * shentsize
        (name,) = struct.unpack_from("<I", image, base)
        offset, size = struct.unpack_from("<QQ", image, base + 0x18)
        return name, offset, size

    _, names_at, _ = section(shstrndx)
    for index in range(shnum):
        name, offset, size = section(index)
        if image[names_at + name : image.index(b"\0", names_at + name)] == b".modinfo":
            pairs = (item.split(b"=", 1) for item in image[offset : offset + size].split(b"\0") if b"=" in item)
            return {key.decode(): value.decode(errors="replace") for key, value in pairs}
    raise TinyGuestError(f"{what} has no .modinfo section")


def _nic_modules(kernel_root: Path, kernel_deb: Path) -> list[tuple[str, bytes]]:
    """The virtio NIC drivers of the unpacked kernel package and everything they depend on, as (name, plain
    ELF image) in an order busybox insmod can load them: dependencies first. Built-in drivers are left out."""
    module_dirs = sorted((kernel_root / "lib" / "modules").glob("*/"))
    if len(module_dirs) != 1:
        raise TinyGuestError(f"{kernel_deb.name} holds {len(module_dirs)} lib/modules/* directories, expected one")
    module_dir = module_dirs[0]
    files: dict[str, Path] = {}
    for path in (module_dir / "kernel").rglob("*.ko*"):
        if path.name.endswith(_MODULE_SUFFIXES):
            files[_module_name(path)] = path
    builtin_list = module_dir / "modules.builtin"
    builtin = (
        {_module_name(Path(line.strip())) for line in builtin_list.read_text().splitlines() if line.strip()}
        if builtin_list.is_file()
        else set()
    )

    ordered: list[tuple[str, bytes]] = []
    visiting: set[str] = set()
    done: set[str] = set()

    def visit(name: str, wanted_by: str) -> None:
        if name in done or name in builtin:
            return
        if name in visiting:
            raise TinyGuestError(f"the modules of {kernel_deb.name} depend on each other in a cycle through {name}")
        path = files.get(name)
        if path is None:
            raise TinyGuestError(
                f"{kernel_deb.name} has {name} (needed by {wanted_by}) neither built in nor as a module"
            )
        visiting.add(name)
        image = _module_image(path)
        depends = _modinfo(image, f"{path.name} from {kernel_deb.name}").get("depends", "")
        for dependency in filter(None, depends.split(",")):
            visit(dependency.replace("-", "_"), name)
        visiting.discard(name)
        done.add(name)
        ordered.append((name, image))

    for name in _NIC_MODULES:
        visit(name, "a virtio NIC")
    log.info("NIC modules from %s: %s", kernel_deb.name, " ".join(name for name, _ in ordered) or "all built in")
    return ordered
