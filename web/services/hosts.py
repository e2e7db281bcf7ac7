"""The heartbeat registry: which hosts exist, what they can do, and which are alive now."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

from flask import current_app
from sqlalchemy import and_, bindparam, func, select, update

from queues.arch import Arch
from queues.config import Settings
from queues.placement import HostLoad
from queues.routing import Fleet, LiveHost, offers_of
from queues.vocabulary import ALLOCATING_VM_STATES, HostState, VmState
from web.errors import NotFound
from web.extensions import db
from web.models import Host, Vm, utcnow
from web.paging import Page, keyset_page
from web.services import attestations, capacity


def record_heartbeat(beat: dict) -> Host:
    # The conductor's clock decides liveness; workers' clocks may drift.
    now = utcnow()
    # Locked before anything is read: the capacity columns are rewritten from a count of the host's VMs that
    # no concurrent placement may change meanwhile (web/services/capacity.py).
    known = capacity.lock_host(beat["host"], now)
    used = capacity.used_by(beat["host"]) if known else (0, 0)
    host = (db.session.get(Host, beat["host"], populate_existing=True) if known else None) or Host(
        name=beat["host"], drained=False
    )
    host.arch = beat["arch"]
    host.accel = beat["accel"]
    host.emulators = beat["emulators"]
    host.queues = beat["queues"]
    host.cpu_modes = beat["cpu_modes"]
    host.capacity = beat["capacity"]
    host.allocated = beat["allocated"]
    host.domains = beat["domains"]
    host.libvirt_version = beat["libvirt_version"] or None
    host.snapshot_support = beat["snapshot_support"]
    host.migration = beat.get("migration") or {}
    host.networks = beat.get("networks") or {}
    attestations.observe_key(host, beat.get("signing_key"))
    _record_guest_facts(host.name, beat["domains"])
    if beat["started_at"]:
        host.worker_started_at = datetime.fromtimestamp(beat["started_at"], UTC)
    host.last_seen = now
    capacity.refresh(host, used)
    db.session.add(host)
    return host


# Hosts whose liveness one statement writes (an executemany of this many rows).
LIVENESS_CHUNK = 1000


def record_liveness(ages: dict[str, float]) -> int:
    """`last_seen` of the hosts whose workers marked them alive (queues/liveness.py) `ages` seconds ago by
    Redis's clock: stamped with this process's clock less that age, and never moved back. Returns the count."""
    now = utcnow()
    hosts = Host.__table__
    statement = (
        update(hosts)
        .where(hosts.c.name == bindparam("host"), hosts.c.last_seen < bindparam("seen"))
        .values(last_seen=bindparam("seen"))
    )
    rows = [{"host": host, "seen": now - timedelta(seconds=age)} for host, age in ages.items()]
    for start in range(0, len(rows), LIVENESS_CHUNK):
        db.session.execute(statement, rows[start : start + LIVENESS_CHUNK])
        db.session.commit()
    return len(rows)


# Addresses that did not change are written again at most this often, so `addresses_at` says how fresh they
# are without a row write per VM per heartbeat.
ADDRESSES_REFRESH_S = 30.0


def _record_guest_facts(host: str, domains: list[dict]) -> None:
    """Addresses and SSH host keys of the host's running VMs, as its worker read them."""
    facts = {d["uuid"]: d for d in domains if "addresses" in d}
    if not facts:
        return
    now = utcnow()
    for vm in db.session.scalars(select(Vm).where(Vm.id.in_(facts), Vm.host == host, Vm.state != VmState.DELETED)):
        fact = facts[vm.id]
        stale = vm.addresses_at is None or (now - _aware(vm.addresses_at)).total_seconds() > ADDRESSES_REFRESH_S
        if fact["addresses"] != vm.addresses or stale:
            vm.addresses = fact["addresses"]
            vm.addresses_at = now
        # The first keys the guest printed are the ones to trust; a later block (a reinstall inside the guest)
        # does not silently replace them.
        if fact.get("ssh_host_keys") and not vm.ssh_host_keys:
            vm.ssh_host_keys = fact["ssh_host_keys"]


def _aware(moment: datetime) -> datetime:
    # SQLite returns naive datetimes even for timezone-aware columns.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def host_state(host: Host, settings: Settings, now: datetime | None = None) -> HostState:
    if (now or utcnow()) - _aware(host.last_seen) > timedelta(seconds=settings.host_down_after_s):
        return HostState.DOWN
    return HostState.DRAINED if host.drained else HostState.UP


def live_hosts(settings: Settings) -> list[LiveHost]:
    """Hosts that heartbeated within the liveness window: one indexed query of the few columns routing needs
    (not the JSON of every domain), no broker round trip."""
    since = utcnow() - timedelta(seconds=settings.host_down_after_s)
    rows = db.session.execute(
        select(Host.name, Host.arch, Host.accel, Host.emulators, Host.drained, Host.networks).where(
            Host.last_seen >= since
        )
    )
    return [
        LiveHost(name, Arch(arch), accel, frozenset(Arch(a) for a in emulators), drained, offers_of(networks))
        for name, arch, accel, emulators, drained, networks in rows
    ]


def _live_host(h: Host) -> LiveHost:
    return LiveHost(
        name=h.name,
        arch=Arch(h.arch),
        accel=h.accel,
        emulators=frozenset(Arch(a) for a in h.emulators),
        drained=h.drained,
        offers=offers_of(h.networks),
    )


class FleetCache:
    """The fleet summary, recomputed at most every `ttl` seconds per process from the hosts counted by kind
    (one GROUP BY): routing then costs the same whatever the number of hosts, and a dead host still drops out
    within the liveness window."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value: Fleet | None = None
        self._at = 0.0

    def get(self, settings: Settings) -> Fleet:
        ttl = min(1.0, settings.heartbeat_interval_s / 2)
        with self._lock:
            if self._value is None or time.monotonic() - self._at > ttl:
                self._value = Fleet.from_kinds(capacity.fleet_kinds(settings))
                self._at = time.monotonic()
            return self._value

    def clear(self) -> None:
        with self._lock:
            self._value = None


def fleet_cache() -> FleetCache:
    """The app's fleet cache (one per app: tests run several apps in one process)."""
    return current_app.extensions["archq"].fleet_cache


def allocations() -> dict[str, tuple[int, int]]:
    """vCPUs and MiB that VMs placed on each host hold, from the database (not from the hosts' reports)."""
    rows = db.session.execute(
        select(Vm.host, func.sum(Vm.vcpus), capacity.held_memory_mib())
        .where(Vm.host.is_not(None), Vm.state.in_(ALLOCATING_VM_STATES))
        .group_by(Vm.host)
    )
    return {host: (int(cpus or 0), int(mem or 0)) for host, cpus, mem in rows}


def host_loads(settings: Settings) -> list[HostLoad]:
    since = utcnow() - timedelta(seconds=settings.host_down_after_s)
    used = allocations()
    return [
        HostLoad(
            host=_live_host(h),
            vcpus=int(h.capacity.get("vcpus", 0)),
            memory_mib=int(h.capacity.get("memory_mib", 0)),
            used_vcpus=used.get(h.name, (0, 0))[0],
            used_memory_mib=used.get(h.name, (0, 0))[1],
            free_disk_mib=h.capacity.get("disk_mib"),
        )
        for h in db.session.scalars(select(Host).where(Host.last_seen >= since))
    ]


def host_page(filters: dict, after: list[str] | None, limit: int, settings: Settings) -> Page[Host]:
    """Hosts in name order (the primary key's index), only those of the given arch and state."""
    query = select(Host)
    if "arch" in filters:
        query = query.where(Host.arch == filters["arch"])
    state = filters.get("state")
    if state is not None:
        since = utcnow() - timedelta(seconds=settings.host_down_after_s)
        query = query.where(
            Host.last_seen < since
            if state == HostState.DOWN
            else and_(Host.last_seen >= since, Host.drained.is_(state == HostState.DRAINED))
        )
    return keyset_page(query, (Host.name,), after, limit)


def get_host(name: str) -> Host:
    host = db.session.get(Host, name)
    if host is None:
        raise NotFound(f"no host named {name!r} has ever sent a heartbeat")
    return host


def set_drained(name: str, drained: bool) -> Host:
    host = get_host(name)
    host.drained = drained
    db.session.commit()
    fleet_cache().clear()
    return host


def host_view(host: Host, settings: Settings) -> dict:
    return host_views([host], settings)[0]


def host_views(hosts: list[Host], settings: Settings) -> list[dict]:
    """The hosts as the API shows them: what their VMs hold and which of their domains archq manages are read
    in two queries for the whole page."""
    names = [host.name for host in hosts]
    allocated = {
        name: {"vcpus": int(cpus or 0), "memory_mib": int(mem or 0)}
        for name, cpus, mem in db.session.execute(
            select(Vm.host, func.sum(Vm.vcpus), func.sum(Vm.memory_mib))
            .where(Vm.host.in_(names), Vm.state.in_(ALLOCATING_VM_STATES))
            .group_by(Vm.host)
        )
    }
    known = set(db.session.scalars(select(Vm.id).where(Vm.host.in_(names), Vm.state != VmState.DELETED)))
    return [
        {
            "name": host.name,
            "arch": host.arch,
            "accel": host.accel,
            "emulators": host.emulators,
            "queues": host.queues,
            "cpu_modes": host.cpu_modes,
            "capacity": host.capacity,
            "allocated": allocated.get(host.name, {"vcpus": 0, "memory_mib": 0}),
            "state": host_state(host, settings),
            "drained": host.drained,
            "last_seen": _aware(host.last_seen),
            # Domains the host runs that archq does not manage: reported, never touched.
            "unmanaged_domains": [d for d in host.domains if d["uuid"] not in known],
            "libvirt_version": host.libvirt_version,
            "snapshot_support": host.snapshot_support or {},
            "networks": host.networks or {},
            "ssh": ssh_endpoint(host),
            "signing_key": attestations.key_view(host),
        }
        for host in hosts
    ]


def ssh_endpoint(host: Host) -> dict:
    """Where `archq vm ssh` reaches the host to jump to its NAT VMs: the address it gives for migrations."""
    migration = host.migration or {}
    return {"address": migration.get("address") or None, "port": migration.get("ssh_port", 22)}
