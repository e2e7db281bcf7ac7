"""Request (load) and response (dump) schemas of the HTTP API."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC

from flask import current_app
from marshmallow import Schema, ValidationError, fields, post_dump, post_load, validate, validates_schema

from queues.arch import ALL, parse_arch
from queues.config import Settings
from queues.console import DEFAULT_BYTES, MAX_BYTES
from queues.guest_config import parse_ssh_public_key, validate_hostname, validate_user_data
from queues.image_sources import validate_source
from queues.images import (
    DISK_FORMATS,
    FORMATS,
    KERNEL_INITRD,
    LOGIN_USER_PATTERN,
    MAX_CMDLINE,
    MAX_LOGIN_USER,
    SHA256_PATTERN,
    disk_boot_errors,
)
from queues.networks import NetworkMode
from queues.placement import Placement
from queues.routing import Emulation
from queues.vocabulary import LIVE_VM_STATES, Accel, HostState, JobKind, JobState, SnapshotState, VmState
from web.models import Vm
from web.paging import ListQuery
from web.services.rehome import rehome_target
from web.services.vm_flags import CPU_MODES, HOST_MODEL, REHOME_MANUAL, REHOME_MODES, effective_cpu_mode, vm_flags

# `(?!\n)`: Python's `$` also matches before a trailing newline, which would let "demo\n" through.
NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}(?!\n)$"
MAX_NAME_LENGTH = 63
# Free text ends up in PostgreSQL (which refuses NUL), domain XML (which refuses C0 controls) and logs.
ONE_LINE = validate.Regexp(r"^[^\x00-\x1f\x7f]*\Z", error="must not contain control characters")
TEXT = validate.Regexp(
    r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*\Z", error="must not contain control characters other than tab and newline"
)


class UtcDateTime(fields.DateTime):
    """ISO 8601 with an explicit UTC offset, also for the naive datetimes SQLite hands back."""

    def _serialize(self, value, attr, obj, **kwargs):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return super()._serialize(value, attr, obj, **kwargs)


class Checked(fields.String):
    """A string loaded through `check`, which returns its normal form or raises ValueError with the message
    the user sees for the field."""

    def __init__(self, check: Callable[[str], str], **kwargs) -> None:
        super().__init__(**kwargs)
        self.check = check

    def _deserialize(self, value, attr, data, **kwargs) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            return self.check(text)
        except ValueError as exc:
            raise ValidationError(str(exc)) from exc


def _canonical_arch(text: str) -> str:
    """Every alias (x86_64, aarch64, ...) in any case, as the canonical name."""
    return parse_arch(text).value


def _ssh_key(text: str) -> str:
    return parse_ssh_public_key(text).line


def _user_data(text: str) -> str:
    validate_user_data(text)
    return text


MAX_AUTHORIZED_KEYS = 32

# Linux interface names: at most 15 bytes, no '/', no whitespace.
BRIDGE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,14}\Z"


class NetworkIn(Schema):
    mode = fields.String(required=True, validate=validate.OneOf([m.value for m in NetworkMode]))
    bridge = fields.String(validate=validate.Regexp(BRIDGE_PATTERN, error="must be a Linux interface name"))

    @validates_schema
    def bridge_with_bridge_mode(self, data: dict, **_kwargs) -> None:
        if data.get("mode") == NetworkMode.BRIDGE and not data.get("bridge"):
            raise ValidationError({"bridge": ["required with mode bridge: the host bridge to join"]})
        if data.get("mode") != NetworkMode.BRIDGE and "bridge" in data:
            raise ValidationError({"bridge": [f"not used with mode {data.get('mode')}"]})


class VmCreateRequest(Schema):
    name = fields.String(
        required=True,
        validate=validate.Regexp(
            NAME_PATTERN, error="must be 1-63 characters of a-z, 0-9 and '-', starting with a letter or digit"
        ),
    )
    arch = Checked(_canonical_arch, required=True)
    vcpus = fields.Integer(required=True, strict=True)
    memory_mib = fields.Integer(required=True, strict=True)
    # Looked up in the image catalog when the VM is submitted (unknown: 422 naming the known ones).
    image = fields.String(required=True, validate=[validate.Length(min=1, max=63), ONE_LINE])
    emulation = fields.String(
        load_default=Emulation.PREFER_NATIVE.value, validate=validate.OneOf([e.value for e in Emulation])
    )
    restart_policy = fields.String(load_default="never", validate=validate.OneOf(["always", "on-failure", "never"]))
    cpu_mode = fields.String(load_default=HOST_MODEL, validate=validate.OneOf(CPU_MODES))
    # Under TCG only: one of the configurations the admin allows (ARCHQ_TCG_CPUS_ALLOWED); checked in services.
    tcg_cpu = fields.String(load_default=None, validate=validate.Length(min=1, max=64))
    rehome = fields.String(load_default=REHOME_MANUAL, validate=validate.OneOf(REHOME_MODES))
    placement = fields.String(load_default=Placement.QUEUE.value, validate=validate.OneOf([p.value for p in Placement]))
    host = fields.String(load_default=None, validate=[validate.Length(min=1, max=255), ONE_LINE])
    network = fields.Nested(NetworkIn, load_default=lambda: {"mode": NetworkMode.NAT.value})
    # First boot (cloud-init NoCloud): keys for the image's default user, the user's own user data, a hostname
    # (default: the VM's name).
    ssh_authorized_keys = fields.List(
        Checked(_ssh_key), load_default=list, validate=validate.Length(max=MAX_AUTHORIZED_KEYS)
    )
    user_data = Checked(_user_data, load_default=None)
    hostname = Checked(validate_hostname, load_default=None)
    # The VM's disk size (at least the image's); cloud-init grows the root filesystem to it at first boot.
    disk_gib = fields.Integer(load_default=None, strict=True)
    # Bulk create: `count` VMs named `<name>-<i>` (i from 1), accepted all together or not at all; `spread`:
    # each on a different host.
    count = fields.Integer(load_default=None, strict=True)
    spread = fields.Boolean(load_default=False)

    # The defaults are the settings' defaults, so the schema can also be built without settings (OpenAPI).
    def __init__(
        self,
        *,
        max_vcpus: int = Settings.max_vcpus,
        max_memory_mib: int = Settings.max_memory_mib,
        max_disk_gib: int = Settings.max_disk_gib,
        max_create_count: int = Settings.max_create_count,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.max_vcpus = max_vcpus
        self.max_memory_mib = max_memory_mib
        self.max_disk_gib = max_disk_gib
        self.max_create_count = max_create_count

    @validates_schema
    def within_limits(self, data: dict, **_kwargs) -> None:
        errors: dict[str, list[str]] = {}
        vcpus = data.get("vcpus")
        if vcpus is not None and not 1 <= vcpus <= self.max_vcpus:
            errors["vcpus"] = [f"must be between 1 and {self.max_vcpus}"]
        memory = data.get("memory_mib")
        if memory is not None and not 64 <= memory <= self.max_memory_mib:
            errors["memory_mib"] = [f"must be between 64 and {self.max_memory_mib} MiB"]
        disk = data.get("disk_gib")
        if disk is not None and not 1 <= disk <= self.max_disk_gib:
            errors["disk_gib"] = [f"must be between 1 and {self.max_disk_gib} GiB"]
        count = data.get("count")
        if count is not None and not 1 <= count <= self.max_create_count:
            errors["count"] = [f"must be between 1 and {self.max_create_count}"]
        elif count is not None and len(f"{data.get('name', '')}-{count}") > MAX_NAME_LENGTH:
            errors["name"] = [f"with count {count}, at most {MAX_NAME_LENGTH - len(f'-{count}')} characters"]
        if data.get("spread") and data.get("host"):
            errors["spread"] = ["cannot spread VMs pinned to one host"]
        if errors:
            raise ValidationError(errors)


def create_request_schema(settings: Settings) -> VmCreateRequest:
    """The create body's schema with this deployment's limits."""
    return VmCreateRequest(
        max_vcpus=settings.max_vcpus,
        max_memory_mib=settings.max_memory_mib,
        max_disk_gib=settings.max_disk_gib,
        max_create_count=settings.max_create_count,
    )


NAME_ERROR = "must be 1-63 characters of a-z, 0-9 and '-', starting with a letter or digit"
_SHA256 = validate.Regexp(SHA256_PATTERN, error="must be the SHA256 as 64 hex digits")


class FileIn(Schema):
    source = fields.String(required=True)
    sha256 = fields.String(required=True, validate=_SHA256)


class ArtifactIn(Schema):
    format = fields.String(required=True, validate=validate.OneOf(FORMATS))
    source = fields.String()
    sha256 = fields.String(validate=_SHA256)
    kernel = fields.Nested(FileIn)
    initrd = fields.Nested(FileIn)
    cmdline = fields.String(validate=[validate.Length(max=MAX_CMDLINE), ONE_LINE])
    # The image's default SSH user (cloud-init's default user), shown to whoever creates a VM from it.
    login_user = fields.String(
        validate=[
            validate.Length(max=MAX_LOGIN_USER),
            validate.Regexp(LOGIN_USER_PATTERN, error="must be a lower-case user name"),
        ]
    )

    @validates_schema
    def fields_of_format(self, data: dict, **_kwargs) -> None:
        if data.get("format") == KERNEL_INITRD:
            required, refused = ("kernel", "initrd"), ("source", "sha256")
        elif data.get("format") in DISK_FORMATS:
            # A disk may also carry the kernel and initrd it is booted with (both or neither, cmdline only then).
            required, refused = ("source", "sha256"), ()
        else:
            return
        errors = {key: [f"required for format {data['format']}"] for key in required if key not in data}
        errors |= {key: [f"not used by format {data['format']}"] for key in refused if key in data}
        if data["format"] in DISK_FORMATS:
            errors |= disk_boot_errors(data)
        if errors:
            raise ValidationError(errors)


class ArtifactsIn(Schema):
    amd64 = fields.Nested(ArtifactIn)
    arm64 = fields.Nested(ArtifactIn)


class ImageCreateRequest(Schema):
    name = fields.String(required=True, validate=validate.Regexp(NAME_PATTERN, error=NAME_ERROR))
    description = fields.String(load_default="", validate=[validate.Length(max=1024), TEXT])
    artifacts = fields.Nested(ArtifactsIn, required=True)

    # No directories by default (only URLs pass), so the schema can also be built without settings (OpenAPI).
    def __init__(self, *, allowed_dirs: tuple = (), **kwargs) -> None:
        super().__init__(**kwargs)
        self.allowed_dirs = tuple(allowed_dirs)

    @validates_schema
    def sources_allowed(self, data: dict, **_kwargs) -> None:
        artifacts = data.get("artifacts")
        if artifacts is None:
            return
        if not artifacts:
            raise ValidationError({"artifacts": ["give an artifact for amd64, arm64 or both"]})
        errors: dict = {}
        for arch, artifact in artifacts.items():
            for role, holder in (
                ("source", artifact),
                ("kernel", artifact.get("kernel")),
                ("initrd", artifact.get("initrd")),
            ):
                source = holder.get("source") if holder else None
                if source is None:
                    continue
                try:
                    validate_source(source, self.allowed_dirs)
                except ValueError as exc:
                    path = [role] if role == "source" else [role, "source"]
                    _put(errors, ["artifacts", arch, *path], str(exc))
        if errors:
            raise ValidationError(errors)

    @post_load
    def canonical(self, data: dict, **_kwargs) -> dict:
        for artifact in data["artifacts"].values():
            for holder in (artifact, artifact.get("kernel"), artifact.get("initrd")):
                if holder and "source" in holder:
                    holder["source"] = validate_source(holder["source"], self.allowed_dirs)
                    holder["sha256"] = holder["sha256"].lower()
            if artifact["format"] == KERNEL_INITRD or "kernel" in artifact:
                artifact.setdefault("cmdline", "")
        return data


def _put(errors: dict, path: list[str], message: str) -> None:
    for key in path[:-1]:
        errors = errors.setdefault(key, {})
    errors.setdefault(path[-1], []).append(message)


class MigrateRequest(Schema):
    # Without a target the least loaded live host that can take the VM is picked.
    target_host = fields.String(load_default=None, validate=[validate.Length(min=1, max=255), ONE_LINE])
    live = fields.Boolean(load_default=True)
    # A cap on the migration's bandwidth (libvirt's `bandwidth` parameter), to spare the hosts' network.
    max_bandwidth_mib_s = fields.Integer(load_default=None, strict=True, validate=validate.Range(min=1))


_UUID = validate.Regexp(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z", error="must be a UUID")
_HOST = [validate.Length(min=1, max=255), ONE_LINE]


def _one_of(values) -> validate.OneOf:
    return validate.OneOf([value.value for value in values])


# The filters of each list (web/paging.py): a filter given keeps the items whose field equals it.
class VmQuery(ListQuery):
    arch = Checked(_canonical_arch, metadata={"description": "amd64 or arm64 (aliases such as x86_64 too)"})
    state = fields.String(validate=_one_of(state for state in VmState if state in LIVE_VM_STATES))
    host = fields.String(validate=_HOST)
    name = fields.String(validate=validate.Regexp(NAME_PATTERN, error=NAME_ERROR))
    image = fields.String(validate=[validate.Length(min=1, max=63), ONE_LINE])


class JobQuery(ListQuery):
    vm_id = fields.String(validate=_UUID, metadata={"description": "only this VM's jobs", "format": "uuid"})
    state = fields.String(validate=_one_of(JobState))
    kind = fields.String(validate=_one_of(JobKind))
    host = fields.String(validate=_HOST)


class HostQuery(ListQuery):
    arch = Checked(_canonical_arch, metadata={"description": "amd64 or arm64 (aliases such as x86_64 too)"})
    state = fields.String(validate=_one_of(HostState))


class ImageQuery(ListQuery):
    name = fields.String(validate=validate.Regexp(NAME_PATTERN, error=NAME_ERROR))


class SnapshotQuery(ListQuery):
    state = fields.String(validate=_one_of(SnapshotState))
    memory = fields.Boolean()


def _enum(values, *, nullable: bool = False) -> dict:
    """Output metadata naming a field's possible values (from the vocabulary) in the OpenAPI document; null is
    listed too for a nullable field (OpenAPI 3.0 checks `enum` before `nullable`)."""
    return {"enum": [value.value for value in values] + ([None] if nullable else [])}


class ProgressOut(Schema):
    """A running job's latest progress as its worker reported it (a migration's copy, for now)."""

    percent = fields.Float(allow_none=True, metadata={"description": "0-100"})
    bytes_total = fields.Integer(allow_none=True)
    bytes_remaining = fields.Integer(allow_none=True)
    phase = fields.String(metadata={"description": "e.g. checking target, copying disks, copying memory"})


class CapacityOut(Schema):
    """What a host reported it has."""

    vcpus = fields.Integer()
    memory_mib = fields.Integer()
    disk_mib = fields.Integer(allow_none=True, metadata={"description": "free space of its data directory"})


class AllocatedOut(Schema):
    """What the VMs placed on a host hold, from the database."""

    vcpus = fields.Integer()
    memory_mib = fields.Integer()


class ErrorDetail(Schema):
    code = fields.String()
    message = fields.String()


class JobEventOut(Schema):
    at = UtcDateTime()
    state = fields.String(metadata=_enum(JobState))
    actor = fields.String()
    message = fields.String()


class JobOut(Schema):
    id = fields.String()
    project = fields.String(metadata={"description": "the project of the VM it acts on"})
    kind = fields.String(metadata=_enum(JobKind))
    state = fields.String(metadata=_enum(JobState))
    queue = fields.String()
    host = fields.String(allow_none=True)
    vm_id = fields.String(allow_none=True)
    emulated = fields.Boolean()
    accel = fields.Function(
        lambda job: job.vm.accel if job.vm else None,
        allow_none=True,
        metadata={"type": "string", **_enum(Accel, nullable=True)},
    )
    emulation_warning = fields.Function(lambda job: job.vm.emulation_warning if job.vm else "")
    waiting_for = fields.String()
    error = fields.Method("_error", allow_none=True)
    result = fields.Dict()
    progress = fields.Nested(ProgressOut, allow_none=True)
    attempts = fields.Integer()
    created_at = UtcDateTime()
    queued_at = UtcDateTime(allow_none=True)
    started_at = UtcDateTime(allow_none=True)
    finished_at = UtcDateTime(allow_none=True)
    events = fields.List(fields.Nested(JobEventOut))

    def _error(self, job) -> dict | None:
        if job.error_code is None:
            return None
        return {"code": job.error_code, "message": job.error_message}


def _rehome_target(vm: Vm) -> str | None:
    """The native host an emulated VM would move to now (web/services/rehome.py), or None."""
    target = rehome_target(vm, current_app.extensions["archq"].settings)
    return target.name if target is not None else None


class VmOut(Schema):
    id = fields.String()
    project = fields.String(metadata={"description": "the project of the token that created it"})
    name = fields.String()
    arch = fields.String(metadata=_enum(ALL))
    vcpus = fields.Integer()
    memory_mib = fields.Integer()
    image = fields.String()
    state = fields.String(metadata=_enum(VmState))
    host = fields.String(allow_none=True)
    accel = fields.String(allow_none=True, metadata=_enum(Accel, nullable=True))
    emulation = fields.String()
    restart_policy = fields.String()
    emulated = fields.Boolean()
    emulation_warning = fields.String()
    cpu_mode = fields.String()
    cpu_mode_effective = fields.Function(effective_cpu_mode)
    tcg_cpu = fields.String(allow_none=True)
    cpu_mode_note = fields.Function(lambda vm: vm_flags(vm).cpu_mode_note)
    disk_format = fields.String(allow_none=True)
    firmware = fields.String(allow_none=True)
    snapshot_kind = fields.String(allow_none=True)
    migratable = fields.Function(lambda vm: vm_flags(vm).migratable)
    memory_snapshot_ok = fields.Function(lambda vm: vm_flags(vm).memory_snapshot_ok)
    revertable = fields.Function(lambda vm: vm_flags(vm).revertable)
    capability_reasons = fields.Function(lambda vm: vm_flags(vm).reasons)
    network = fields.Dict()
    mac = fields.String(allow_none=True)
    hostname = fields.String(allow_none=True)
    disk_gib = fields.Integer(allow_none=True)
    ssh_authorized_keys = fields.List(fields.String())
    # Never the user data itself: it may hold secrets.
    user_data = fields.Function(
        lambda vm: {"sha256": vm.user_data_sha256, "size": vm.user_data_size} if vm.user_data_sha256 else None,
        allow_none=True,
    )
    addresses = fields.List(fields.Dict())
    # When the VM's host last reported its addresses (they refresh with its heartbeats).
    addresses_at = UtcDateTime(allow_none=True)
    ssh_host_keys = fields.List(fields.String())
    login_user = fields.Function(lambda vm: (vm.artifact or {}).get("login_user"), allow_none=True)
    queue = fields.Function(lambda vm: vm.jobs[-1].queue if vm.jobs else None, allow_none=True)
    # An emulated VM's move to a native host (web/services/rehome.py).
    rehome = fields.String()
    rehome_target = fields.Function(_rehome_target, allow_none=True)
    created_at = UtcDateTime()
    updated_at = UtcDateTime()

    @post_dump
    def _rehome_available(self, data: dict, **_kwargs) -> dict:
        if "rehome_target" in data:
            data["rehome_available"] = data["rehome_target"] is not None
        return data


class HostOut(Schema):
    name = fields.String()
    arch = fields.String(metadata=_enum(ALL))
    accel = fields.String(metadata=_enum(Accel))
    emulators = fields.List(fields.String())
    queues = fields.List(fields.String())
    cpu_modes = fields.Dict()
    capacity = fields.Nested(CapacityOut)
    allocated = fields.Nested(AllocatedOut)
    state = fields.String(metadata=_enum(HostState))
    # Set by POST /hosts/<name>/drain: kept while the host is down, when `state` says down.
    drained = fields.Boolean()
    last_seen = UtcDateTime()
    unmanaged_domains = fields.List(fields.Dict())
    libvirt_version = fields.Integer(allow_none=True)
    snapshot_support = fields.Dict()
    networks = fields.Dict()
    # Where `archq vm ssh` jumps through to reach VMs on NAT networks: the host's SSH address and port.
    ssh = fields.Dict()
    # The fingerprints of its pinned attestation key and of a changed key it offers ({"fingerprint", "offered"}).
    signing_key = fields.Dict()


class SnapshotCreateRequest(Schema):
    name = fields.String(
        required=True,
        validate=validate.Regexp(
            NAME_PATTERN, error="must be 1-63 characters of a-z, 0-9 and '-', starting with a letter or digit"
        ),
    )
    memory = fields.Boolean(required=True)


class SnapshotOut(Schema):
    name = fields.String()
    memory = fields.Boolean()
    kind = fields.String()
    state = fields.String(metadata=_enum(SnapshotState))
    job_id = fields.String()
    last_job_id = fields.String(allow_none=True)
    created_at = UtcDateTime()


class ImageOut(Schema):
    name = fields.String()
    description = fields.String()
    native_arch = fields.String(allow_none=True)
    artifacts = fields.Dict()
    vms = fields.Integer()
    created_at = UtcDateTime()
    updated_at = UtcDateTime()


class ConsoleQuery(Schema):
    bytes = fields.Integer(load_default=DEFAULT_BYTES, validate=validate.Range(min=1, max=MAX_BYTES))


job_out = JobOut()
image_out = ImageOut()
vm_out = VmOut()
host_out = HostOut()
snapshot_out = SnapshotOut()
