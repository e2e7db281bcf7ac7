"""What a VM can do, derived from its CPU mode, emulation, disk and firmware: the flags the VM JSON shows
and the API checks before it queues a migration, a memory snapshot or a revert."""

from __future__ import annotations

from dataclasses import dataclass, field

from queues.vocabulary import Accel
from web.models import Vm

HOST_PASSTHROUGH = "host-passthrough"
HOST_MODEL = "host-model"
CPU_MODES = (HOST_MODEL, HOST_PASSTHROUGH)
# An emulated VM's move to a native host (web/services/rehome.py): offered, or done at its next stop.
REHOME_MANUAL = "manual"
REHOME_AUTO = "auto"
REHOME_MODES = (REHOME_MANUAL, REHOME_AUTO)


@dataclass(frozen=True)
class VmFlags:
    migratable: bool
    memory_snapshot_ok: bool
    revertable: bool
    # Why a flag is false, in words a user can act on; keyed by the flag's name.
    reasons: dict[str, str] = field(default_factory=dict)
    # Set when the VM runs with another CPU than it asked for (TCG uses a named model), saying why.
    cpu_mode_note: str = ""


def effective_cpu_mode(vm: Vm) -> str:
    """The mode in the running domain when the worker reported it, else what the VM was created with."""
    return vm.cpu_mode_effective or vm.cpu_mode


def cpu_mode_note(vm: Vm) -> str:
    effective = vm.cpu_mode_effective
    if not effective or effective == vm.cpu_mode:
        return ""
    if vm.accel == Accel.TCG:
        return f"asked for cpu_mode {vm.cpu_mode}, but " + tcg_model_reason(effective, override=bool(vm.tcg_cpu))
    return f"asked for cpu_mode {vm.cpu_mode}; its domain runs with {effective}"


def tcg_model_reason(tcg_cpu: str, override: bool = False) -> str:
    """`tcg_cpu`: a TCG CPU's name (queues/emulation.py), as `cpu_mode_effective` shows it; `override`: the VM
    asked for it (an admin-approved `tcg_cpu`) instead of archq's default."""
    what = f"the named model {tcg_cpu.removeprefix('custom:')}" if tcg_cpu.startswith("custom:") else tcg_cpu
    why = " (this VM's admin-approved tcg_cpu, not archq's default)" if override else ""
    return (
        f"the guest runs under TCG (software emulation), which cannot expose a host CPU: archq uses {what} instead{why}"
    )


def vm_flags(vm: Vm, snapshot_support: dict[str, bool] | None = None) -> VmFlags:
    """`snapshot_support`: what the VM's host says its libvirt can do (from its heartbeat), when known."""
    support = snapshot_support or {}
    reasons: dict[str, str] = {}
    if effective_cpu_mode(vm) == HOST_PASSTHROUGH:
        reasons["migratable"] = (
            "the VM runs with cpu_mode host-passthrough: its CPU features are this host's exactly, so it cannot "
            "be live-migrated; stop it and migrate cold, or recreate it with cpu_mode host-model"
        )
    if vm.firmware == "uefi":
        reasons["memory_snapshot_ok"] = (
            "the VM boots with UEFI (pflash NVRAM): libvirt 9.0 cannot take internal snapshots of it"
        )
    elif vm.disk_format == "raw":
        reasons["memory_snapshot_ok"] = "the VM's disk is raw: internal snapshots need a qcow2 disk"
    elif vm.disk_format is None:
        reasons["memory_snapshot_ok"] = "the VM has no disk to hold the snapshot's memory state"
    elif support and not support.get("internal_memory"):
        reasons["memory_snapshot_ok"] = f"libvirt on host {vm.host} cannot take internal snapshots with memory"
    if "memory_snapshot_ok" in reasons:
        reasons["revertable"] = reasons["memory_snapshot_ok"].replace("take", "revert")
    elif vm.snapshot_kind == "external" and not support.get("external_revert"):
        reasons["revertable"] = "the VM's snapshots are external: reverting them needs libvirt >= 9.9"
    return VmFlags(
        cpu_mode_note=cpu_mode_note(vm),
        migratable="migratable" not in reasons,
        memory_snapshot_ok="memory_snapshot_ok" not in reasons,
        revertable="revertable" not in reasons,
        reasons=reasons,
    )
