"""Every setting of archq, read once from environment variables. Defaults are documented in docs/install.md."""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from queues.emulation import TCG_CPUS
from queues.logs import LOG_FORMATS
from queues.networks import dhcp_range
from queues.vocabulary import Accel, JobKind

DEFAULT_TIME_LIMITS = {kind.value: kind.time_limit_s for kind in JobKind}


def _time_limits(text: str) -> dict[str, float]:
    """`create=600,delete=300`: per-kind overrides of the default job time limits (seconds)."""
    limits = dict(DEFAULT_TIME_LIMITS)
    for item in filter(None, (part.strip() for part in text.split(","))):
        kind, _, seconds = item.partition("=")
        if kind.strip() not in limits:
            raise SettingError(f"ARCHQ_TIME_LIMITS: unknown job kind {kind.strip()!r} (kinds: {', '.join(limits)})")
        limits[kind.strip()] = _number("ARCHQ_TIME_LIMITS", seconds, float, minimum=1)
    return limits


def _paths(text: str) -> tuple[Path, ...]:
    return tuple(Path(p) for p in text.split(":") if p)


def _number(name: str, text: str, kind: type[int] | type[float], minimum: float = 0) -> Any:
    try:
        value = kind(text)
    except ValueError:
        raise SettingError(f"{name}={text!r}: not {'an integer' if kind is int else 'a number'}") from None
    if value < minimum:
        raise SettingError(f"{name}={text!r}: must be at least {minimum:g}")
    return value


def _int(name: str, default: int) -> int:
    return _number(name, os.environ.get(name, str(default)), int)


def _float(name: str, default: float) -> float:
    return _number(name, os.environ.get(name, str(default)), float)


def _choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = os.environ.get(name, default)
    if value not in choices:
        raise SettingError(f"{name}={value!r}: must be one of {', '.join(choices)}")
    return value


# ARCHQ_ACCEL: `auto` takes the host's accelerator when a guest boots with it, else TCG.
ACCEL_CHOICES = ("auto", *(accel.value for accel in Accel))


def _flag(name: str, default: bool) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise SettingError(f"{name}={value!r}: must be 1/true/yes/on or 0/false/no/off")


def _tcg_cpus(text: str) -> tuple[str, ...]:
    names = tuple(text.split())
    known = {name for cpus in TCG_CPUS.values() for name in cpus}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise SettingError(f"ARCHQ_TCG_CPUS_ALLOWED: unknown {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return names


class SettingError(ValueError):
    """A setting that cannot work; the message names the variable."""


# sysexits.h's EX_CONFIG: the exit status of a command stopped by a configuration error (supervisors, systemd's
# RestartPreventExitStatus=, do not start it again).
EX_CONFIG = 78


def _nat_network(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,49}", name):
        raise SettingError(f"ARCHQ_NAT_NETWORK={name!r}: must be 1-50 letters, digits, '.', '_' or '-'")
    return name


def _nat_subnet(text: str) -> str:
    try:
        dhcp_range(text)
    except ValueError as exc:
        raise SettingError(f"ARCHQ_NAT_SUBNET={text!r}: {exc} (an IPv4 network such as 192.168.150.0/24)") from exc
    return str(ipaddress.IPv4Network(text))


@dataclass(frozen=True)
class Settings:
    broker_url: str = "redis://127.0.0.1:6379/0"
    # Claims, dispatch tokens and leases live in Redis even when the broker is RabbitMQ.
    redis_url: str = ""
    data_dir: Path = Path("/var/lib/archq")
    # Content-addressed artifacts and built guests; shared by every VM on the host.
    images_dir: Path = Path("/var/lib/archq/images")
    # Local image sources must lie under one of these (empty: the images directory; queues/image_sources.py).
    image_dirs: tuple[Path, ...] = ()
    # An artifact larger than this is refused at registration and while a host downloads or copies it.
    max_image_bytes: int = 64 * 1024**3
    database_url: str = ""
    libvirt_uri: str = "qemu:///system"
    hostname: str = field(default_factory=socket.gethostname)
    capabilities_file: str = ""
    # "auto" probes KVM by booting the tiny guest; "kvm" or "tcg" force the answer.
    accel: str = "auto"
    kvm_probe_timeout_s: float = 20.0
    max_vcpus: int = 64
    max_memory_mib: int = 262144
    heartbeat_interval_s: float = 5.0
    heartbeat_misses: int = 3
    lease_s: float = 60.0
    # A job whose lease lapsed waits this long for its host to come back before it fails `worker_lost`.
    worker_lost_after_s: float = 120.0
    dispatch_retry_s: float = 2.0
    # The conductor that holds this lease in Redis does the periodic work; when it dies another takes over
    # within the lease plus one sweep (web/conductor/leader.py).
    leader_lease_s: float = 10.0
    visibility_timeout_s: int = 7200
    native_wait_s: float = 60.0
    refuse_when_no_worker: bool = False
    worker_concurrency: int = 4
    # Celery remote control (pidbox: `celery inspect`, Flower's worker pages and the host.* queues on its
    # Broker page). A Redis pub/sub subscription that a Redis restart used to turn into a worker exit;
    # queues/redis_reconnect.py, tests/faults/test_remote_control.py.
    remote_control: bool = True
    stop_timeout_s: float = 30.0
    time_limits: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_TIME_LIMITS))
    flower_address: str = "127.0.0.1"
    flower_port: int = 5555
    flower_basic_auth: str = ""
    # Signs the web UI's session cookies and CSRF tokens; empty: one generated into the data directory.
    ui_secret_key: str = ""
    # Live migration (see README, Migration): how a source's libvirtd reaches a target's ("tcp" for labs only,
    # "ssh" or "tls" in production), the address this host is reached at for migrations, and the SSH port.
    migration_transport: str = "tcp"
    migration_address: str = ""
    ssh_port: int = 22
    # A name for the storage this host's data directory lives on; two hosts reporting the same non-empty name
    # share it (disks are not copied). Empty: local storage, disks are copied by the migration.
    shared_storage: str = ""
    # SSH to hypervisor hosts (workers/ssh.py): the host keys archq trusts (`archq host trust`), the client key.
    known_hosts_file: Path = Path("/var/lib/archq/known_hosts")
    ssh_key_file: Path = Path("/var/lib/archq/ssh/id_ed25519")
    ssh_user: str = "root"
    # Guests' networks (queues/networks.py, workers/networks.py): the libvirt network archq manages on each
    # host for `nat` VMs, its subnet (the host takes the first address, DHCP the rest), and the host bridges
    # `bridge` VMs may join (empty: every bridge the host has).
    nat_network: str = "archq"
    nat_subnet: str = "192.168.150.0/24"
    bridges: tuple[str, ...] = ()
    # TCG CPU configurations (queues/emulation.py names) an admin lets users ask for per VM (`tcg_cpu`) instead
    # of archq's default; ARCHQ_TCG_CPUS_ALLOWED, separated by spaces (the names hold commas).
    tcg_cpus_allowed: tuple[str, ...] = ()
    # The largest disk a VM may ask for (`disk_gib`).
    max_disk_gib: int = 2048
    # Finished jobs (and their events) older than this are pruned by the conductor; 0 keeps every job.
    job_retention_days: float = 30.0
    # How every process logs (queues/logs.py): `text` lines, or `json` objects with job_id, vm_id, host, queue.
    log_format: str = "text"
    # The most VMs one create request may ask for (`count`).
    max_create_count: int = 100

    @classmethod
    def from_env(cls) -> Settings:
        data_dir = Path(os.environ.get("ARCHQ_DATA_DIR", str(cls.data_dir)))
        images_dir = Path(os.environ.get("ARCHQ_IMAGES_DIR") or data_dir / "images")
        broker = os.environ.get("ARCHQ_BROKER_URL", cls.broker_url)
        return cls(
            broker_url=broker,
            redis_url=os.environ.get("ARCHQ_REDIS_URL") or (broker if broker.startswith("redis") else ""),
            data_dir=data_dir,
            images_dir=images_dir,
            database_url=os.environ.get("ARCHQ_DATABASE_URL") or f"sqlite:///{data_dir / 'archq.db'}",
            libvirt_uri=os.environ.get("ARCHQ_LIBVIRT_URI", cls.libvirt_uri),
            hostname=os.environ.get("ARCHQ_HOSTNAME") or socket.gethostname(),
            capabilities_file=os.environ.get("ARCHQ_CAPABILITIES_FILE", ""),
            accel=_choice("ARCHQ_ACCEL", cls.accel, ACCEL_CHOICES),
            kvm_probe_timeout_s=_float("ARCHQ_KVM_PROBE_TIMEOUT_S", cls.kvm_probe_timeout_s),
            max_vcpus=_int("ARCHQ_MAX_VCPUS", cls.max_vcpus),
            max_memory_mib=_int("ARCHQ_MAX_MEMORY_MIB", cls.max_memory_mib),
            heartbeat_interval_s=_float("ARCHQ_HEARTBEAT_INTERVAL_S", cls.heartbeat_interval_s),
            heartbeat_misses=_int("ARCHQ_HEARTBEAT_MISSES", cls.heartbeat_misses),
            lease_s=_float("ARCHQ_LEASE_S", cls.lease_s),
            worker_lost_after_s=_float("ARCHQ_WORKER_LOST_AFTER_S", cls.worker_lost_after_s),
            dispatch_retry_s=_float("ARCHQ_DISPATCH_RETRY_S", cls.dispatch_retry_s),
            leader_lease_s=_float("ARCHQ_LEADER_LEASE_S", cls.leader_lease_s),
            visibility_timeout_s=_int("ARCHQ_VISIBILITY_TIMEOUT_S", cls.visibility_timeout_s),
            native_wait_s=_float("ARCHQ_NATIVE_WAIT_S", cls.native_wait_s),
            refuse_when_no_worker=os.environ.get("ARCHQ_REFUSE_WHEN_NO_WORKER", "") in ("1", "true", "yes"),
            worker_concurrency=_int("ARCHQ_WORKER_CONCURRENCY", cls.worker_concurrency),
            remote_control=_flag("ARCHQ_REMOTE_CONTROL", cls.remote_control),
            stop_timeout_s=_float("ARCHQ_STOP_TIMEOUT_S", cls.stop_timeout_s),
            time_limits=_time_limits(os.environ.get("ARCHQ_TIME_LIMITS", "")),
            flower_address=os.environ.get("ARCHQ_FLOWER_ADDRESS", cls.flower_address),
            flower_port=_int("ARCHQ_FLOWER_PORT", cls.flower_port),
            flower_basic_auth=os.environ.get("ARCHQ_FLOWER_BASIC_AUTH", ""),
            ui_secret_key=os.environ.get("ARCHQ_UI_SECRET_KEY", ""),
            migration_transport=_choice("ARCHQ_MIGRATION_TRANSPORT", cls.migration_transport, ("tcp", "ssh", "tls")),
            migration_address=os.environ.get("ARCHQ_MIGRATION_ADDRESS", ""),
            ssh_port=_int("ARCHQ_SSH_PORT", cls.ssh_port),
            shared_storage=os.environ.get("ARCHQ_SHARED_STORAGE", ""),
            known_hosts_file=Path(os.environ.get("ARCHQ_KNOWN_HOSTS") or data_dir / "known_hosts"),
            ssh_key_file=Path(os.environ.get("ARCHQ_SSH_KEY") or data_dir / "ssh" / "id_ed25519"),
            ssh_user=os.environ.get("ARCHQ_SSH_USER", cls.ssh_user),
            image_dirs=_paths(os.environ.get("ARCHQ_IMAGE_DIRS", "")) or (images_dir,),
            max_image_bytes=_int("ARCHQ_MAX_IMAGE_BYTES", cls.max_image_bytes),
            nat_network=_nat_network(os.environ.get("ARCHQ_NAT_NETWORK", cls.nat_network)),
            nat_subnet=_nat_subnet(os.environ.get("ARCHQ_NAT_SUBNET", cls.nat_subnet)),
            bridges=tuple(b.strip() for b in os.environ.get("ARCHQ_BRIDGES", "").split(",") if b.strip()),
            tcg_cpus_allowed=_tcg_cpus(os.environ.get("ARCHQ_TCG_CPUS_ALLOWED", "")),
            max_disk_gib=_int("ARCHQ_MAX_DISK_GIB", cls.max_disk_gib),
            job_retention_days=_float("ARCHQ_JOB_RETENTION_DAYS", cls.job_retention_days),
            log_format=_choice("ARCHQ_LOG_FORMAT", cls.log_format, LOG_FORMATS),
            max_create_count=_int("ARCHQ_MAX_CREATE_COUNT", cls.max_create_count),
        )

    @property
    def allowed_image_dirs(self) -> tuple[Path, ...]:
        """Where local image sources may be: the configured directories, else the images directory."""
        return self.image_dirs or (self.images_dir,)

    @property
    def host_down_after_s(self) -> float:
        return self.heartbeat_interval_s * self.heartbeat_misses
