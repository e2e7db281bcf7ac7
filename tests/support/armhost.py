"""An arm64 hypervisor host on this x86-64 machine: a Debian 12 arm64 userland run through qemu-user-static
and binfmt_misc, with its own libvirtd (whose capabilities say `aarch64`, so archq's worker learns `arm64` as it
would on a Graviton machine) in its own mount, network and UTS namespaces, beside the two-host lab
(tests/support/twohosts.py, whose holder and teardown it reuses). See ../shared/notes/guest-lab.md A for the
measured recipe.

Public interface
----------------
`armhost_available() -> str | None`
    None if this machine can run the host (root, the tools, overlayfs), else a reason to show.

`ensure_root(cache_dir: Path = CACHE) -> Path`
    The arm64 root filesystem, built once per recipe into `cache_dir/arm64-root/root` with mmdebstrap (about six
    minutes cold, more under load) under a file lock, then reused. The recipe is the Debian package list, the
    Python requirements (archq's `worker` extra from pyproject.toml, installed with pip into /opt/archq, a venv
    over Debian's python3-libvirt) and the build hooks.

`arm_host(workdir: Path, *, binds: Sequence[Path] = (), name: str = "arm1")`
    Context manager yielding a started `ArmHost`. The cached root is the lower layer of an overlay, so a run
    never changes it; everything a run writes lives under `workdir/<name>`. `binds` are host directories
    mounted into the arm64 root at the same paths (the checkout, a Redis socket's directory, the test cache).
    On exit every process of the host is killed and its namespace removed.

`ArmHost`: the same shape as `twohosts.LabHost` where a cluster needs it (name, uri, data_dir, host_data_dir,
    python, popen, run, log_dir); `address` is empty until `join_lab` puts it on the lab's network.

`join_lab(host, lab, address, known_hosts)`
    The host on the two-host lab's bridge with sshd and libvirtd's TCP listener, so that the lab hosts' workers
    migrate VMs to it (re-homing an emulated arm64 VM to this native host).

Cannot prove (see the README): KVM on ARM, seccomp, cgroups and per-domain namespaces under qemu-user; its
/proc/cpuinfo shows the x86 CPU. Guests it runs are emulated twice (qemu-user runs QEMU's TCG), so boots take
tens of seconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
import tomllib
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from queues.arch import Arch
from tests.support import twohosts
from workers.guest.build_cache import build_once, run_tool
from workers.guest.debian import MIRROR, SECURITY_MIRROR, SUITE, ensure_foreign_arch_runs

log = logging.getLogger(__name__)

CACHE = Path(os.environ.get("ARCHQ_TEST_CACHE", "/var/tmp/archq-test-cache")) / "armhost"
_ROOT_NAME = "arm64-root"
_PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
VENV = Path("/opt/archq")
HOST_DATA_DIR = Path("/var/lib/libvirt/archq")
# sshd's configuration, keys and log inside the host (root_dir/ssh outside): join_lab writes them.
_SSH_DIR = "/etc/ssh/lab"

# Bump when the build changes in a way the lists and hooks do not capture.
_FORMAT_VERSION = 1

_PACKAGES = (
    "python3", "python3-venv", "ca-certificates", "tzdata", "procps", "iproute2", "coreutils",
    # libvirt's QEMU driver and both system emulators (as arm64 programs), and qemu-img for the worker.
    "libvirt-daemon-system", "libvirt-clients", "qemu-system-x86", "qemu-system-arm", "qemu-utils",
    # The worker's NAT network: libvirt's dnsmasq and its firewall rules.
    "dnsmasq-base", "iptables",
    # Compiled modules from Debian, so pip needs no compiler under emulation: libvirt-python is Debian's
    # (9.0, the libvirt it talks to), and paramiko's and the rest's native parts are Debian's where new enough.
    "python3-libvirt", "python3-yaml", "python3-cryptography", "python3-bcrypt", "python3-nacl",
    # What the unit tier run as aarch64 code calls (tests/armhost/test_unit_tier_on_arm64.py): ssh-keygen checks
    # SSH keys, a private redis-server backs its app fixture, isoinfo reads the seed ISO.
    "openssh-client", "redis-server", "genisoimage",
    # Cold migrations to this host (re-homing an emulated arm64 VM here): sshd for the disk copy and the
    # qemu+ssh connection, which runs libvirt's virt-ssh-helper on this side.
    "openssh-server",
)  # fmt: skip

# Debian's libvirt-python is used, not compiled under emulation (it needs gcc and minutes of qemu-user).
_FROM_DEBIAN = ("libvirt-python",)

# Each hook runs with the root directory as "$1", in the build's network namespace (pip reaches PyPI).
_HOOKS = (
    # This machine's own CAs (an egress proxy's among them): pip checks certificates against the root's bundle.
    'for crt in /usr/local/share/ca-certificates/*.crt; do [ -e "$crt" ] && cp "$crt" '
    '"$1/usr/local/share/ca-certificates/"; done; chroot "$1" update-ca-certificates >/dev/null',
    # Each run's libvirtd starts without the default network (dnsmasq and NAT on 192.168.122.0/24).
    'rm -f "$1/etc/libvirt/qemu/networks/autostart/default.xml"',
    f'chroot "$1" python3 -m venv --system-site-packages {VENV}',
)

_MMDEBSTRAP_S = 3600
_START_TIMEOUT_S = 120.0  # a libvirtd without a capability cache probes four emulated QEMU binaries (~12 s)
_UUID_NAMESPACE = uuid.UUID("2f0f8f5e-5a7a-4a53-9c53-2d8b1b7e6a64")
_TOOLS = ("mmdebstrap", "unshare", "nsenter", "ip", "chroot", "mount", "virsh")


class ArmHostError(RuntimeError):
    """The arm64 host could not be built or started; the message names the step and its log."""


def requirements() -> tuple[str, ...]:
    """What pip installs into the root's venv: archq's base, `worker` and `server` dependencies and pytest, less
    Debian's: the worker runs as aarch64 code, and so does the unit tier (tests/armhost/test_unit_tier_on_arm64.py),
    whose conftest imports the server side."""
    project = tomllib.loads(_PYPROJECT.read_text())["project"]
    extras = project["optional-dependencies"]
    pytest_req = [req for req in extras["test"] if req.startswith("pytest")]
    wanted = dict.fromkeys([*project["dependencies"], *extras["worker"], *extras["server"], *pytest_req])
    return tuple(req for req in wanted if not req.startswith(_FROM_DEBIAN))


def recipe_id() -> str:
    parts = [str(_FORMAT_VERSION), SUITE, *_PACKAGES, *requirements(), *_HOOKS]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def armhost_available() -> str | None:
    reason = twohosts.lab_available()
    if reason:
        return reason
    missing = [tool for tool in _TOOLS if shutil.which(tool) is None]
    if missing:
        return f"the arm64 host needs these tools, not found: {', '.join(missing)}"
    if "overlay" not in Path("/proc/filesystems").read_text():
        return "the arm64 host needs overlayfs (its cached root is the lower layer)"
    return None


# --- the root filesystem ---------------------------------------------------------------------------------


def ensure_root(cache_dir: Path = CACHE) -> Path:
    """The cached arm64 root (built if missing or from another recipe)."""
    return build_once(
        cache_dir=Path(cache_dir),
        name=_ROOT_NAME,
        what="arm64 hypervisor host root",
        load=_load,
        build=_build,
        error=ArmHostError,
    )


def _load(target: Path) -> Path | None:
    try:
        manifest = json.loads((target / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    root = target / "root"
    if manifest.get("recipe") != recipe_id() or not (root / VENV.relative_to("/") / "bin" / "python").exists():
        return None
    return root


def _build(out: Path) -> None:
    started = time.monotonic()
    ensure_foreign_arch_runs(Arch.ARM64)
    root = out / "root"
    pip = (
        f'chroot "$1" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root {VENV}/bin/pip install -q '
        f"--no-cache-dir --disable-pip-version-check --cert /etc/ssl/certs/ca-certificates.crt "
        + " ".join(shlex.quote(req) for req in requirements())
    )
    argv = [
        "mmdebstrap",
        "--mode=root",
        "--variant=apt",
        "--architectures=arm64",
        "--components=main",
        f"--include={','.join(_PACKAGES)}",
        *(f"--customize-hook={hook}" for hook in (*_HOOKS, pip)),
        SUITE,
        str(root),
        f"deb {MIRROR} {SUITE} main",
        f"deb {MIRROR} {SUITE}-updates main",
        f"deb {SECURITY_MIRROR} {SUITE}-security main",
    ]
    log.info("mmdebstrap %s arm64 hypervisor host into %s", SUITE, root)
    run_tool(argv, what="building the arm64 host root with mmdebstrap", error=ArmHostError, timeout=_MMDEBSTRAP_S)
    freeze = run_tool(
        ["chroot", str(root), "env", "-i", str(VENV / "bin" / "python"), "-m", "pip", "freeze", "--all"],
        what="listing the arm64 host's Python packages",
        error=ArmHostError,
    ).stdout.decode()
    manifest = {
        "recipe": recipe_id(),
        "suite": SUITE,
        "packages": list(_PACKAGES),
        "requirements": list(requirements()),
        "pip_freeze": freeze.split(),
        "build_seconds": round(time.monotonic() - started, 1),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


# --- the running host ------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class ArmHost(twohosts.NamespacedHost):
    rootfs: Path
    address: str = ""  # its migration address, once it joined the lab's network (join_lab)
    _sshd: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def merged(self) -> Path:
        """The host's root directory (overlay of the cached root), as its own mount namespace sees it."""
        return self.root_dir / "merged"

    @property
    def data_dir(self) -> Path:
        return self.root_dir / "archq-data"

    @property
    def host_data_dir(self) -> Path:
        return HOST_DATA_DIR

    @property
    def python(self) -> str:
        """The aarch64 Python with archq's worker dependencies, inside the host."""
        return str(VENV / "bin" / "python")

    def _enter(self, cmd: Sequence[str], cwd: Path | str | None) -> list[str]:
        # chroot changes directory to its new root; `env -C` then moves to `cwd`, a path bound in at the same place.
        chdir = ["-C", str(cwd)] if cwd is not None else []
        return [
            "nsenter", "-t", str(self.pid), "-m", "-n", "-u", "--",
            "chroot", str(self.merged), "/usr/bin/env", *chdir, *cmd,
        ]  # fmt: skip

    def run(self, cmd: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        options: dict[str, Any] = {"capture_output": True, "text": True, "check": False, "timeout": 300}
        options.update(kwargs)
        cwd = options.pop("cwd", None)
        return subprocess.run(self._enter(cmd, cwd), **options)

    def popen(self, cmd: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        cwd = kwargs.pop("cwd", None)
        return subprocess.Popen(self._enter(cmd, cwd), **kwargs)


@contextlib.contextmanager
def arm_host(workdir: Path, *, binds: Sequence[Path] = (), name: str = "arm1") -> Iterator[ArmHost]:
    reason = armhost_available()
    if reason:
        raise ArmHostError(reason)
    rootfs = ensure_root()
    workdir = Path(workdir).resolve()
    host = ArmHost(
        name=name,
        netns=f"aqarm-{name}",
        root_dir=workdir / name,
        rootfs=rootfs,
        host_uuid=str(uuid.uuid5(_UUID_NAMESPACE, name)),
    )
    sock = host.run_dir / "libvirt-sock"
    if len(str(sock).encode()) > 107:
        raise ArmHostError(f"workdir {workdir} is too long for the libvirt socket path {sock}")
    _remove(host)
    _prepare(host, [Path(b).resolve() for b in binds])
    try:
        _start(host)
        _wait_started(host)
        _save_caps_cache(host)
        yield host
    finally:
        _remove(host)


def join_lab(host: ArmHost, lab: Sequence[twohosts.LabHost], address: str, known_hosts: Sequence[Path]) -> None:
    """Put the host on the two-host lab's network at `address` with sshd (the lab's client key may log in as
    root), so that the lab hosts' workers can migrate VMs to it: their SSH checks and disk copies, and libvirt
    over TCP. Its host key is appended to each of `known_hosts`. The host's worker must start after this to
    announce the address."""
    twohosts.join_switch(lab[0].switch, host.netns, host.name, address)
    ssh = host.root_dir / "ssh"
    twohosts.keygen(ssh / "ssh_host_ed25519_key", f"archq-armhost-{host.name}")
    shutil.copyfile(lab[0].ssh_key_path.with_suffix(".pub"), ssh / "authorized_keys")
    (ssh / "sshd_config").write_text(
        f"ListenAddress {address}\n"
        f"HostKey {_SSH_DIR}/ssh_host_ed25519_key\n"
        "PidFile /run/sshd.pid\n"
        "PermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        f"AuthorizedKeysFile {_SSH_DIR}/authorized_keys\n"
        "UsePAM no\n"
        "Subsystem sftp /usr/lib/openssh/sftp-server\n"
    )
    for path in ssh.iterdir():
        path.chmod(0o600)
    host._sshd = host.popen(
        ["/usr/sbin/sshd", "-D", "-f", f"{_SSH_DIR}/sshd_config", "-E", f"{_SSH_DIR}/sshd.log"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    key = (ssh / "ssh_host_ed25519_key.pub").read_text().split()
    for path in known_hosts:
        with path.open("a") as fh:
            fh.write(f"{address},{host.name} {key[0]} {key[1]}\n")
    deadline = time.monotonic() + _START_TIMEOUT_S
    for port in (22, 16509):
        while True:
            try:
                socket.create_connection((address, port), timeout=1).close()
                break
            except OSError as exc:
                if host._sshd.poll() is not None or time.monotonic() > deadline:
                    raise ArmHostError(f"{host.name}:{port} is not reachable (see {ssh}/sshd.log): {exc}") from exc
                time.sleep(0.2)
    host.address = address


def _caps_cache() -> Path:
    # libvirt re-probes when a QEMU binary's ctime changes: kept per built root, whose files keep theirs.
    return CACHE / f"qemu-capabilities-{recipe_id()}"


def _prepare(host: ArmHost, binds: Sequence[Path]) -> None:
    d = host.root_dir
    if d.exists():
        shutil.rmtree(d)
    for sub in ("upper", "work", "merged", "run-libvirt", "var-log-libvirt/qemu", "caps", "archq-data/images",
                "archq-data/vms", "ssh"):  # fmt: skip
        (d / sub).mkdir(parents=True)
    (d / "ssh").chmod(0o700)
    for sub in (d, d / "archq-data", d / "archq-data/images", d / "archq-data/vms"):
        sub.chmod(0o755)
    cache = _caps_cache()
    if cache.is_dir():
        for xml in cache.glob("*.xml"):
            shutil.copy2(xml, d / "caps" / xml.name)
    etc = d / "upper" / "etc" / "libvirt"
    etc.mkdir(parents=True)
    (etc / "libvirtd.conf").write_text(
        # No SMBIOS (nor dmidecode) here: without a fixed UUID libvirt invents one per start.
        f'host_uuid = "{host.host_uuid}"\nlog_outputs = "3:file:/var/log/libvirt/libvirtd.log"\n'
        # Migrations from the x86-64 lab hosts arrive over plain TCP once it joins their network (join_lab), as
        # theirs do: lab only, no TLS certificates here.
        'listen_tls = 0\nlisten_tcp = 1\nauth_tcp = "none"\n'
    )
    # /sys/fs/cgroup is not mounted in the host's fresh /sys.
    (etc / "qemu.conf").write_text("cgroup_controllers = [ ]\n")
    m = host.merged
    q = shlex.quote
    mounts = [
        (d / "run-libvirt", "/run/libvirt"),
        (d / "var-log-libvirt", "/var/log/libvirt"),
        (d / "caps", "/var/cache/libvirt/qemu/capabilities"),
        (host.data_dir, str(HOST_DATA_DIR)),
        (d / "ssh", _SSH_DIR),
        *((b, str(b)) for b in binds),
    ]
    devices = "".join(
        f"mknod -m 666 {q(str(m / 'dev' / dev))} c {major} {minor}\n"
        for dev, major, minor in (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8),
                                  ("urandom", 1, 9), ("tty", 5, 0))
    )  # fmt: skip
    (d / "boot.sh").write_text(
        "set -eu\n"
        f"hostname {q(host.name)}\n"
        "ip link set lo up\n"
        f"mount -t overlay overlay -o lowerdir={q(str(host.rootfs))},upperdir={q(str(d / 'upper'))},"
        f"workdir={q(str(d / 'work'))} {q(str(m))}\n"
        f"mount -t proc proc {q(str(m / 'proc'))}\n"
        f"mount -t sysfs sysfs {q(str(m / 'sys'))}\n"
        f"mount -t tmpfs -o mode=0755,size=16m archq-dev {q(str(m / 'dev'))}\n"
        + devices
        + f"mkdir {q(str(m / 'dev/pts'))} {q(str(m / 'dev/shm'))}\n"
        f"mount -t devpts -o newinstance,ptmxmode=0666 devpts {q(str(m / 'dev/pts'))}\n"
        f"ln -s pts/ptmx {q(str(m / 'dev/ptmx'))}\n"
        f"mount -t tmpfs -o mode=1777 archq-shm {q(str(m / 'dev/shm'))}\n"
        f"mount -t tmpfs -o mode=0755,size=64m archq-run {q(str(m / 'run'))}\n"
        f"mkdir -m 0755 {q(str(m / 'run/sshd'))}\n"
        f"mount -t tmpfs -o mode=1777 archq-tmp {q(str(m / 'tmp'))}\n"
        + "".join(f"mkdir -p {q(str(m) + dst)}\nmount --bind {q(str(src))} {q(str(m) + dst)}\n" for src, dst in mounts)
        # virtlogd writes QEMU's logs and the serial console files, as on a Debian host.
        + f"chroot {q(str(m))} /usr/sbin/virtlogd -d\n"
        # QEMU_CPU: qemu-user's default CPU has a MIDR libvirt cannot name ("Cannot find CPU model with PVR").
        f"QEMU_CPU=cortex-a72 chroot {q(str(m))} /usr/sbin/libvirtd -d -l -p /run/libvirtd.pid\n"
        f"touch {q(str(d / 'ready'))}\n"
    )


def _start(host: ArmHost) -> None:
    subprocess.run(["ip", "netns", "add", host.netns], check=True, capture_output=True)
    with (host.root_dir / "boot.log").open("wb") as log_file:
        host._holder = subprocess.Popen(
            ["ip", "netns", "exec", host.netns, "unshare", "--mount", "--uts", "--propagation", "private",
             "--", sys.executable, "-c", twohosts.HOLDER, str(host.root_dir / "boot.sh")],
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    host.pid = host._holder.pid


def _wait_started(host: ArmHost) -> None:
    assert host._holder is not None
    deadline = time.monotonic() + _START_TIMEOUT_S
    while not (host.root_dir / "ready").exists():
        if host._holder.poll() is not None or time.monotonic() > deadline:
            boot_log = (host.root_dir / "boot.log").read_text(errors="replace").strip()
            raise ArmHostError(f"{host.name} did not boot (see {host.root_dir}/boot.log):\n{boot_log}")
        time.sleep(0.05)
    detail = ""
    while time.monotonic() < deadline:
        # `capabilities` waits for the QEMU driver's probe, which is what a worker's first call would wait for.
        try:
            proc = subprocess.run(
                ["virsh", "-q", "-c", host.uri, "capabilities"], capture_output=True, text=True, timeout=60, check=False
            )
            if proc.returncode == 0 and "<arch>aarch64</arch>" in proc.stdout:
                return
            detail = proc.stderr.strip() or "capabilities name no aarch64 host"
        except subprocess.TimeoutExpired:
            detail = "virsh capabilities timed out"
        time.sleep(0.2)
    raise ArmHostError(f"{host.name}'s libvirtd does not answer ({detail}); see {host.log_dir}/libvirtd.log")


def _save_caps_cache(host: ArmHost) -> None:
    cache = _caps_cache()
    with contextlib.suppress(OSError):
        cache.mkdir(parents=True, exist_ok=True)
        for xml in (host.root_dir / "caps").glob("*.xml"):
            tmp = cache / f".{xml.name}.{os.getpid()}"
            shutil.copy2(xml, tmp)
            tmp.replace(cache / xml.name)


def _remove(host: ArmHost) -> None:
    # Every process in the namespace belongs to this host (libvirtd, QEMU, workers started with popen); the
    # mounts go with its mount namespace when the last of them exits.
    twohosts.kill_netns_processes(host.netns, host.pid or None)
    if host._sshd is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            host._sshd.wait(timeout=5)
    if host._holder is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            host._holder.wait(timeout=5)
    if twohosts.netns_exists(host.netns):
        subprocess.run(["ip", "netns", "del", host.netns], check=False, capture_output=True)


if __name__ == "__main__":
    # .ci/test builds (or verifies) the root before the suite, so its cold cost shows on its own line.
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    began = time.monotonic()
    print(f"arm64 host root: {ensure_root()} ({time.monotonic() - began:.1f} s)")
