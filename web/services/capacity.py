"""The hosts' capacity as indexed columns, so that placing a VM costs a few index reads whatever the number of
hosts: each heartbeat rewrites a host's columns from its report and the VMs the database places there, and
each placement reserves its share with a conditional UPDATE in the transaction that inserts the VM.

Consistency: `reserve` is `UPDATE hosts SET free_* = free_* - need ... WHERE name = :host AND free_* >=
need`. The row it changes stays locked (PostgreSQL: the row lock; SQLite: the database's write lock) until the
VM row commits with it, and a concurrent reservation re-evaluates its WHERE on the committed row: of two creates
that want a host's last slot, one changes the row and the other changes none and is placed elsewhere. A
heartbeat locks its host's row before it counts that host's VMs, so its count includes every reservation
committed before it and none can commit while it writes.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Select, case, false, func, or_, select, update
from sqlalchemy.orm import InstrumentedAttribute

from queues.arch import Arch
from queues.config import Settings
from queues.emulation import TB_CACHE_MIB
from queues.placement import Demand, HostLoad, NoHostFits, NoHostOffers, Placement, no_host_offers, place
from queues.routing import Emulation, LiveHost, offers_of
from queues.vocabulary import ALLOCATING_VM_STATES, Accel
from web.extensions import db
from web.models import Host, Vm, utcnow

# Overcommit ratios, as Nova's allocation ratios: vCPUs are time-shared, memory is not.
CPU_RATIO = 4.0
RAM_RATIO = 1.0
# least_loaded and best_fit rank this many of the best hosts by the index exactly (queues/placement.py): the
# column orders by the load before placing, the strategy by the load after it.
SHORTLIST = 8


def _tags(values: Iterable[str]) -> str:
    """A set as "|a|b|", so a LIKE '%|a|%' tests membership on both engines."""
    items = sorted(values)
    return f"|{'|'.join(items)}|" if items else ""


def profile_of(host: LiveHost) -> str:
    """The facts routing needs of a host, as a canonical string that hosts alike share (name and drain aside)."""
    return json.dumps(
        {
            "arch": host.arch.value,
            "accel": host.accel,
            "emulators": sorted(a.value for a in host.emulators),
            "offers": sorted(host.offers),
        },
        separators=(",", ":"),
    )


def host_of_profile(profile: str) -> LiveHost:
    facts = json.loads(profile)
    return LiveHost(
        name="",
        arch=Arch(facts["arch"]),
        accel=facts["accel"],
        emulators=frozenset(Arch(a) for a in facts["emulators"]),
        offers=frozenset((kind, name) for kind, name in facts["offers"]),
    )


def fleet_kinds(settings: Settings) -> list[tuple[LiveHost, int]]:
    """Live, undrained hosts counted by profile: the database counts index entries, Python sees each kind once."""
    rows = db.session.execute(
        select(Host.profile, func.count())
        .where(Host.drained == false(), Host.last_seen >= live_since(settings), Host.profile != "")
        .group_by(Host.profile)
    )
    return [(host_of_profile(profile), count) for profile, count in rows]


def load_of(used_vcpus: int, vcpus: int, used_memory_mib: int, memory_mib: int) -> float:
    return max(used_vcpus / max(1, vcpus), used_memory_mib / max(1, memory_mib))


def lock_host(name: str, now: datetime) -> bool:
    """Lock the host's row for the rest of the transaction (False: no such host yet)."""
    result = db.session.execute(
        update(Host).where(Host.name == name).values(last_seen=now).execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def refresh(host: Host, used: tuple[int, int]) -> None:
    """Rewrite the host's placement columns from its heartbeat (already on `host`) and what the VMs placed on
    it hold (`used_by`, counted after `lock_host`: no reservation commits between the count and this write)."""
    used_vcpus, used_memory_mib = used
    host.vcpus = int(host.capacity.get("vcpus", 0))
    host.memory_mib = int(host.capacity.get("memory_mib", 0))
    host.free_vcpus = int(host.vcpus * CPU_RATIO) - used_vcpus
    host.free_memory_mib = int(host.memory_mib * RAM_RATIO) - used_memory_mib
    disk = host.capacity.get("disk_mib")
    host.free_disk_mib = None if disk is None else int(disk)
    host.load = load_of(used_vcpus, host.vcpus, used_memory_mib, host.memory_mib)
    host.shuffle = random.random()
    live = LiveHost(host.name, Arch(host.arch), host.accel, frozenset(Arch(a) for a in host.emulators))
    offers = offers_of(host.networks)
    host.profile = profile_of(LiveHost(live.name, live.arch, live.accel, live.emulators, offers=offers))
    host.emulates = _tags(host.emulators)
    host.offers = _tags(f"{kind}:{name}" for kind, name in offers)
    host.cpu_modes_own = _tags((host.cpu_modes or {}).get(host.arch) or ())


def held_memory_mib() -> ColumnElement:
    """The MiB a set of VM rows holds: their RAM, and under TCG each one's translation cache beside it
    (queues.emulation.footprint_mib)."""
    return func.coalesce(func.sum(Vm.memory_mib), 0) + func.count().filter(Vm.accel == Accel.TCG) * TB_CACHE_MIB


def used_by(name: str) -> tuple[int, int]:
    """vCPUs and MiB the VMs placed on the host hold, from the database (not from the host's report)."""
    cpus, mem = db.session.execute(
        select(func.sum(Vm.vcpus), held_memory_mib()).where(Vm.host == name, Vm.state.in_(ALLOCATING_VM_STATES))
    ).one()
    return int(cpus or 0), int(mem or 0)


def reserve(name: str, vcpus: int, memory_mib: int, disk_mib: int) -> bool:
    """Take the VM's share of the host in the caller's transaction; False when it no longer fits (or the host
    was drained since the decision). The disk is checked, not taken: a VM's disk is a sparse overlay."""

    def fraction(capacity, free, ratio: float, taken: int):
        return (capacity * ratio - free + taken) / case((capacity > 0, capacity), else_=1)

    cpu = fraction(Host.vcpus, Host.free_vcpus, CPU_RATIO, vcpus)
    mem = fraction(Host.memory_mib, Host.free_memory_mib, RAM_RATIO, memory_mib)
    result = db.session.execute(
        update(Host)
        .where(
            Host.name == name,
            Host.drained == false(),
            Host.free_vcpus >= vcpus,
            Host.free_memory_mib >= memory_mib,
            or_(Host.free_disk_mib.is_(None), Host.free_disk_mib >= disk_mib),
        )
        .values(
            free_vcpus=Host.free_vcpus - vcpus,
            free_memory_mib=Host.free_memory_mib - memory_mib,
            load=case((cpu >= mem, cpu), else_=mem),
            placed_at=utcnow(),
            # `random` picks the first host at or after a random key: a host is as likely as the gap before
            # its key. A new key for each host picked redraws the gaps, so no host stays favoured (or shunned).
            shuffle=random.random(),
        )
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


@dataclass(frozen=True)
class Search:
    """One placement question: what the VM needs, and hosts already found full for it."""

    demand: Demand
    since: datetime
    exclude: frozenset[str] = frozenset()

    def eligible(self, kinds: tuple[bool, ...]) -> Select:
        """Live, undrained hosts that can run the guest: natively (True) and/or emulating it (False)."""
        arch = self.demand.arch.value
        can_run = {True: Host.arch == arch, False: Host.emulates.contains(f"|{arch}|", autoescape=True)}
        live = _per_row(Host.last_seen) >= self.since
        return _loads().where(Host.drained == false(), live, or_(*(can_run[k] for k in kinds)))

    def offering(self, kinds: tuple[bool, ...]) -> Select:
        """Those of them with what the VM's NIC needs."""
        query = self.eligible(kinds)
        if self.demand.need is not None:
            kind, name = self.demand.need
            query = query.where(Host.offers.contains(f"|{kind}:{name}|", autoescape=True))
        return query

    def fitting(self, kinds: tuple[bool, ...]) -> Select:
        """Those of them with room for the VM, but the ones found full already."""
        demand = self.demand
        query = self.offering(kinds).where(
            _per_row(Host.free_vcpus) >= demand.vcpus,
            _per_row(Host.free_memory_mib) >= demand.memory_mib,
            or_(Host.free_disk_mib.is_(None), _per_row(Host.free_disk_mib) >= demand.disk_mib),
        )
        return query.where(Host.name.not_in(self.exclude)) if self.exclude else query


def _per_row(column: InstrumentedAttribute) -> ColumnElement:
    """The column as an expression no index serves, for conditions tested on the rows the strategy's index
    yields in its order: nearly every host passes them in a healthy fleet, and as an index range they would
    make SQLite's planner (which has no statistics) read and sort every host instead."""
    return func.coalesce(column, column)


def _loads() -> Select:
    """What HostLoad needs of hosts (not their domains' JSON)."""
    return select(
        Host.name, Host.arch, Host.accel, Host.emulators, Host.networks, Host.vcpus, Host.memory_mib,
        Host.free_vcpus, Host.free_memory_mib, Host.free_disk_mib,
    )  # fmt: skip


def host_load(name: str) -> list[HostLoad]:
    """The named host's load ([] if unknown), for a pinned create."""
    return [_load(row) for row in db.session.execute(_loads().where(Host.name == name))]


def _load(row) -> HostLoad:
    name, arch, accel, emulators, networks, vcpus, memory_mib, free_vcpus, free_memory_mib, free_disk_mib = row
    return HostLoad(
        host=LiveHost(name, Arch(arch), accel, frozenset(Arch(a) for a in emulators), False, offers_of(networks)),
        vcpus=vcpus,
        memory_mib=memory_mib,
        used_vcpus=int(vcpus * CPU_RATIO) - free_vcpus,
        used_memory_mib=int(memory_mib * RAM_RATIO) - free_memory_mib,
        free_disk_mib=free_disk_mib,
    )


def _first(query: Select, *order: object, limit: int = 1) -> list[HostLoad]:
    return [_load(row) for row in db.session.execute(query.order_by(*order).limit(limit))]


def choose(strategy: Placement, search: Search) -> HostLoad:
    """The host `strategy` picks, from the indexes: a few rows read whatever the fleet's size, in one query when
    a native host fits. Candidates as queues/placement.py `candidates` says: native hosts, and emulating ones
    when the request allows it or, unless it said native_only, when no native host is live. Raises NoHostFits
    or NoHostOffers with the reason."""
    emulation = search.demand.emulation
    kinds = (True, False) if emulation == Emulation.ALLOW else (True,)
    shortlist = _shortlist(strategy, search.fitting(kinds))
    if not shortlist and emulation == Emulation.PREFER_NATIVE and not _exists(search.eligible(kinds)):
        kinds = (False,)
        shortlist = _shortlist(strategy, search.fitting(kinds))
    if not shortlist:
        raise _refusal(search, kinds)
    return place(strategy, search.demand, shortlist, cpu_ratio=CPU_RATIO, ram_ratio=RAM_RATIO)


def _shortlist(strategy: Placement, fitting: Select) -> list[HostLoad]:
    """The fitting hosts the strategy considers, first in its index's order."""
    if strategy == Placement.LEAST_LOADED:
        # Ranked exactly (by the load after placing) among the least loaded before placing.
        return _first(fitting, Host.load, Host.name, limit=SHORTLIST)
    if strategy == Placement.BEST_FIT:
        return _first(fitting, Host.free_memory_mib, Host.name, limit=SHORTLIST)
    if strategy == Placement.ROUND_ROBIN:
        # The host that waited longest since a placement last picked it: name order the first time round.
        return _first(fitting, Host.placed_at, Host.name)
    if strategy == Placement.RANDOM:
        # The first key after a random point on the circle of keys; every heartbeat redraws its host's key.
        return _first(fitting.where(Host.shuffle >= random.random()), Host.shuffle) or _first(fitting, Host.shuffle)
    raise ValueError(f"{strategy} does not pick a host")


def _exists(query: Select) -> bool:
    return db.session.execute(query.limit(1)).first() is not None


def _count(query: Select) -> int:
    return db.session.scalar(select(func.count()).select_from(query.subquery())) or 0


def _refusal(search: Search, kinds: tuple[bool, ...]) -> NoHostFits:
    """Why no host fits, with the messages of queues/placement.py (only on refusal: counting is affordable)."""
    demand = search.demand
    if not _exists(search.eligible(kinds)):
        return NoHostFits(f"no live host can run {demand.arch} guests (emulation: {demand.emulation})")
    offering = _count(search.offering(kinds))
    if demand.need is not None and not offering:
        return NoHostOffers(no_host_offers(demand.need, demand.arch))
    disk = f" and {demand.disk_mib} MiB of disk" if demand.disk_mib else ""
    return NoHostFits(
        f"none of {offering} live host(s) for {demand.arch} has {demand.vcpus} vCPU(s) and "
        f"{demand.memory_mib} MiB free{disk}"
    )


def live_since(settings: Settings) -> datetime:
    """Hosts that heartbeated after this are live."""
    return utcnow() - timedelta(seconds=settings.host_down_after_s)
