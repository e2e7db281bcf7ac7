"""Where a create job goes: a pure function of the request and the live fleet (no I/O)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from queues.arch import Arch
from queues.names import native_queue, tcg_queue


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


def route_create(arch: Arch, emulation: Emulation, hosts: Iterable[LiveHost]) -> Route:
    candidates = [h for h in hosts if not h.drained]
    native = [h for h in candidates if h.arch == arch]
    if native:
        accels = {h.accel for h in native}
        return Route(queue=native_queue(arch), emulated=False, accel=accels.pop() if len(accels) == 1 else None)
    emulating = [h for h in candidates if arch in h.emulators]
    if emulating and emulation != Emulation.NATIVE_ONLY:
        return Route(queue=tcg_queue(arch), emulated=True, accel="tcg", warning=emulation_warning(arch))
    if emulating:
        reason = (
            f"no live native {arch} host; {len(emulating)} host(s) could emulate it, "
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
