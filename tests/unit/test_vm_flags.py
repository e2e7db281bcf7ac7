"""What a VM can do follows from its effective CPU mode, firmware, disk and snapshot kind; a VM that runs
with another CPU than it asked for says why."""

from __future__ import annotations

import pytest

from web.models import Vm
from web.services.vm_flags import effective_cpu_mode, vm_flags


def vm(**fields) -> Vm:
    values = dict(cpu_mode="host-model", cpu_mode_effective=None, disk_format="qcow2", firmware="direct",
                  snapshot_kind=None, accel="kvm")  # fmt: skip
    values.update(fields)
    return Vm(**values)


def test_a_host_model_vm_on_qcow2_can_do_everything():
    flags = vm_flags(vm(cpu_mode_effective="host-model"))
    assert (flags.migratable, flags.memory_snapshot_ok, flags.revertable) == (True, True, True)
    assert flags.reasons == {} and flags.cpu_mode_note == ""


def test_host_passthrough_is_not_live_migratable():
    flags = vm_flags(vm(cpu_mode="host-passthrough", cpu_mode_effective="host-passthrough"))
    assert flags.migratable is False and "host-passthrough" in flags.reasons["migratable"]
    assert flags.memory_snapshot_ok is True


def test_the_mode_in_the_domain_wins_over_the_one_asked_for():
    flags = vm_flags(vm(cpu_mode="host-passthrough", cpu_mode_effective="custom:qemu64", accel="tcg"))
    assert effective_cpu_mode(vm(cpu_mode="host-passthrough", cpu_mode_effective="custom:qemu64")) == "custom:qemu64"
    assert flags.migratable is True
    assert (
        "TCG" in flags.cpu_mode_note and "qemu64" in flags.cpu_mode_note and "host-passthrough" in flags.cpu_mode_note
    )


def test_before_the_worker_reports_the_requested_mode_is_shown():
    assert effective_cpu_mode(vm(cpu_mode="host-passthrough")) == "host-passthrough"
    assert vm_flags(vm(cpu_mode="host-passthrough")).migratable is False


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"firmware": "uefi"}, "UEFI"),
        ({"disk_format": "raw"}, "raw"),
        ({"disk_format": None}, "no disk"),
    ],
)
def test_no_internal_snapshots_without_a_qcow2_disk_or_with_uefi(fields, fragment):
    flags = vm_flags(vm(**fields))
    assert flags.memory_snapshot_ok is False and flags.revertable is False
    assert fragment in flags.reasons["memory_snapshot_ok"]
    assert flags.migratable is True


def test_external_snapshots_cannot_be_reverted_on_this_libvirt():
    flags = vm_flags(vm(snapshot_kind="external"))
    assert flags.memory_snapshot_ok is True and flags.revertable is False
    assert "external" in flags.reasons["revertable"]
