"""The worker's operations, snapshots and migration decisions on the in-memory hypervisor
(tests/support/fake_hypervisor.py): what each does to the VM and what it reports, in milliseconds. The same
operations against real libvirt and QEMU are in tests/integration and tests/hosts."""

from __future__ import annotations

import dataclasses
import threading
import uuid
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from queues import attestation
from queues.vocabulary import JobKind, VmState
from tests.support.fake_hypervisor import FakeHosts, FakeHypervisor
from tests.support.worker_context import fake_context
from workers import migration, operations, snapshots
from workers.attest import signed_record
from workers.errors import JobCancelled, WorkerError
from workers.hypervisor import HypervisorError
from workers.job_run import JobRun
from workers.operations import WorkerContext
from workers.target_checks import Plan

SOURCE, TARGET = "qemu+tcp://10.0.0.1/system", "qemu+tcp://10.0.0.2/system"


def running_vm(hypervisor: FakeHypervisor, name: str = "vm1") -> dict:
    vm_id = str(uuid.uuid4())
    hypervisor.ensure_running(vm_id, f"<domain><uuid>{vm_id}</uuid><name>archq-{name}</name></domain>")
    return {"id": vm_id, "name": name}


def code_of(call) -> str:
    with pytest.raises(WorkerError) as failed:
        call()
    return failed.value.code


# --- lifecycle ----------------------------------------------------------------------------------------------


def test_stop_reports_a_forced_power_off(tmp_path: Path):
    ctx = fake_context(tmp_path)
    vm = running_vm(ctx.hypervisor)
    ctx.hypervisor.ignores_acpi.add(vm["id"])
    assert operations.stop_vm(ctx, vm) == {"host": "h1", "state": VmState.STOPPED, "domain": "archq-vm1",
                                           "forced": True}  # fmt: skip
    assert operations.start_vm(ctx, vm)["state"] == VmState.RUNNING


def test_a_failed_start_names_the_host(tmp_path: Path):
    ctx = fake_context(tmp_path)
    vm = running_vm(ctx.hypervisor)
    ctx.hypervisor.stop(vm["id"], 1)
    ctx.hypervisor.failures["start"] = HypervisorError("domain_start_failed", "no memory")
    with pytest.raises(WorkerError) as failed:
        operations.start_vm(ctx, vm)
    assert failed.value.code == "domain_start_failed" and "start failed on host h1: no memory" in str(failed.value)


def test_deleting_twice_succeeds_and_removes_the_vm_directory(tmp_path: Path):
    ctx = fake_context(tmp_path)
    vm = running_vm(ctx.hypervisor)
    ctx.vm_dir(vm["id"]).mkdir(parents=True)
    first = operations.delete_vm(ctx, vm)
    assert (first["state"], first["existed"]) == (VmState.DELETED, True)
    assert not ctx.vm_dir(vm["id"]).exists() and ctx.hypervisor.domain(vm["id"]) is None
    assert operations.delete_vm(ctx, vm)["existed"] is False


def test_a_nat_nic_on_a_host_without_the_network_fails_before_anything_exists(tmp_path: Path):
    ctx = fake_context(tmp_path)
    vm = {"id": str(uuid.uuid4()), "network": {"mode": "nat"}, "mac": "52:54:00:00:00:01"}
    assert code_of(lambda: operations._nic(ctx, vm)) == "network_unavailable"
    ctx.hypervisor.ensure_network("archq", "<network/>")
    assert operations._nic(ctx, vm) == operations.Nic(mac="52:54:00:00:00:01", type="network", source="archq")


# --- snapshots ----------------------------------------------------------------------------------------------


def snapshot_run(job_id: str = "job-1", **params: object) -> JobRun:
    return JobRun(job_id, {"snapshot": "s1", "memory": True, **params})


def test_a_rerun_of_a_snapshot_job_finds_its_own_snapshot(tmp_path: Path):
    ctx = fake_context(tmp_path)
    vm = running_vm(ctx.hypervisor)
    first = snapshots.snapshot_vm(ctx, vm, snapshot_run())
    again = snapshots.snapshot_vm(ctx, vm, snapshot_run())
    assert (first["reused"], again["reused"], again["snapshot"]) == (False, True, "s1")
    assert len(ctx.hypervisor.snapshots(vm["id"])) == 1


def test_another_jobs_snapshot_of_that_name_is_refused(tmp_path: Path):
    ctx = fake_context(tmp_path)
    vm = running_vm(ctx.hypervisor)
    snapshots.snapshot_vm(ctx, vm, snapshot_run("job-1"))
    assert code_of(lambda: snapshots.snapshot_vm(ctx, vm, snapshot_run("job-2"))) == "snapshot_exists"


def test_a_snapshot_needs_the_state_its_kind_captures(tmp_path: Path):
    ctx = fake_context(tmp_path)
    vm = running_vm(ctx.hypervisor)
    assert code_of(lambda: snapshots.snapshot_vm(ctx, vm, snapshot_run(memory=False))) == "wrong_state"
    ctx.hypervisor.stop(vm["id"], 1)
    assert code_of(lambda: snapshots.snapshot_vm(ctx, vm, snapshot_run())) == "wrong_state"
    assert snapshots.snapshot_vm(ctx, vm, snapshot_run(memory=False))["memory"] is False


def test_a_snapshot_a_killed_run_left_libvirt_taking_is_this_jobs(tmp_path: Path):
    ctx = fake_context(tmp_path)
    vm = running_vm(ctx.hypervisor)
    run = snapshot_run()
    # libvirtd finished the earlier run's snapshot while this call waited, then refused the duplicate name.
    ctx.hypervisor.create_internal_snapshot(vm["id"], "s1", snapshots.job_marker(run.job_id), True)
    assert snapshots._take(ctx, vm["id"], "s1", True, run).name == "s1"
    ctx.hypervisor.failures["create_internal_snapshot"] = HypervisorError("snapshot_failed", "disk full")
    assert code_of(lambda: snapshots._take(ctx, vm["id"], "s2", True, run)) == "snapshot_failed"


def test_a_revert_runs_once_per_job(tmp_path: Path):
    ctx = fake_context(tmp_path)
    vm = running_vm(ctx.hypervisor)
    snapshots.snapshot_vm(ctx, vm, snapshot_run())
    ctx.hypervisor.stop(vm["id"], 1)
    revert = JobRun("job-2", {"snapshot": "s1"})
    assert snapshots.revert_vm(ctx, vm, revert) == {"host": "h1", "state": VmState.RUNNING, "snapshot": "s1",
                                                    "reused": False}  # fmt: skip
    ctx.hypervisor.stop(vm["id"], 1)
    # Re-delivered after it completed: the guest is not rewound a second time.
    assert snapshots.revert_vm(ctx, vm, revert)["reused"] is True
    assert ctx.hypervisor.domain(vm["id"]).state == VmState.STOPPED
    assert code_of(lambda: snapshots.revert_vm(ctx, vm, JobRun("job-3", {"snapshot": "nope"}))) == "snapshot_missing"


def test_deleting_a_snapshot_twice_succeeds_and_undo_removes_only_its_own(tmp_path: Path):
    ctx = fake_context(tmp_path)
    vm = running_vm(ctx.hypervisor)
    snapshots.snapshot_vm(ctx, vm, snapshot_run("job-1"))
    snapshots.undo_snapshot(ctx, vm, snapshot_run("job-2"))
    assert ctx.hypervisor.snapshot(vm["id"], "s1") is not None
    run = JobRun("job-3", {"snapshot": "s1"})
    assert snapshots.delete_snapshot_vm(ctx, vm, run)["existed"] is True
    assert snapshots.delete_snapshot_vm(ctx, vm, run) == {"host": "h1", "snapshot": "s1", "existed": False,
                                                          "snapshot_kind": None}  # fmt: skip


# --- migration ----------------------------------------------------------------------------------------------


def two_hosts(tmp_path: Path) -> tuple[WorkerContext, FakeHypervisor, FakeHosts]:
    hosts = FakeHosts()
    ctx = fake_context(tmp_path, hosts.add(SOURCE))
    return ctx, hosts.add(TARGET), hosts


def migration_of(ctx: WorkerContext, vm: dict, hosts: FakeHosts, run: JobRun | None = None, **params: object):
    run = run or JobRun("job-m", {"target": {"name": "h2", "address": "10.0.0.2"}, **params})
    return migration._Migration(ctx, vm, run, connect=hosts.connect)


def no_disks(vm: dict) -> Plan:
    return Plan(uuid=vm["id"], name=f"archq-{vm['name']}", domain_type="qemu", memory_mib=64, emulator=None,
                artifacts=(), directories=(), disks=())  # fmt: skip


def test_where_the_domain_is_decides_the_recorded_host(tmp_path: Path):
    ctx, target, hosts = two_hosts(tmp_path)
    vm = running_vm(ctx.hypervisor)
    where = migration_of(ctx, vm, hosts).located()
    assert where == {"host": "h1", "state": VmState.RUNNING, "located": {"h1": VmState.RUNNING, "h2": None}}
    ctx.hypervisor.migrate(vm["id"], TARGET, live=True)
    assert target.is_active(vm["id"]) is True
    assert migration_of(ctx, vm, hosts).located()["host"] == "h2"
    del hosts.by_uri[TARGET]
    lost = migration_of(ctx, vm, hosts).located()
    assert (lost["host"], lost["state"], lost["located"]["h2"]) == ("h1", VmState.UNKNOWN, "unreachable")


def test_a_live_migration_moves_the_running_domain(tmp_path: Path):
    ctx, target, hosts = two_hosts(tmp_path)
    vm = running_vm(ctx.hypervisor)
    result = migration_of(ctx, vm, hosts, max_bandwidth_mib_s=50)._live(no_disks(vm))
    assert (result["host"], result["state"], result["how"]) == ("h2", VmState.RUNNING, "live")
    assert ctx.hypervisor.migrations == [{"uuid": vm["id"], "uri": TARGET, "live": True, "storage": "none",
                                          "bandwidth_mib_s": 50}]  # fmt: skip
    assert ctx.hypervisor.domain(vm["id"]) is None and target.is_active(vm["id"]) is True


def test_a_cold_migration_stops_moves_and_starts_the_guest_there(tmp_path: Path):
    ctx, target, hosts = two_hosts(tmp_path)
    vm = running_vm(ctx.hypervisor)
    result = migration_of(ctx, vm, hosts, live=False)._cold(no_disks(vm))
    assert (result["host"], result["state"], result["how"]) == ("h2", VmState.RUNNING, "cold")
    assert ctx.hypervisor.migrations[0]["live"] is False and target.is_active(vm["id"]) is True


def test_a_failed_cold_migration_runs_the_guest_here_again_and_says_where_it_is(tmp_path: Path):
    ctx, target, hosts = two_hosts(tmp_path)
    vm = running_vm(ctx.hypervisor)
    ctx.hypervisor.failures["migrate"] = HypervisorError("migration_failed", "target refused")
    with pytest.raises(WorkerError) as failed:
        migration_of(ctx, vm, hosts, live=False)._cold(no_disks(vm))
    assert failed.value.code == "migration_failed" and "target refused" in str(failed.value)
    assert failed.value.result["host"] == "h1" and failed.value.result["state"] == VmState.RUNNING
    assert target.domain(vm["id"]) is None


def test_a_cancelled_live_migration_aborts_and_leaves_the_guest_running_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(migration, "PROGRESS_INTERVAL_S", 0.01)
    ctx, target, hosts = two_hosts(tmp_path)
    vm = running_vm(ctx.hypervisor)
    ctx.hypervisor.block_migrations = True
    ctx.hypervisor.jobs[vm["id"]] = {"type": 2, "data_total": 1000, "data_remaining": 400, "disk_remaining": 0}
    reports: list[dict] = []
    cancel = threading.Event()

    def progress(report: dict) -> None:
        reports.append(report)
        cancel.set()  # cancelled once the first figures arrived

    run = JobRun("job-m", {"target": {"name": "h2", "address": "10.0.0.2"}}, progress, cancel.is_set)
    with pytest.raises(JobCancelled) as cancelled:
        migration_of(ctx, vm, hosts, run)._live(no_disks(vm))
    assert cancelled.value.result["host"] == "h1" and cancelled.value.result["state"] == VmState.RUNNING
    assert target.domain(vm["id"]) is None
    assert reports[0] == {"percent": 60.0, "bytes_remaining": 400, "bytes_total": 1000, "phase": "copying memory"}


def test_the_target_signs_the_arrival_with_its_own_key_once_the_domain_is_there(tmp_path: Path):
    ctx, target, _hosts = two_hosts(tmp_path)
    vm_id = str(uuid.uuid4())
    ctx.hypervisor.ensure_running(vm_id, f"<domain type='qemu'><uuid>{vm_id}</uuid><name>archq-vm1</name></domain>")
    vm = {"id": vm_id, "name": "vm1", "arch": "amd64"}
    key = Ed25519PrivateKey.generate()
    there = dataclasses.replace(
        fake_context(tmp_path / "h2", target), host=dataclasses.replace(ctx.host, name="h2"), signing_key=key
    )
    # Not there yet: nothing to vouch for, so the job fails and nothing is signed.
    assert code_of(lambda: migration.migrate_in_vm(there, vm)) == "domain_missing"

    ctx.hypervisor.migrate(vm_id, TARGET, live=True)
    result = migration.migrate_in_vm(there, vm)
    assert result == {"host": "h2", "state": VmState.RUNNING, "domain": "archq-vm1", "accel": "tcg"}
    run = JobRun("job-in", {"from_host": "h1", "migrate_job": "job-m"})
    record = signed_record(there, JobKind.MIGRATE_IN, vm, run, result, "ab" * 32)
    assert record is not None
    payload = record["payload"]
    assert (payload["operation"], payload["host"], payload["job_id"], payload["prev"], payload["accel"]) == (
        "migrate_in",
        "h2",
        "job-in",
        "ab" * 32,
        "tcg",
    )
    assert payload["details"] == {"from_host": "h1", "migrate_job": "job-m"}
    assert payload["domain_xml_sha256"] == attestation.sha256_hex(target.xml_desc(vm_id, inactive=True))
    assert attestation.signature_valid(record, attestation.public_key_text(key.public_key()))
