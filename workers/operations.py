"""What the VM tasks do, as plain functions of a worker context and a loaded job message."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from queues.arch import Arch
from queues.config import Settings
from workers.artifacts import ArtifactError, ArtifactStore
from workers.boot import CONSOLE_NAME, fetch_artifact, prepare_disk
from workers.domain_xml import DomainSpec, build_domain_xml, cpu_mode_in, domain_name, firmware_of
from workers.errors import JobFailed
from workers.host import HostProfile
from workers.hypervisor import DomainInfo, Hypervisor, HypervisorError


@dataclass
class WorkerContext:
    host: HostProfile
    hypervisor: Hypervisor
    data_dir: Path
    images_dir: Path
    # The guest gets this long to power off after an ACPI shutdown before it is forced off.
    stop_timeout_s: float = 30.0
    # Where local image sources may be read from on this host (empty: the images directory).
    image_dirs: tuple[Path, ...] = ()
    max_image_bytes: int = 64 * 1024**3
    # Transport, SSH trust and storage of this host for migrations (queues/config.py); None: defaults.
    settings: Settings | None = None

    def vm_dir(self, vm_id: str) -> Path:
        return self.data_dir / "vms" / vm_id

    def store(self) -> ArtifactStore:
        return ArtifactStore(self.images_dir, self.image_dirs or (self.images_dir,), self.max_image_bytes)


def create_vm(ctx: WorkerContext, vm: dict) -> dict:
    """Make the VM run on this host. Re-running it for the same VM id converges on the same domain."""
    arch = Arch(vm["arch"])
    if not ctx.host.can_run(arch):
        raise JobFailed(
            "arch_unsupported",
            f"host {ctx.host.name} ({ctx.host.arch}) can neither run nor emulate {arch} guests; "
            "the job was routed to the wrong queue",
        )
    artifact = vm.get("artifact")
    if not artifact:
        raise JobFailed(
            "image_unknown", f"the job names image {vm['image']!r} but carries no artifact for {arch}; resubmit it"
        )
    store = ctx.store()
    try:
        # Before anything of the VM exists: a bad download leaves nothing behind.
        files = fetch_artifact(store, artifact)
    except ArtifactError as exc:
        raise JobFailed(exc.code, f"image {vm['image']!r} ({arch}) on host {ctx.host.name}: {exc}") from exc
    vm_dir = ctx.vm_dir(str(vm["id"]))
    vm_dir.mkdir(parents=True, exist_ok=True)
    try:
        boot = prepare_disk(store, artifact, files, vm_dir, arch)
    except ArtifactError as exc:
        shutil.rmtree(vm_dir, ignore_errors=True)
        raise JobFailed(exc.code, f"host {ctx.host.name}: {exc}") from exc
    domain_type = ctx.host.domain_type(arch)
    spec = DomainSpec(
        uuid=str(vm["id"]),
        name=vm["name"],
        arch=arch,
        vcpus=vm["vcpus"],
        memory_mib=vm["memory_mib"],
        kernel=boot.kernel,
        initrd=boot.initrd,
        cmdline=boot.cmdline,
        serial_log=vm_dir / CONSOLE_NAME,
        domain_type=domain_type,
        disk=boot.disk,
        disk_format=boot.disk_format,
        cpu_mode=vm.get("cpu_mode") or "host-model",
        nvram=boot.nvram,
    )
    existed = ctx.hypervisor.domain(spec.uuid) is not None
    try:
        info = ctx.hypervisor.ensure_running(spec.uuid, build_domain_xml(spec))
        cpu_mode = cpu_mode_in(ctx.hypervisor.xml_desc(spec.uuid, inactive=True))
    except HypervisorError as exc:
        if existed:
            raise JobFailed(exc.code, f"{exc}; host {ctx.host.name}; the domain was kept") from exc
        # What this attempt defined and made is undone: a failed create leaves nothing on the host.
        with contextlib.suppress(HypervisorError):
            ctx.hypervisor.remove(spec.uuid)
        shutil.rmtree(vm_dir, ignore_errors=True)
        raise JobFailed(exc.code, f"{exc}; host {ctx.host.name}; nothing was left on the host") from exc
    return {
        "host": ctx.host.name,
        "accel": "tcg" if domain_type == "qemu" else domain_type,
        "emulated": arch != ctx.host.arch,
        "state": info.state,
        "domain": info.name,
        "cpu_mode_effective": cpu_mode,
        "disk_format": spec.disk_format,
        "firmware": firmware_of(spec),
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
    result = _lifecycle("start", lambda: ctx.hypervisor.start(str(vm["id"])), ctx)
    # An existing VM keeps the CPU mode it was defined with; report the one its running domain really has.
    with contextlib.suppress(HypervisorError):
        result["cpu_mode_effective"] = cpu_mode_in(ctx.hypervisor.xml_desc(str(vm["id"]), inactive=True))
    return result


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
