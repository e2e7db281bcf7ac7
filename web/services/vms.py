"""Submitting VM jobs: validate against the current state, store the VM and its job, route the job."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from queues import messages
from queues.arch import Arch
from queues.config import Settings
from queues.names import Task, host_queue
from queues.routing import Emulation, route_create
from web.errors import Conflict, NotFound, Unavailable
from web.extensions import db
from web.models import Job, JobEvent, Vm
from web.services.hosts import live_hosts
from web.services.job_states import PENDING, TERMINAL, complete_without_worker

LIVE_VM_STATES = ("pending", "creating", "running", "stopped", "deleting", "unknown", "failed")


def get_vm(vm_id: str) -> Vm:
    vm = db.session.get(Vm, vm_id)
    if vm is None or vm.state == "deleted":
        raise NotFound(f"no VM with id {vm_id}")
    return vm


def _new_job(kind: str, task: str, queue: str, vm: Vm, *, actor: str, host: str | None, emulated: bool) -> Job:
    job_id = str(uuid.uuid4())
    token = uuid.uuid4().hex
    payload = messages.job_message.dump(
        {
            "job_id": job_id,
            "token": token,
            "kind": kind,
            "vm": {
                "id": vm.id,
                "name": vm.name,
                "arch": vm.arch,
                "vcpus": vm.vcpus,
                "memory_mib": vm.memory_mib,
                "image": vm.image,
                "emulated": emulated,
            },
        }
    )
    job = Job(
        id=job_id,
        kind=kind,
        state=PENDING,
        queue=queue,
        host=host,
        vm=vm,
        task=task,
        payload=payload,
        token=token,
        attempts=0,
        emulated=emulated,
        result={},
    )
    job.events.append(JobEvent(state=PENDING, actor=actor, message=f"{kind} accepted for queue {queue}"))
    return job


def submit_create(request: dict, settings: Settings, actor: str = "api") -> tuple[Vm, Job]:
    """Store a new VM and its create job (committed, `pending`); the caller hands the job to the outbox."""
    taken = db.session.scalar(select(Vm.id).where(Vm.name == request["name"], Vm.state.in_(LIVE_VM_STATES)).limit(1))
    if taken:
        raise Conflict(f"a VM named {request['name']!r} already exists ({taken})", code="name_taken")
    arch = Arch(request["arch"])
    route = route_create(arch, Emulation(request["emulation"]), live_hosts(settings))
    if route.waiting_for and settings.refuse_when_no_worker:
        raise Unavailable(
            f"cannot run {arch} guests now: {route.waiting_for}",
            retry_after_s=int(settings.heartbeat_interval_s * 2),
            code="no_worker",
        )
    vm = Vm(
        id=str(uuid.uuid4()),
        name=request["name"],
        arch=arch.value,
        vcpus=request["vcpus"],
        memory_mib=request["memory_mib"],
        image=request["image"],
        state="pending",
        emulated=route.emulated,
        emulation_warning=route.warning,
        accel=route.accel,
    )
    job = _new_job("create", Task.CREATE_VM, route.queue, vm, actor=actor, host=None, emulated=route.emulated)
    job.waiting_for = route.waiting_for
    db.session.add_all([vm, job])
    db.session.commit()
    return vm, job


def submit_delete(vm_id: str, settings: Settings, actor: str = "api") -> tuple[Vm, Job]:
    vm = get_vm(vm_id)
    busy = db.session.scalar(select(Job).where(Job.vm_id == vm.id, Job.state.not_in(TERMINAL)).limit(1))
    if busy is not None:
        raise Conflict(
            f"VM {vm.id} has a {busy.kind} job in state {busy.state} ({busy.id}); wait for it to finish",
            code="vm_busy",
            fields={"state": [vm.state]},
        )
    if vm.state == "deleting":
        raise Conflict(f"VM {vm.id} is already being deleted", code="wrong_state", fields={"state": [vm.state]})
    if vm.host is None:
        # The VM never reached a host: nothing exists anywhere to destroy.
        job = _new_job("delete", Task.DELETE_VM, "", vm, actor=actor, host=None, emulated=vm.emulated)
        complete_without_worker(job, actor, "the VM never reached a host; nothing to destroy")
        vm.state = "deleted"
    else:
        job = _new_job(
            "delete", Task.DELETE_VM, host_queue(vm.host), vm, actor=actor, host=vm.host, emulated=vm.emulated
        )
        vm.state = "deleting"
    db.session.add(job)
    db.session.commit()
    return vm, job
