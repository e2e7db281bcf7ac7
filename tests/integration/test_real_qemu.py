"""Real guests under real libvirtd and QEMU: the tiny guest boots and prints its marker on the serial
console, natively (KVM if the probe says it works, else TCG) and emulated for the other architecture."""

from __future__ import annotations

import platform
from pathlib import Path

import libvirt
import pytest

from queues.arch import Arch, parse_arch
from tests.support.api import create_vm, wait_host, wait_job
from tests.support.services import wait_for
from workers.guest.tiny import marker_line

pytestmark = pytest.mark.libvirtd

NATIVE = parse_arch(platform.machine())
FOREIGN = Arch.ARM64 if NATIVE is Arch.AMD64 else Arch.AMD64


@pytest.fixture
def qemu_worker(client, start_qemu_worker):
    start_qemu_worker()
    return wait_host(client, "qemu-host", timeout=90)


def domain_active(vm_id: str) -> bool | None:
    conn = libvirt.open("qemu:///system")
    try:
        return bool(conn.lookupByUUIDString(vm_id).isActive())
    except libvirt.libvirtError:
        return None
    finally:
        conn.close()


def console_shows(path: Path, line: str) -> bool:
    return path.exists() and line in path.read_text(errors="replace").replace("\r", "").splitlines()


def boot_and_delete(client, settings, arch: Arch, name: str) -> dict:
    accepted = create_vm(client, name=name, arch=arch.value)
    job = wait_job(client, accepted["job"]["id"], timeout=120)
    assert job["state"] == "succeeded", job
    vm_id = accepted["vm"]["id"]
    vm = client.get(f"/api/v1/vms/{vm_id}").get_json()["vm"]
    assert (vm["state"], vm["host"]) == ("running", "qemu-host")
    assert domain_active(vm_id) is True

    console = settings.data_dir / "vms" / vm_id / "console.log"
    wait_for(lambda: console_shows(console, marker_line(arch)), timeout=90, what=f"{arch} guest's boot marker")

    deletion = client.delete(f"/api/v1/vms/{vm_id}").get_json()["job"]
    assert wait_job(client, deletion["id"], timeout=60)["state"] == "succeeded"
    assert domain_active(vm_id) is None
    assert not console.parent.exists()
    return {"accepted": accepted, "vm": vm}


def test_native_guest_boots_on_the_host_and_is_deleted(client, settings, qemu_worker):
    assert qemu_worker["arch"] == NATIVE.value
    assert qemu_worker["accel"] in ("kvm", "tcg")
    result = boot_and_delete(client, settings, NATIVE, "native-guest")
    assert result["accepted"]["job"]["queue"] == NATIVE.value
    assert result["vm"]["emulated"] is False
    assert result["vm"]["accel"] == qemu_worker["accel"]


def test_foreign_guest_runs_emulated_with_a_warning(client, settings, qemu_worker):
    assert FOREIGN.value in qemu_worker["emulators"]
    # From libvirt's domain capabilities: TCG runs named models of the foreign arch, never the host's CPU.
    assert "custom" in qemu_worker["cpu_modes"][FOREIGN.value]
    assert "host-passthrough" not in qemu_worker["cpu_modes"][FOREIGN.value]
    result = boot_and_delete(client, settings, FOREIGN, "foreign-guest")
    accepted = result["accepted"]
    assert accepted["job"]["queue"] == f"tcg.{FOREIGN.value}"
    assert accepted["vm"]["emulated"] is True
    assert "10-20x slower" in accepted["vm"]["emulation_warning"]
    assert (result["vm"]["emulated"], result["vm"]["accel"]) == (True, "tcg")
