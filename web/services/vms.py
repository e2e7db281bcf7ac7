"""Submitting VM jobs: validate against the current state, store the VM and its job, route the job."""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import selectinload

from queues import messages
from queues.arch import Arch
from queues.config import Settings
from queues.emulation import footprint_mib
from queues.guest_config import user_data_digest, validate_hostname
from queues.names import host_queue
from queues.networks import NetworkMode, mac_for, needs
from queues.placement import Demand, NoHostFits, NoHostOffers, Placement, no_host_offers, place
from queues.routing import Emulation, emulation_warning, route_create
from queues.vocabulary import TERMINAL_JOB_STATES, Accel, JobKind, JobState, VmState
from web.errors import ApiError, Conflict, NotFound, Unavailable, Unprocessable, error_body
from web.extensions import db
from web.group_commit import GroupCommit
from web.models import DEFAULT_PROJECT, Host, Job, JobEvent, Vm
from web.paging import Page, keyset_page
from web.services import attestations, capacity, projects
from web.services.capacity import CPU_RATIO, RAM_RATIO
from web.services.cpu_modes import check_cpu_mode, check_tcg_cpu, tcg_cpu_note
from web.services.hosts import fleet_cache, host_state
from web.services.images import artifact_for
from web.services.job_effects import EFFECTS, gone
from web.services.job_states import complete_without_worker
from web.services.vm_flags import REHOME_MANUAL

# A create whose chosen host filled up before its reservation (web/services/capacity.py) is placed again
# elsewhere, this many times at most.
PLACEMENT_ATTEMPTS = 5


def get_vm(vm_id: str, *, deleted: bool = False) -> Vm:
    """A VM of the current scope (another project's is not found). `deleted`: a deleted VM is found too (its
    history, e.g. its attestations, outlives it)."""
    vm = db.session.get(Vm, vm_id)
    if vm is None or (vm.state == VmState.DELETED and not deleted) or not projects.visible(vm.project):
        raise NotFound(f"no VM with id {vm_id}")
    return vm


def host_name(vm: Vm) -> str:
    """The name the VM's host knows it by (its libvirt domain is `archq-<this>`): unique on a host, since two
    projects may each have a VM of one name. A VM name has no '.', so `<project>.<name>` meets no other VM's;
    `default`'s VMs keep their plain names (their domains existed before projects)."""
    return vm.name if vm.project == DEFAULT_PROJECT else f"{vm.project}.{vm.name}"


def _new_job(
    kind: JobKind, queue: str, vm: Vm, *, actor: str, host: str | None, emulated: bool, params: dict | None = None
) -> Job:
    """A pending job with its message; `params`: what the kind needs beyond the VM (see JobMessage)."""
    job_id = str(uuid.uuid4())
    token = uuid.uuid4().hex
    payload = messages.job_message.dump(
        {
            "job_id": job_id,
            "token": token,
            "kind": kind,
            "vm": {
                "id": vm.id,
                "name": host_name(vm),
                "arch": vm.arch,
                "vcpus": vm.vcpus,
                "memory_mib": vm.memory_mib,
                "image": vm.image,
                "emulated": emulated,
                "cpu_mode": vm.cpu_mode,
                "tcg_cpu": vm.tcg_cpu,
                "artifact": vm.artifact,
                "network": vm.network,
                "mac": vm.mac,
                "hostname": vm.hostname,
                "ssh_authorized_keys": vm.ssh_authorized_keys,
                # Only a create builds the seed; no other job carries the (possibly secret) user data.
                "user_data": vm.user_data if kind == JobKind.CREATE else None,
                "disk_gib": vm.disk_gib,
            },
            "params": params or {},
            # Jobs of one VM run one at a time, so its chain's head cannot move before this job reports.
            "chain_head": None if kind == JobKind.CREATE else attestations.chain_head(vm.id),
        }
    )
    job = Job(
        id=job_id,
        project=vm.project,
        kind=kind,
        state=JobState.PENDING,
        queue=queue,
        host=host,
        vm=vm,
        task=kind.task,
        payload=payload,
        token=token,
        attempts=0,
        emulated=emulated,
        result={},
    )
    job.events.append(JobEvent(state=JobState.PENDING, actor=actor, message=f"{kind} accepted for queue {queue}"))
    return job


@dataclass(frozen=True)
class Decision:
    """Where a create goes and what the submitter is told about it."""

    queue: str
    emulated: bool
    accel: str | None
    warning: str = ""
    waiting_for: str = ""
    host: str | None = None


def _pinned(request: dict, arch: Arch, settings: Settings, demand: Demand) -> Decision:
    name = request["host"]
    host = db.session.get(Host, name)
    if host is None:
        raise Unprocessable(f"no host named {name!r}", fields={"host": [f"unknown host {name!r}"]})
    emulators = [Arch(a) for a in host.emulators]
    native = Arch(host.arch) == arch
    if not native and (arch not in emulators or request["emulation"] == Emulation.NATIVE_ONLY):
        raise Unprocessable(
            f"host {name!r} is {host.arch} and cannot run {arch} guests"
            + ("" if native or arch not in emulators else " natively (the request said emulation: native_only)"),
            fields={"host": [f"host {name!r} cannot run {arch} guests"]},
        )
    state = host_state(host, settings)
    if state != "up":
        raise Conflict(f"host {name!r} is {state}; it takes no new VMs", code=f"host_{state}")
    demand = dataclasses.replace(demand, emulation=Emulation.ALLOW)
    try:
        place(Placement.LEAST_LOADED, demand, capacity.host_load(name), cpu_ratio=CPU_RATIO, ram_ratio=RAM_RATIO)
    except NoHostOffers as exc:
        raise _no_network(demand, f"host {name!r}: {exc}") from exc
    except NoHostFits as exc:
        raise Unavailable(f"host {name!r} cannot take this VM: {exc}", retry_after_s=60, code="no_capacity") from exc
    return _on_host(host.name, Arch(host.arch), host.accel, arch)


def _on_host(name: str, host_arch: Arch, host_accel: str, arch: Arch) -> Decision:
    emulated = host_arch != arch
    return Decision(
        queue=host_queue(name),
        emulated=emulated,
        accel=Accel.TCG if emulated else host_accel,
        warning=emulation_warning(arch) if emulated else "",
        host=name,
    )


def _no_network(demand: Demand, message: str) -> Conflict:
    assert demand.need is not None
    code = "bridge_unavailable" if demand.need[0] == "bridges" else "network_unavailable"
    return Conflict(message, code=code, fields={"network": [message]})


def decide(
    request: dict,
    arch: Arch,
    settings: Settings,
    need: tuple[str, str] | None = None,
    exclude: frozenset[str] = frozenset(),
) -> Decision:
    """Where the create goes; `exclude`: hosts found full since they were chosen."""
    emulation = Emulation(request["emulation"])
    demand = Demand(
        arch,
        request["vcpus"],
        request["memory_mib"],
        emulation,
        need=need,
        disk_mib=(request.get("disk_gib") or 0) * 1024,
    )
    if request.get("host"):
        return _pinned(request, arch, settings, demand)
    strategy = Placement(request["placement"])
    if strategy == Placement.QUEUE:
        fleet = fleet_cache().get(settings)
        route = route_create(arch, emulation, fleet)
        if route.waiting_for and settings.refuse_when_no_worker:
            raise Unavailable(
                f"cannot run {arch} guests now: {route.waiting_for}",
                retry_after_s=int(settings.heartbeat_interval_s * 2),
                code="no_worker",
            )
        offering, consumers = fleet.coverage(route.queue, need)
        if offering == consumers:
            return Decision(route.queue, route.emulated, route.accel, route.warning, route.waiting_for)
        if offering == 0:
            raise _no_network(demand, no_host_offers(need, arch))
        # Only some of the queue's hosts have what the NIC needs: any worker of the queue could take the job, so
        # the VM is placed on one that has it instead.
        strategy = Placement.LEAST_LOADED
        if route.emulated:
            demand = dataclasses.replace(demand, emulation=Emulation.PREFER_NATIVE)
    try:
        chosen = capacity.choose(strategy, capacity.Search(demand, capacity.live_since(settings), exclude))
    except NoHostOffers as exc:
        raise _no_network(demand, str(exc)) from exc
    except NoHostFits as exc:
        raise Unavailable(str(exc), retry_after_s=int(settings.heartbeat_interval_s * 2), code="no_capacity") from exc
    return _on_host(chosen.host.name, chosen.host.arch, chosen.host.accel, arch)


class HostFull(ApiError):
    """The chosen host has no room left for the VM: a concurrent create reserved it first."""

    def __init__(self, host: str) -> None:
        super().__init__(f"host {host!r} has no room left for this VM", code="no_capacity")
        self.host = host


@dataclass(frozen=True)
class CreatePlan:
    """What a create request resolves to against the current catalog and fleet, before anything is stored."""

    arch: Arch
    artifact: dict
    network: dict
    decision: Decision


def plan_create(request: dict, settings: Settings, exclude: frozenset[str] = frozenset()) -> CreatePlan:
    """Every check and routing decision of a create, without side effects; raises the refusal a create
    answers. `exclude`: hosts found full since the decision was first made."""
    arch = Arch(request["arch"])
    artifact = artifact_for(request["image"], arch)
    _check_disk_size(request.get("disk_gib"), artifact, request["image"])
    network = attachment(request["network"], settings)
    decision = decide(request, arch, settings, need=needs(network, settings.nat_network), exclude=exclude)
    check_tcg_cpu(request.get("tcg_cpu"), arch, settings)
    check_cpu_mode(
        request["cpu_mode"],
        arch,
        host=decision.host,
        accel=decision.accel,
        pinned=bool(request.get("host")),
        settings=settings,
    )
    return CreatePlan(arch, artifact, network, decision)


def preview_create(request: dict, settings: Settings) -> dict:
    """Where a create of `request` would go now and what its submitter would be told, or the refusal it would
    get (`error`, with the `status` create would answer). Stores nothing."""
    try:
        plan = plan_create(request, settings)
        project = projects.current_scope().acting
        _check_name_free(project, request["name"])
        projects.check(project, projects.demand_of(request["vcpus"], request["memory_mib"], plan.decision.emulated))
    except ApiError as exc:
        refusal = error_body(exc.code, exc.message, exc.fields)["error"]
        return {"accepted": False, "status": exc.status, "error": refusal}
    decision = plan.decision
    return {
        "accepted": True,
        "status": 202,
        "error": None,
        "arch": plan.arch.value,
        "queue": decision.queue,
        "host": decision.host,
        "emulated": decision.emulated,
        "accel": decision.accel,
        "emulation_warning": decision.warning,
        "waiting_for": decision.waiting_for,
        "cpu_mode": request["cpu_mode"],
        "cpu_mode_note": tcg_cpu_note(plan.arch, request.get("tcg_cpu")) if decision.accel == Accel.TCG else "",
    }


def submit_create(
    request: dict,
    settings: Settings,
    actor: str = "api",
    group: GroupCommit[tuple[Vm, Job]] | None = None,
) -> tuple[Vm, Job]:
    """Store a new VM and its create job (committed, `pending`); the caller hands the job to the outbox.
    With `group`, the rows are committed together with concurrent requests' (see web/group_commit.py). A VM
    placed on a host reserves its share there in the same transaction; if a concurrent create took the room
    first, the VM is placed again without that host."""
    full: frozenset[str] = frozenset()
    while True:
        plan = plan_create(request, settings, exclude=full)
        vm, job = _new_create(request, plan, actor)
        try:
            if group is not None:
                group.submit((vm, job))
            elif error := write_creates([(vm, job)])[0]:
                raise error
        except HostFull as exc:
            full |= {exc.host}
            if request.get("host") or len(full) >= PLACEMENT_ATTEMPTS:
                retry_after_s = int(settings.heartbeat_interval_s * 2)
                raise Unavailable(str(exc), retry_after_s=retry_after_s, code="no_capacity") from exc
            continue
        return vm, job


# A bulk create that PostgreSQL aborted as deadlocked (its reservations, made in placement order, crossed another
# transaction's) is tried again from the start, this many times in all.
BULK_ATTEMPTS = 3


def bulk_requests(request: dict) -> list[dict]:
    """The single-VM requests a bulk create stands for: `<name>-<i>`, and `<hostname>-<i>` in the first label
    of a given hostname."""
    count = request["count"]
    items = []
    for index in range(1, count + 1):
        item = {**request, "name": f"{request['name']}-{index}"}
        if request.get("hostname"):
            first, dot, rest = request["hostname"].partition(".")
            try:
                item["hostname"] = validate_hostname(f"{first}-{index}{dot}{rest}")
            except ValueError as exc:
                raise Unprocessable(f"hostname: {exc}", fields={"hostname": [str(exc)]}) from exc
        items.append(item)
    return items


def admit_create(items: list[dict], settings: Settings, actor: str) -> None:
    """The checks on a create request as a whole, before any of its VMs is placed: every name free in the
    project. A refusal here refuses all of them (quotas are taken VM by VM as they are placed, in the same
    transaction: see `_place_reserved`)."""
    project = projects.current_scope().acting
    names = [item["name"] for item in items]
    taken = {name: vm_id for (_, name), vm_id in _taken_names({(project, name) for name in names}).items()}
    if taken:
        first = sorted(taken)[0]
        raise Conflict(
            f"{len(taken)} of the {len(names)} names are taken, e.g. {first!r} ({taken[first]}); none was created",
            code="name_taken",
            fields={"name": [f"taken: {', '.join(sorted(taken))}"]},
        )


def submit_bulk_create(request: dict, settings: Settings, actor: str = "api") -> list[tuple[Vm, Job]]:
    """`request["count"]` VMs and their create jobs in one transaction, all or none: each placed by the
    request's strategy against what the VMs before it reserved (with `spread`, never on a host an earlier one
    took); any refusal (a name taken, no host fits one of them) rolls back every reservation and row."""
    items = bulk_requests(request)
    if request["spread"] and Placement(request["placement"]) == Placement.QUEUE:
        # A queue is not a host: spreading needs each VM placed, least loaded first.
        items = [{**item, "placement": Placement.LEAST_LOADED.value} for item in items]
    for attempt in range(1, BULK_ATTEMPTS + 1):
        try:
            created = _create_all(items, settings, actor, spread=request["spread"])
            db.session.commit()
            return created
        except IntegrityError:
            # A name taken meanwhile by another process's create (the live-name index): refused as taken.
            db.session.rollback()
            admit_create(items, settings, actor)
            raise
        except OperationalError as exc:
            db.session.rollback()
            if "deadlock" not in str(exc).lower() or attempt == BULK_ATTEMPTS:
                raise
        except BaseException:
            db.session.rollback()
            raise
    raise AssertionError("every attempt returns or raises")


def _create_all(items: list[dict], settings: Settings, actor: str, spread: bool) -> list[tuple[Vm, Job]]:
    admit_create(items, settings, actor)
    created: list[tuple[Vm, Job]] = []
    hosts: set[str] = set()
    routed: CreatePlan | None = None
    for item in items:
        if routed is not None:
            # Routed to a queue, not placed on a host: the first VM's plan holds for every one of them.
            created.append(_new_create(item, routed, actor))
            continue
        try:
            plan, vm, job = _place_reserved(item, settings, actor, avoid=frozenset(hosts) if spread else frozenset())
        except Unavailable as exc:
            if not spread or not hosts:
                raise
            raise Unavailable(
                f"spread: {len(hosts)} hosts took {len(created)} of the {len(items)} VMs and no other can take "
                f"one ({exc.message}); none was created",
                retry_after_s=int(settings.heartbeat_interval_s * 2),
                code="no_capacity",
            ) from exc
        if vm.host is not None:
            hosts.add(vm.host)
        else:
            routed = plan
        created.append((vm, job))
    db.session.add_all([row for pair in created for row in pair])
    db.session.flush()
    return created


def _place_reserved(item: dict, settings: Settings, actor: str, avoid: frozenset[str]) -> tuple[CreatePlan, Vm, Job]:
    """One VM of a bulk create, placed (not on `avoid`) and its share of the host reserved in the open
    transaction, so that the next VM's placement sees it."""
    full: frozenset[str] = frozenset()
    while True:
        plan = plan_create(item, settings, exclude=avoid | full)
        vm, job = _new_create(item, plan, actor)
        if error := projects.reserve(vm.project, projects.vm_demand(vm)):
            # Over the project's quota: the whole request is refused and rolled back, earlier VMs' shares too.
            raise error
        memory = footprint_mib(vm.memory_mib, tcg=vm.accel == Accel.TCG)
        if vm.host is None or capacity.reserve(vm.host, vm.vcpus, memory, (vm.disk_gib or 0) * 1024):
            return plan, vm, job
        projects.give_back(vm.project, projects.vm_demand(vm))
        full |= {vm.host}
        if item.get("host") or len(full) >= PLACEMENT_ATTEMPTS:
            raise Unavailable(
                f"host {vm.host!r} has no room left for {item['name']}",
                retry_after_s=int(settings.heartbeat_interval_s * 2),
                code="no_capacity",
            )


def _new_create(request: dict, plan: CreatePlan, actor: str) -> tuple[Vm, Job]:
    arch, artifact, network, decision = plan.arch, plan.artifact, plan.network, plan.decision
    vm_id = str(uuid.uuid4())
    user_data = request.get("user_data")
    vm = Vm(
        id=vm_id,
        project=projects.current_scope().acting,
        name=request["name"],
        arch=arch.value,
        vcpus=request["vcpus"],
        memory_mib=request["memory_mib"],
        image=request["image"],
        state=VmState.PENDING,
        emulation=request["emulation"],
        restart_policy=request["restart_policy"],
        cpu_mode=request["cpu_mode"],
        tcg_cpu=request.get("tcg_cpu"),
        rehome=request.get("rehome") or REHOME_MANUAL,
        artifact=artifact,
        emulated=decision.emulated,
        emulation_warning=decision.warning,
        accel=decision.accel,
        # A placed VM holds its host's capacity from now on (reserved when it is written).
        host=decision.host,
        network=network,
        mac=mac_for(vm_id) if network["mode"] != NetworkMode.NONE else None,
        hostname=request.get("hostname") or request["name"],
        ssh_authorized_keys=request["ssh_authorized_keys"],
        user_data=user_data,
        disk_gib=request.get("disk_gib"),
        **({} if user_data is None else _digest_columns(user_data)),
    )
    job = _new_job(JobKind.CREATE, decision.queue, vm, actor=actor, host=decision.host, emulated=decision.emulated)
    job.waiting_for = decision.waiting_for
    return vm, job


def _check_disk_size(disk_gib: int | None, artifact: dict, image: str) -> None:
    """A VM's disk is an overlay on its image: it cannot be smaller than the image's own disk."""
    image_bytes = artifact.get("virtual_size") or 0
    if disk_gib is not None and disk_gib * 2**30 < image_bytes:
        least = -(-image_bytes // 2**30)
        message = f"must be at least {least} GiB, the size of image {image!r}'s disk"
        raise Unprocessable(f"disk_gib: {message}", fields={"disk_gib": [message]})


def attachment(network: dict, settings: Settings) -> dict:
    """The VM's network as stored and sent to its host: a NAT VM names the cluster's libvirt network."""
    mode = NetworkMode(network["mode"])
    if mode is NetworkMode.NAT:
        return {"mode": mode.value, "network": settings.nat_network}
    if mode is NetworkMode.BRIDGE:
        return {"mode": mode.value, "bridge": network["bridge"]}
    return {"mode": mode.value}


def _digest_columns(user_data: str) -> dict:
    digest = user_data_digest(user_data)
    return {"user_data_sha256": digest["sha256"], "user_data_size": digest["size"]}


def write_creates(items: list[tuple[Vm, Job]]) -> list[ApiError | None]:
    """Commit new VMs with their create jobs in one transaction; a VM whose name is taken in its project (by a
    live VM, or by an earlier item of the batch) is left out and gets its Conflict, one over its project's
    quota gets QuotaExceeded (web/services/projects.py `reserve`), one whose host has no room left for it
    (web/services/capacity.py `reserve`) gets HostFull."""
    # The read below cannot see a create another process has not committed yet; the live-name index refuses
    # the later commit, and the retry reads the winner. Each retry is due to a name newly taken, so it ends.
    for _attempt in range(len(items)):
        errors = _add_creates(items)
        try:
            db.session.commit()
            return errors
        except IntegrityError:
            db.session.rollback()
    errors = _add_creates(items)
    db.session.commit()
    return errors


def _add_creates(items: list[tuple[Vm, Job]]) -> list[ApiError | None]:
    taken = _taken_names({(vm.project, vm.name) for vm, _ in items})
    errors: list[ApiError | None] = [None] * len(items)
    named = []
    for index, (vm, _) in enumerate(items):
        if (vm.project, vm.name) in taken:
            errors[index] = _name_taken(vm.name, taken[vm.project, vm.name])
            continue
        taken[vm.project, vm.name] = vm.id
        named.append(index)
    # Every batch locks project rows (in name order) before host rows (in name order), so two API processes'
    # batches never wait for each other's rows in a cycle (PostgreSQL would abort one of them as deadlocked).
    within_quota = []
    for index in sorted(named, key=lambda i: items[i][0].project):
        vm = items[index][0]
        if error := projects.reserve(vm.project, projects.vm_demand(vm)):
            errors[index] = error
            continue
        within_quota.append(index)
    for index in sorted(within_quota, key=lambda i: items[i][0].host or ""):
        vm, job = items[index]
        memory = footprint_mib(vm.memory_mib, tcg=vm.accel == Accel.TCG)
        if vm.host is not None and not capacity.reserve(vm.host, vm.vcpus, memory, (vm.disk_gib or 0) * 1024):
            errors[index] = HostFull(vm.host)
            projects.give_back(vm.project, projects.vm_demand(vm))
            continue
        db.session.add_all([vm, job])
    return errors


def _taken_names(names: set[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """Which of `names` (project, name) live VMs have, with their ids."""
    wanted = {name for _, name in names}
    rows = db.session.execute(
        select(Vm.project, Vm.name, Vm.id).where(Vm.name.in_(wanted), Vm.state != VmState.DELETED)
    )
    return {(project, name): vm_id for project, name, vm_id in rows if (project, name) in names}


def _name_taken(name: str, vm_id: str) -> Conflict:
    return Conflict(f"a VM named {name!r} already exists ({vm_id})", code="name_taken")


def _check_name_free(project: str, name: str) -> None:
    if vm_id := _taken_names({(project, name)}).get((project, name)):
        raise _name_taken(name, vm_id)


def vm_page(filters: dict, after: list[str] | None, limit: int | None) -> Page[Vm]:
    """The VMs that are not deleted matching each given filter (arch, state, host, name, image), oldest first
    (the id breaks ties between VMs created in the same microsecond); every one without a limit. Their jobs
    come in one more query (a VM's `queue` is its last job's), not one per VM."""
    query = projects.scoped(select(Vm).where(Vm.state != VmState.DELETED), Vm.project).options(selectinload(Vm.jobs))
    for name, value in filters.items():
        query = query.where(getattr(Vm, name) == value)
    return keyset_page(query, (Vm.created_at, Vm.id), after, limit)


def emulated_counts() -> dict[str, int]:
    """How many VMs that are not deleted run emulated, per guest architecture."""
    rows = db.session.execute(
        select(Vm.arch, func.count()).where(Vm.emulated, Vm.state != VmState.DELETED).group_by(Vm.arch)
    )
    return {arch: int(count) for arch, count in rows}


def _require_idle(vm: Vm) -> None:
    busy = db.session.scalar(select(Job).where(Job.vm_id == vm.id, Job.state.not_in(TERMINAL_JOB_STATES)).limit(1))
    if busy is not None:
        raise Conflict(
            f"VM {vm.id} has a {busy.kind} job in state {busy.state} ({busy.id}); wait for it or cancel it",
            code="vm_busy",
            fields={"state": [vm.state]},
        )


def require_state(vm: Vm, kind: JobKind) -> None:
    """Refuse a job of `kind` on a VM in a state it may not start from (job_effects.EFFECTS)."""
    allowed = EFFECTS[kind].allowed_from
    if vm.state not in allowed:
        raise Conflict(
            f"cannot {kind} VM {vm.id} while it is {vm.state}; allowed from: {', '.join(allowed)}",
            code="wrong_state",
            fields={"state": [vm.state]},
        )


def submit_action(vm_id: str, kind: JobKind, settings: Settings, actor: str = "api") -> tuple[Vm, Job]:
    """A job on an existing VM: guarded by the VM's state, sent to the queue of the host it lives on."""
    effects = EFFECTS[kind]
    vm = get_vm(vm_id)
    _require_idle(vm)
    require_state(vm, kind)
    if vm.host is None:
        if kind != JobKind.DELETE:
            raise Conflict(f"VM {vm.id} never reached a host", code="wrong_state", fields={"state": [vm.state]})
        # Nothing exists anywhere to destroy.
        job = _new_job(kind, "", vm, actor=actor, host=None, emulated=vm.emulated)
        complete_without_worker(job, actor, "the VM never reached a host; nothing to destroy")
        gone(vm, job, "")
    else:
        _require_host_up(vm.host, settings)
        # What a cancel before the job starts puts back.
        before = {"from_state": vm.state, "from_desired_state": vm.desired_state}
        job = _new_job(kind, host_queue(vm.host), vm, actor=actor, host=vm.host, emulated=vm.emulated, params=before)
        vm.state = effects.during or vm.state
        vm.desired_state = effects.desired or vm.desired_state
    db.session.add(job)
    db.session.commit()
    return vm, job


def _require_host_up(name: str, settings: Settings) -> None:
    """Jobs on an existing VM go to its host's queue; a host that is down would leave them there unseen."""
    host = db.session.get(Host, name)
    state = host_state(host, settings) if host is not None else "down"
    if state == "down":
        raise Conflict(
            f"the VM's host {name!r} is down (no heartbeat for {settings.host_down_after_s:.0f}s); "
            "retry when it is back",
            code="host_down",
        )
