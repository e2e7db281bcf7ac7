"""Snapshot operations: take, revert and delete internal snapshots of a VM's qcow2 disk.

A snapshot's libvirt name is the name the user gave it; its description carries the id of the job that took
it, so a re-run of that job (a worker killed mid-snapshot, a re-delivered message) finds its own snapshot and
succeeds without taking a second one. archq takes only internal snapshots (see README, Snapshots)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TypeGuard

from queues.vocabulary import VmState
from workers.errors import WorkerError
from workers.hypervisor import HypervisorError, SnapshotInfo
from workers.job_run import JobRun, needs_job
from workers.operations import WorkerContext

# libvirt versions (major * 1_000_000 + minor * 1000 + release) from which a snapshot feature works.
EXTERNAL_REVERT_SINCE = 9_009_000
PROGRESS_INTERVAL_S = 0.5


def snapshot_support(libvirt_version: int) -> dict[str, bool]:
    """What snapshots can do on a host with this libvirt, as its heartbeat reports it."""
    return {
        # Internal qcow2 snapshots, with memory of a running domain or disk-only of a shut-off one.
        "internal": True,
        "internal_memory": True,
        "external": True,
        "external_revert": libvirt_version >= EXTERNAL_REVERT_SINCE,
    }


def job_marker(job_id: str) -> str:
    return f"archq job {job_id}"


def _ours(info: SnapshotInfo | None, run: JobRun) -> TypeGuard[SnapshotInfo]:
    return info is not None and info.description == job_marker(run.job_id)


def _result(ctx: WorkerContext, vm_id: str, info: SnapshotInfo, *, reused: bool) -> dict:
    domain = ctx.hypervisor.domain(vm_id)
    return {
        "host": ctx.host.name,
        "state": domain.state if domain else VmState.UNKNOWN,
        "snapshot": info.name,
        "memory": info.memory,
        "snapshot_kind": "internal",
        "created_at": info.created_at,
        "reused": reused,
    }


@needs_job
def snapshot_vm(ctx: WorkerContext, vm: dict, run: JobRun) -> dict:
    vm_id, name, memory = str(vm["id"]), run.params["snapshot"], bool(run.params["memory"])
    try:
        existing = ctx.hypervisor.snapshot(vm_id, name)
        if _ours(existing, run):
            run.progress({"phase": "done", "percent": 100})
            return _result(ctx, vm_id, existing, reused=True)
        if existing is not None:
            raise WorkerError(
                "snapshot_exists",
                f"VM {vm_id} already has a snapshot {name!r} on host {ctx.host.name} that archq did not take in "
                "this job; delete it (virsh snapshot-delete) or choose another name",
            )
        domain = ctx.hypervisor.domain(vm_id)
        wanted = ("running", "paused") if memory else ("stopped",)
        if domain is None or domain.state not in wanted:
            raise WorkerError(
                "wrong_state",
                f"a {'memory' if memory else 'disk-only'} snapshot needs the VM "
                f"{'running' if memory else 'stopped'}; on host {ctx.host.name} it is "
                f"{domain.state if domain else 'gone'}",
            )
        info = _take(ctx, vm_id, name, memory, run)
    except HypervisorError as exc:
        raise exc.saying(f"{exc}; host {ctx.host.name}") from exc
    run.progress({"phase": "done", "percent": 100})
    return _result(ctx, vm_id, info, reused=False)


def _take(ctx: WorkerContext, vm_id: str, name: str, memory: bool, run: JobRun) -> SnapshotInfo:
    run.progress({"phase": "saving", "percent": 0})
    done = threading.Event()

    def watch() -> None:
        # libvirt 9.0 reports no job statistics for internal snapshots; newer ones and external snapshots do.
        while not done.wait(PROGRESS_INTERVAL_S):
            figures = ctx.hypervisor.job_progress(vm_id)
            if figures:
                run.progress({"phase": "saving", **figures})

    watcher = threading.Thread(target=watch, name=f"progress-{run.job_id[:8]}", daemon=True)
    watcher.start()
    try:
        return ctx.hypervisor.create_internal_snapshot(vm_id, name, job_marker(run.job_id), memory)
    except HypervisorError:
        # A killed earlier run of this job left libvirtd taking the snapshot; libvirt made this call wait for
        # it and then refused the duplicate name. The snapshot is this job's: done.
        again = ctx.hypervisor.snapshot(vm_id, name)
        if _ours(again, run):
            return again
        raise
    finally:
        done.set()
        watcher.join()


def _revert_marker(ctx: WorkerContext, vm_id: str) -> Path:
    # Holds the id of the last revert job that completed, so its re-run does not rewind the guest again.
    return ctx.vm_dir(vm_id) / "last-revert"


@needs_job
def revert_vm(ctx: WorkerContext, vm: dict, run: JobRun) -> dict:
    vm_id, name = str(vm["id"]), run.params["snapshot"]
    marker = _revert_marker(ctx, vm_id)
    try:
        if marker.exists() and marker.read_text().strip() == run.job_id:
            domain = ctx.hypervisor.domain(vm_id)
            return {"host": ctx.host.name, "state": domain.state if domain else VmState.UNKNOWN, "snapshot": name,
                    "reused": True}  # fmt: skip
        if ctx.hypervisor.snapshot(vm_id, name) is None:
            raise WorkerError("snapshot_missing", f"VM {vm_id} has no snapshot {name!r} on host {ctx.host.name}")
        run.progress({"phase": "reverting"})
        info = ctx.hypervisor.revert_snapshot(vm_id, name)
    except HypervisorError as exc:
        raise exc.saying(f"{exc}; host {ctx.host.name}") from exc
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(run.job_id)
    run.progress({"phase": "done"})
    return {"host": ctx.host.name, "state": info.state, "snapshot": name, "reused": False}


@needs_job
def delete_snapshot_vm(ctx: WorkerContext, vm: dict, run: JobRun) -> dict:
    """Removes the snapshot from libvirt (internal: from the qcow2 file). Deleting what is gone succeeds."""
    vm_id, name = str(vm["id"]), run.params["snapshot"]
    try:
        existed = ctx.hypervisor.delete_snapshot(vm_id, name)
        remaining = ctx.hypervisor.snapshots(vm_id) if ctx.hypervisor.domain(vm_id) else []
    except HypervisorError as exc:
        raise exc.saying(f"{exc}; host {ctx.host.name}") from exc
    return {
        "host": ctx.host.name,
        "snapshot": name,
        "existed": existed,
        "snapshot_kind": "internal" if remaining else None,
    }


@needs_job
def undo_snapshot(ctx: WorkerContext, vm: dict, run: JobRun) -> dict:
    """A cancelled or timed-out snapshot job leaves no snapshot behind."""
    snapshot = ctx.hypervisor.snapshot(str(vm["id"]), run.params["snapshot"])
    if _ours(snapshot, run):
        ctx.hypervisor.delete_snapshot(str(vm["id"]), run.params["snapshot"])
    return {}
