"""Projects: who owns what, what a request may see, and the quotas a project's VMs count against.

Scope: each request acts as one project's member (its token's project) or, for an admin, across all projects
or for the one named by `?project=` (web/auth.py sets it). `scoped(query, column)` is the one rule every
listing and lookup of a project's resources applies: a resource of another project is not found (404), never
forbidden, so its existence does not leak. Outside a request (conductor, server-side commands) nothing is
scoped.

Quotas: a project's limits (None: none) and what its live VMs hold are one row. A create takes its share with
`UPDATE projects SET used_* = used_* + need WHERE name = :p AND used_* + need <= max_*` in the transaction that
inserts the VM, so the row stays locked (PostgreSQL: row lock; SQLite: the database's write lock) until the VM
commits, and a concurrent create re-evaluates the condition on the committed counters: however many creates
race, the counters never pass a limit. A VM gives its share back when it becomes deleted (`release`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from flask import g, has_app_context
from sqlalchemy import Select, select, update

from web.errors import Conflict, NotFound, Unprocessable
from web.extensions import db
from web.models import DEFAULT_PROJECT, Project, Vm, utcnow

# The quota's resources: (name in the API, limit column, usage column).
RESOURCES: tuple[tuple[str, str, str], ...] = (
    ("vms", "max_vms", "used_vms"),
    ("vcpus", "max_vcpus", "used_vcpus"),
    ("memory_mib", "max_memory_mib", "used_memory_mib"),
    ("emulated", "max_emulated", "used_emulated"),
)
RESOURCE_NAMES = tuple(name for name, _, _ in RESOURCES)


@dataclass(frozen=True)
class Scope:
    """What one request sees and where what it creates goes."""

    # The only project it sees; None: every project (an admin not acting for one).
    project: str | None
    # The project of the resources it creates (and of its idempotency keys).
    acting: str


UNSCOPED = Scope(project=None, acting=DEFAULT_PROJECT)


def current_scope() -> Scope:
    return g.get("scope", UNSCOPED) if has_app_context() else UNSCOPED


def scope_for(token_project: str, is_admin: bool, asked: str | None) -> Scope:
    """A token's scope: its project, or for an admin every project unless it asks for one (`?project=`).
    A project that does not exist, or (for a non-admin) is not the token's, is not found."""
    if asked and ((not is_admin and asked != token_project) or db.session.get(Project, asked) is None):
        raise NotFound(f"no project named {asked!r}", code="project_not_found")
    if is_admin:
        return Scope(project=asked or None, acting=asked or token_project)
    return Scope(project=token_project, acting=token_project)


def scoped(query: Select, column) -> Select:
    """`query` limited to the current scope's project, by its `column` naming the project."""
    project = current_scope().project
    return query if project is None else query.where(column == project)


def visible(project: str) -> bool:
    """Whether a resource of `project` is in the current scope."""
    scope = current_scope()
    return scope.project is None or scope.project == project


# --- projects ------------------------------------------------------------------------------------------------


def create_project(name: str, limits: dict[str, int | None] | None = None) -> Project:
    if db.session.get(Project, name) is not None:
        raise Conflict(f"a project named {name!r} exists", code="project_exists")
    project = Project(name=name, created_at=utcnow(), used_vms=0, used_vcpus=0, used_memory_mib=0, used_emulated=0)
    _set_limits(project, limits or {})
    db.session.add(project)
    db.session.commit()
    return project


def list_projects() -> Sequence[Project]:
    return db.session.scalars(scoped(select(Project), Project.name).order_by(Project.name)).all()


def get_project(name: str) -> Project:
    project = db.session.get(Project, name)
    if project is None or not visible(project.name):
        raise NotFound(f"no project named {name!r}", code="project_not_found")
    return project


def require_project(name: str) -> Project:
    """An existing project for a new token (a 422 naming the field otherwise)."""
    project = db.session.get(Project, name)
    if project is None:
        message = f"no project named {name!r}; create it first (archq project create {name})"
        raise Unprocessable(message, code="project_not_found", fields={"project": [message]})
    return project


def set_quota(name: str, limits: dict[str, int | None]) -> Project:
    """Change the given limits (None: no limit); the others stay. A limit below what is used refuses new VMs
    until enough are deleted; it touches none that exist."""
    project = get_project(name)
    _set_limits(project, limits)
    db.session.commit()
    return project


def _set_limits(project: Project, limits: dict[str, int | None]) -> None:
    for resource, limit_column, _ in RESOURCES:
        if resource in limits:
            setattr(project, limit_column, limits[resource])


def usage(project: Project) -> dict:
    """Limits, used and remaining per resource (None: no limit, nothing to count down)."""
    limits = {resource: getattr(project, limit) for resource, limit, _ in RESOURCES}
    used = {resource: getattr(project, column) for resource, _, column in RESOURCES}
    remaining = {r: None if limits[r] is None else max(0, limits[r] - used[r]) for r in RESOURCE_NAMES}
    return {"project": project.name, "limits": limits, "used": used, "remaining": remaining}


# --- quota ---------------------------------------------------------------------------------------------------


class QuotaExceeded(Conflict):
    code = "quota_exceeded"

    def __init__(self, project: str, resource: str, limit: int, used: int, need: int) -> None:
        super().__init__(
            f"project {project!r} is over its {resource} quota: this VM needs {need}, {used} of {limit} are used",
            fields={resource: [f"limit {limit}, used {used}, this VM needs {need}"]},
        )


def demand_of(vcpus: int, memory_mib: int, emulated: bool) -> dict[str, int]:
    """What one VM holds of its project's quota."""
    return {"vms": 1, "vcpus": vcpus, "memory_mib": memory_mib, "emulated": int(emulated)}


def vm_demand(vm: Vm) -> dict[str, int]:
    return demand_of(vm.vcpus, vm.memory_mib, vm.emulated)


def refusal(project: Project, demand: dict[str, int]) -> QuotaExceeded | None:
    """The first limit `demand` would pass given what `project` holds now, else None."""
    for resource, limit_column, used_column in RESOURCES:
        limit, used = getattr(project, limit_column), getattr(project, used_column)
        if demand[resource] and limit is not None and used + demand[resource] > limit:
            return QuotaExceeded(project.name, resource, limit, used, demand[resource])
    return None


def check(name: str, demand: dict[str, int]) -> None:
    """Raise the refusal a create of `demand` in project `name` would get now (a preview: nothing is taken)."""
    project = db.session.get(Project, name)
    if project is not None and (error := refusal(project, demand)):
        raise error


def reserve(name: str, demand: dict[str, int]) -> QuotaExceeded | None:
    """Take `demand` from the project's quota in the caller's transaction; the refusal when it does not fit."""
    conditions = [Project.name == name]
    values = {}
    for resource, limit_column, used_column in RESOURCES:
        limit, used = getattr(Project, limit_column), getattr(Project, used_column)
        if demand[resource]:
            # Only what the VM takes is checked: a limit lowered below its use refuses only more of that.
            conditions.append(limit.is_(None) | (used + demand[resource] <= limit))
        values[used_column] = used + demand[resource]
    statement = update(Project).where(*conditions).values(**values).execution_options(synchronize_session=False)
    # A second round only when a delete gave the room back between the UPDATE and the read.
    for _attempt in range(3):
        if db.session.execute(statement).rowcount == 1:
            return None
        project = db.session.get(Project, name, populate_existing=True)
        if project is None:
            raise NotFound(f"no project named {name!r}", code="project_not_found")
        if error := refusal(project, demand):
            return error
    raise Conflict(f"project {name!r}: its usage keeps changing; retry", code="busy")


def give_back(name: str, demand: dict[str, int]) -> None:
    """Return `demand` to the project's quota in the caller's transaction."""
    values = {used: getattr(Project, used) - demand[resource] for resource, _, used in RESOURCES}
    db.session.execute(
        update(Project).where(Project.name == name).values(**values).execution_options(synchronize_session=False)
    )


def release(vm: Vm) -> None:
    """The VM became deleted: its share of its project's quota is free again."""
    give_back(vm.project, vm_demand(vm))


def emulation_changed(vm: Vm, emulated: bool) -> None:
    """The worker ran the VM otherwise than decided at submit: the emulated count follows what runs."""
    if emulated != vm.emulated:
        delta = int(emulated) - int(vm.emulated)
        give_back(vm.project, {"vms": 0, "vcpus": 0, "memory_mib": 0, "emulated": -delta})
