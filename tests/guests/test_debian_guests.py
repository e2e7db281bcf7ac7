"""Usable guests on real QEMU: a debian-12 VM of each architecture on this x86-64 host (arm64 emulated, on
`tcg.arm64`) gets a NAT address, shows the SSH host keys cloud-init printed on its console, and takes a login
with `archq vm ssh` that verifies them; a memory snapshot and its revert keep the NIC; delete leaves no seed,
lease or file behind. The same guest in the generic cloud-image form (a partitioned disk with its own bootloader:
syslinux from an MBR under the BIOS on amd64, GRUB from an EFI system partition under UEFI on arm64) boots
with the same NIC, seed and login. Each guest boots once per module (a minute or two under TCG)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import libvirt
import pytest

from queues.arch import Arch
from tests.conftest import IMAGES_CACHE, settings_env
from tests.support.api import wait_job
from tests.support.cloud_image import generic_cloud_image
from tests.support.debian_image import debian_image
from tests.support.domains import SYSTEM, domain_exists, force_remove
from tests.support.live_api import serve_api
from tests.support.qemu_stack import QemuStack, qemu_stack
from tests.support.services import ROOT, RedisServer, wait_for
from web.services.images import register_built
from workers.guest.build_cache import sha256_of

pytestmark = pytest.mark.libvirtd

HOST = "debian-qemu"
UNAME = {Arch.AMD64: "x86_64", Arch.ARM64: "aarch64"}
# How archq boots a disk without a kernel of its own: the firmware then runs the disk's bootloader.
FIRMWARE = {Arch.AMD64: "bios", Arch.ARM64: "uefi"}
BOOT_TIMEOUT_S = 600
DEBIAN = "debian-12"
GENERIC = "generic-cloud"


@dataclass
class Guests:
    stack: QemuStack
    url: str
    token: str
    key: Path
    # The accepted creates by image (DEBIAN, or GENERIC: the generic cloud-image form) and arch.
    vms: dict[tuple[str, Arch], dict]

    def vm(self, vm_id: str) -> dict:
        return self.stack.client.get(f"/api/v1/vms/{vm_id}").get_json()["vm"]

    def ssh(self, name: str, *command: str) -> subprocess.CompletedProcess[str]:
        """`archq vm ssh NAME -i KEY -- COMMAND` as a user runs it."""
        env = {**os.environ, "ARCHQ_URL": self.url, "ARCHQ_TOKEN": self.token, **settings_env(self.stack.settings)}
        return subprocess.run(
            [sys.executable, "-m", "client.cli", "vm", "ssh", name, "-i", str(self.key), "--", *command],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip


@pytest.fixture(scope="module")
def guests(tmp_path_factory: pytest.TempPathFactory, tiny_built: Path) -> Iterator[Guests]:
    for arch in Arch:
        debian_image(arch.value)
    tmp = tmp_path_factory.mktemp("debian")
    key = tmp / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "tester@laptop", "-f", str(key)], check=True)
    (tmp / "redis").mkdir()
    redis_server = RedisServer(tmp / "redis")
    redis_server.start()
    created: list[str] = []
    try:
        with qemu_stack(tmp, redis_server.url, HOST, IMAGES_CACHE) as stack:
            with stack.app.app_context():
                register_built(IMAGES_CACHE, DEBIAN)
            with serve_api(stack.app, settings_env(stack.settings), tmp / "api.log") as (url, token):
                vms = {}
                for arch in Arch:
                    response = stack.client.post(
                        "/api/v1/vms",
                        json={
                            "name": f"deb-{arch.value}", "arch": arch.value, "vcpus": 2, "memory_mib": 1024,
                            "image": "debian-12", "disk_gib": 4,
                            "ssh_authorized_keys": [key.with_suffix(".pub").read_text()],
                        },
                    )  # fmt: skip
                    assert response.status_code == 202, response.get_json()
                    vms[DEBIAN, arch] = response.get_json()
                    created.append(vms[DEBIAN, arch]["vm"]["id"])
                # The same guest in the generic cloud-image form: a partitioned disk with its own bootloader.
                artifacts = {}
                for arch in Arch:
                    cloud = generic_cloud_image(arch)
                    artifacts[arch.value] = {
                        "format": "qcow2", "source": str(cloud), "sha256": sha256_of(cloud), "login_user": "debian",
                    }  # fmt: skip
                response = stack.client.post("/api/v1/images", json={"name": GENERIC, "artifacts": artifacts})
                assert response.status_code == 201, response.get_json()
                for arch in Arch:
                    response = stack.client.post(
                        "/api/v1/vms",
                        json={
                            "name": f"cloud-{arch.value}", "arch": arch.value, "vcpus": 2, "memory_mib": 1024,
                            "image": GENERIC, "ssh_authorized_keys": [key.with_suffix(".pub").read_text()],
                        },
                    )  # fmt: skip
                    assert response.status_code == 202, response.get_json()
                    vms[GENERIC, arch] = response.get_json()
                    created.append(vms[GENERIC, arch]["vm"]["id"])
                yield Guests(stack, url, token, key, vms)
    finally:
        for vm_id in created:
            force_remove(vm_id)
        redis_server.stop()


def booted(guests: Guests, arch: Arch, image: str = DEBIAN) -> dict:
    """The VM of `image` and `arch` once it runs, has an address and its host keys are known."""
    accepted = guests.vms[image, arch]
    job = wait_job(guests.stack.client, accepted["job"]["id"], timeout=300)
    assert job["state"] == "succeeded", job
    vm_id = accepted["vm"]["id"]

    def ready() -> dict | None:
        vm = guests.vm(vm_id)
        return vm if vm["addresses"] and vm["ssh_host_keys"] else None

    return wait_for(
        ready, timeout=BOOT_TIMEOUT_S, interval=2, what=f"the {image} {arch.value} guest's address and host keys"
    )


def test_an_arm64_vm_on_this_x86_host_is_emulated_on_tcg_arm64(guests):
    accepted = guests.vms[DEBIAN, Arch.ARM64]
    assert accepted["job"]["queue"] == "tcg.arm64"
    assert accepted["vm"]["emulated"] is True and "TCG" in accepted["vm"]["emulation_warning"]


@pytest.mark.parametrize("arch", list(Arch), ids=lambda a: a.value)
def test_the_guest_gets_an_address_host_keys_and_a_verified_login(guests, arch):
    vm = booted(guests, arch)
    assert vm["addresses"][0]["mac"] == vm["mac"]
    assert vm["addresses"][0]["ipv4"].startswith("192.168.150.")
    assert vm["login_user"] == "debian"
    assert {line.split()[0] for line in vm["ssh_host_keys"]} >= {"ssh-ed25519", "ecdsa-sha2-nistp256"}

    login = guests.ssh(vm["name"], "uname", "-m", ";", "hostname", ";", "df", "-B1", "--output=size", "/")
    assert login.returncode == 0, login.stderr
    uname, hostname, _, root_bytes = login.stdout.split()
    assert (uname, hostname) == (UNAME[arch], vm["name"])
    # cloud-init grew the root filesystem to the disk the VM asked for (4 GiB; the image is 2 GiB).
    assert int(root_bytes) > 3.5 * 2**30


def test_a_memory_snapshot_and_its_revert_keep_the_nic_and_the_login(guests):
    vm = booted(guests, Arch.AMD64)
    client = guests.stack.client
    response = client.post(f"/api/v1/vms/{vm['id']}/snapshots", json={"name": "before", "memory": True})
    assert response.status_code == 202, response.get_json()
    assert wait_job(client, response.get_json()["job"]["id"], timeout=300)["state"] == "succeeded"
    assert guests.ssh(vm["name"], "touch", "/tmp/after-snapshot").returncode == 0

    response = client.post(f"/api/v1/vms/{vm['id']}/snapshots/before/revert")
    assert response.status_code == 202, response.get_json()
    assert wait_job(client, response.get_json()["job"]["id"], timeout=300)["state"] == "succeeded"
    assert guests.vm(vm["id"])["mac"] == vm["mac"]
    conn = libvirt.open(SYSTEM)
    try:
        xml = conn.lookupByUUIDString(vm["id"]).XMLDesc(0)
    finally:
        conn.close()
    assert f"address='{vm['mac']}'" in xml

    # The guest is back where the snapshot was: running, its NIC up, without the file made after it.
    login = wait_for(
        lambda: (r := guests.ssh(vm["name"], "test", "!", "-e", "/tmp/after-snapshot")).returncode == 0 and r,
        timeout=120, interval=3, what="SSH to answer after the revert",
    )  # fmt: skip
    assert login.returncode == 0


def test_delete_leaves_no_seed_lease_or_file(guests):
    vm = booted(guests, Arch.ARM64)
    vm_dir = guests.stack.settings.data_dir / "vms" / vm["id"]
    assert (vm_dir / "seed.iso").exists()
    response = guests.stack.client.delete(f"/api/v1/vms/{vm['id']}")
    assert wait_job(guests.stack.client, response.get_json()["job"]["id"], timeout=120)["state"] == "succeeded"
    assert not vm_dir.exists()
    assert not domain_exists(vm["id"])
    conn = libvirt.open(SYSTEM)
    try:
        leases = conn.networkLookupByName("archq").DHCPLeases(vm["mac"])
    finally:
        conn.close()
    assert leases == []


@pytest.mark.parametrize("arch", list(Arch), ids=lambda a: a.value)
def test_a_generic_cloud_image_boots_from_its_bootloader_with_the_same_nic_seed_and_login(guests, arch):
    vm = booted(guests, arch, GENERIC)
    assert (vm["image"], vm["firmware"]) == (GENERIC, FIRMWARE[arch])
    assert vm["addresses"][0]["mac"] == vm["mac"] and vm["login_user"] == "debian"
    login = guests.ssh(vm["name"], "uname", "-m", ";", "hostname", ";", "cat", "/proc/cmdline")
    assert login.returncode == 0, login.stderr
    uname, hostname, *cmdline = login.stdout.split()
    assert (uname, hostname) == (UNAME[arch], vm["name"])
    # Booted by its own bootloader (syslinux from the MBR; GRUB from the EFI system partition) from its own
    # partition, not by archq's direct kernel boot.
    assert "root=/dev/vda2" in cmdline
