"""Schemas of the messages that cross the broker (JSON only). `web` builds and reads them, `workers` reads
and builds them; neither trusts the other's dicts without loading them through these schemas."""

from __future__ import annotations

from marshmallow import EXCLUDE, Schema, fields, validate

from queues.arch import ALL
from queues.images import Artifact
from queues.vocabulary import JOB_STATES_FROM_WORKERS, Accel

MESSAGE_VERSION = 1

ARCH_NAMES = [a.value for a in ALL]


class _Message(Schema):
    class Meta:
        # A newer sender may add fields; an older reader ignores them rather than failing the job.
        unknown = EXCLUDE

    version = fields.Integer(load_default=MESSAGE_VERSION)


class VmSpec(_Message):
    id = fields.UUID(required=True)
    name = fields.String(required=True)
    arch = fields.String(required=True, validate=validate.OneOf(ARCH_NAMES))
    vcpus = fields.Integer(required=True, validate=validate.Range(min=1))
    memory_mib = fields.Integer(required=True, validate=validate.Range(min=1))
    image = fields.String(required=True)
    emulated = fields.Boolean(load_default=False)
    cpu_mode = fields.String(load_default="host-model", validate=validate.OneOf(["host-model", "host-passthrough"]))
    # Under TCG: the VM's admin-approved CPU configuration (queues/emulation.py); None: archq's default.
    tcg_cpu = fields.String(allow_none=True, load_default=None)
    # What the VM boots from, copied from the image catalog when it was created: workers never need the DB,
    # and a VM keeps its base image even if the catalog entry changes or goes.
    artifact = fields.Nested(Artifact, allow_none=True, load_default=None)
    # {"mode": "nat", "network": <libvirt network>} | {"mode": "bridge", "bridge": <host bridge>} | {"mode": "none"}
    network = fields.Dict(load_default=lambda: {"mode": "none"})
    mac = fields.String(allow_none=True, load_default=None)
    # First boot (workers/cloud_init.py). `user_data` travels only in create jobs: a re-run rebuilds the same
    # seed, other jobs find it in the VM's directory.
    hostname = fields.String(allow_none=True, load_default=None)
    ssh_authorized_keys = fields.List(fields.String(), load_default=list)
    user_data = fields.String(allow_none=True, load_default=None)
    disk_gib = fields.Integer(allow_none=True, load_default=None)


class JobMessage(_Message):
    """What a VM task receives: which job, the dispatch token that proves the message is current."""

    job_id = fields.UUID(required=True)
    token = fields.String(required=True)
    kind = fields.String(required=True)
    vm = fields.Nested(VmSpec, required=True)
    # What the kind needs beyond the VM, e.g. a snapshot's {"snapshot": name, "memory": bool}.
    params = fields.Dict(load_default=dict)
    # The hash of the VM's latest attestation when the job was made (None: it has none yet): the worker signs
    # it into the job's record, which links the VM's chain (queues/attestation.py).
    chain_head = fields.String(allow_none=True, load_default=None)


class JobError(_Message):
    code = fields.String(required=True)
    message = fields.String(required=True)


class JobUpdate(_Message):
    """A worker's report on a job, sent to `control`."""

    job_id = fields.UUID(required=True)
    state = fields.String(required=True, validate=validate.OneOf([s.value for s in JOB_STATES_FROM_WORKERS]))
    host = fields.String(required=True)
    at = fields.Float(required=True)
    result = fields.Dict(load_default=dict)
    error = fields.Nested(JobError, allow_none=True, load_default=None)
    # A `running` report may carry how far the job got ({"phase", "percent", "bytes_remaining", ...}).
    progress = fields.Dict(allow_none=True, load_default=None)
    # A `succeeded` report carries the host's signed record of the operation {"payload", "signature"}.
    attestation = fields.Dict(allow_none=True, load_default=None)


class Heartbeat(_Message):
    """A worker's periodic report of what its host is and can do."""

    host = fields.String(required=True)
    arch = fields.String(required=True, validate=validate.OneOf(ARCH_NAMES))
    accel = fields.String(required=True, validate=validate.OneOf([a.value for a in Accel]))
    emulators = fields.List(fields.String(validate=validate.OneOf(ARCH_NAMES)), load_default=list)
    queues = fields.List(fields.String(), required=True)
    cpu_modes = fields.Dict(keys=fields.String(), values=fields.List(fields.String()), load_default=dict)
    capacity = fields.Dict(load_default=dict)
    allocated = fields.Dict(load_default=dict)
    # {"uuid", "name", "state", "reason"}, and for running archq VMs "addresses" and, once the guest printed
    # them on its console, "ssh_host_keys".
    domains = fields.List(fields.Dict(), load_default=list)
    # When this worker process started: messages it took before a crash are lost with it (see recovery).
    started_at = fields.Float(load_default=0.0)
    # libvirt's version on the host (9.0.0 is 9000000) and what its snapshots can do there.
    libvirt_version = fields.Integer(load_default=0)
    snapshot_support = fields.Dict(keys=fields.String(), values=fields.Boolean(), load_default=dict)
    # How other hosts migrate VMs here: address, ssh_port, shared_storage (see queues/config.py).
    migration = fields.Dict(load_default=dict)
    # What VMs can attach to here: {"libvirt": [active networks], "bridges": [host bridges]}.
    networks = fields.Dict(load_default=dict)
    # The host's Ed25519 public key (base64 of its raw bytes): the conductor pins it on first sight.
    signing_key = fields.String(allow_none=True, load_default=None)
    # queues/liveness.py's digest of all the above: the conductor notes it once recorded, so that the worker
    # sends a lost full beat again.
    digest = fields.String(load_default="")
    at = fields.Float(required=True)


job_message = JobMessage()
job_update = JobUpdate()
heartbeat = Heartbeat()
