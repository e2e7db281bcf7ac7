"""A real OpenSSH server on loopback for tests: a free port, its own host key, one authorised client key,
key authentication only (as tests/support/twohosts.py configures its hosts' sshd).

`make_sshd(workdir, *, address="127.0.0.1", netns=None)` prepares one (listening on `address`, any 127.0.0.x
works; in network namespace `netns` if given), `running_sshd(sshd)` runs it. TCP forwarding is on (OpenSSH's
default), so one can serve as a jump host."""

from __future__ import annotations

import getpass
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.services import free_port, wait_for

SSHD = "/usr/sbin/sshd"


@dataclass
class Sshd:
    port: int
    user: str
    client_key: Path
    host_key: Path
    dir: Path
    address: str = "127.0.0.1"
    # A network namespace (`ip netns`) to run in; None: this one.
    netns: str | None = None

    def host_key_line(self) -> str:
        """The host's public key as an OpenSSH line ("ssh-ed25519 AAAA... comment")."""
        return self.host_key.with_suffix(".pub").read_text().strip()

    def log(self) -> str:
        return (self.dir / "sshd.log").read_text(errors="replace")

    def regenerate_host_key(self) -> None:
        """A new host key, as a re-installed host (or a man in the middle) would offer; restart to apply."""
        for path in (self.host_key, self.host_key.with_suffix(".pub")):
            path.unlink()
        keygen(self.host_key)


def keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


def _answers(sshd: Sshd) -> bool:
    import socket

    if sshd.netns is not None:
        # Reachable only from inside its namespace: ask from there (ssh-keyscan prints the key once it answers).
        probe = ["ip", "netns", "exec", sshd.netns, "ssh-keyscan", "-T", "1", "-p", str(sshd.port), sshd.address]
        return subprocess.run(probe, capture_output=True, text=True).stdout.strip() != ""
    try:
        with socket.create_connection((sshd.address, sshd.port), timeout=0.5) as sock:
            return sock.recv(8).startswith(b"SSH-")
    except OSError:
        return False


@contextmanager
def running_sshd(sshd: Sshd) -> Iterator[Sshd]:
    config = sshd.dir / "sshd_config"
    config.write_text(
        f"ListenAddress {sshd.address}\nPort {sshd.port}\nHostKey {sshd.host_key}\nPidFile none\n"
        f"AuthorizedKeysFile {sshd.dir / 'authorized_keys'}\nStrictModes no\nUsePAM no\n"
        "PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PermitRootLogin prohibit-password\n"
    )
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    prefix = ["ip", "netns", "exec", sshd.netns] if sshd.netns else []
    with (sshd.dir / "sshd.log").open("ab") as log:
        proc = subprocess.Popen([*prefix, SSHD, "-D", "-e", "-f", str(config)], stderr=log)
    try:
        wait_for(lambda: proc.poll() is None and _answers(sshd), timeout=10, what="sshd to answer")
        yield sshd
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def make_sshd(workdir: Path, *, address: str = "127.0.0.1", netns: str | None = None) -> Sshd:
    workdir.mkdir(parents=True, exist_ok=True)
    os.chmod(workdir, 0o700)
    client_key, host_key = workdir / "client_ed25519", workdir / "host_ed25519"
    sshd = Sshd(free_port(), getpass.getuser(), client_key, host_key, workdir, address, netns)
    keygen(sshd.client_key)
    keygen(sshd.host_key)
    (workdir / "authorized_keys").write_text(sshd.client_key.with_suffix(".pub").read_text())
    return sshd


@dataclass(frozen=True)
class NattedNetwork:
    """A network namespace as a hypervisor with NATed guests looks from outside: `gateway` (on a veth into this
    namespace) is reachable from here, `private` (an address inside the namespace only) is not."""

    netns: str
    gateway: str
    private: str


@contextmanager
def natted_network(name: str, subnet: int) -> Iterator[NattedNetwork]:
    """Namespace `name` with a veth to this one on 10.253.`subnet`.0/30 and its private address 10.254.`subnet`.1.
    Both are removed on exit (deleting the namespace deletes the veth too)."""
    outside, inside = f"{name[:11]}-o", f"{name[:11]}-i"

    def ip(*args: str, netns: str | None = None) -> None:
        prefix = ["ip", "netns", "exec", netns] if netns else []
        subprocess.run([*prefix, "ip", *args], check=True, capture_output=True)

    subprocess.run(["ip", "netns", "del", name], capture_output=True)  # a leftover of a killed run
    ip("netns", "add", name)
    try:
        ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        ip("link", "set", inside, "netns", name)
        ip("addr", "add", f"10.253.{subnet}.2/30", "dev", outside)
        ip("link", "set", outside, "up")
        ip("addr", "add", f"10.253.{subnet}.1/30", "dev", inside, netns=name)
        ip("link", "set", inside, "up", netns=name)
        ip("link", "set", "lo", "up", netns=name)
        ip("addr", "add", f"10.254.{subnet}.1/32", "dev", "lo", netns=name)
        yield NattedNetwork(name, f"10.253.{subnet}.1", f"10.254.{subnet}.1")
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
        subprocess.run(["ip", "link", "del", outside], capture_output=True)
