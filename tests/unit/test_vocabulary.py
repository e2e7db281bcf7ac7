"""The vocabulary web, workers and client share: every job kind is a task some worker runs, with a time limit
the settings start from; the API and the broker's messages accept exactly the vocabulary's words; the named
sets of VM states say which VMs keep their name and which hold capacity."""

from __future__ import annotations

import dataclasses

import pytest
from marshmallow import ValidationError

from queues import messages
from queues.config import Settings
from queues.names import Task
from queues.vocabulary import (
    ALLOCATING_VM_STATES,
    JOB_STATES_FROM_WORKERS,
    LIVE_VM_STATES,
    TERMINAL_JOB_STATES,
    Accel,
    JobKind,
    JobState,
    VmState,
)
from web.schemas import JobQuery
from workers.main import WorkerService


def test_every_job_kind_is_a_task_the_hypervisor_worker_registers(settings: Settings):
    service = WorkerService.build(dataclasses.replace(settings, hostname="vocab-host"))
    vm_tasks = {name for name in service.app.tasks if name.startswith("archq.vm.")}
    assert vm_tasks == {kind.task for kind in JobKind}


def test_each_kind_has_its_own_task():
    assert len({kind.task for kind in JobKind}) == len(JobKind)
    assert JobKind.SNAPSHOT_DELETE.task == Task.DELETE_SNAPSHOT


def test_settings_start_from_each_kinds_default_time_limit(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ARCHQ_TIME_LIMITS", "migrate=60")
    limits = Settings.from_env().time_limits
    assert limits[JobKind.MIGRATE] == 60.0
    assert {kind: limits[kind] for kind in JobKind if kind != JobKind.MIGRATE} == {
        kind: kind.time_limit_s for kind in JobKind if kind != JobKind.MIGRATE
    }
    assert JobKind.MIGRATE.time_limit_s == 3600.0


def test_the_job_list_filters_accept_exactly_the_kinds_and_states():
    for kind in JobKind:
        assert JobQuery().load({"kind": kind.value})["kind"] == kind
    for state in JobState:
        assert JobQuery().load({"state": state.value})["state"] == state
    with pytest.raises(ValidationError):
        JobQuery().load({"kind": "resize"})
    with pytest.raises(ValidationError):
        JobQuery().load({"state": "done"})


def test_workers_report_only_the_states_a_running_job_can_reach():
    update = {"job_id": "6f1b9a3e-8a51-4a2e-9d3c-2b1a7d0e4f11", "host": "h", "at": 1.0}
    for state in JOB_STATES_FROM_WORKERS:
        assert messages.job_update.load({**update, "state": state.value})["state"] == state
    for state in (JobState.PENDING, JobState.QUEUED):
        with pytest.raises(ValidationError):
            messages.job_update.load({**update, "state": state.value})
    assert set(JOB_STATES_FROM_WORKERS) - TERMINAL_JOB_STATES == {JobState.RUNNING}


def test_heartbeats_name_one_of_the_accelerators():
    beat = {"host": "h", "arch": "amd64", "queues": ["amd64"], "at": 1.0}
    for accel in Accel:
        assert messages.heartbeat.load({**beat, "accel": accel.value})["accel"] == accel
    with pytest.raises(ValidationError):
        messages.heartbeat.load({**beat, "accel": "xen"})


def test_a_failed_vm_keeps_its_name_but_holds_no_capacity_and_a_deleted_one_neither():
    assert VmState.FAILED in LIVE_VM_STATES
    assert VmState.FAILED not in ALLOCATING_VM_STATES
    assert VmState.DELETED not in LIVE_VM_STATES | ALLOCATING_VM_STATES
    assert set(LIVE_VM_STATES - ALLOCATING_VM_STATES) == {VmState.FAILED}
    assert {VmState.RUNNING, VmState.MIGRATING, VmState.PENDING} <= ALLOCATING_VM_STATES
