"""The reconciler: what each host's libvirt really runs (from its heartbeat) against what archq wants.

- A VM archq wants `running` whose domain is shut off or gone: restarted when its `restart_policy` says so
  (`always`; `on-failure` unless the guest shut itself down), otherwise marked `stopped` (or `unknown`
  when the domain is gone).
- A VM archq has `stopped` that runs after all: marked `running`.
- Domains archq does not know are reported as unmanaged on the host, never touched.
- VMs on a host that is down are `unknown`, not `running`.
VMs with a job in flight are left alone: the job will say what happened.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import select

from queues.config import Settings
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
