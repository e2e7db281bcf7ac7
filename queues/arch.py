"""CPU architecture names: canonical names for the API and queues, aliases accepted at the edge, and
the one mapping to libvirt's names."""

from __future__ import annotations

from enum import StrEnum


class Arch(StrEnum):
    AMD64 = "amd64"
    ARM64 = "arm64"


class UnknownArch(ValueError):
    """An architecture name that archq does not know."""


_ALIASES: dict[str, Arch] = {
    "amd64": Arch.AMD64,
    "x86_64": Arch.AMD64,
    "x86-64": Arch.AMD64,
    "x64": Arch.AMD64,
    "arm64": Arch.ARM64,
    "aarch64": Arch.ARM64,
    "arm64v8": Arch.ARM64,
}

_LIBVIRT: dict[Arch, str] = {Arch.AMD64: "x86_64", Arch.ARM64: "aarch64"}
_FROM_LIBVIRT: dict[str, Arch] = {name: arch for arch, name in _LIBVIRT.items()}

ALL: tuple[Arch, ...] = tuple(Arch)


def parse_arch(name: str) -> Arch:
    """Canonical architecture for any accepted spelling (case-insensitive)."""
    try:
        return _ALIASES[name.strip().lower()]
    except (KeyError, AttributeError):
        accepted = ", ".join(sorted(_ALIASES))
        raise UnknownArch(f"unknown architecture {name!r}; accepted: {accepted}") from None


def to_libvirt(arch: Arch) -> str:
    """libvirt's (and QEMU's, and `uname -m`'s) name of a canonical architecture."""
    return _LIBVIRT[arch]


def from_libvirt(name: str) -> Arch | None:
    """Canonical architecture for a libvirt arch name, or None for one archq does not run (i686, ppc64...)."""
    return _FROM_LIBVIRT.get(name)
