"""`archq worker --check`: what a worker would do on this host, and what stops it, without starting it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import redis

from queues.attestation import fingerprint, public_key_text
from queues.config import Settings
from workers.attest import load_or_create_key, signing_key_path
from workers.host import HostProfile
from workers.hypervisor import Hypervisor, HypervisorError, LibvirtHypervisor
from workers.networks import host_bridges


@dataclass(frozen=True)
class Finding:
    ok: bool
    subject: str
    detail: str

    def line(self) -> str:
        return f"{'ok ' if self.ok else 'FAIL'} {self.subject}: {self.detail}"


def check_host(settings: Settings, discover: Callable[[Settings, Hypervisor], HostProfile]) -> list[Finding]:
    """Every fact the worker depends on, each passing or failing on its own (`discover`: workers.main's)."""
    findings = [_broker(settings)]
    try:
        hypervisor = LibvirtHypervisor(settings.libvirt_uri)
    except HypervisorError as exc:
        return [*findings, Finding(False, "libvirt", f"{settings.libvirt_uri}: {exc}")]
    try:
        findings.append(Finding(True, "libvirt", f"{settings.libvirt_uri}, version {hypervisor.lib_version()}"))
        try:
            profile = discover(settings, hypervisor)
        except ValueError as exc:  # CapabilitiesError: unparsable, or an architecture archq does not run
            return [*findings, Finding(False, "host", str(exc))]
        findings += [
            Finding(True, "arch", f"{profile.arch} (from libvirt's capabilities)"),
            Finding(True, "accel", profile.accel),
            Finding(True, "emulates", ", ".join(profile.emulators) or "nothing"),
            Finding(True, "queues", ", ".join(profile.queues)),
            Finding(True, "capacity", f"{profile.vcpus} vcpus, {profile.memory_mib} MiB"),
            _networks(settings, hypervisor),
            Finding(True, "bridges", ", ".join(host_bridges(settings)) or "none"),
            _signing_key(settings, profile.name),
        ]
    finally:
        hypervisor.close()
    return findings


def _signing_key(settings: Settings, host: str) -> Finding:
    """Its fingerprint is what an admin compares before `archq host trust-key` accepts a changed key."""
    path = signing_key_path(settings.data_dir, host)
    if not path.exists():
        return Finding(True, "signing key", f"{path}: made when the worker starts")
    try:
        key = load_or_create_key(path)
    except (OSError, ValueError) as exc:
        return Finding(False, "signing key", f"{path}: {exc}")
    return Finding(True, "signing key", f"{fingerprint(public_key_text(key.public_key()))} ({path})")


def _broker(settings: Settings) -> Finding:
    try:
        redis.Redis.from_url(settings.broker_url, socket_timeout=5, socket_connect_timeout=5).ping()
    except redis.RedisError as exc:
        return Finding(False, "broker", f"{_without_password(settings.broker_url)}: {exc}")
    return Finding(True, "broker", _without_password(settings.broker_url))


def _networks(settings: Settings, hypervisor: Hypervisor) -> Finding:
    try:
        active = hypervisor.active_networks()
    except HypervisorError as exc:
        return Finding(False, "nat network", f"cannot list libvirt networks: {exc}")
    if settings.nat_network in active:
        return Finding(True, "nat network", f"{settings.nat_network} is active")
    return Finding(
        True, "nat network", f"{settings.nat_network} on {settings.nat_subnet}: created when the worker starts"
    )


def _without_password(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    return f"{scheme}{sep}{'***@' if at and credentials else ''}{host}"
