"""Snapshot jobs: every refusal is decided here, against the VM, its host's libvirt and the snapshots archq
knows, before anything is stored or queued (what a finished snapshot job changes is in job_effects.py).

Policy (README, Snapshots): archq takes only internal snapshots, in the VM's qcow2 disk. `memory: true`
needs the VM running (RAM and device state are saved; a revert resumes the guest there); `memory: false`
needs it stopped (libvirt 9.0 cannot take an internal disk-only snapshot of a running domain, and archq
takes no external ones: libvirt < 9.9 cannot revert them, and one chain never mixes the two kinds)."""

from __future__ import annotations

from sqlalchemy import select

from queues.config import Settings
from queues.names import host_queue
from queues.vocabulary import JobKind, VmState
from web.errors import Conflict, NotFound
from web.extensions import db
from web.models import Host, Job, Snapshot, Vm
from web.paging import Page, keyset_page
from web.services.vm_flags import vm_flags
from web.services.vms import _new_job, _require_host_up, _require_idle, get_vm, require_state


def list_snapshots(vm_id: str) -> list[Snapshot]:
    return snapshot_page(vm_id, {}, None, None).rows


def snapshot_page(vm_id: str, filters: dict, after: list[str] | None, limit: int | None) -> Page[Snapshot]:
    """A VM's snapshots matching each given filter (state, memory), oldest first; every one without a limit."""
    query = select(Snapshot).where(Snapshot.vm_id == get_vm(vm_id).id)
    for name, value in filters.items():
        query = query.where(getattr(Snapshot, name) == value)
    return keyset_page(query, (Snapshot.created_at, Snapshot.id), after, limit)


def get_snapshot(vm: Vm, name: str) -> Snapshot:
    snapshot = _find(vm, name)
    if snapshot is None:
        raise NotFound(f"VM {vm.id} has no snapshot named {name!r}")
    return snapshot


def _find(vm: Vm, name: str) -> Snapshot | None:
    return db.session.scalar(select(Snapshot).where(Snapshot.vm_id == vm.id, Snapshot.name == name))


def _support(vm: Vm) -> dict[str, bool]:
    host = db.session.get(Host, vm.host) if vm.host else None
    return (host.snapshot_support or {}) if host is not None else {}


def _on_a_host(vm: Vm, settings: Settings) -> None:
    if vm.host is None:
        raise Conflict(f"VM {vm.id} never reached a host", code="wrong_state", fields={"state": [vm.state]})
    _require_host_up(vm.host, settings)


def _job(kind: JobKind, vm: Vm, params: dict, actor: str) -> Job:
    return _new_job(kind, host_queue(vm.host), vm, actor=actor, host=vm.host, emulated=vm.emulated, params=params)


def submit_snapshot(vm_id: str, request: dict, settings: Settings, actor: str = "api") -> tuple[Vm, Job, Snapshot]:
    vm = get_vm(vm_id)
    name, memory = request["name"], request["memory"]
    _require_idle(vm)
    _on_a_host(vm, settings)
    flags = vm_flags(vm, _support(vm))
    if not flags.memory_snapshot_ok:
        # The same limits hold for disk-only internal snapshots: a qcow2 disk without UEFI pflash.
        raise Conflict(
            f"cannot snapshot VM {vm.id}: {flags.reasons['memory_snapshot_ok']}", code="snapshot_unsupported"
        )
    if vm.snapshot_kind not in (None, "internal"):
        raise Conflict(
            f"VM {vm.id} already has {vm.snapshot_kind} snapshots; archq takes internal ones and never mixes the "
            "two kinds in one chain (later deletes break); delete its snapshots first",
            code="snapshot_chain_mixed",
        )
    needed = VmState.RUNNING if memory else VmState.STOPPED
    if vm.state != needed:
        why = (
            "a snapshot with memory saves a running guest's RAM"
            if memory
            else "libvirt 9.0 takes an internal disk-only snapshot only of a stopped VM; stop it, or take the "
            "snapshot with memory: true"
        )
        raise Conflict(f"VM {vm.id} is {vm.state}; {why}", code="wrong_state", fields={"state": [vm.state]})
    existing = _find(vm, name)
    if existing is not None and existing.state != "failed":
        raise Conflict(f"VM {vm.id} already has a snapshot named {name!r} ({existing.state})", code="snapshot_exists")
    if existing is not None:
        # A failed attempt left only its record: the name is free again.
        db.session.delete(existing)
        db.session.flush()
    job = _job(JobKind.SNAPSHOT, vm, {"snapshot": name, "memory": memory}, actor)
    snapshot = Snapshot(
        vm_id=vm.id, project=vm.project, name=name, memory=memory, kind="internal", state="creating", job_id=job.id
    )
    db.session.add_all([job, snapshot])
    db.session.commit()
    return vm, job, snapshot


def submit_revert(vm_id: str, name: str, settings: Settings, actor: str = "api") -> tuple[Vm, Job]:
    vm = get_vm(vm_id)
    snapshot = get_snapshot(vm, name)
    _require_idle(vm)
    if snapshot.state != "ready":
        raise Conflict(
            f"snapshot {name!r} of VM {vm.id} is {snapshot.state}; only a ready snapshot can be reverted to",
            code="snapshot_not_ready",
            fields={"state": [snapshot.state]},
        )
    require_state(vm, JobKind.REVERT)
    _on_a_host(vm, settings)
    flags = vm_flags(vm, _support(vm))
    if not flags.revertable:
        raise Conflict(f"cannot revert VM {vm.id}: {flags.reasons['revertable']}", code="revert_unsupported")
    job = _job(JobKind.REVERT, vm, {"snapshot": name, "memory": snapshot.memory}, actor)
    snapshot.last_job_id = job.id
    db.session.add(job)
    db.session.commit()
    return vm, job


def submit_snapshot_delete(vm_id: str, name: str, settings: Settings, actor: str = "api") -> tuple[Vm, Job]:
    vm = get_vm(vm_id)
    snapshot = get_snapshot(vm, name)
    _require_idle(vm)
    _on_a_host(vm, settings)
    job = _job(JobKind.SNAPSHOT_DELETE, vm, {"snapshot": name, "memory": snapshot.memory}, actor)
    snapshot.state, snapshot.last_job_id = "deleting", job.id
    db.session.add(job)
    db.session.commit()
    return vm, job
