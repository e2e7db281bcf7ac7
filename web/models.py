"""Database models: the source of truth for VMs, jobs and hosts."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from web.extensions import db


def utcnow() -> datetime:
    return datetime.now(UTC)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Host(db.Model):
    __tablename__ = "hosts"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    arch: Mapped[str] = mapped_column(String(16))
    accel: Mapped[str] = mapped_column(String(8))
    emulators: Mapped[list] = mapped_column(JSON, default=list)
    queues: Mapped[list] = mapped_column(JSON, default=list)
    cpu_modes: Mapped[dict] = mapped_column(JSON, default=dict)
    capacity: Mapped[dict] = mapped_column(JSON, default=dict)
    allocated: Mapped[dict] = mapped_column(JSON, default=dict)
    domains: Mapped[list] = mapped_column(JSON, default=list)
    drained: Mapped[bool] = mapped_column(Boolean, default=False)
    # How sources migrate VMs to this host (address, ssh_port, shared_storage), from its heartbeats.
    migration: Mapped[dict] = mapped_column(JSON, default=dict)
    # When the host's current worker process started (from its heartbeats).
    worker_started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # From heartbeats: libvirt's version (9.0.0 is 9000000) and what snapshots can do on the host.
    libvirt_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    snapshot_support: Mapped[dict] = mapped_column(JSON, default=dict)
    # What VMs can attach to here, from heartbeats: {"libvirt": [active libvirt networks], "bridges": [...]}.
    networks: Mapped[dict] = mapped_column(JSON, default=dict)
    # Its attestation signing keys (base64 Ed25519), pinned at its first heartbeat: the last is current, the
    # earlier ones (replaced by `archq host trust-key`) still verify the records they signed.
    signing_keys: Mapped[list] = mapped_column(JSON, default=list)
    # A different key its heartbeats now send: refused (records signed with it are not stored) until an admin
    # accepts it.
    offered_signing_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    first_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    # What placement queries (web/services/capacity.py), so that a create reads a few index entries instead of
    # every host: all written by each heartbeat, the free_* columns and `load` also by each reservation.
    # The routing facts of the host as one canonical string: the fleet summary is a GROUP BY on it.
    profile: Mapped[str] = mapped_column(Text, default="")
    # "|arm64|", "|libvirt:archq|bridges:br0|", "|host-model|custom|" (the CPU modes of its own arch): LIKE-able.
    emulates: Mapped[str] = mapped_column(String(64), default="")
    offers: Mapped[str] = mapped_column(Text, default="")
    cpu_modes_own: Mapped[str] = mapped_column(String(255), default="")
    # Capacity as reported, and what is left of it under the overcommit ratios after the VMs placed there.
    vcpus: Mapped[int] = mapped_column(Integer, default=0)
    memory_mib: Mapped[int] = mapped_column(Integer, default=0)
    free_vcpus: Mapped[int] = mapped_column(Integer, default=0)
    free_memory_mib: Mapped[int] = mapped_column(Integer, default=0)
    free_disk_mib: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # The larger of the allocated vCPU and memory fractions (least_loaded), when a placement last picked the host
    # (round_robin: the one that waited longest), and a random key redrawn at each heartbeat (random).
    load: Mapped[float] = mapped_column(Float, default=0.0)
    placed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=lambda: EPOCH)
    shuffle: Mapped[float] = mapped_column(Float, default=0.0)

    __table_args__ = (
        Index("ix_hosts_least_loaded", "arch", "drained", "load", "name"),
        Index("ix_hosts_best_fit", "arch", "drained", "free_memory_mib", "name"),
        Index("ix_hosts_round_robin", "arch", "drained", "placed_at", "name"),
        Index("ix_hosts_random", "arch", "drained", "shuffle"),
        Index("ix_hosts_profile", "drained", "last_seen", "profile"),
    )


DEFAULT_PROJECT = "default"


class Project(db.Model):
    """Who owns tokens, VMs, jobs, snapshots and idempotency keys, and the quota its VMs count against.

    A limit of None is no limit. The `used_*` columns are what the project's live VMs hold: a create takes its
    share with a conditional UPDATE in the transaction that inserts the VM (web/services/projects.py
    `reserve`), a VM that becomes deleted gives it back."""

    __tablename__ = "projects"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    max_vms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_vcpus: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_memory_mib: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_emulated: Mapped[int | None] = mapped_column(Integer, nullable=True)
    used_vms: Mapped[int] = mapped_column(Integer, default=0)
    used_vcpus: Mapped[int] = mapped_column(Integer, default=0)
    used_memory_mib: Mapped[int] = mapped_column(Integer, default=0)
    used_emulated: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


# Every VM state but "deleted": a live VM holds its name.
_LIVE = text("state <> 'deleted'")


class Vm(db.Model):
    __tablename__ = "vms"
    # The name check at submit reads before it writes; this makes two concurrent creates of one name in one
    # project impossible, whichever API process or database serves them.
    __table_args__ = (
        Index("uq_vms_live_name", "project", "name", unique=True, sqlite_where=_LIVE, postgresql_where=_LIVE),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    project: Mapped[str] = mapped_column(ForeignKey("projects.name"), index=True, default=DEFAULT_PROJECT)
    name: Mapped[str] = mapped_column(String(63), index=True)
    arch: Mapped[str] = mapped_column(String(16))
    vcpus: Mapped[int] = mapped_column(Integer)
    memory_mib: Mapped[int] = mapped_column(Integer)
    image: Mapped[str] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(16), index=True)
    host: Mapped[str | None] = mapped_column(String(255), nullable=True, index=True)
    accel: Mapped[str | None] = mapped_column(String(8), nullable=True)
    emulation: Mapped[str] = mapped_column(String(16), default="prefer_native")
    # What the user last asked for ("running" or "stopped"); `state` is what archq last saw.
    desired_state: Mapped[str] = mapped_column(String(16), default="running")
    # What the reconciler does when the domain is found shut off while archq wants it running.
    restart_policy: Mapped[str] = mapped_column(String(16), default="never")
    emulated: Mapped[bool] = mapped_column(Boolean, default=False)
    emulation_warning: Mapped[str] = mapped_column(Text, default="")
    # What the user asked for: "host-model" (default, migratable) or "host-passthrough".
    cpu_mode: Mapped[str] = mapped_column(String(32), default="host-model")
    # What the running domain XML really has (reported by the worker), e.g. "host-model" or
    # "custom:cortex-a57" when TCG needs a named model whatever was asked.
    cpu_mode_effective: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Under TCG: an admin-approved CPU configuration (queues/emulation.py) instead of archq's default.
    tcg_cpu: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # An emulated VM's move to a native host: "manual" (offered, POST .../rehome) or "auto" (at its next stop).
    rehome: Mapped[str] = mapped_column(String(16), default="manual", server_default="manual")
    # The VM's disk: "qcow2" (an overlay on the image), "raw", or None for a diskless direct-boot guest.
    disk_format: Mapped[str | None] = mapped_column(String(16), nullable=True)
    # "uefi" (pflash NVRAM) or "direct" (kernel + initrd); None until the worker reports it.
    firmware: Mapped[str | None] = mapped_column(String(16), nullable=True)
    # "internal" or "external" once the first snapshot exists: one VM's chain never mixes the two.
    snapshot_kind: Mapped[str | None] = mapped_column(String(16), nullable=True)
    # The image artifact this VM boots from (format, sources, sha256s), copied from the catalog at create:
    # its hosts keep that base whatever later happens to the catalog entry.
    artifact: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    # {"mode": "nat"} (archq's libvirt network on each host), {"mode": "bridge", "bridge": ...} or {"mode": "none"}.
    network: Mapped[dict] = mapped_column(JSON, default=lambda: {"mode": "none"})
    # Derived from the id (queues/networks.py) and kept: the same across stop/start, revert and migration.
    mac: Mapped[str | None] = mapped_column(String(17), nullable=True)
    # First boot (cloud-init NoCloud): the guest's hostname, the users' keys and their user data. The user data
    # may hold secrets: the API shows only its SHA256 and size.
    hostname: Mapped[str | None] = mapped_column(String(253), nullable=True)
    ssh_authorized_keys: Mapped[list] = mapped_column(JSON, default=list)
    user_data: Mapped[str | None] = mapped_column(Text, nullable=True)
    user_data_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    user_data_size: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # The virtual size of the VM's disk (None: the image's own).
    disk_gib: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # [{"mac", "ipv4", "ipv6", "source": "lease" | "agent"}] as the host last reported them, and when.
    addresses: Mapped[list] = mapped_column(JSON, default=list)
    addresses_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # The guest's SSH host keys ("type base64"), read from its serial console after first boot.
    ssh_host_keys: Mapped[list] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    jobs: Mapped[list[Job]] = relationship(back_populates="vm", order_by="Job.created_at")


class Image(db.Model):
    """A catalog entry: one name, an artifact per architecture (`amd64`, `arm64`; either may be missing)."""

    __tablename__ = "images"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    # {"amd64": {"format": ..., "source"/"sha256" or "kernel"/"initrd"/"cmdline"}, "arm64": {...}}
    artifacts: Mapped[dict] = mapped_column(JSON, default=dict)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class Job(db.Model):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    # The VM's project (a job acts on one VM).
    project: Mapped[str] = mapped_column(String(63), index=True, default=DEFAULT_PROJECT)
    kind: Mapped[str] = mapped_column(String(16), index=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    queue: Mapped[str] = mapped_column(String(255))
    host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    vm_id: Mapped[str | None] = mapped_column(ForeignKey("vms.id"), nullable=True, index=True)
    # The outbox: the exact task message, re-sent as long as the job is `pending`.
    task: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict] = mapped_column(JSON)
    token: Mapped[str] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    emulated: Mapped[bool] = mapped_column(Boolean, default=False)
    waiting_for: Mapped[str] = mapped_column(Text, default="")
    result: Mapped[dict] = mapped_column(JSON, default=dict)
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The latest progress its worker reported while it ran: percent, bytes_remaining, bytes_total, phase.
    progress: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    queued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Optimistic locking: the API's publisher and the conductor both move jobs; a write based on a stale
    # read fails instead of silently undoing the other's transition.
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012

    vm: Mapped[Vm | None] = relationship(back_populates="jobs")
    events: Mapped[list[JobEvent]] = relationship(
        back_populates="job", order_by="JobEvent.id", cascade="all, delete-orphan"
    )


class JobEvent(db.Model):
    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    state: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(255))
    message: Mapped[str] = mapped_column(Text, default="")

    job: Mapped[Job] = relationship(back_populates="events")


class VmEvent(db.Model):
    """Something that happened to a VM outside its jobs, with who did it: console sessions opened, taken over
    and ended."""

    __tablename__ = "vm_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    vm_id: Mapped[str] = mapped_column(ForeignKey("vms.id"), index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    kind: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(255))
    message: Mapped[str] = mapped_column(Text, default="")


class Snapshot(db.Model):
    """A VM's snapshot as archq knows it; its libvirt name is `name`, its description the job id."""

    __tablename__ = "snapshots"
    __table_args__ = (UniqueConstraint("vm_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    vm_id: Mapped[str] = mapped_column(ForeignKey("vms.id"), index=True)
    project: Mapped[str] = mapped_column(String(63), default=DEFAULT_PROJECT)
    name: Mapped[str] = mapped_column(String(63))
    memory: Mapped[bool] = mapped_column(Boolean)
    kind: Mapped[str] = mapped_column(String(16), default="internal")
    # creating -> ready -> deleting (row removed when the delete succeeds); creating -> failed.
    state: Mapped[str] = mapped_column(String(16))
    # The job that took it (its identity in libvirt), then the last job that acted on it.
    job_id: Mapped[str] = mapped_column(String(36))
    last_job_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class IdempotencyKey(db.Model):
    """A POST's response kept for 24 h under its Idempotency-Key header, so a retried request gets it again.
    The row is inserted (the key reserved) before the request runs: `status` is None while it is in flight.
    A key is the project's: two projects' clients may pick the same one without seeing each other's answer."""

    __tablename__ = "idempotency_keys"

    project: Mapped[str] = mapped_column(String(63), primary_key=True, default=DEFAULT_PROJECT)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    body: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    location: Mapped[str | None] = mapped_column(String(255), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)


class ApiToken(db.Model):
    """A bearer token of the HTTP API. Only the SHA-256 of its secret is kept: the secret is shown once."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(63), index=True)
    role: Mapped[str] = mapped_column(String(16))
    project: Mapped[str] = mapped_column(ForeignKey("projects.name"), default=DEFAULT_PROJECT)
    secret_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Attestation(db.Model):
    """A VM operation's record as its host signed it (queues/attestation.py); `seq` orders one VM's chain."""

    __tablename__ = "attestations"
    # One record per place in a VM's chain: two reports racing for the same place cannot fork it.
    __table_args__ = (UniqueConstraint("vm_id", "seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    vm_id: Mapped[str] = mapped_column(ForeignKey("vms.id"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    job_id: Mapped[str] = mapped_column(String(36), index=True)
    host: Mapped[str] = mapped_column(String(255))
    operation: Mapped[str] = mapped_column(String(32))
    # The payload exactly as signed (canonical JSON), its signature (base64) and hash (the next record's prev).
    payload: Mapped[str] = mapped_column(Text)
    signature: Mapped[str] = mapped_column(String(128))
    hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
