"""What this host is and can do: its architecture, accelerator, emulators, capacity and queues."""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from queues.arch import Arch
from queues.config import Settings
from queues.names import host_queue, native_queue, tcg_queue
from queues.vocabulary import Accel
from workers.capabilities import HostCapabilities

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HostProfile:
    name: str
    arch: Arch
    accel: str  # "kvm" or "hvf" when hardware acceleration works for `arch`, else "tcg"
    emulators: tuple[Arch, ...]  # foreign architectures this host runs under TCG
    vcpus: int
    memory_mib: int
    # CPU modes libvirt supports per guest arch here (native under its accelerator, foreign under TCG).
    cpu_modes: dict[Arch, tuple[str, ...]] = field(default_factory=dict)
    # libvirt's version here (9.0.0 is 9000000): which snapshot features work depends on it.
    libvirt_version: int = 0

    @property
    def queues(self) -> list[str]:
        return [native_queue(self.arch), host_queue(self.name), *(tcg_queue(a) for a in self.emulators)]

    def can_run(self, arch: Arch) -> bool:
        return arch == self.arch or arch in self.emulators

    def domain_type(self, arch: Arch) -> str:
        """libvirt's domain type for a guest of `arch` here: accelerated only for the native arch."""
        if arch == self.arch and self.accel != Accel.TCG:
            return self.accel
        return "qemu"

    def accel_for(self, arch: Arch) -> str:
        """How a guest of `arch` runs here, in the API's words: libvirt's `qemu` domain type is TCG."""
        domain_type = self.domain_type(arch)
        return Accel.TCG if domain_type == "qemu" else domain_type


def decide_accel(settings: Settings, caps: HostCapabilities, probe: Callable[[], bool]) -> str:
    """KVM only when configuration forces it or a real boot under it succeeded.

    libvirt lists `kvm` wherever /dev/kvm exists, including nested backends where a guest never finishes
    booting; the probe's answer is cached per host and kernel so a worker restart costs nothing.
    """
    if settings.accel != "auto":
        return settings.accel
    if not caps.accelerators:
        return Accel.TCG
    accelerator = caps.accelerators[0]
    cache = settings.data_dir / "accel-probe.json"
    key = f"{settings.hostname}/{platform.release()}/{accelerator}"
    cached = _read_json(cache).get(key)
    if cached is not None:
        return accelerator if cached else Accel.TCG
    started = time.monotonic()
    works = probe()
    log.warning(
        "%s probe on %s: %s after %.1fs",
        accelerator,
        settings.hostname,
        "guest booted" if works else "guest did not boot, using TCG",
        time.monotonic() - started,
    )
    _write_json(cache, {**_read_json(cache), key: works})
    return accelerator if works else Accel.TCG


def build_profile(
    settings: Settings, caps: HostCapabilities, accel: str, cpu_modes: dict[Arch, tuple[str, ...]] | None = None
) -> HostProfile:
    return HostProfile(
        cpu_modes=cpu_modes or {},
        name=settings.hostname,
        arch=caps.native_arch,
        accel=accel,
        emulators=caps.emulators,
        vcpus=caps.total_vcpus or os.cpu_count() or 1,
        memory_mib=caps.total_memory_mib,
    )


def free_disk_mib(path: Path) -> int:
    path.mkdir(parents=True, exist_ok=True)
    return shutil.disk_usage(path).free // (1024 * 1024)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)
