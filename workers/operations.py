"""What the VM tasks do, as plain functions of a worker context and a loaded job message."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from queues.arch import Arch
from queues.config import Settings
from queues.emulation import TB_CACHE_MIB, tcg_cpu
from queues.networks import NetworkMode
from queues.vocabulary import VmState
from workers.artifacts import ArtifactError, ArtifactStore
from workers.boot import CONSOLE_NAME, SEED_NAME, fetch_artifact, prepare_disk
from workers.cloud_init import seed_files, write_seed_iso
from workers.domain_xml import DomainSpec, Nic, build_domain_xml, cpu_mode_in, domain_name, firmware_of
from workers.errors import WorkerError
from workers.host import HostProfile
from workers.hypervisor import DomainInfo, Hypervisor, HypervisorError
from workers.networks import offered, release_leases


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
    # What this host signs its attestations with (workers/attest.py); None: it signs none.
    signing_key: Ed25519PrivateKey | None = None

    def vm_dir(self, vm_id: str) -> Path:
        return self.data_dir / "vms" / vm_id

    def store(self) -> ArtifactStore:
        return ArtifactStore(self.images_dir, self.image_dirs or (self.images_dir,), self.max_image_bytes)


def create_vm(ctx: WorkerContext, vm: dict) -> dict:
    """Make the VM run on this host. Re-running it for the same VM id converges on the same domain."""
    arch = Arch(vm["arch"])
    if not ctx.host.can_run(arch):
        raise WorkerError(
            "arch_unsupported",
            f"host {ctx.host.name} ({ctx.host.arch}) can neither run nor emulate {arch} guests; "
            "the job was routed to the wrong queue",
        )
    artifact = vm.get("artifact")
    if not artifact:
        raise WorkerError(
            "image_unknown", f"the job names image {vm['image']!r} but carries no artifact for {arch}; resubmit it"
        )
    store = ctx.store()
    try:
        # Before anything of the VM exists: a bad download leaves nothing behind.
        files = fetch_artifact(store, artifact)
    except ArtifactError as exc:
        raise exc.saying(f"image {vm['image']!r} ({arch}) on host {ctx.host.name}: {exc}") from exc
    nic = _nic(ctx, vm)
    vm_dir = ctx.vm_dir(str(vm["id"]))
    vm_dir.mkdir(parents=True, exist_ok=True)
    try:
        boot = prepare_disk(store, artifact, files, vm_dir, arch, size_gib=vm.get("disk_gib"))
        seed = write_seed(vm, vm_dir)
    except ArtifactError as exc:
        shutil.rmtree(vm_dir, ignore_errors=True)
        raise exc.saying(f"host {ctx.host.name}: {exc}") from exc
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
        nic=nic,
        seed=seed,
        tcg_cpu=tcg_cpu(vm["tcg_cpu"], arch) if vm.get("tcg_cpu") else None,
        tb_cache_mib=TB_CACHE_MIB,
    )
    existed = ctx.hypervisor.domain(spec.uuid) is not None
    try:
        info = ctx.hypervisor.ensure_running(spec.uuid, build_domain_xml(spec))
        cpu_mode = cpu_mode_in(ctx.hypervisor.xml_desc(spec.uuid, inactive=True))
    except HypervisorError as exc:
        if existed:
            raise exc.saying(f"{exc}; host {ctx.host.name}; the domain was kept") from exc
        # What this attempt defined and made is undone: a failed create leaves nothing on the host.
        with contextlib.suppress(HypervisorError):
            ctx.hypervisor.remove(spec.uuid)
        shutil.rmtree(vm_dir, ignore_errors=True)
        raise exc.saying(f"{exc}; host {ctx.host.name}; nothing was left on the host") from exc
    return {
        "host": ctx.host.name,
        "accel": ctx.host.accel_for(arch),
        "emulated": arch != ctx.host.arch,
        "state": info.state,
        "domain": info.name,
        "cpu_mode_effective": cpu_mode,
        "disk_format": spec.disk_format,
        "firmware": firmware_of(spec),
    }


def _nic(ctx: WorkerContext, vm: dict) -> Nic | None:
    """The VM's NIC on this host; a network or bridge the host lacks fails the job before anything exists
    (placement only picks hosts that report it, so this means the host lost it since its last heartbeat)."""
    network, mac = vm.get("network") or {}, vm.get("mac")
    mode = NetworkMode(network.get("mode", NetworkMode.NONE))
    if mode is NetworkMode.NONE or not mac:
        return None
    settings = ctx.settings or Settings()
    offers = offered(ctx.hypervisor, settings)
    if mode is NetworkMode.NAT:
        name = network.get("network") or settings.nat_network
        if name not in offers["libvirt"]:
            raise WorkerError(
                "network_unavailable",
                f"host {ctx.host.name} has no active libvirt network {name!r} for the VM's NAT NIC; check the "
                "worker's log for why it could not start it, or create the VM with another network",
            )
        return Nic(mac=mac, type="network", source=name)
    if network["bridge"] not in offers["bridges"]:
        raise WorkerError(
            "bridge_unavailable",
            f"host {ctx.host.name} has no bridge {network['bridge']!r} (or ARCHQ_BRIDGES does not allow it)",
        )
    return Nic(mac=mac, type="bridge", source=network["bridge"])


def write_seed(vm: dict, vm_dir: Path) -> Path:
    """The VM's cloud-init NoCloud seed in its directory (0600: user data may hold secrets). Kept once made:
    only create jobs carry the user data, and the seed must outlive them (a guest that loses it makes new
    SSH host keys)."""
    seed = vm_dir / SEED_NAME
    if not seed.exists():
        has_nic = (vm.get("network") or {}).get("mode", NetworkMode.NONE) != NetworkMode.NONE
        files = seed_files(
            str(vm["id"]),
            vm.get("hostname") or vm["name"],
            list(vm.get("ssh_authorized_keys") or []),
            vm.get("user_data"),
            vm.get("mac") if has_nic else None,
        )
        write_seed_iso(files, seed)
    return seed


def delete_vm(ctx: WorkerContext, vm: dict) -> dict:
    """Destroy and undefine the domain, give back its DHCP lease and remove its files (disk, seed, console
    log, NVRAM). Deleting what is already gone succeeds."""
    try:
        existed = ctx.hypervisor.remove(str(vm["id"]))
    except HypervisorError as exc:
        raise exc.saying(f"{exc}; the VM may still exist on host {ctx.host.name}") from exc
    network = vm.get("network") or {}
    if network.get("mode") == NetworkMode.NAT and vm.get("mac"):
        release_leases(ctx.hypervisor, network.get("network") or (ctx.settings or Settings()).nat_network, vm["mac"])
    shutil.rmtree(ctx.vm_dir(str(vm["id"])), ignore_errors=True)
    return {"host": ctx.host.name, "state": VmState.DELETED, "existed": existed, "domain": domain_name(vm["name"])}


def _lifecycle(action: str, call: Callable[[], DomainInfo], ctx: WorkerContext) -> dict:
    try:
        info = call()
    except HypervisorError as exc:
        raise exc.saying(f"{action} failed on host {ctx.host.name}: {exc}") from exc
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
        raise exc.saying(f"stop failed on host {ctx.host.name}: {exc}") from exc


def reboot_vm(ctx: WorkerContext, vm: dict) -> dict:
    return _lifecycle("reboot", lambda: ctx.hypervisor.reboot(str(vm["id"])), ctx)
