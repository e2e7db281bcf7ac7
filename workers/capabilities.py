"""What a libvirt host offers, read from its capabilities XML (`virConnectGetCapabilities`,
`virsh capabilities`): native architecture, accelerators, emulated architectures, machine types, size.

Pure parsing: no libvirt connection here. An accelerator listed by libvirt (kvm, hvf) is only a claim
that the device exists; whether it actually boots a guest is decided elsewhere by a probe.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from queues.arch import Arch, from_libvirt, to_libvirt

# The domain type every QEMU guest can use: TCG, pure emulation. Any other type is an accelerator.
_EMULATION = "qemu"

# libvirt always reports host memory in KiB today; the other units are accepted so that a change
# of unit in a future libvirt does not silently turn into a wrong size.
_BYTES_PER_UNIT: dict[str, int] = {
    "b": 1,
    "bytes": 1,
    "k": 1024,
    "kib": 1024,
    "kb": 1000,
    "m": 1024**2,
    "mib": 1024**2,
    "mb": 1000**2,
    "g": 1024**3,
    "gib": 1024**3,
    "gb": 1000**3,
    "t": 1024**4,
    "tib": 1024**4,
    "tb": 1000**4,
}


class CapabilitiesError(ValueError):
    """Capabilities XML that cannot be parsed, or a host of an architecture archq does not run."""


@dataclass(frozen=True)
class HostCapabilities:
    native_arch: Arch
    accelerators: tuple[str, ...]
    emulators: tuple[Arch, ...]
    emulator_paths: dict[Arch, str]
    machines: dict[Arch, tuple[str, ...]]
    cpu_model: str | None
    total_vcpus: int
    total_memory_mib: int

    @property
    def can_accelerate(self) -> bool:
        """libvirt lists an accelerator for the native architecture; says nothing about whether it works."""
        return bool(self.accelerators)


@dataclass
class _GuestArch:
    emulator: str | None = None
    machines: list[str] = field(default_factory=list)
    domains: list[str] = field(default_factory=list)


def _supported_names() -> str:
    return ", ".join(to_libvirt(arch) for arch in Arch)


def _text(element: ET.Element | None) -> str | None:
    if element is None or element.text is None:
        return None
    text = element.text.strip()
    return text or None


def _int_attr(element: ET.Element, name: str, default: int) -> int:
    value = element.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise CapabilitiesError(f"<{element.tag} {name}={value!r}> is not an integer") from None


def _append_new(items: list[str], value: str | None) -> None:
    if value is not None and value not in items:
        items.append(value)


def _read_guests(root: ET.Element) -> dict[Arch, _GuestArch]:
    guests: dict[Arch, _GuestArch] = {}
    for guest in root.iterfind("guest"):
        # Xen PV, exe (containers) and other OS types cannot run the full-system images archq boots.
        if _text(guest.find("os_type")) != "hvm":
            continue
        for arch_el in guest.iterfind("arch"):
            arch = from_libvirt(arch_el.get("name", ""))
            if arch is None:
                continue  # i686, armv7l, ppc64...: archq has no queue for them
            info = guests.setdefault(arch, _GuestArch())
            if info.emulator is None:
                info.emulator = _text(arch_el.find("emulator"))
            for machine in arch_el.iterfind("machine"):
                _append_new(info.machines, _text(machine))
            for domain in arch_el.iterfind("domain"):
                _append_new(info.domains, domain.get("type"))
                # Older libvirt and some drivers give a domain type its own emulator and machines.
                if info.emulator is None:
                    info.emulator = _text(domain.find("emulator"))
                for machine in domain.iterfind("machine"):
                    _append_new(info.machines, _text(machine))
    return guests


def _total_vcpus(host: ET.Element) -> int:
    cells_cpus = host.findall("topology/cells/cell/cpus/cpu")
    if cells_cpus:
        return len(cells_cpus)
    # Without NUMA information the CPU topology is all there is; libvirt reports sockets per NUMA
    # node, which is the total only when there are no cells, i.e. exactly when this fallback runs.
    topology = host.find("cpu/topology")
    if topology is None:
        return 0
    total = 1
    for name in ("sockets", "dies", "clusters", "cores", "threads"):
        total *= _int_attr(topology, name, 1)
    return total


def _total_memory_mib(host: ET.Element) -> int:
    total_bytes = 0
    for memory in host.iterfind("topology/cells/cell/memory"):
        unit = memory.get("unit", "KiB")
        factor = _BYTES_PER_UNIT.get(unit.lower())
        if factor is None:
            raise CapabilitiesError(f"unknown memory unit {unit!r} in host NUMA cell")
        text = _text(memory)
        try:
            amount = int(text) if text is not None else 0
        except ValueError:
            raise CapabilitiesError(f"host NUMA cell memory {text!r} is not an integer") from None
        total_bytes += amount * factor
    return total_bytes // 1024**2


def parse_capabilities(xml_text: str) -> HostCapabilities:
    """Parse libvirt host capabilities XML.

    Guests of architectures archq does not run are ignored; a host of such an architecture is an error.
    """
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as exc:
        raise CapabilitiesError(f"libvirt capabilities are not well-formed XML: {exc}") from None
    if root.tag != "capabilities":
        raise CapabilitiesError(f"expected a <capabilities> document, got <{root.tag}>")
    host = root.find("host")
    if host is None:
        raise CapabilitiesError("libvirt capabilities have no <host> element")
    host_arch_name = _text(host.find("cpu/arch"))
    if host_arch_name is None:
        raise CapabilitiesError("libvirt capabilities have no <host><cpu><arch> element")
    native = from_libvirt(host_arch_name)
    if native is None:
        raise CapabilitiesError(
            f"host architecture {host_arch_name!r} is not one archq runs (supported: {_supported_names()})"
        )

    guests = _read_guests(root)
    native_guest = guests.get(native, _GuestArch())
    accelerators = tuple(d for d in native_guest.domains if d != _EMULATION)
    emulators = tuple(sorted(arch for arch, info in guests.items() if arch != native and _EMULATION in info.domains))
    return HostCapabilities(
        native_arch=native,
        accelerators=accelerators,
        emulators=emulators,
        emulator_paths={arch: info.emulator for arch, info in guests.items() if info.emulator is not None},
        machines={arch: tuple(sorted(info.machines)) for arch, info in guests.items() if info.machines},
        cpu_model=_text(host.find("cpu/model")),
        total_vcpus=_total_vcpus(host),
        total_memory_mib=_total_memory_mib(host),
    )


def read_capabilities_file(path: Path) -> HostCapabilities:
    """Parse a saved `virsh capabilities` output. OSError (missing file...) propagates unchanged."""
    try:
        return parse_capabilities(Path(path).read_text(encoding="utf-8"))
    except CapabilitiesError as exc:
        raise CapabilitiesError(f"{path}: {exc}") from exc


def parse_cpu_modes(domcaps_xml: str) -> tuple[str, ...]:
    """CPU modes a domain can use, from libvirt's domain capabilities (`getDomainCapabilities`)."""
    try:
        root = ET.fromstring(domcaps_xml)
    except ET.ParseError as exc:
        raise CapabilitiesError(f"domain capabilities are not valid XML: {exc}") from exc
    return tuple(m.get("name", "") for m in root.findall("cpu/mode") if m.get("supported") == "yes")
