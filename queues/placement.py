"""Placement strategies: which host a create job goes to, from heartbeated capacity and the allocations the
database accounts. Pure functions, no I/O."""

from __future__ import annotations

import random as _random
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from queues.arch import Arch
from queues.routing import Emulation, LiveHost


class Placement(StrEnum):
    QUEUE = "queue"  # no choice here: the first free worker of the routed queue takes the job
    LEAST_LOADED = "least_loaded"  # the host with the lowest allocated fraction after placing
    BEST_FIT = "best_fit"  # the host left with the least free memory that still fits (packs hosts)
    ROUND_ROBIN = "round_robin"  # fitting hosts in name order, one after the other
    RANDOM = "random"


@dataclass(frozen=True)
class HostLoad:
    host: LiveHost
    vcpus: int
    memory_mib: int
    used_vcpus: int = 0
    used_memory_mib: int = 0
    # Free space in the host's data directory as it last reported it (None: not reported).
    free_disk_mib: int | None = None

    def fits(self, vcpus: int, memory_mib: int, cpu_ratio: float, ram_ratio: float, disk_mib: int = 0) -> bool:
        return (
            self.used_vcpus + vcpus <= self.vcpus * cpu_ratio
            and self.used_memory_mib + memory_mib <= self.memory_mib * ram_ratio
            and (self.free_disk_mib is None or disk_mib <= self.free_disk_mib)
        )

    def load_after(self, vcpus: int, memory_mib: int) -> float:
        cpu = (self.used_vcpus + vcpus) / max(1, self.vcpus)
        mem = (self.used_memory_mib + memory_mib) / max(1, self.memory_mib)
        return max(cpu, mem)


@dataclass(frozen=True)
class Demand:
    arch: Arch
    vcpus: int
    memory_mib: int
    emulation: Emulation = Emulation.PREFER_NATIVE
    # The network or bridge the VM's NIC needs (queues/networks.py `needs`), and the disk it may fill.
    need: tuple[str, str] | None = None
    disk_mib: int = 0


class NoHostFits(Exception):
    """No live host can take the VM; the message says why."""


class NoHostOffers(NoHostFits):
    """Live hosts could run the VM, but none has the network or bridge its NIC needs."""


def candidates(demand: Demand, loads: Sequence[HostLoad]) -> list[HostLoad]:
    """Hosts that may run the guest: native ones, or emulating ones when the request and fleet allow."""
    usable = [load for load in loads if not load.host.drained]
    native = [load for load in usable if load.host.arch == demand.arch]
    emulating = [load for load in usable if demand.arch in load.host.emulators]
    if demand.emulation == Emulation.ALLOW:
        return native + emulating
    if native or demand.emulation == Emulation.NATIVE_ONLY:
        return native
    return emulating


def place(
    strategy: Placement,
    demand: Demand,
    loads: Sequence[HostLoad],
    *,
    cpu_ratio: float = 1.0,
    ram_ratio: float = 1.0,
    cursor: int = 0,
    rng: _random.Random | None = None,
) -> HostLoad:
    """The host `strategy` picks; `cursor` drives round_robin, `rng` random."""
    eligible = candidates(demand, loads)
    if not eligible:
        raise NoHostFits(f"no live host can run {demand.arch} guests (emulation: {demand.emulation})")
    if demand.need is not None:
        eligible = [h for h in eligible if demand.need in h.host.offers]
        if not eligible:
            raise NoHostOffers(no_host_offers(demand.need, demand.arch))
    fitting = [h for h in eligible if h.fits(demand.vcpus, demand.memory_mib, cpu_ratio, ram_ratio, demand.disk_mib)]
    if not fitting:
        disk = f" and {demand.disk_mib} MiB of disk" if demand.disk_mib else ""
        raise NoHostFits(
            f"none of {len(eligible)} live host(s) for {demand.arch} has {demand.vcpus} vCPU(s) and "
            f"{demand.memory_mib} MiB free{disk}"
        )
    if strategy == Placement.LEAST_LOADED:
        return min(fitting, key=lambda h: (h.load_after(demand.vcpus, demand.memory_mib), h.host.name))
    if strategy == Placement.BEST_FIT:
        return min(fitting, key=lambda h: (h.memory_mib * ram_ratio - h.used_memory_mib, h.host.name))
    if strategy == Placement.ROUND_ROBIN:
        ordered = sorted(fitting, key=lambda h: h.host.name)
        return ordered[cursor % len(ordered)]
    if strategy == Placement.RANDOM:
        return (rng or _random.Random()).choice(fitting)
    raise ValueError(f"{strategy} does not pick a host")


def no_host_offers(need: tuple[str, str], arch: Arch | None = None) -> str:
    kind, name = need
    what = f"bridge {name!r}" if kind == "bridges" else f"libvirt network {name!r}"
    where = f" that can run {arch} guests" if arch else ""
    return f"no live host{where} has {what} (hosts report what they have in their heartbeats: GET /api/v1/hosts)"
