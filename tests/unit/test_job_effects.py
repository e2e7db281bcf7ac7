"""What each job kind does to its VM, read from the one table: every kind has a row, and the steps that matter
most (a failed create, a failed action, a failed snapshot, a migration's end) leave the VM where the README
says."""

from __future__ import annotations

import pytest

from queues.vocabulary import JobKind, JobState, VmState
from web.models import Job, Vm
from web.services.job_effects import EFFECTS


def _vm(state: VmState = VmState.RUNNING, host: str = "h1") -> Vm:
    return Vm(
        id="6f1b9a3e-8a51-4a2e-9d3c-2b1a7d0e4f11",
        project="default",
        vcpus=1,
        memory_mib=128,
        emulated=False,
        state=state,
        host=host,
        desired_state=VmState.RUNNING,
    )


def _job(kind: JobKind, state: JobState, result: dict | None = None, params: dict | None = None) -> Job:
    return Job(kind=kind, state=state, result=result or {}, payload={"params": params or {}})


def _report(vm: Vm, kind: JobKind, state: JobState, host: str = "h1", **job: dict) -> Vm:
    EFFECTS[kind].apply(vm, _job(kind, state, **job), state, host)
    return vm


def test_every_job_kind_has_a_row():
    assert set(EFFECTS) == set(JobKind)


def test_a_failed_create_leaves_a_failed_vm_and_a_cancelled_one_none(app):
    assert _report(_vm(VmState.CREATING), JobKind.CREATE, JobState.FAILED).state == VmState.FAILED
    # A VM that is gone gives its project's quota back (in the database: the effect runs in a transaction).
    with app.app_context():
        assert _report(_vm(VmState.CREATING), JobKind.CREATE, JobState.CANCELLED).state == VmState.DELETED


@pytest.mark.parametrize("kind", [JobKind.START, JobKind.STOP, JobKind.REBOOT, JobKind.DELETE, JobKind.REVERT])
def test_after_a_failed_action_archq_cannot_vouch_for_the_vm(kind: JobKind):
    assert _report(_vm(), kind, JobState.FAILED).state == VmState.UNKNOWN


@pytest.mark.parametrize("kind", [JobKind.SNAPSHOT, JobKind.SNAPSHOT_DELETE])
def test_a_failed_snapshot_job_leaves_the_vm_as_it_was(kind: JobKind):
    assert _report(_vm(VmState.STOPPED), kind, JobState.FAILED).state == VmState.STOPPED


def test_an_action_cancelled_before_it_started_puts_the_vm_back():
    vm = _vm(VmState.STOPPING)
    vm.desired_state = VmState.STOPPED
    before = {"from_state": VmState.RUNNING, "from_desired_state": VmState.RUNNING}
    EFFECTS[JobKind.STOP].cancelled_before_start(vm, _job(JobKind.STOP, JobState.CANCELLED, params=before), "h1")
    assert (vm.state, vm.desired_state) == (VmState.RUNNING, VmState.RUNNING)


def test_a_migration_moves_the_vm_only_when_it_ends():
    vm = _report(_vm(), JobKind.MIGRATE, JobState.RUNNING, host="h1")
    assert (vm.state, vm.host) == (VmState.MIGRATING, "h1")
    target = {"target": {"name": "h2"}}
    vm = _report(vm, JobKind.MIGRATE, JobState.SUCCEEDED, params=target)
    assert (vm.state, vm.host) == (VmState.RUNNING, "h2")


def test_a_failed_migration_leaves_the_vm_where_the_worker_found_it_or_unknown():
    found = {"host": "h1", "state": VmState.STOPPED}
    vm = _report(_vm(VmState.MIGRATING), JobKind.MIGRATE, JobState.FAILED, result=found)
    assert (vm.state, vm.host) == (VmState.STOPPED, "h1")
    vm = _report(_vm(VmState.MIGRATING), JobKind.MIGRATE, JobState.FAILED)
    assert (vm.state, vm.host) == (VmState.UNKNOWN, "h1")


@pytest.mark.parametrize("state", [JobState.RUNNING, JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED])
def test_the_targets_signature_of_an_arrival_never_moves_or_changes_the_vm(state: JobState):
    vm = _report(_vm(host="h2"), JobKind.MIGRATE_IN, state, host="h2", result={"host": "h1", "state": "stopped"})
    assert (vm.host, vm.state) == ("h2", VmState.RUNNING)
    vm = _vm(host="h2")
    EFFECTS[JobKind.MIGRATE_IN].cancelled_before_start(vm, _job(JobKind.MIGRATE_IN, JobState.CANCELLED), "")
    assert (vm.host, vm.state) == ("h2", VmState.RUNNING)
