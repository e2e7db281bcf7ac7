"""The reconciler: what each host's libvirt really runs (from its heartbeat) against what archq wants.

- A VM archq wants `running` whose domain is shut off or gone: restarted when its `restart_policy` says so
  (`always`; `on-failure` unless the guest shut itself down), otherwise marked `stopped` (or `unknown`
  when the domain is gone).
- A VM archq has `stopped` that runs after all: marked `running`.
- Domains archq does not know are reported as unmanaged on the host, never touched.
- VMs on a host that is down are `unknown`, not `running`; once it is up again, the sweep reconciles them
  against its last full beat (`reconcile_returned_hosts`).
VMs with a job in flight are left alone: the job will say what happened.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import func, select

from queues.config import Settings
from queues.liveness import FULL_BEAT_EVERY_S
from queues.vocabulary import LOCATED_VM_STATES, TERMINAL_JOB_STATES, JobKind, VmState
from web.extensions import db
from web.models import Host, Job, Vm, utcnow
from web.services.vms import submit_action

log = logging.getLogger(__name__)

SETTLED = (VmState.RUNNING, VmState.STOPPED, VmState.UNKNOWN)


def _wants_restart(vm: Vm, domain: dict | None) -> bool:
    if domain is None:
        return False
    if vm.restart_policy == "always":
        return True
    return vm.restart_policy == "on-failure" and domain.get("reason") != "shutdown"


def reconcile_host(host: Host, settings: Settings) -> list[str]:
    """Returns the ids of start jobs it submitted (the caller dispatches them)."""
    domains = {d["uuid"]: d for d in host.domains}
    busy = set(
        db.session.scalars(select(Job.vm_id).where(Job.host == host.name, Job.state.not_in(TERMINAL_JOB_STATES)))
    )
    # A heartbeat may have been taken before a job that just ended changed the VM: give changes two beats.
    settled_before = utcnow() - timedelta(seconds=2 * settings.heartbeat_interval_s)
    vms = db.session.scalars(
        select(Vm).where(Vm.host == host.name, Vm.state.in_(SETTLED), Vm.updated_at <= settled_before)
    ).all()
    restarts: list[str] = []
    for vm in vms:
        if vm.id in busy:
            continue
        domain = domains.get(vm.id)
        if domain is not None and domain["state"] == VmState.RUNNING:
            vm.state = VmState.RUNNING
            continue
        if vm.desired_state == VmState.RUNNING and _wants_restart(vm, domain):
            log.warning("VM %s on %s is not running (%s); restart_policy %s restarts it", vm.id, host.name, domain,
                        vm.restart_policy)  # fmt: skip
            vm.state = VmState.STOPPED
            _vm, job = submit_action(vm.id, JobKind.START, settings, actor="reconciler")
            restarts.append(job.id)
        elif vm.state != (VmState.STOPPED if domain else VmState.UNKNOWN):
            log.warning("VM %s on %s is %s", vm.id, host.name, domain["state"] if domain else "gone from libvirt")
            vm.state = VmState.STOPPED if domain else VmState.UNKNOWN
    db.session.commit()
    return restarts


def mark_down_hosts_unknown(settings: Settings) -> int:
    since = utcnow() - timedelta(seconds=settings.host_down_after_s)
    down = select(Host.name).where(Host.last_seen < since)
    vms = db.session.scalars(select(Vm).where(Vm.host.in_(down), Vm.state.in_(LOCATED_VM_STATES))).all()
    for vm in vms:
        vm.state = VmState.UNKNOWN
    db.session.commit()
    return len(vms)


def reconcile_returned_hosts(settings: Settings) -> tuple[int, list[str]]:
    """Reconcile the up hosts that have VMs marked `unknown` since their last FULL_BEAT_EVERY_S: (how many of
    those VMs are known again, the start jobs submitted). Heartbeats reconcile only when they are full, and a
    host that comes back sends one at once, while the VMs it left `unknown` are too fresh for it (changed within
    two beats); its later beats, unchanged, are liveness marks (queues/liveness.py). Without this sweep such a
    VM stayed `unknown` until the host's next periodic full beat, minutes later (seen under load after a
    worker restart: the VM's next snapshot was refused)."""
    now = utcnow()
    since = now - timedelta(seconds=settings.host_down_after_s)
    unknown = select(Vm.id, Vm.host).where(
        Vm.state == VmState.UNKNOWN,
        Vm.updated_at >= now - timedelta(seconds=FULL_BEAT_EVERY_S),
        Vm.host.in_(select(Host.name).where(Host.last_seen >= since)),
    )
    by_host: dict[str, list[str]] = {}
    for vm_id, host in db.session.execute(unknown):
        by_host.setdefault(host, []).append(vm_id)
    restarts: list[str] = []
    for name in sorted(by_host):
        host = db.session.get(Host, name)
        if host is not None:
            restarts += reconcile_host(host, settings)
    ids = [vm_id for vm_ids in by_host.values() for vm_id in vm_ids]
    still = db.session.scalar(select(func.count()).where(Vm.id.in_(ids), Vm.state == VmState.UNKNOWN)) if ids else 0
    return len(ids) - (still or 0), restarts
