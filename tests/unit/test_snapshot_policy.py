"""What snapshots can do follows from the host's libvirt and the VM's disk and firmware."""

from __future__ import annotations

from web.models import Vm
from web.services.vm_flags import vm_flags
from workers.snapshots import snapshot_support

DEBIAN_12 = 9_000_000


def vm(**columns) -> Vm:
    return Vm(**{"disk_format": "qcow2", "firmware": "direct", "snapshot_kind": None, "host": "h", **columns})


def test_libvirt_9_0_reverts_internal_snapshots_but_not_external_ones():
    support = snapshot_support(DEBIAN_12)
    assert support["internal_memory"] and not support["external_revert"]
    assert snapshot_support(9_009_000)["external_revert"]


def test_a_qcow2_direct_boot_vm_can_take_and_revert_internal_snapshots():
    flags = vm_flags(vm(snapshot_kind="internal"), snapshot_support(DEBIAN_12))
    assert flags.memory_snapshot_ok and flags.revertable and flags.reasons == {}


def test_external_snapshots_revert_only_where_libvirt_can():
    assert "9.9" in vm_flags(vm(snapshot_kind="external"), snapshot_support(DEBIAN_12)).reasons["revertable"]
    assert vm_flags(vm(snapshot_kind="external"), snapshot_support(9_009_000)).revertable


def test_uefi_raw_and_diskless_vms_cannot_snapshot():
    for columns, words in (({"firmware": "uefi"}, "UEFI"), ({"disk_format": "raw"}, "raw"),
                           ({"disk_format": None}, "no disk")):  # fmt: skip
        flags = vm_flags(vm(**columns), snapshot_support(DEBIAN_12))
        assert not flags.memory_snapshot_ok and not flags.revertable
        assert words in flags.reasons["memory_snapshot_ok"]


def test_a_host_whose_libvirt_cannot_snapshot_is_named():
    flags = vm_flags(vm(host="old-host"), {"internal_memory": False})
    assert "old-host" in flags.reasons["memory_snapshot_ok"]
