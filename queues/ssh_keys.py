"""SSH host-key helpers shared by the HTTP client (`archq vm ssh`) and the hypervisor side: no I/O besides
reading a known_hosts file, no network.

`host_entry(host, port) -> str`: how known_hosts names a host (`host` on port 22, `[host]:port` elsewhere).
`fingerprint(key) -> str`: "SHA256:<base64>", as `ssh-keygen -l` prints it.
`host_keys_from_lines(entry, lines) -> paramiko.HostKeys`: OpenSSH public-key lines ("ssh-ed25519 AAAA...
comment") as the known host keys of `entry`; lines paramiko cannot use are left out.
`load_known_hosts(path) -> paramiko.HostKeys`: an OpenSSH known_hosts file (empty if there is none).
`host_key_algorithms(keys) -> set[str]`: the host key algorithms by which a server can prove one of `keys`.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from pathlib import Path

import paramiko

# An RSA host key signs with any of these; the key itself is always named ssh-rsa.
_RSA_ALGORITHMS = ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa")


def host_entry(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


def fingerprint(key: paramiko.PKey) -> str:
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def host_keys_from_lines(entry: str, lines: Iterable[str]) -> paramiko.HostKeys:
    keys = paramiko.HostKeys()
    for line in lines:
        parts = line.split()
        if len(parts) < 2:
            continue
        key_type, blob = parts[0], parts[1]
        try:
            key = paramiko.PKey.from_type_string(key_type, base64.b64decode(blob, validate=True))
        except Exception:
            # An algorithm paramiko lacks (ssh-dss, sk-*) or a garbled line (paramiko and its backends raise a
            # dozen kinds of error for those): one key fewer to match, never a reason to accept anything.
            continue
        # HostKeys.add keeps one key per type for an entry; a guest has one host key per type anyway.
        keys.add(entry, key.get_name(), key)
    return keys


def load_known_hosts(path: Path) -> paramiko.HostKeys:
    keys = paramiko.HostKeys()
    if Path(path).exists():
        keys.load(str(path))
    return keys


def host_key_algorithms(keys: Iterable[paramiko.PKey]) -> set[str]:
    """Negotiating only these makes the server prove a key we know: offering others would let it pick a key
    type we have no record of, which could only end in a refusal."""
    names = {key.get_name() for key in keys}
    return names | set(_RSA_ALGORITHMS) if "ssh-rsa" in names else names
