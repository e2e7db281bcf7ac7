"""Queue and task names: the addresses `web` and `workers` agree on."""

from __future__ import annotations

from queues.arch import ALL, Arch

CONTROL = "control"


def native_queue(arch: Arch) -> str:
    """Create jobs for guests of `arch` that a native host runs (KVM when it works, TCG otherwise)."""
    return arch.value


def tcg_queue(arch: Arch) -> str:
    """Create jobs for guests of `arch` that a host of another architecture emulates with TCG."""
    return f"tcg.{arch.value}"


def host_queue(hostname: str) -> str:
    """Jobs bound to one host: operations on VMs that already live there, and placed creates."""
    return f"host.{hostname}"


STATIC_QUEUES: tuple[str, ...] = (
    *(native_queue(a) for a in ALL),
    *(tcg_queue(a) for a in ALL),
    CONTROL,
)


class Task:
    """Celery task names. Workers register the VM tasks, the conductor the control ones."""

    CREATE_VM = "archq.vm.create"
    DELETE_VM = "archq.vm.delete"
    START_VM = "archq.vm.start"
    STOP_VM = "archq.vm.stop"
    REBOOT_VM = "archq.vm.reboot"
    SNAPSHOT_VM = "archq.vm.snapshot"
    REVERT_VM = "archq.vm.revert"
    DELETE_SNAPSHOT = "archq.vm.snapshot_delete"
    MIGRATE_VM = "archq.vm.migrate"
    MIGRATE_IN_VM = "archq.vm.migrate_in"
    JOB_UPDATE = "archq.control.job_update"
    HEARTBEAT = "archq.control.heartbeat"
