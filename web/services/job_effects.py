"""What each job kind does to its VM: from which states it may start, what the VM is while it waits, what the
user asked for by submitting it, and what the VM becomes when its worker starts it, when it succeeds, fails
or is cancelled, and when it is cancelled before any worker took it. One table, `EFFECTS`; job submission
(vms.py, snapshots.py, migrations.py), workers' reports and cancels (jobs.py) all read it.

A migration moves the VM in the database only when the worker says libvirt finished, or after any failure to
where the worker found the domain; a VM is recorded on exactly one host at a time."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select

from queues.vocabulary import LOCATED_VM_STATES, JobKind, JobState, VmState
from web.extensions import db
from web.models import Job, Snapshot, Vm
from web.services import projects

# Facts about a VM that only its worker knows (read from the domain XML it runs); a job result carrying one
# of these keys updates the VM.
REPORTED_VM_FIELDS = ("cpu_mode_effective", "disk_format", "firmware", "snapshot_kind")

# What happens to the VM at one step of its job; `host` is the worker's host.
Effect = Callable[[Vm, Job, str], None]


def keep(_vm: Vm, _job: Job, _host: str) -> None:
    """The VM stays as it is."""


def becomes(state: VmState) -> Effect:
    def effect(vm: Vm, _job: Job, _host: str) -> None:
        vm.state = state

    return effect


def unknown(vm: Vm, _job: Job, _host: str) -> None:
    vm.state = VmState.UNKNOWN


def on_host(vm: Vm, _job: Job, host: str) -> None:
    """The job runs where the VM is: the worker that took it names the host."""
    vm.host = host


def creating(vm: Vm, job: Job, host: str) -> None:
    on_host(vm, job, host)
    vm.state = VmState.CREATING


def _worker_facts(vm: Vm, result: dict) -> None:
    for column in REPORTED_VM_FIELDS:
        if column in result:
            setattr(vm, column, result[column])


def reported(vm: Vm, job: Job, _host: str) -> None:
    """The VM is what the worker found after the job (its domain's state), with the facts it reported."""
    _worker_facts(vm, job.result)
    vm.state = job.result.get("state", vm.state)


def created(vm: Vm, job: Job, host: str) -> None:
    result = job.result
    _worker_facts(vm, result)
    vm.state = result.get("state", VmState.RUNNING)
    vm.host = result.get("host", host)
    vm.accel = result.get("accel", vm.accel)
    projects.emulation_changed(vm, result.get("emulated", vm.emulated))
    vm.emulated = result.get("emulated", vm.emulated)


def gone(vm: Vm, _job: Job, _host: str) -> None:
    """The VM is deleted: its name and its share of its project's quota are free again."""
    if vm.state != VmState.DELETED:
        projects.release(vm)
    vm.state = VmState.DELETED


def deleted(vm: Vm, job: Job, host: str) -> None:
    # The project's row is locked before the VM's (the flush of a changed VM comes with the next statement): a
    # create locks project rows before host rows, a heartbeat host rows before VM rows, so no cycle of waits.
    gone(vm, job, host)
    _worker_facts(vm, job.result)


def located(vm: Vm, job: Job, _host: str) -> None:
    """A migration ended: the VM is where the worker's location report says, or on the target after a success
    without one; with neither (the worker timed out or crashed) unknown until a heartbeat says where it runs."""
    result = job.result or {}
    if job.state == JobState.SUCCEEDED and not result.get("host"):
        result = {"host": job.payload.get("params", {}).get("target", {}).get("name"), "state": VmState.RUNNING}
    if result.get("host"):
        vm.host = result["host"]
        vm.state = result["state"] if result.get("state") in LOCATED_VM_STATES else VmState.UNKNOWN
    else:
        vm.state = VmState.UNKNOWN
    rehome = job.payload.get("params", {}).get("rehome")
    if rehome and vm.host == rehome["host"]:
        # Re-homed to a native host: no longer emulated, with the domain type and CPU the target gave it.
        vm.emulated, vm.emulation_warning, vm.accel = False, "", rehome["accel"]
        _worker_facts(vm, result)


def as_submitted(vm: Vm, job: Job, _host: str) -> None:
    """A job that never ran leaves the VM as it was when the job was submitted."""
    before = job.payload.get("params", {})
    vm.state = before.get("from_state", VmState.UNKNOWN)
    vm.desired_state = before.get("from_desired_state", vm.desired_state)


def settle_snapshot(job: Job) -> None:
    """A snapshot-family job ended (`job.state` is terminal): bring the snapshot's record in line."""
    if job.vm is None:
        return
    name = job.payload.get("params", {}).get("snapshot", "")
    snapshot = db.session.scalar(select(Snapshot).where(Snapshot.vm_id == job.vm.id, Snapshot.name == name))
    if snapshot is None:
        return
    succeeded = job.state == JobState.SUCCEEDED
    if job.kind == JobKind.SNAPSHOT and snapshot.job_id == job.id:
        snapshot.state = "ready" if succeeded else "failed"
        if succeeded and job.result.get("created_at"):
            snapshot.created_at = datetime.fromtimestamp(job.result["created_at"], UTC)
    elif job.kind == JobKind.REVERT and succeeded and job.result.get("state") in LOCATED_VM_STATES:
        # The user asked for the VM as it was: running after a memory snapshot, stopped after a disk-only one.
        job.vm.desired_state = job.result["state"]
    elif job.kind == JobKind.SNAPSHOT_DELETE and succeeded:
        db.session.delete(snapshot)
        db.session.flush()
        if not db.session.scalar(select(Snapshot.id).where(Snapshot.vm_id == job.vm.id).limit(1)):
            job.vm.snapshot_kind = None
    elif job.kind == JobKind.SNAPSHOT_DELETE:
        # Whether libvirt still has it is unknown; a retried delete converges either way.
        snapshot.state = "ready"


def _nothing_else(_job: Job) -> None:
    pass


@dataclass(frozen=True)
class Effects:
    # VM states a job may be submitted from (kinds with finer rules check those beside this; create has none).
    allowed_from: tuple[VmState, ...] = ()
    # The VM's state from submission until the job ends (None: unchanged), and what the user asks for by it.
    during: VmState | None = None
    desired: VmState | None = None
    started: Effect = on_host
    succeeded: Effect = reported
    # After a failed action archq cannot vouch for the VM's state until the host's next report (the reconciler)
    # says what it is.
    failed: Effect = unknown
    # The worker stopped the job and undid what it could.
    cancelled: Effect = keep
    cancelled_before_start: Effect = as_submitted
    # Records beside the VM that a finished job (any terminal state) brings in line.
    settle: Callable[[Job], None] = _nothing_else

    def apply(self, vm: Vm, job: Job, state: JobState, host: str) -> None:
        """A worker's report moved `job` to `state`."""
        step = {
            JobState.RUNNING: self.started,
            JobState.SUCCEEDED: self.succeeded,
            JobState.FAILED: self.failed,
            JobState.CANCELLED: self.cancelled,
        }[state]
        step(vm, job, host)


# Taking, reverting to and deleting a snapshot are checked in snapshots.py (memory decides the state a snapshot
# needs); taking or deleting one never changes the domain's state, so failing leaves the VM as it was.
_SNAPSHOT = Effects(failed=keep, cancelled_before_start=keep, settle=settle_snapshot)

EFFECTS: dict[JobKind, Effects] = {
    # A failed create leaves nothing to run; a cancelled one nothing at all.
    JobKind.CREATE: Effects(
        started=creating,
        succeeded=created,
        failed=becomes(VmState.FAILED),
        cancelled=gone,
        cancelled_before_start=gone,
    ),
    JobKind.DELETE: Effects(
        allowed_from=(VmState.RUNNING, VmState.STOPPED, VmState.FAILED, VmState.UNKNOWN, VmState.PENDING),
        during=VmState.DELETING,
        succeeded=deleted,
    ),
    JobKind.START: Effects(
        allowed_from=(VmState.STOPPED, VmState.UNKNOWN), during=VmState.STARTING, desired=VmState.RUNNING
    ),
    JobKind.STOP: Effects(
        allowed_from=(VmState.RUNNING, VmState.UNKNOWN), during=VmState.STOPPING, desired=VmState.STOPPED
    ),
    JobKind.REBOOT: Effects(allowed_from=(VmState.RUNNING,), during=VmState.REBOOTING, desired=VmState.RUNNING),
    JobKind.SNAPSHOT: _SNAPSHOT,
    JobKind.REVERT: Effects(
        allowed_from=(VmState.RUNNING, VmState.STOPPED, VmState.UNKNOWN),
        cancelled_before_start=keep,
        settle=settle_snapshot,
    ),
    JobKind.SNAPSHOT_DELETE: _SNAPSHOT,
    JobKind.MIGRATE: Effects(
        allowed_from=LOCATED_VM_STATES,
        during=VmState.MIGRATING,
        started=becomes(VmState.MIGRATING),
        succeeded=located,
        failed=located,
        cancelled=located,
    ),
    # The target signing a succeeded migration's arrival (migrations.queue_arrival): it changes nothing, and a
    # failed one (the domain was not there) leaves the VM to the reconciler, like any other report.
    JobKind.MIGRATE_IN: Effects(started=keep, succeeded=keep, failed=keep, cancelled_before_start=keep),
}
