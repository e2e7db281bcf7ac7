"""Migrating a VM to another host: the refusals before anything is queued, the choice of a target, the job
on the source host's queue, the target's signature of the arrival, and the reconciler's check of VMs that moved
while nobody could report it. What the worker's reports mean for where the VM is recorded is in job_effects.py."""

from __future__ import annotations

import logging

from sqlalchemy import select

from queues.arch import Arch
from queues.config import Settings
from queues.names import host_queue
from queues.networks import needs
from queues.placement import HostLoad
from queues.routing import offers_of
from queues.vocabulary import TERMINAL_JOB_STATES, Accel, JobKind, JobState, VmState
from web.errors import Conflict, Unprocessable
from web.extensions import db
from web.models import Host, Job, Vm
from web.services.hosts import host_loads, host_state
from web.services.job_effects import EFFECTS
from web.services.job_states import note
from web.services.vm_flags import vm_flags
from web.services.vms import CPU_RATIO, RAM_RATIO, _new_job, _require_host_up, _require_idle, get_vm, require_state

log = logging.getLogger(__name__)


def domain_type_of(vm: Vm) -> str:
    """libvirt's domain type the VM runs with: its accelerator, or `qemu` (TCG)."""
    return "qemu" if vm.accel in (None, Accel.TCG) else vm.accel


def domain_type_on(host: Host, arch: Arch) -> str | None:
    """The domain type archq gives a guest of `arch` on `host` (as workers/host.py decides), None if it
    cannot run it at all."""
    if Arch(host.arch) == arch:
        return host.accel if host.accel != Accel.TCG else "qemu"
    return "qemu" if arch.value in host.emulators else None


def refusal(
    vm: Vm, host: Host, load: HostLoad | None, settings: Settings, rehome: bool = False
) -> tuple[str, str] | None:
    """Why `host` cannot take `vm` now, as (code, message); None when it can. `rehome`: a cold move of an
    emulated VM to a native host, which may change the domain type (the worker redefines it there)."""
    name = host.name
    if name == vm.host:
        return "same_host", f"the VM already runs on {name}"
    state = host_state(host, settings)
    if state != "up":
        return f"target_{state}", f"host {name} is {state}; it takes no VMs"
    if not host.migration.get("address"):
        return "target_not_migratable", (
            f"host {name} reports no migration address (ARCHQ_MIGRATION_ADDRESS is not set there)"
        )
    arch = Arch(vm.arch)
    wanted, there = domain_type_of(vm), domain_type_on(host, arch)
    if there is None:
        if wanted != "qemu":
            return "target_arch_mismatch", (
                f"host {name} is {host.arch}; this {vm.arch} guest runs under {wanted} and needs a host that "
                f"accelerates {vm.arch}"
            )
        return "target_emulator_missing", f"host {name} ({host.arch}) has no emulator for {vm.arch} guests"
    if there != wanted and not rehome:
        return "target_accel_mismatch", (
            f"the VM's domain is type {wanted!r}; {vm.arch} guests on {name} are type {there!r}, and libvirt "
            "cannot change a domain's type by migrating it"
        )
    need = needs(vm.network or {}, (vm.network or {}).get("network", settings.nat_network))
    if need is not None and need not in offers_of(host.networks):
        code = "target_bridge_missing" if need[0] == "bridges" else "target_network_missing"
        what = f"bridge {need[1]!r}" if need[0] == "bridges" else f"libvirt network {need[1]!r}"
        return code, f"host {name} has no {what}, which the VM's NIC needs"
    if load is None or not load.fits(vm.vcpus, vm.memory_mib, CPU_RATIO, RAM_RATIO):
        free = (load.memory_mib * RAM_RATIO - load.used_memory_mib) if load else 0
        return "target_no_capacity", (
            f"host {name} cannot take {vm.vcpus} vCPU(s) and {vm.memory_mib} MiB ({free:.0f} MiB unallocated)"
        )
    return None


def target_refusals(
    vm: Vm, settings: Settings, rehome: bool = False
) -> list[tuple[Host, HostLoad, tuple[str, str] | None]]:
    """Every live host by name, with why it cannot take `vm` now as (code, message), or None when it can;
    `rehome`: only hosts native to the VM's arch, judged for a cold re-home."""
    rows = []
    for load in sorted(host_loads(settings), key=lambda load: load.host.name):
        if rehome and load.host.arch != Arch(vm.arch):
            continue
        host = db.session.get(Host, load.host.name)
        rows.append((host, load, refusal(vm, host, load, settings, rehome)))
    return rows


def choose_target(vm: Vm, requested: str | None, settings: Settings) -> Host:
    if requested:
        loads = {load.host.name: load for load in host_loads(settings)}
        host = db.session.get(Host, requested)
        if host is None:
            raise Unprocessable(f"no host named {requested!r}", fields={"target_host": [f"unknown host {requested!r}"]})
        refused = refusal(vm, host, loads.get(host.name), settings)
        if refused:
            raise Conflict(refused[1], code=refused[0], fields={"target_host": [refused[1]]})
        return host
    reasons: dict[str, list[str]] = {}
    fitting: list[tuple[float, str, Host]] = []
    for host, load, refused in target_refusals(vm, settings):
        if refused:
            if refused[0] != "same_host":
                reasons[host.name] = [refused[1]]
            continue
        fitting.append((load.load_after(vm.vcpus, vm.memory_mib), host.name, host))
    if not fitting:
        raise Conflict(
            f"no live host can take VM {vm.id} ({vm.arch}, {domain_type_of(vm)}): "
            + ("; ".join(r[0] for r in reasons.values()) or "there is no other live host"),
            code="no_target",
            fields=reasons,
        )
    return min(fitting, key=lambda item: (item[0], item[1]))[2]


def submit_migrate(vm_id: str, request: dict, settings: Settings, actor: str = "api") -> tuple[Vm, Job]:
    vm = get_vm(vm_id)
    if vm.state == VmState.MIGRATING:
        raise Conflict(f"VM {vm.id} is already migrating", code="already_migrating", fields={"state": [vm.state]})
    _require_idle(vm)
    live = request["live"]
    require_state(vm, JobKind.MIGRATE)
    if vm.host is None:
        raise Conflict(f"VM {vm.id} never reached a host", code="wrong_state", fields={"state": [vm.state]})
    if live and vm.state != VmState.RUNNING:
        raise Conflict(
            f"VM {vm.id} is {vm.state}: a live migration needs it running; use live: false to move it cold",
            code="vm_not_running",
            fields={"state": [vm.state]},
        )
    flags = vm_flags(vm)
    if live and not flags.migratable:
        raise Conflict(flags.reasons["migratable"], code="not_live_migratable", fields={"live": [True]})
    _require_host_up(vm.host, settings)
    target = choose_target(vm, request.get("target_host"), settings)
    params = {"live": live, "max_bandwidth_mib_s": request.get("max_bandwidth_mib_s")}
    return queue_migrate(vm, target, params, f"migrate {'live' if live else 'cold'}", actor)


def queue_migrate(vm: Vm, target: Host, params: dict, what: str, actor: str) -> tuple[Vm, Job]:
    """The migrate job (committed) on the source host's queue, moving `vm` to `target`."""
    params = {**params, "target": {"name": target.name, **target.migration}, "from_host": vm.host,
              "from_state": vm.state}  # fmt: skip
    job = _new_job(
        JobKind.MIGRATE, host_queue(vm.host), vm, actor=actor, host=vm.host, emulated=vm.emulated, params=params
    )
    job.events[0].message = f"{what} from {vm.host} to {target.name} accepted"
    vm.state = EFFECTS[JobKind.MIGRATE].during
    db.session.add(job)
    db.session.commit()
    return vm, job


def queue_arrival(job: Job) -> Job | None:
    """After `job`, a migration, succeeded with the VM on its target: a `migrate_in` job on the target's queue,
    whose worker signs the arrival with the target's own key (the source signed only `migrate_out`). Made in the
    transaction that records the success, after the source's record: it is made exactly once (a repeated report
    changes nothing), never lost (the outbox sweep publishes it if the conductor dies first), and it links after
    `migrate_out`. Until it ends the VM is busy, as with any job: its records stay one chain."""
    if job.kind != JobKind.MIGRATE or job.state != JobState.SUCCEEDED or job.vm is None:
        return None
    vm, params = job.vm, job.payload["params"]
    target = params["target"]["name"]
    if vm.host != target:
        return None
    params = {"from_host": params.get("from_host", job.host), "migrate_job": job.id}
    arrival = _new_job(
        JobKind.MIGRATE_IN, host_queue(target), vm, actor="conductor", host=target, emulated=vm.emulated, params=params
    )
    note(job, "conductor", f"{target} signs the VM's arrival: job {arrival.id}")
    db.session.add(arrival)
    return arrival


def arrival_of(job_id: str) -> str | None:
    """The `migrate_in` job that migration `job_id` left to publish, if it still is pending."""
    job = db.session.get(Job, job_id)
    if job is None or job.kind != JobKind.MIGRATE or job.vm_id is None:
        return None
    return db.session.scalar(
        select(Job.id).where(Job.vm_id == job.vm_id, Job.kind == JobKind.MIGRATE_IN, Job.state == JobState.PENDING)
    )


def adopt_moved_vms(host: Host) -> int:
    """The reconciler's location check: a VM recorded on another host, with no job in flight, whose domain
    this host reports running while its recorded host does not, is recorded here (a migration finished
    while nobody could report it)."""
    running = {d["uuid"] for d in host.domains if d.get("state") == VmState.RUNNING}
    if not running:
        return 0
    busy = set(
        db.session.scalars(select(Job.vm_id).where(Job.vm_id.in_(running), Job.state.not_in(TERMINAL_JOB_STATES)))
    )
    moved = 0
    vms = db.session.scalars(select(Vm).where(Vm.id.in_(running), Vm.host != host.name, Vm.state != VmState.DELETED))
    for vm in vms:
        if vm.id in busy:
            continue
        recorded = db.session.get(Host, vm.host) if vm.host else None
        if recorded is not None and any(
            d["uuid"] == vm.id and d.get("state") == VmState.RUNNING for d in recorded.domains
        ):
            log.error("VM %s reported running on both %s and %s; left on %s", vm.id, vm.host, host.name, vm.host)
            continue
        log.warning("VM %s recorded on %s runs on %s; recorded there now", vm.id, vm.host, host.name)
        vm.host, vm.state = host.name, VmState.RUNNING
        moved += 1
    if moved:
        db.session.commit()
    return moved
