"""The words `web`, `workers` and `client` share about jobs and VMs: job kinds (each with its task and default
time limit), job states, VM states and accelerators. One module, because they are one vocabulary: a kind's
task is what a VM state change is sent as, and the named sets of VM states are read next to the kinds."""

from __future__ import annotations

from enum import StrEnum

from queues.names import Task


class JobKind(StrEnum):
    CREATE = "create"
    DELETE = "delete"
    START = "start"
    STOP = "stop"
    REBOOT = "reboot"
    SNAPSHOT = "snapshot"
    REVERT = "revert"
    SNAPSHOT_DELETE = "snapshot_delete"
    MIGRATE = "migrate"
    # The target of a succeeded migration signs that the VM arrived (web/services/migrations.py).
    MIGRATE_IN = "migrate_in"

    @property
    def task(self) -> str:
        """The Celery task a hypervisor worker runs this kind's jobs as."""
        return _TASKS[self]

    @property
    def time_limit_s(self) -> float:
        """How long a job of this kind may run before the worker stops waiting and rolls back what it can
        (overridden per kind by ARCHQ_TIME_LIMITS)."""
        return _TIME_LIMITS_S[self]


_TASKS: dict[JobKind, str] = {
    JobKind.CREATE: Task.CREATE_VM,
    JobKind.DELETE: Task.DELETE_VM,
    JobKind.START: Task.START_VM,
    JobKind.STOP: Task.STOP_VM,
    JobKind.REBOOT: Task.REBOOT_VM,
    JobKind.SNAPSHOT: Task.SNAPSHOT_VM,
    JobKind.REVERT: Task.REVERT_VM,
    JobKind.SNAPSHOT_DELETE: Task.DELETE_SNAPSHOT,
    JobKind.MIGRATE: Task.MIGRATE_VM,
    JobKind.MIGRATE_IN: Task.MIGRATE_IN_VM,
}

_TIME_LIMITS_S: dict[JobKind, float] = {
    JobKind.CREATE: 600.0,
    JobKind.DELETE: 300.0,
    JobKind.START: 120.0,
    JobKind.STOP: 120.0,
    JobKind.REBOOT: 120.0,
    JobKind.SNAPSHOT: 600.0,
    JobKind.REVERT: 600.0,
    JobKind.SNAPSHOT_DELETE: 300.0,
    JobKind.MIGRATE: 3600.0,
    JobKind.MIGRATE_IN: 120.0,
}

SNAPSHOT_KINDS = frozenset({JobKind.SNAPSHOT, JobKind.REVERT, JobKind.SNAPSHOT_DELETE})


class JobState(StrEnum):
    """pending -> queued -> running -> succeeded | failed | cancelled (web/services/job_states.py enforces it)."""

    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_JOB_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
# What a worker may report; pending and queued are the control plane's.
JOB_STATES_FROM_WORKERS = (JobState.RUNNING, JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


class VmState(StrEnum):
    PENDING = "pending"
    CREATING = "creating"
    RUNNING = "running"
    STOPPED = "stopped"
    STARTING = "starting"
    STOPPING = "stopping"
    REBOOTING = "rebooting"
    MIGRATING = "migrating"
    DELETING = "deleting"
    DELETED = "deleted"
    # A job on it failed, or its host went quiet: archq cannot vouch for it until the host reports it again.
    UNKNOWN = "unknown"
    # Its create failed: nothing runs, but the record (and its name) stays until it is deleted.
    FAILED = "failed"


# Every VM that exists as far as its name goes: two live VMs never share a name.
LIVE_VM_STATES = frozenset(VmState) - {VmState.DELETED}
# VMs that hold capacity on their host: a failed create holds none.
ALLOCATING_VM_STATES = LIVE_VM_STATES - {VmState.FAILED}
# A VM whose domain sits on a known host, running or not: where a worker's location report can leave it.
LOCATED_VM_STATES = (VmState.RUNNING, VmState.STOPPED)


class HostState(StrEnum):
    """A host as the control plane sees it: heartbeating (up, or drained: no new placements), or quiet (down)."""

    UP = "up"
    DRAINED = "drained"
    DOWN = "down"


class SnapshotState(StrEnum):
    """creating -> ready -> deleting (the row goes when the delete succeeds); creating -> failed."""

    CREATING = "creating"
    READY = "ready"
    DELETING = "deleting"
    FAILED = "failed"


class Accel(StrEnum):
    """How a host runs guests: hardware acceleration (KVM on Linux, HVF on macOS) or QEMU's TCG emulation."""

    KVM = "kvm"
    HVF = "hvf"
    TCG = "tcg"
