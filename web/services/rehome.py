"""Re-homing an emulated VM: when a host native to its architecture is live, the VM offers to move there
(`rehome_available`, `rehome_target`), `POST /api/v1/vms/<id>/rehome` queues the move, and a VM with
`rehome: "auto"` is moved at its next stop. The move is a cold migration: QEMU cannot live-migrate between TCG
and KVM (the CPU state and the domain type differ), so the guest is shut down, its disk and definition move, and
the target's worker redefines it with the domain type and CPU of a native guest (workers/migration.py)."""

from __future__ import annotations

from sqlalchemy import false, select

from queues.arch import Arch
from queues.config import Settings
from queues.vocabulary import JobKind, JobState, VmState
from web.errors import Conflict
from web.extensions import db
from web.models import Host, Job, Vm
from web.services.capacity import live_since
from web.services.migrations import domain_type_on, queue_migrate, target_refusals
from web.services.vm_flags import REHOME_AUTO
from web.services.vms import _require_host_up, _require_idle, get_vm

# The VM states a re-home starts from: a running guest is shut down first, a stopped one just moves.
REHOMABLE_STATES = (VmState.RUNNING, VmState.STOPPED)
NOT_LIVE = "live migration between TCG and KVM is not supported by QEMU, so the VM moves cold (it is shut down)"


def rehome_target(vm: Vm, settings: Settings) -> Host | None:
    """The least loaded live native host that could take the emulated `vm` now, or None."""
    if not vm.emulated or vm.host is None or vm.state not in REHOMABLE_STATES:
        return None
    # One indexed probe first: most of the time no native host is live, and every VM in a list asks.
    natives = select(Host.name).where(
        Host.arch == vm.arch, Host.last_seen >= live_since(settings), Host.drained == false()
    )
    if db.session.execute(natives.limit(1)).first() is None:
        return None
    fitting = [
        (load.load_after(vm.vcpus, vm.memory_mib), host.name, host)
        for host, load, refused in target_refusals(vm, settings, rehome=True)
        if refused is None
    ]
    return min(fitting, key=lambda item: item[:2])[2] if fitting else None


def submit_rehome(vm_id: str, settings: Settings, actor: str = "api") -> tuple[Vm, Job]:
    vm = get_vm(vm_id)
    if not vm.emulated:
        raise Conflict(f"VM {vm.id} is not emulated: it already runs on a native host", code="not_emulated")
    _require_idle(vm)
    if vm.state not in REHOMABLE_STATES:
        raise Conflict(
            f"VM {vm.id} is {vm.state}: it can be re-homed when running or stopped",
            code="wrong_state",
            fields={"state": [vm.state]},
        )
    _require_host_up(vm.host, settings)
    target = rehome_target(vm, settings)
    if target is None:
        message = f"no live {vm.arch} host can take VM {vm.id} now; it stays emulated on {vm.host}"
        raise Conflict(message, code="no_native_host")
    return queue_rehome(vm, target, actor)


def queue_rehome(vm: Vm, target: Host, actor: str) -> tuple[Vm, Job]:
    domain_type = domain_type_on(target, Arch(vm.arch))
    params = {
        "live": False,
        "rehome": {"host": target.name, "accel": target.accel, "domain_type": domain_type, "cpu_mode": vm.cpu_mode},
    }
    return queue_migrate(vm, target, params, f"rehome to native host (cold: {NOT_LIVE})", actor)


def rehome_after_stop(job_id: str, settings: Settings) -> str | None:
    """After a stop job succeeded: a stopped emulated VM with `rehome: "auto"` moves to a native host now, if
    one can take it. Returns the re-home job's id, or None when nothing is queued (then the VM keeps offering
    the move and tries again at its next stop)."""
    job = db.session.get(Job, job_id)
    if job is None or job.kind != JobKind.STOP or job.state != JobState.SUCCEEDED or job.vm is None:
        return None
    vm = job.vm
    if vm.rehome != REHOME_AUTO or not vm.emulated or vm.state != VmState.STOPPED:
        return None
    try:
        _require_idle(vm)
    except Conflict:
        return None
    target = rehome_target(vm, settings)
    if target is None:
        return None
    return queue_rehome(vm, target, actor="rehome:auto")[1].id
