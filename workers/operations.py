"""What the VM tasks do, as plain functions of a worker context and a loaded job message."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from queues.arch import Arch
from queues.config import Settings
from workers.domain_xml import DomainSpec, build_domain_xml, domain_name
from workers.errors import JobFailed
from workers.guest.tiny import TinyGuest, TinyGuestError, ensure_tiny_guest
from workers.host import HostProfile
from workers.hypervisor import DomainInfo, Hypervisor, HypervisorError

KNOWN_IMAGES = ("tiny",)


@dataclass
class WorkerContext:
    host: HostProfile
    hypervisor: Hypervisor
    data_dir: Path
    images_dir: Path
    # The guest gets this long to power off after an ACPI shutdown before it is forced off.
    stop_timeout_s: float = 30.0
    # Transport, SSH trust and storage of this host for migrations (queues/config.py); None: defaults.
    settings: Settings | None = None

    def vm_dir(self, vm_id: str) -> Path:
        return self.data_dir / "vms" / vm_id


def boot_artifacts(ctx: WorkerContext, image: str, arch: Arch) -> TinyGuest:
    if image not in KNOWN_IMAGES:
        raise JobFailed("image_unknown", f"image {image!r} is not known on host {ctx.host.name}")
    try:
        return ensure_tiny_guest(arch, ctx.images_dir / "tiny")
    except TinyGuestError as exc:
        raise JobFailed("image_unavailable", f"could not prepare image {image!r} for {arch}: {exc}") from exc


def create_vm(ctx: WorkerContext, vm: dict) -> dict:
    """Make the VM run on this host. Re-running it for the same VM id converges on the same domain."""
    arch = Arch(vm["arch"])
    if not ctx.host.can_run(arch):
        raise JobFailed(
            "arch_unsupported",
            f"host {ctx.host.name} ({ctx.host.arch}) can neither run nor emulate {arch} guests; "
            "the job was routed to the wrong queue",
        )
    guest = boot_artifacts(ctx, vm["image"], arch)
    vm_dir = ctx.vm_dir(str(vm["id"]))
    vm_dir.mkdir(parents=True, exist_ok=True)
    domain_type = ctx.host.domain_type(arch)
    spec = DomainSpec(
        uuid=str(vm["id"]),
        name=vm["name"],
        arch=arch,
        vcpus=vm["vcpus"],
        memory_mib=vm["memory_mib"],
        kernel=guest.kernel,
        initrd=guest.initrd,
        cmdline=guest.cmdline,
        serial_log=vm_dir / "console.log",
        domain_type=domain_type,
    )
    try:
        info = ctx.hypervisor.ensure_running(spec.uuid, build_domain_xml(spec))
    except HypervisorError as exc:
        raise JobFailed(exc.code, f"{exc}; host {ctx.host.name}, nothing else was changed") from exc
    return {
        "host": ctx.host.name,
        "accel": "tcg" if domain_type == "qemu" else domain_type,
        "emulated": arch != ctx.host.arch,
        "state": info.state,
        "domain": info.name,
    }


def delete_vm(ctx: WorkerContext, vm: dict) -> dict:
    """Destroy and undefine the domain and remove its files. Deleting what is already gone succeeds."""
    try:
        existed = ctx.hypervisor.remove(str(vm["id"]))
    except HypervisorError as exc:
        raise JobFailed(exc.code, f"{exc}; the VM may still exist on host {ctx.host.name}") from exc
    shutil.rmtree(ctx.vm_dir(str(vm["id"])), ignore_errors=True)
    return {"host": ctx.host.name, "state": "deleted", "existed": existed, "domain": domain_name(vm["name"])}


def _lifecycle(action: str, call: Callable[[], DomainInfo], ctx: WorkerContext) -> dict:
    try:
        info = call()
    except HypervisorError as exc:
        raise JobFailed(exc.code, f"{action} failed on host {ctx.host.name}: {exc}") from exc
    return {"host": ctx.host.name, "state": info.state, "domain": info.name}


def start_vm(ctx: WorkerContext, vm: dict) -> dict:
    return _lifecycle("start", lambda: ctx.hypervisor.start(str(vm["id"])), ctx)


def stop_vm(ctx: WorkerContext, vm: dict) -> dict:
    info, forced = _stop(ctx, vm)
    return {"host": ctx.host.name, "state": info.state, "domain": info.name, "forced": forced}


def _stop(ctx: WorkerContext, vm: dict) -> tuple[DomainInfo, bool]:
    try:
        return ctx.hypervisor.stop(str(vm["id"]), timeout_s=ctx.stop_timeout_s)
    except HypervisorError as exc:
        raise JobFailed(exc.code, f"stop failed on host {ctx.host.name}: {exc}") from exc


def reboot_vm(ctx: WorkerContext, vm: dict) -> dict:
    return _lifecycle("reboot", lambda: ctx.hypervisor.reboot(str(vm["id"])), ctx)


# What undoes each kind when it is cancelled or times out after doing its work.
ROLLBACKS: dict[str, Callable[[WorkerContext, dict], dict]] = {"create": delete_vm}
# Kinds whose success cannot be undone by a late cancel: a finished migration is where the VM now is.
COMMITTED_ON_SUCCESS = frozenset({"migrate"})
