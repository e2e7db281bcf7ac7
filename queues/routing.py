"""Where a create job goes: a pure function of the request and the live fleet (no I/O)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from queues.arch import Arch
from queues.names import native_queue, tcg_queue
from queues.vocabulary import Accel


class Emulation(StrEnum):
    PREFER_NATIVE = "prefer_native"  # native when a native host is up, TCG elsewhere otherwise
    NATIVE_ONLY = "native_only"  # never emulate; wait for a native host
    ALLOW = "allow"  # like prefer_native; placement may also pick emulating hosts when they are less loaded


@dataclass(frozen=True)
class LiveHost:
    """What routing needs to know of a host that heartbeated recently."""

    name: str
    arch: Arch
    accel: str
    emulators: frozenset[Arch] = field(default_factory=frozenset)
    drained: bool = False
    # What VMs can attach to there (queues/networks.py): ("libvirt", network) and ("bridges", bridge) pairs.
    offers: frozenset[tuple[str, str]] = field(default_factory=frozenset)

    @property
    def queues(self) -> tuple[str, ...]:
        """The routed queues this host consumes (its own host queue aside)."""
        return (native_queue(self.arch), *(tcg_queue(a) for a in sorted(self.emulators)))


def offers_of(networks: dict) -> frozenset[tuple[str, str]]:
    """A heartbeat's `networks` ({"libvirt": [...], "bridges": [...]}) as LiveHost.offers."""
    return frozenset((kind, name) for kind in ("libvirt", "bridges") for name in (networks or {}).get(kind, ()))


@dataclass(frozen=True)
class Route:
    queue: str
    emulated: bool
    accel: str | None  # what the guest will run under, when known at submit time
    warning: str = ""
    waiting_for: str = ""


def emulation_warning(arch: Arch) -> str:
    return (
        f"This {arch} guest runs under QEMU software emulation (TCG) on a host of another architecture, "
        f"roughly 10-20x slower than native. Add a native {arch} host to run it natively."
    )


@dataclass(frozen=True)
class Fleet:
    """What routing needs of the live fleet, summarised once so a decision costs the same for 10 hosts or
    10,000: per architecture, the accelerators of its live native hosts and how many hosts emulate it."""

    native_accels: dict[Arch, frozenset[str]] = field(default_factory=dict)
    emulating: dict[Arch, int] = field(default_factory=dict)
    # Per routed queue: how many live hosts consume it, and how many of those offer each network or bridge.
    consumers: dict[str, int] = field(default_factory=dict)
    offering: dict[str, dict[tuple[str, str], int]] = field(default_factory=dict)

    @classmethod
    def from_hosts(cls, hosts: Iterable[LiveHost]) -> Fleet:
        return cls.from_kinds((host, 1) for host in hosts)

    @classmethod
    def from_kinds(cls, kinds: Iterable[tuple[LiveHost, int]]) -> Fleet:
        """From (host, how many live hosts are like it) pairs: the database counts hosts that share their
        routing facts, so building the summary costs the number of distinct kinds, not of hosts."""
        native: dict[Arch, set[str]] = {}
        emulating: dict[Arch, int] = {}
        consumers: dict[str, int] = {}
        offering: dict[str, dict[tuple[str, str], int]] = {}
        for host, count in kinds:
            if host.drained:
                continue
            native.setdefault(host.arch, set()).add(host.accel)
            for arch in host.emulators:
                emulating[arch] = emulating.get(arch, 0) + count
            for queue in host.queues:
                consumers[queue] = consumers.get(queue, 0) + count
                counts = offering.setdefault(queue, {})
                for offer in host.offers:
                    counts[offer] = counts.get(offer, 0) + count
        return cls({a: frozenset(s) for a, s in native.items()}, emulating, consumers, offering)

    def coverage(self, queue: str, need: tuple[str, str] | None) -> tuple[int, int]:
        """(hosts consuming `queue` that offer `need`, hosts consuming `queue`)."""
        total = self.consumers.get(queue, 0)
        if need is None:
            return total, total
        return self.offering.get(queue, {}).get(need, 0), total


def route_create(arch: Arch, emulation: Emulation, fleet: Fleet) -> Route:
    accels = fleet.native_accels.get(arch)
    if accels:
        return Route(queue=native_queue(arch), emulated=False, accel=next(iter(accels)) if len(accels) == 1 else None)
    emulating = fleet.emulating.get(arch, 0)
    if emulating and emulation != Emulation.NATIVE_ONLY:
        return Route(queue=tcg_queue(arch), emulated=True, accel=Accel.TCG, warning=emulation_warning(arch))
    if emulating:
        reason = (
            f"no live native {arch} host; {emulating} host(s) could emulate it, "
            "but the request said emulation: native_only"
        )
    else:
        reason = f"no live host runs or emulates {arch} guests"
    return Route(
        queue=native_queue(arch),
        emulated=False,
        accel=None,
        waiting_for=f"a native {arch} worker ({reason}); the job starts when one comes up",
    )
