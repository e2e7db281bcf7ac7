"""Two lab hypervisor hosts, `h1` and `h2`, on this one machine: each a network namespace plus a private mount
namespace running its own virtlogd, libvirtd and sshd, so that libvirt sees two hosts and live migration
between them works (see /work/shared/notes/hypervisor-lab.md for the measured facts this is built on).

Public interface
----------------
`lab_available() -> str | None`
    None if this machine can run the lab, else a reason to show (not root, a missing tool).

`two_hosts(workdir: Path, *, prefix: str = "aqlab", caps_cache: Path | None = DEFAULT_CAPS_CACHE)`
    Context manager yielding `(h1, h2)`, two started `LabHost`s. All state lives under `workdir` (left in
    place afterwards for its logs). On exit every process of the lab is killed and its namespaces and links
    are removed; the root namespace's libvirtd is never touched. Leftovers of a killed earlier run with the
    same `prefix` are removed first. `caps_cache` keeps libvirt's QEMU capability probe between runs
    (seeded from the root libvirtd's cache if empty; a setup without any cache measured 5 s here, with one
    0.4-0.75 s); None disables keeping it.

`LabHost`
    name             "h1" / "h2"; also the host's hostname (own UTS namespace) and an /etc/hosts name.
    address          10.250.0.1 / 10.250.0.2; reachable from the other host and from the root namespace
                     (which gets ROOT_ADDRESS = 10.250.0.254 on a veth into the lab's switch).
    uri              qemu+unix:///system?socket=<workdir>/<name>/run-libvirt/libvirt-sock, for the root
                     namespace (the test process). Inside the host, plain qemu:///system.
    migration_uri    qemu+tcp://<address>/system: the destination URI for a PEER2PEER migration from the
                     other host (its libvirtd connects there; auth_tcp = none, lab only).
    ssh_migration_uri  qemu+ssh://root@<address>/system: the same over SSH (each host's /root/.ssh holds the
                     client key and a known_hosts naming both hosts).
    ssh_port         22, sshd on `address`, key-only, root login with the client key.
    ssh_key_path     the client private key (ed25519, no passphrase), authorised on both hosts.
    known_hosts_path known_hosts with both hosts' keys under their address and name (both hosts share it).
    data_dir         the host's private data directory as the root namespace sees it
                     (<workdir>/<name>/var-lib-libvirt/archq).
    host_data_dir    the same directory as the host itself (its libvirtd, QEMU, a worker) sees it:
                     HOST_DATA_DIR = /var/lib/libvirt/archq, the same path on both hosts but different
                     contents (non-shared storage). Put domain XML paths here; `in_host(path)` maps a path
                     under `data_dir` to it.
    pid              a process holding the host's namespaces (the target of `nsenter`).
    run(cmd, **kw)   subprocess.run of cmd inside the host's mount, network and UTS namespaces (captured
                     text output, check=False unless overridden).
    popen(cmd, **kw) the same as a long-running subprocess.Popen (e.g. an `archq worker`); it is killed with
                     the host at teardown if still running.
    libvirtd_pid()   the host's libvirtd pid.
    Also: netns (its network namespace's name), host_uuid (its libvirtd's), root_dir (<workdir>/<name>: all
    of its state, boot.log, ssh/sshd.log), run_dir (its /run/libvirt) and log_dir (its /var/log/libvirt:
    libvirtd.log, qemu/<domain>.log), the last three as the root namespace sees them.

Topology: netns <prefix>-h1 and <prefix>-h2 each have `eth0` on a bridge in netns <prefix>-sw; the root
namespace joins that bridge through veth <prefix>0 (10.250.0.254/24). The bridge lives in its own namespace
so lab traffic never meets the root namespace's firewall (bridge-nf-call-iptables is on here).

Caveats: one lab per machine at a time (the root namespace address and the 10.250.0.0/24 route are fixed;
a lock file serialises labs, `prefix` only renames the namespaces and links); `workdir` must be short enough that
the libvirt socket path stays under 108 bytes; a QEMU guest's kernel, initrd and serial log directory must
exist on the destination host at the same host path before a migration (copy them into both hosts).
"""

from __future__ import annotations

import contextlib
import fcntl
import filecmp
import grp
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LAB_NET = "10.250.0"
ROOT_ADDRESS = f"{LAB_NET}.254"
HOST_DATA_DIR = Path("/var/lib/libvirt/archq")
DEFAULT_CAPS_CACHE = (
    Path(os.environ.get("ARCHQ_TEST_CACHE", "/var/tmp/archq-test-cache")) / "twohosts-qemu-capabilities"
)
# Read only: a capability cache the root libvirtd already probed seeds the lab hosts on a first run.
ROOT_CAPS_CACHE = Path("/var/cache/libvirt/qemu/capabilities")
# Fixed host UUIDs keep logs comparable between runs; they only need to differ from each other (and from
# the root libvirtd's, which is random at each start because this machine has no SMBIOS).
_UUID_NAMESPACE = uuid.UUID("8d0b6a52-43c5-4f0e-9a51-7c2f3c0e1a10")
_TOOLS = ("ip", "unshare", "nsenter", "libvirtd", "virtlogd", "virsh", "ssh-keygen", "mount")
_SSHD = "/usr/sbin/sshd"
_SUN_PATH_MAX = 107
_START_TIMEOUT_S = 60.0  # a first start without a capability cache probes every qemu-system-* (~12 s each host)
_STOP_TIMEOUT_S = 10.0


class LabError(RuntimeError):
    """The lab could not be set up; the message names the failing step and where its log is."""


@dataclass
class NamespacedHost:
    """What every lab host is: its own namespaces (held by `pid`) and a libvirtd whose sockets and logs live
    under root_dir (also tests/support/armhost.py's arm64 host)."""

    name: str
    netns: str
    root_dir: Path
    host_uuid: str
    pid: int = 0
    _holder: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def run_dir(self) -> Path:
        """The host's /run/libvirt, seen from the root namespace."""
        return self.root_dir / "run-libvirt"

    @property
    def log_dir(self) -> Path:
        """The host's /var/log/libvirt (libvirtd.log, qemu/<domain>.log), seen from the root namespace."""
        return self.root_dir / "var-log-libvirt"

    @property
    def uri(self) -> str:
        return f"qemu+unix:///system?socket={self.run_dir / 'libvirt-sock'}"


@dataclass(kw_only=True)
class LabHost(NamespacedHost):
    address: str
    ssh_key_path: Path
    known_hosts_path: Path
    # The lab bridge's netns, where another host (tests/support/armhost.py) joins the lab's network.
    switch: str
    ssh_port: int = 22

    @property
    def migration_uri(self) -> str:
        return f"qemu+tcp://{self.address}/system"

    @property
    def ssh_migration_uri(self) -> str:
        return f"qemu+ssh://root@{self.address}/system"

    @property
    def data_dir(self) -> Path:
        return self.root_dir / "var-lib-libvirt" / HOST_DATA_DIR.relative_to("/var/lib/libvirt")

    @property
    def host_data_dir(self) -> Path:
        return HOST_DATA_DIR

    def in_host(self, path: Path) -> Path:
        """Where a path under data_dir (root namespace) appears inside the host."""
        return HOST_DATA_DIR / Path(path).relative_to(self.data_dir)

    def _nsenter(self, cmd: Sequence[str]) -> list[str]:
        # The holder process, not libvirtd, is the target: its namespaces are the same and it survives a
        # libvirtd restart.
        return ["nsenter", "-t", str(self.pid), "-m", "-n", "-u", "--", *cmd]

    def run(self, cmd: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        options: dict[str, Any] = {"capture_output": True, "text": True, "check": False, "timeout": 120}
        options.update(kwargs)
        return subprocess.run(self._nsenter(cmd), **options)

    def popen(self, cmd: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        return subprocess.Popen(self._nsenter(cmd), **kwargs)

    @property
    def python(self) -> str:
        """The Python a worker runs with inside the host: the test's own (the host shares this machine's files)."""
        return sys.executable

    def libvirtd_pid(self) -> int:
        # /run is a private tmpfs inside the host; the holder's root gives the root namespace a view of it.
        return int(Path(f"/proc/{self.pid}/root/run/libvirtd.pid").read_text().strip())


def lab_available() -> str | None:
    """None if two_hosts() can run here, else why not (shown by tests that need the lab)."""
    if not hasattr(os, "geteuid") or os.uname().sysname != "Linux":
        return "the two-host lab needs Linux network and mount namespaces"
    if os.geteuid() != 0:
        return "the two-host lab needs root (network namespaces, mounts, libvirtd, sshd)"
    missing = [tool for tool in _TOOLS if shutil.which(tool) is None]
    if not Path(_SSHD).exists():
        missing.append(f"{_SSHD} (apt-get install -y openssh-server)")
    if missing:
        return f"the two-host lab needs these tools, not found: {', '.join(missing)}"
    return None


# --- setup and teardown ------------------------------------------------------------------------------


@contextlib.contextmanager
def two_hosts(
    workdir: Path, *, prefix: str = "aqlab", caps_cache: Path | None = DEFAULT_CAPS_CACHE
) -> Iterator[tuple[LabHost, LabHost]]:
    reason = lab_available()
    if reason:
        raise LabError(reason)
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    names = _Names(prefix)
    with _locked(Path("/run/archq-twohosts.lock")):
        # The lock is free, so anything under these names belongs to a run that died without its teardown.
        _remove_lab(names)
        hosts = _prepare_hosts(workdir, names, caps_cache)
        try:
            _make_network(names, hosts)
            for host in hosts:
                _start_host(host)
            for host in hosts:
                _wait_started(host)
            if caps_cache is not None:
                _save_caps_cache(hosts[0], caps_cache)
            yield hosts[0], hosts[1]
        finally:
            _remove_lab(names, hosts)


@dataclass(frozen=True)
class _Names:
    prefix: str

    @property
    def switch(self) -> str:
        return f"{self.prefix}-sw"

    @property
    def root_link(self) -> str:
        return f"{self.prefix}0"

    def host_ns(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def all_netns(self) -> list[str]:
        return [self.host_ns("h1"), self.host_ns("h2"), self.switch]


@contextlib.contextmanager
def _locked(path: Path, timeout: float = 300.0) -> Iterator[None]:
    with path.open("a") as fh:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LabError(f"another two-host lab holds {path} for more than {timeout:.0f} s") from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _cmd(argv: Sequence[str], what: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), capture_output=True, text=True, check=False, timeout=60)
    if check and proc.returncode != 0:
        raise LabError(f"{what}: `{shlex.join(argv)}` exited with {proc.returncode}: {proc.stderr.strip()}")
    return proc


def netns_exists(name: str) -> bool:
    return Path("/run/netns", name).exists()


def _netns_pids(name: str) -> list[int]:
    if not netns_exists(name):
        return []
    out = _cmd(["ip", "netns", "pids", name], f"listing processes in {name}", check=False).stdout
    return [int(pid) for pid in out.split()]


def kill_netns_processes(name: str, last: int | None = None) -> None:
    """SIGTERM, then SIGKILL, every process in a lab netns: they were all started by the lab (daemons, QEMU
    guests, sshd sessions, processes from LabHost.popen). `last` (the holder) goes after the others, so that
    it is still there to reap them."""
    for group in ("others", "last"):
        for sig, grace in ((signal.SIGTERM, _STOP_TIMEOUT_S / 2), (signal.SIGKILL, _STOP_TIMEOUT_S / 2)):
            pids = _victims(name, last, group)
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + grace
            while pids and time.monotonic() < deadline:
                time.sleep(0.05)
                pids = _victims(name, last, group)
            if not pids:
                break
        else:
            raise LabError(f"processes {pids} in netns {name} survived SIGKILL")


def _victims(name: str, last: int | None, group: str) -> list[int]:
    pids = _netns_pids(name)
    return [pid for pid in pids if pid != last] if group == "others" else [pid for pid in pids if pid == last]


def _remove_lab(names: _Names, hosts: Sequence[LabHost] = ()) -> None:
    errors: list[str] = []
    holders = {host.netns: host.pid for host in hosts}
    for netns in names.all_netns():
        try:
            kill_netns_processes(netns, holders.get(netns))
        except LabError as exc:
            errors.append(str(exc))
    for host in hosts:
        if host._holder is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                host._holder.wait(timeout=5)
    for netns in names.all_netns():
        if netns_exists(netns):
            # Deleting a namespace destroys the veth ends in it, and with them their peers.
            proc = _cmd(["ip", "netns", "del", netns], f"deleting netns {netns}", check=False)
            if proc.returncode != 0:
                errors.append(proc.stderr.strip())
    if Path("/sys/class/net", names.root_link).exists():
        _cmd(["ip", "link", "del", names.root_link], f"deleting {names.root_link}", check=False)
    if errors:
        raise LabError("two-host lab teardown: " + "; ".join(errors))


def _make_network(names: _Names, hosts: Sequence[LabHost]) -> None:
    sw = names.switch
    for netns in names.all_netns():
        _cmd(["ip", "netns", "add", netns], f"creating netns {netns}")
    _cmd(["ip", "-n", sw, "link", "add", "br0", "type", "bridge"], "creating the lab bridge")
    _cmd(["ip", "-n", sw, "link", "set", "br0", "up"], "starting the lab bridge")
    # The root namespace joins so that tests (paramiko, qemu+tcp) reach the hosts' addresses directly.
    _cmd(
        ["ip", "link", "add", names.root_link, "type", "veth", "peer", "name", "root", "netns", sw],
        "creating the root namespace's lab link",
    )
    _cmd(["ip", "addr", "add", f"{ROOT_ADDRESS}/24", "dev", names.root_link], "addressing the root link")
    _cmd(["ip", "link", "set", names.root_link, "up"], "starting the root link")
    _cmd(["ip", "-n", sw, "link", "set", "root", "master", "br0", "up"], "bridging the root link")
    for host in hosts:
        join_switch(sw, host.netns, host.name, host.address)


def join_switch(switch: str, netns: str, name: str, address: str) -> None:
    """Give the host in `netns` an `eth0` with `address` on the lab's bridge (in netns `switch`)."""
    _cmd(
        ["ip", "-n", netns, "link", "add", "eth0", "type", "veth", "peer", "name", name, "netns", switch],
        f"creating {name}'s link",
    )
    _cmd(["ip", "-n", switch, "link", "set", name, "master", "br0", "up"], f"bridging {name}")
    _cmd(["ip", "-n", netns, "addr", "add", f"{address}/24", "dev", "eth0"], "addressing")
    _cmd(["ip", "-n", netns, "link", "set", "eth0", "up"], f"starting {name}'s eth0")
    _cmd(["ip", "-n", netns, "link", "set", "lo", "up"], f"starting {name}'s loopback")


def keygen(path: Path, comment: str) -> None:
    _cmd(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], f"creating {path}")


def _prepare_hosts(workdir: Path, names: _Names, caps_cache: Path | None) -> tuple[LabHost, LabHost]:
    client_key = workdir / "client_ed25519"
    known_hosts = workdir / "known_hosts"
    for stale in (client_key, client_key.with_suffix(".pub"), known_hosts):
        stale.unlink(missing_ok=True)
    keygen(client_key, "archq-twohosts-client")

    hosts = tuple(
        LabHost(
            name=name,
            address=f"{LAB_NET}.{index}",
            netns=names.host_ns(name),
            root_dir=workdir / name,
            host_uuid=str(uuid.uuid5(_UUID_NAMESPACE, f"{names.prefix}-{name}")),
            ssh_key_path=client_key,
            known_hosts_path=known_hosts,
            switch=names.switch,
        )
        for index, name in ((1, "h1"), (2, "h2"))
    )
    sock = hosts[0].run_dir / "libvirt-sock"
    if len(str(sock).encode()) > _SUN_PATH_MAX:
        raise LabError(f"workdir {workdir} is too long: the libvirt socket path {sock} exceeds {_SUN_PATH_MAX} bytes")

    lines = []
    for host in hosts:
        # A fresh tree each run: stale domain state or PID files from a killed run would confuse libvirtd.
        if host.root_dir.exists():
            shutil.rmtree(host.root_dir)
        host.root_dir.mkdir(parents=True)
        (host.root_dir / "ssh").mkdir(mode=0o700)
        keygen(host.root_dir / "ssh" / "ssh_host_ed25519_key", f"archq-twohosts-{host.name}")
        pub = (host.root_dir / "ssh" / "ssh_host_ed25519_key.pub").read_text().split()
        lines.append(f"{host.address},{host.name} {pub[0]} {pub[1]}\n")
    known_hosts.write_text("".join(lines))
    for host in hosts:
        _write_host_tree(host, hosts, client_key, known_hosts, caps_cache)
    return hosts  # type: ignore[return-value]


def _write_host_tree(
    host: LabHost, hosts: Sequence[LabHost], client_key: Path, known_hosts: Path, caps_cache: Path | None
) -> None:
    d = host.root_dir
    etc = d / "etc-libvirt"
    # A fresh /etc/libvirt, not a copy of the root one: that holds the root libvirtd's domains (which would
    # be defined, and autostarted, on the lab hosts too) and its default network (dnsmasq, iptables).
    (etc / "qemu" / "networks").mkdir(parents=True)
    (etc / "secrets").mkdir(mode=0o700)
    for name in ("libvirt.conf", "virtlogd.conf", "libvirt-admin.conf"):
        if Path("/etc/libvirt", name).exists():
            shutil.copy2(Path("/etc/libvirt", name), etc / name)
    if Path("/etc/libvirt/nwfilter").is_dir():
        shutil.copytree("/etc/libvirt/nwfilter", etc / "nwfilter")
    (etc / "libvirtd.conf").write_text(
        "# two-host lab: plain TCP without auth, lab only (no TLS certificates here)\n"
        "listen_tls = 0\n"
        "listen_tcp = 1\n"
        f'listen_addr = "{host.address}"\n'
        'auth_tcp = "none"\n'
        # Without SMBIOS libvirt invents a random host UUID per start; migration needs two distinct ones.
        f'host_uuid = "{host.host_uuid}"\n'
        'log_outputs = "3:file:/var/log/libvirt/libvirtd.log"\n'
    )
    (etc / "qemu.conf").write_text(
        # Name the migration endpoint explicitly: libvirt would otherwise resolve the hostname, which only
        # the hosts' own /etc/hosts knows.
        f'migration_address = "{host.address}"\n'
        f'migration_host = "{host.address}"\n'
        # /sys/fs/cgroup is not mounted in the netns' /sys, and two daemons' cgroup paths would collide.
        "cgroup_controllers = [ ]\n"
    )

    lib = d / "var-lib-libvirt"
    (lib / "qemu").mkdir(parents=True)
    qemu_uid, qemu_gid = _qemu_ids()
    os.chown(lib / "qemu", qemu_uid, qemu_gid)
    (lib / "qemu").chmod(0o750)
    lib.chmod(0o755)
    data = host.data_dir
    (data / "images").mkdir(parents=True)
    (data / "vms").mkdir()
    for sub in (data, data / "images", data / "vms"):
        sub.chmod(0o755)

    caps = d / "var-cache-libvirt" / "qemu" / "capabilities"
    caps.mkdir(parents=True)
    # libvirtd re-validates a seeded cache (binary ctimes, versions, host CPU) and re-probes if it is stale.
    for seed in (*([caps_cache] if caps_cache else []), ROOT_CAPS_CACHE):
        if seed.is_dir() and any(seed.glob("*.xml")):
            for xml in seed.glob("*.xml"):
                shutil.copy2(xml, caps / xml.name)
            break
    (d / "var-log-libvirt" / "qemu").mkdir(parents=True)
    (d / "run-libvirt").mkdir()

    ssh_root = d / "root-ssh"
    ssh_root.mkdir(mode=0o700)
    shutil.copy2(client_key.with_suffix(".pub"), ssh_root / "authorized_keys")
    # The client key and known_hosts inside each host too, so host-to-host SSH (qemu+ssh migrations) works.
    shutil.copy2(client_key, ssh_root / "id_ed25519")
    shutil.copy2(known_hosts, ssh_root / "known_hosts")
    for f in ssh_root.iterdir():
        f.chmod(0o600)

    ssh = d / "ssh"
    (ssh / "sshd_config").write_text(
        f"ListenAddress {host.address}\n"
        f"Port {host.ssh_port}\n"
        f"HostKey {ssh / 'ssh_host_ed25519_key'}\n"
        "PidFile /run/sshd.pid\n"
        "PermitRootLogin prohibit-password\n"
        "PubkeyAuthentication yes\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "AuthorizedKeysFile .ssh/authorized_keys\n"
        "UsePAM no\n"
        "Subsystem sftp /usr/lib/openssh/sftp-server\n"
    )
    (d / "hosts").write_text(
        "127.0.0.1 localhost\n" + "".join(f"{h.address} {h.name}\n" for h in hosts) + f"{ROOT_ADDRESS} lab-root\n"
    )

    q = shlex.quote
    binds = [
        (d / "run-libvirt", "/run/libvirt"),
        (etc, "/etc/libvirt"),
        (lib, "/var/lib/libvirt"),
        (d / "var-cache-libvirt", "/var/cache/libvirt"),
        (d / "var-log-libvirt", "/var/log/libvirt"),
        (ssh_root, "/root/.ssh"),
        (d / "hosts", "/etc/hosts"),
    ]
    (d / "boot.sh").write_text(
        "set -eu\n"
        f"hostname {q(host.name)}\n"
        # A private /run: libvirtd, virtlogd and sshd lock PID files there that the root daemons hold.
        "mount -t tmpfs -o mode=0755,size=64m lab-run /run\n"
        "mkdir -p /run/libvirt /run/sshd /run/lock /root/.ssh /var/cache/libvirt /var/log/libvirt\n"
        + "".join(f"mount --bind {q(str(src))} {q(dst)}\n" for src, dst in binds)
        + "virtlogd -d\n"
        "libvirtd -d -l -p /run/libvirtd.pid\n"
        f"{_SSHD} -f {q(str(ssh / 'sshd_config'))} -E {q(str(ssh / 'sshd.log'))}\n"
        f"touch {q(str(d / 'ready'))}\n"
    )


# The holder: the first process in a host's namespaces and the target of nsenter. It is a child subreaper,
# so the daemons boot.sh starts (they daemonize, orphaning themselves) become its children and it reaps them
# when they exit; otherwise they would be left as zombies of this machine's PID 1, which does not reap.
HOLDER = """
import ctypes, os, subprocess, sys, time
PR_SET_CHILD_SUBREAPER = 36
if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
    print("prctl(PR_SET_CHILD_SUBREAPER) failed", file=sys.stderr)
rc = subprocess.call(["/bin/sh", sys.argv[1]])
if rc:
    sys.exit(rc)
while True:
    try:
        os.wait()
    except ChildProcessError:
        time.sleep(0.5)
"""


def _qemu_ids() -> tuple[int, int]:
    """The user QEMU runs as under libvirt (Debian: libvirt-qemu:libvirt-qemu); root if there is none."""
    try:
        return pwd.getpwnam("libvirt-qemu").pw_uid, grp.getgrnam("libvirt-qemu").gr_gid
    except KeyError:
        return 0, 0


def _start_host(host: LabHost) -> None:
    log = (host.root_dir / "boot.log").open("wb")
    with log:
        host._holder = subprocess.Popen(
            ["ip", "netns", "exec", host.netns, "unshare", "--mount", "--uts", "--propagation", "private",
             "--", sys.executable, "-c", HOLDER, str(host.root_dir / "boot.sh")],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Its own session: a Ctrl-C in pytest must not reach the lab's daemons before teardown does.
            start_new_session=True,
        )  # fmt: skip
    # `ip netns exec` and `unshare` exec in place, so the Popen pid ends up being the holder's.
    host.pid = host._holder.pid


def _wait_started(host: LabHost) -> None:
    assert host._holder is not None
    deadline = time.monotonic() + _START_TIMEOUT_S
    ready = host.root_dir / "ready"
    while not ready.exists():
        if host._holder.poll() is not None or time.monotonic() > deadline:
            boot_log = (host.root_dir / "boot.log").read_text(errors="replace").strip()
            raise LabError(f"{host.name} did not boot (see {host.root_dir}/boot.log):\n{boot_log}")
        time.sleep(0.02)
    while True:
        # `version` needs the QEMU driver up, not just the socket; virsh has a timeout where libvirt.open has not.
        try:
            proc = subprocess.run(
                ["virsh", "-q", "-c", host.uri, "version"], capture_output=True, text=True, timeout=10, check=False
            )
            if proc.returncode == 0:
                break
            detail = proc.stderr.strip()
        except subprocess.TimeoutExpired:
            detail = "virsh version timed out"
        if time.monotonic() > deadline:
            raise LabError(f"{host.name}'s libvirtd does not answer ({detail}); see {host.log_dir}/libvirtd.log")
        time.sleep(0.05)
    for port in (host.ssh_port, 16509):
        while True:
            try:
                socket.create_connection((host.address, port), timeout=1).close()
                break
            except OSError as exc:
                if time.monotonic() > deadline:
                    raise LabError(f"{host.name}:{port} is not reachable from the root namespace: {exc}") from exc
                time.sleep(0.05)


def _save_caps_cache(host: LabHost, cache: Path) -> None:
    """Keep the capability cache the lab libvirtd validated (or re-probed) for the next run."""
    source = host.root_dir / "var-cache-libvirt" / "qemu" / "capabilities"
    try:
        cache.mkdir(parents=True, exist_ok=True)
        for xml in source.glob("*.xml"):
            target = cache / xml.name
            if target.exists() and filecmp.cmp(xml, target, shallow=False):
                continue
            tmp = cache / f".{xml.name}.{os.getpid()}"
            shutil.copy2(xml, tmp)
            tmp.replace(target)
    except OSError:
        # Only a speed-up for the next run.
        pass
