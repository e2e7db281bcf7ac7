"""SSH to other hosts with paramiko: key authentication, host keys verified against known_hosts (never
auto-added). Clients are made inside the task that uses them: they must not cross a fork."""

from __future__ import annotations

from pathlib import Path

import paramiko


class SshError(Exception):
    """`code`: ssh_host_unknown, ssh_host_key_changed, ssh_auth_failed or ssh_unreachable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def connect(
    host: str, port: int, user: str, key_file: str, known_hosts: str, timeout: float = 10.0
) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    try:
        client.load_host_keys(str(Path(known_hosts).expanduser()))
    except OSError as exc:
        raise SshError("ssh_host_unknown", f"cannot read known_hosts {known_hosts}: {exc}") from exc
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(
            host,
            port=port,
            username=user,
            key_filename=str(Path(key_file).expanduser()) if key_file else None,
            look_for_keys=not key_file,
            allow_agent=False,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
        )
    except paramiko.BadHostKeyException as exc:
        client.close()
        raise SshError(
            "ssh_host_key_changed",
            f"the SSH host key of {host}:{port} is not the one in {known_hosts}: the host was reinstalled or "
            "someone is in between; verify it and update known_hosts",
        ) from exc
    except paramiko.AuthenticationException as exc:
        client.close()
        raise SshError("ssh_auth_failed", f"{user}@{host}:{port} refused the key {key_file}: {exc}") from exc
    except paramiko.SSHException as exc:
        client.close()
        if "not found in known_hosts" in str(exc):
            raise SshError(
                "ssh_host_unknown", f"{host}:{port} is not in {known_hosts}; add its host key (ssh-keyscan, verified)"
            ) from exc
        raise SshError("ssh_unreachable", f"SSH to {host}:{port} failed: {exc}") from exc
    except OSError as exc:
        client.close()
        raise SshError("ssh_unreachable", f"cannot reach {host}:{port} over SSH: {exc}") from exc
    return client
