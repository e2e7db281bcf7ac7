"""How archq runs a guest under TCG (software emulation): the CPU each guest architecture gets and the size of
QEMU's translation-block cache. The web side shows and checks these names, the worker writes them into the
domain XML; the figures behind the defaults come from bench/emulation.py (see README "Emulation speed")."""

from __future__ import annotations

from dataclasses import dataclass

from queues.arch import Arch


@dataclass(frozen=True)
class TcgCpu:
    """One CPU configuration for TCG. `name` is also what the VM shows as `cpu_mode_effective`."""

    name: str
    arch: Arch
    # A named QEMU model (libvirt `mode='custom'`), or None for QEMU's `max` (libvirt `mode='maximum'`).
    model: str | None
    # `-global` properties of the CPU object. libvirt 9.0's ARM feature map knows only `sve*`, so properties
    # such as pauth-impdef can only reach QEMU through <qemu:commandline>.
    qemu_globals: tuple[str, ...] = ()


def _max(arch: Arch, *props: str) -> TcgCpu:
    cpu_type = {Arch.AMD64: "max-x86_64-cpu", Arch.ARM64: "max-arm-cpu"}[arch]
    name = ",".join(["maximum", *props])
    return TcgCpu(name, arch, None, tuple(f"{cpu_type}.{prop}" for prop in props))


def _named(arch: Arch, model: str) -> TcgCpu:
    return TcgCpu(f"custom:{model}", arch, model)


# The configurations archq knows, per guest architecture, by name.
TCG_CPUS: dict[Arch, dict[str, TcgCpu]] = {
    arch: {cpu.name: cpu for cpu in cpus}
    for arch, cpus in (
        (Arch.AMD64, (_named(Arch.AMD64, "qemu64"), _named(Arch.AMD64, "Nehalem"), _max(Arch.AMD64))),
        (
            Arch.ARM64,
            (
                _named(Arch.ARM64, "cortex-a57"),
                _named(Arch.ARM64, "cortex-a72"),
                # Graviton2's core, ARMv8.2: LSE atomics (Debian's glibc uses them instead of exclusive
                # load/store pairs, which TCG emulates slowly), no pointer authentication.
                _named(Arch.ARM64, "neoverse-n1"),
                _max(Arch.ARM64),
                # `max` emulates pointer authentication with QARMA, which dominates TCG time; QEMU's own
                # implementation-defined algorithm keeps the feature (same instructions, another hash).
                _max(Arch.ARM64, "pauth-impdef=on"),
            ),
        ),
    )
}

# archq's choice per guest architecture, from bench/emulation.py's figures (README "Emulation speed").
DEFAULT_TCG_CPUS: dict[Arch, str] = {Arch.AMD64: "custom:qemu64", Arch.ARM64: "custom:cortex-a57"}


def tcg_cpu(name: str, arch: Arch) -> TcgCpu:
    """The configuration called `name` for `arch`; ValueError names the ones that exist."""
    cpu = TCG_CPUS[arch].get(name)
    if cpu is None:
        known = ", ".join(TCG_CPUS[arch])
        raise ValueError(f"unknown TCG CPU {name!r} for {arch} guests; known: {known}")
    return cpu


def default_tcg_cpu(arch: Arch) -> TcgCpu:
    return TCG_CPUS[arch][DEFAULT_TCG_CPUS[arch]]


# QEMU's translation-block cache when none is set: 1 GiB per guest (since QEMU 5.0), reserved as address space
# and filled as code is translated; a busy guest can make most of it resident.
QEMU_DEFAULT_TB_CACHE_MIB = 1024
# archq's size for every TCG guest (libvirt <tb-cache>), from bench/emulation.py's figures.
TB_CACHE_MIB = 128


def footprint_mib(memory_mib: int, tcg: bool) -> int:
    """Host memory a guest can hold: its RAM, plus under TCG the translation cache QEMU may fill. Capacity
    accounting reserves this, so emulating hosts are not overcommitted by their guests' translated code."""
    return memory_mib + (TB_CACHE_MIB if tcg else 0)
