"""The response envelopes and the error shape of the HTTP API, named for the OpenAPI document. Views that
return `{"vm": ...}`, lists and ad hoc dicts are described here, so every response has a schema."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from web.models import DEFAULT_PROJECT
from web.schemas import NAME_ERROR, NAME_PATTERN, HostOut, ImageOut, JobOut, SnapshotOut, UtcDateTime, VmOut
from web.services.tokens import ROLES


class ErrorBody(Schema):
    code = fields.String(required=True, metadata={"description": "machine-readable, e.g. validation_failed"})
    message = fields.String(required=True, metadata={"description": "what went wrong and what to do"})
    field_messages = fields.Dict(
        keys=fields.String(),
        required=True,
        data_key="fields",
        metadata={"description": "per-field messages (422), else empty"},
    )


class ErrorOut(Schema):
    error = fields.Nested(ErrorBody, required=True)


class HealthOut(Schema):
    status = fields.String(required=True)


class ReadyOut(Schema):
    status = fields.String(required=True)
    checks = fields.Dict(keys=fields.String(), values=fields.String(), required=True)


class VmAcceptedOut(Schema):
    vm = fields.Nested(VmOut, required=True)
    job = fields.Nested(JobOut, required=True)


class BulkAcceptedOut(Schema):
    count = fields.Integer(required=True, metadata={"description": "how many VMs the request made"})
    vms = fields.List(fields.Nested(VmOut), required=True, metadata={"description": "`<name>-<i>`, in order"})
    jobs = fields.List(fields.Nested(JobOut), required=True, metadata={"description": "their create jobs"})


class CreatePreview(Schema):
    accepted = fields.Boolean(required=True, metadata={"description": "whether a create would be accepted now"})
    status = fields.Integer(required=True, metadata={"description": "what a create would answer: 202, or the error's"})
    error = fields.Nested(ErrorBody, allow_none=True, required=True, metadata={"description": "the refusal, if any"})
    arch = fields.String(metadata={"description": "the guest's canonical architecture"})
    queue = fields.String(metadata={"description": "the queue the create job would go to"})
    host = fields.String(allow_none=True, metadata={"description": "the host, when the VM would be placed on one"})
    emulated = fields.Boolean()
    accel = fields.String(allow_none=True, metadata={"description": "kvm or tcg when known now"})
    emulation_warning = fields.String()
    waiting_for = fields.String(metadata={"description": "what the job would wait for (no live host yet)"})
    cpu_mode = fields.String()
    cpu_mode_note = fields.String(metadata={"description": "under TCG: the named CPU model used instead, and why"})


class CreatePreviewOut(Schema):
    preview = fields.Nested(CreatePreview, required=True)


class VmEnvelope(Schema):
    vm = fields.Nested(VmOut, required=True)


class PageOut(Schema):
    """What every list answers besides its items."""

    next = fields.String(
        required=True,
        allow_none=True,
        metadata={"description": "the cursor of the next page (pass it as `next`); null on the last page"},
    )


class VmListOut(PageOut):
    vms = fields.List(fields.Nested(VmOut), required=True)


class JobEnvelope(Schema):
    job = fields.Nested(JobOut, required=True)


class JobListOut(PageOut):
    jobs = fields.List(fields.Nested(JobOut), required=True)


class HostEnvelope(Schema):
    host = fields.Nested(HostOut, required=True)


class HostListOut(PageOut):
    hosts = fields.List(fields.Nested(HostOut), required=True)


class BrokerInfo(Schema):
    reachable = fields.Boolean(required=True)
    queue_depths = fields.Dict(keys=fields.String(), values=fields.Integer(), allow_none=True, required=True)


class ArchInfo(Schema):
    native_workers = fields.List(fields.String(), required=True)
    emulating_workers = fields.List(fields.String(), required=True)
    queue_depth = fields.Integer(allow_none=True, required=True)
    tcg_queue_depth = fields.Integer(allow_none=True, required=True)


class SystemInfoOut(Schema):
    host_arch = fields.String(allow_none=True, required=True)
    is_arm = fields.Boolean(required=True)
    is_x86 = fields.Boolean(required=True)
    machine = fields.String(required=True)
    platform = fields.String(required=True)
    version = fields.String(required=True)
    broker = fields.Nested(BrokerInfo, required=True)
    workers = fields.Dict(keys=fields.String(), values=fields.List(fields.String()), required=True)
    architectures = fields.Dict(keys=fields.String(), values=fields.Nested(ArchInfo), required=True)


class ImageEnvelope(Schema):
    image = fields.Nested(ImageOut, required=True)


class ImageListOut(PageOut):
    images = fields.List(fields.Nested(ImageOut), required=True)


class SnapshotListOut(PageOut):
    snapshots = fields.List(fields.Nested(SnapshotOut), required=True)


class SnapshotAcceptedOut(VmAcceptedOut):
    snapshot = fields.Nested(SnapshotOut, required=True, metadata={"description": "the snapshot, creating"})


class ConsoleTailOut(Schema):
    vm_id = fields.String(required=True)
    host = fields.String(required=True, metadata={"description": "the host whose worker read the log"})
    text = fields.String(required=True, metadata={"description": "the tail, decoded as UTF-8 with replacements"})
    offset = fields.Integer(required=True, metadata={"description": "where the tail starts in the log, in bytes"})
    size = fields.Integer(required=True, metadata={"description": "the whole log's size in bytes"})
    truncated = fields.Function(
        lambda tail: tail["offset"] > 0,
        required=True,
        metadata={"type": "boolean", "description": "the log has more before this tail"},
    )
    read_at = fields.Float(required=True, metadata={"description": "when the host read it, in Unix seconds"})


class ConsoleEnvelope(Schema):
    console = fields.Nested(ConsoleTailOut, required=True)


class VmEventOut(Schema):
    at = UtcDateTime(required=True)
    kind = fields.String(required=True, metadata={"description": "console_opened or console_ended"})
    actor = fields.String(required=True, metadata={"description": "who: token:<name>"})
    message = fields.String(required=True)


class VmEventsEnvelope(Schema):
    events = fields.List(fields.Nested(VmEventOut), required=True)


class TokenCreateRequest(Schema):
    name = fields.String(
        required=True,
        validate=validate.Regexp(
            NAME_PATTERN, error="must be 1-63 characters of a-z, 0-9 and '-', starting with a letter or digit"
        ),
    )
    role = fields.String(required=True, validate=validate.OneOf(ROLES))
    project = fields.String(
        load_default=DEFAULT_PROJECT,
        validate=validate.Regexp(NAME_PATTERN, error=NAME_ERROR),
        metadata={"description": "the project it acts in (default: default); it must exist"},
    )


class TokenOut(Schema):
    id = fields.String(required=True)
    name = fields.String(required=True)
    role = fields.String(required=True, validate=validate.OneOf(ROLES))
    project = fields.String(required=True)
    created_at = UtcDateTime(required=True)
    revoked_at = UtcDateTime(allow_none=True, required=True)


class TokenEnvelope(Schema):
    token = fields.Nested(TokenOut, required=True)


class TokenCreatedOut(Schema):
    token = fields.Nested(TokenOut, required=True)
    secret = fields.String(required=True, metadata={"description": "the bearer token; shown only in this answer"})


class TokenListOut(Schema):
    tokens = fields.List(fields.Nested(TokenOut), required=True)


class AttestationOut(Schema):
    seq = fields.Integer(required=True, metadata={"description": "its place in the VM's chain, from 0"})
    hash = fields.String(required=True, metadata={"description": "SHA256 of the canonical payload"})
    payload = fields.Dict(required=True, metadata={"description": "what the host signed (queues/attestation.py)"})
    signature = fields.String(required=True, metadata={"description": "Ed25519 over the canonical payload, base64"})


class AttestationChainOut(Schema):
    vm_id = fields.String(required=True)
    format = fields.String(required=True)
    records = fields.List(fields.Nested(AttestationOut), required=True)
    keys = fields.Dict(
        keys=fields.String(),
        values=fields.List(fields.String()),
        required=True,
        metadata={"description": "per signing host, the public keys (base64) the control plane accepted"},
    )
    unattested_jobs = fields.List(
        fields.String(), required=True, metadata={"description": "the VM's succeeded jobs with no stored record"}
    )


class TrustKeyRequest(Schema):
    fingerprint = fields.String(
        required=True,
        validate=validate.Regexp(r"^SHA256:[A-Za-z0-9+/]{43}$"),
        metadata={"description": "the offered key's fingerprint, as checked on the host (`archq worker --check`)"},
    )


class QuotaLimits(Schema):
    """Per resource: the limit, or null for none."""

    vms = fields.Integer(
        allow_none=True, validate=validate.Range(min=0, max=2**31 - 1), metadata={"description": "live VMs"}
    )
    vcpus = fields.Integer(allow_none=True, validate=validate.Range(min=0, max=2**31 - 1))
    memory_mib = fields.Integer(allow_none=True, validate=validate.Range(min=0, max=2**31 - 1))
    emulated = fields.Integer(
        allow_none=True, validate=validate.Range(min=0, max=2**31 - 1), metadata={"description": "VMs run under TCG"}
    )


class ProjectCreateRequest(Schema):
    name = fields.String(required=True, validate=validate.Regexp(NAME_PATTERN, error=NAME_ERROR))
    quota = fields.Nested(QuotaLimits, load_default=dict, metadata={"description": "limits; omitted: none"})


class UsageFigures(Schema):
    vms = fields.Integer(allow_none=True, required=True)
    vcpus = fields.Integer(allow_none=True, required=True)
    memory_mib = fields.Integer(allow_none=True, required=True)
    emulated = fields.Integer(allow_none=True, required=True)


class ProjectUsage(Schema):
    project = fields.String(required=True)
    limits = fields.Nested(UsageFigures, required=True, metadata={"description": "null: no limit"})
    used = fields.Nested(UsageFigures, required=True, metadata={"description": "what its live VMs hold"})
    remaining = fields.Nested(UsageFigures, required=True, metadata={"description": "null: no limit"})


class ProjectOut(Schema):
    name = fields.String(required=True)
    created_at = UtcDateTime(required=True)
    usage = fields.Nested(ProjectUsage, required=True)


class ProjectEnvelope(Schema):
    project = fields.Nested(ProjectOut, required=True)


class ProjectListOut(Schema):
    projects = fields.List(fields.Nested(ProjectOut), required=True)


class ProjectUsageOut(Schema):
    usage = fields.Nested(ProjectUsage, required=True)
