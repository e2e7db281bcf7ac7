"""A real OpenSSH server on loopback for tests: a free port, its own host key, one authorised client key,
key authentication only (as tests/support/twohosts.py configures its hosts' sshd)."""

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

    def regenerate_host_key(self) -> None:
        """A new host key, as a re-installed host (or a man in the middle) would offer; restart to apply."""
        for path in (self.host_key, self.host_key.with_suffix(".pub")):
            path.unlink()
        keygen(self.host_key)


def keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


def _answers(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            return sock.recv(8).startswith(b"SSH-")
    except OSError:
        return False


@contextmanager
def running_sshd(sshd: Sshd) -> Iterator[Sshd]:
    config = sshd.dir / "sshd_config"
    config.write_text(
        f"ListenAddress 127.0.0.1\nPort {sshd.port}\nHostKey {sshd.host_key}\nPidFile none\n"
        f"AuthorizedKeysFile {sshd.dir / 'authorized_keys'}\nStrictModes no\nUsePAM no\n"
        "PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PermitRootLogin prohibit-password\n"
    )
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=(sshd.dir / "sshd.log").open("ab"))
    try:
        wait_for(lambda: proc.poll() is None and _answers(sshd.port), timeout=10, what="sshd to answer")
        yield sshd
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def make_sshd(workdir: Path) -> Sshd:
    workdir.mkdir(parents=True, exist_ok=True)
    os.chmod(workdir, 0o700)
    sshd = Sshd(free_port(), getpass.getuser(), workdir / "client_ed25519", workdir / "host_ed25519", workdir)
    keygen(sshd.client_key)
    keygen(sshd.host_key)
    (workdir / "authorized_keys").write_text(sshd.client_key.with_suffix(".pub").read_text())
    return sshd
