"""SSH to hypervisor hosts with verified host keys: the one paramiko client of archq.

Interface
---------
`connect(host, port, user, key_file, known_hosts, timeout=10.0) -> paramiko.SSHClient`
    A connected, authenticated client. The host key must already be in `known_hosts` (an OpenSSH
    known_hosts file; archq's is `Settings.known_hosts_file`, `$ARCHQ_DATA_DIR/known_hosts`, filled by
    `archq host trust`), under `host` for port 22 or `[host]:port` otherwise. Key authentication only, with
    `key_file`: no password, no agent, no ~/.ssh keys. The caller closes the client. Open it after a fork.
    Raises `SshError` with `.code`:
      ssh_host_unknown      the host has no key in known_hosts: run `archq host trust <name>`
      ssh_host_key_changed  the host offers another key than the one recorded (re-installed, or an attack)
      ssh_auth_failed       the host refused the key
      ssh_unreachable       no TCP connection or no SSH handshake within `timeout`

`pooled(host, port, user, key_file, known_hosts) -> (paramiko.SSHClient, paramiko.SFTPClient)`: the same,
    with an SFTP session, kept open between jobs (one per host, port and user); `drop_pooled(host, port, user)`
    closes a kept one that broke.
`fetch_host_key(host, port, timeout=10.0) -> paramiko.PKey`: the key the host offers, unverified (for trust).
`fingerprint(key)` and `host_entry(host, port)`: queues/ssh_keys.py's, shared with the HTTP client.
`recorded_key(known_hosts, host, port) -> paramiko.PKey | None` and `record_host_key(known_hosts, host, port,
key)`: read and replace the recorded key of one host (file created 0600).
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import paramiko

from queues.ssh_keys import fingerprint, host_entry, load_known_hosts
from workers.errors import WorkerError


class SshError(WorkerError):
    """An SSH connection to another host failed or could not be trusted; `code` says which (see above)."""


def recorded_key(known_hosts: Path, host: str, port: int) -> paramiko.PKey | None:
    entries = load_known_hosts(known_hosts).lookup(host_entry(host, port))
    if not entries:
        return None
    return next(iter(entries.values()))


def record_host_key(known_hosts: Path, host: str, port: int, key: paramiko.PKey) -> None:
    """Record `key` as the one key of `host:port`, replacing any other."""
    known_hosts = Path(known_hosts)
    keys = load_known_hosts(known_hosts)
    entry = host_entry(host, port)
    if entry in keys:
        del keys[entry]
    keys.add(entry, key.get_name(), key)
    known_hosts.parent.mkdir(parents=True, exist_ok=True)
    if not known_hosts.exists():
        os.close(os.open(known_hosts, os.O_WRONLY | os.O_CREAT, 0o600))
    keys.save(str(known_hosts))


def fetch_host_key(host: str, port: int, timeout: float = 10.0) -> paramiko.PKey:
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise SshError("ssh_unreachable", f"cannot reach {host}:{port}: {exc}") from exc
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=timeout)
        return transport.get_remote_server_key()
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise SshError("ssh_unreachable", f"no SSH handshake with {host}:{port}: {exc}") from exc
    finally:
        transport.close()


def connect(
    host: str, port: int, user: str, key_file: Path, known_hosts: Path, timeout: float = 10.0
) -> paramiko.SSHClient:
    entry = host_entry(host, port)
    client = paramiko.SSHClient()
    if Path(known_hosts).exists():
        client.load_host_keys(str(known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(
            host, port=port, username=user, key_filename=str(key_file), look_for_keys=False, allow_agent=False,
            timeout=timeout, banner_timeout=timeout, auth_timeout=timeout,
        )  # fmt: skip
    except paramiko.BadHostKeyException as exc:
        client.close()
        raise SshError(
            "ssh_host_key_changed",
            f"{entry} offers host key {fingerprint(exc.key)}, not the one recorded in {known_hosts} "
            f"({fingerprint(exc.expected_key)}): the host was re-installed or someone is in between; check, "
            f"then run `archq host trust` again",
        ) from exc
    except paramiko.AuthenticationException as exc:
        client.close()
        raise SshError("ssh_auth_failed", f"{user}@{entry} refused the key {key_file}: {exc}") from exc
    except paramiko.SSHException as exc:
        client.close()
        if "not found in known_hosts" in str(exc):
            raise SshError(
                "ssh_host_unknown",
                f"{entry} has no host key in {known_hosts}; run `archq host trust <name> --address {host} "
                f"--port {port}` to record it",
            ) from exc
        raise SshError("ssh_unreachable", f"no SSH session with {entry}: {exc}") from exc
    except OSError as exc:
        client.close()
        raise SshError("ssh_unreachable", f"cannot reach {entry}: {exc}") from exc
    return client


# One SSH connection (and SFTP session) per target, kept between jobs: opening them costs ~0.3 s of a ~1 s
# migration. A kept connection is used again only while its host key still matches known_hosts.
_pool: dict[tuple[str, int, str], tuple[paramiko.SSHClient, paramiko.SFTPClient]] = {}
_pool_lock = threading.Lock()


def pooled(
    host: str, port: int, user: str, key_file: Path, known_hosts: Path
) -> tuple[paramiko.SSHClient, paramiko.SFTPClient]:
    key = (host, port, user)
    with _pool_lock:
        kept = _pool.get(key)
        if kept is not None:
            transport = kept[0].get_transport()
            if transport is not None and transport.is_active() and _still_trusted(transport, known_hosts, host, port):
                return kept
            _drop_locked(key)
        client = connect(host, port, user, key_file, known_hosts)
        try:
            kept = (client, client.open_sftp())
        except (paramiko.SSHException, OSError) as exc:
            client.close()
            raise SshError("ssh_unreachable", f"no SFTP session on {host}:{port}: {exc}") from exc
        _pool[key] = kept
        return kept


def _still_trusted(transport: paramiko.Transport, known_hosts: Path, host: str, port: int) -> bool:
    try:
        entry = load_known_hosts(known_hosts).lookup(host_entry(host, port))
    except OSError:
        return False
    remote = transport.get_remote_server_key()
    return entry is not None and entry.get(remote.get_name()) == remote


def drop_pooled(host: str, port: int, user: str) -> None:
    with _pool_lock:
        _drop_locked((host, port, user))


def _drop_locked(key: tuple[str, int, str]) -> None:
    kept = _pool.pop(key, None)
    if kept is not None:
        kept[0].close()
