"""Images on real libvirtd + QEMU through the HTTP API and a real `archq worker`: the tiny guest of each
architecture boots and shows its marker on `GET /vms/<id>/console`; artifacts are verified (a wrong SHA256
fails the job and leaves nothing), stored once per host and shared by VMs through per-VM qcow2 overlays;
DELETE leaves no domain, disk, snapshot metadata or NVRAM behind. Each guest boots once per module."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import libvirt
import pytest

from queues.arch import Arch
from queues.config import Settings
from tests.conftest import IMAGES_CACHE
from tests.support.api import TINY, wait_job
from tests.support.domains import domain_exists, force_remove
from tests.support.qemu_stack import qemu_stack
from tests.support.services import RedisServer, wait_for
from workers.guest.tiny import marker_line

pytestmark = pytest.mark.libvirtd

HOST = "img-qemu"
UNAME = {Arch.AMD64: "x86_64", Arch.ARM64: "aarch64"}
TCG_MODELS = {Arch.AMD64: "custom:qemu64", Arch.ARM64: "custom:cortex-a57"}
ASKED = {Arch.AMD64: "host-model", Arch.ARM64: "host-passthrough"}


@dataclass
class Stack:
    settings: Settings
    client: object
    sources: Path
    worker_accel: str
    created: list[str]

    def create(self, name: str, **fields) -> dict:
        response = self.client.post("/api/v1/vms", json={**TINY, "name": name, **fields})
        assert response.status_code == 202, response.get_json()
        body = response.get_json()
        self.created.append(body["vm"]["id"])
        return body

    def vm(self, vm_id: str) -> dict:
        return self.client.get(f"/api/v1/vms/{vm_id}").get_json()["vm"]

    def delete(self, vm_id: str) -> dict:
        response = self.client.delete(f"/api/v1/vms/{vm_id}")
        assert response.status_code == 202, response.get_json()
        return wait_job(self.client, response.get_json()["job"]["id"], timeout=60)

    def vm_dir(self, vm_id: str) -> Path:
        return self.settings.data_dir / "vms" / vm_id


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, tiny_built: Path) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("img-qemu")
    (tmp / "redis").mkdir()
    redis_server = RedisServer(tmp / "redis")
    redis_server.start()
    sources = tmp / "sources"
    sources.mkdir()
    created: list[str] = []
    try:
        with qemu_stack(tmp, redis_server.url, HOST, IMAGES_CACHE, image_dirs=(IMAGES_CACHE, sources)) as base:
            yield Stack(base.settings, base.client, sources, base.accel, created)
    finally:
        for vm_id in created:
            force_remove(vm_id)
        redis_server.stop()


@pytest.fixture(scope="module")
def tiny_vms(stack: Stack) -> dict[Arch, str]:
    """One tiny guest of each architecture, booted once for the module; the arm64 one asks for
    host-passthrough, which TCG cannot give."""
    accepted = {arch: stack.create(f"img-tiny-{arch.value}", arch=arch.value, cpu_mode=ASKED[arch]) for arch in Arch}
    for body in accepted.values():
        job = wait_job(stack.client, body["job"]["id"], timeout=180)
        assert job["state"] == "succeeded", job
    return {arch: body["vm"]["id"] for arch, body in accepted.items()}


def console(stack: Stack, vm_id: str, **query) -> dict:
    response = stack.client.get(f"/api/v1/vms/{vm_id}/console", query_string=query)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["console"]


@pytest.mark.parametrize("arch", list(Arch), ids=lambda a: a.value)
def test_tiny_guest_prints_its_uname_on_the_console_endpoint(stack, tiny_vms, arch):
    vm_id = tiny_vms[arch]
    seen: dict = {}

    def marker() -> bool:
        seen.update(console(stack, vm_id))
        return marker_line(arch) in seen["text"].replace("\r", "").splitlines()

    wait_for(marker, timeout=120, interval=0.5, what=lambda: f"{arch} marker on the console; got {seen}")
    assert f"arch={UNAME[arch]}" in seen["text"]
    assert seen["host"] == HOST and seen["size"] >= len(seen["text"].encode())


def test_console_tail_is_bounded(stack, tiny_vms):
    vm_id = tiny_vms[Arch.AMD64]
    wait_for(lambda: console(stack, vm_id)["size"] > 200, timeout=60, what="some console output")
    tail = console(stack, vm_id, bytes=100)
    assert len(tail["text"].encode()) == 100  # the guest's ticks are ASCII
    assert tail["truncated"] is True and tail["offset"] == tail["size"] - 100
    error = stack.client.get(f"/api/v1/vms/{vm_id}/console?bytes=70000").get_json()["error"]
    assert "bytes" in error["fields"]


@pytest.mark.parametrize("arch", list(Arch), ids=lambda a: a.value)
def test_vm_json_shows_the_effective_cpu_mode_disk_firmware_and_flags(stack, tiny_vms, arch):
    vm = stack.vm(tiny_vms[arch])
    assert (vm["disk_format"], vm["firmware"], vm["cpu_mode"]) == ("qcow2", "direct", ASKED[arch])
    assert (vm["memory_snapshot_ok"], vm["revertable"]) == (True, True)
    if vm["accel"] == "tcg":
        # Under TCG a named model runs whatever was asked, and the VM says so; such a VM can migrate.
        assert vm["cpu_mode_effective"] == TCG_MODELS[arch]
        assert "TCG" in vm["cpu_mode_note"] and TCG_MODELS[arch].removeprefix("custom:") in vm["cpu_mode_note"]
        assert ASKED[arch] in vm["cpu_mode_note"]
        assert vm["migratable"] is True and vm["capability_reasons"] == {}
    else:
        assert (vm["cpu_mode_effective"], vm["cpu_mode_note"]) == (ASKED[arch], "")
        assert vm["migratable"] is (ASKED[arch] == "host-model")


def test_direct_boot_guest_has_a_blank_qcow2_state_disk(stack, tiny_vms):
    disk = stack.vm_dir(tiny_vms[Arch.ARM64]) / "disk.qcow2"
    info = qemu_img_info(disk)
    assert info["format"] == "qcow2" and info["virtual-size"] == 64 * 1024**2
    assert "backing-filename" not in info


def qemu_img_info(path: Path) -> dict:
    out = subprocess.run(
        ["qemu-img", "info", "-U", "--output", "json", str(path)], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout)


def register(stack: Stack, body: dict) -> dict:
    response = stack.client.post("/api/v1/images", json=body)
    assert response.status_code == 201, response.get_json()
    return response.get_json()["image"]


def test_a_wrong_sha256_fails_the_job_and_leaves_nothing(stack):
    tiny = stack.client.get("/api/v1/images/tiny").get_json()["image"]["artifacts"]["amd64"]
    wrong = "0" * 64
    register(
        stack, {"name": "img-badsum", "artifacts": {"amd64": {**tiny, "kernel": {**tiny["kernel"], "sha256": wrong}}}}
    )
    accepted = stack.create("img-badsum", image="img-badsum")
    job = wait_job(stack.client, accepted["job"]["id"], timeout=60)
    assert job["state"] == "failed"
    assert job["error"]["code"] == "image_checksum_mismatch"
    assert wrong in job["error"]["message"] and "nothing was booted" in job["error"]["message"]
    vm_id = accepted["vm"]["id"]
    assert not domain_exists(vm_id)
    assert not stack.vm_dir(vm_id).exists()
    store = IMAGES_CACHE / "store"
    assert not (store / "sha256" / wrong).exists()
    assert not list((store / ".tmp").glob(f"{wrong}.*"))
    assert stack.vm(vm_id)["state"] == "failed"
    assert stack.delete(vm_id)["state"] == "succeeded"


@pytest.fixture(scope="module")
def disk_image(stack: Stack) -> tuple[Path, str]:
    """A small qcow2 disk image as a local source (blank: the guests find nothing to boot, but run)."""
    base = stack.sources / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "32M"], check=True)
    sha = hashlib.sha256(base.read_bytes()).hexdigest()
    artifact = {"format": "qcow2", "source": str(base), "sha256": sha}
    image = register(stack, {"name": "img-disk", "artifacts": {"amd64": artifact, "arm64": artifact}})
    assert image["native_arch"] == "both"
    return base, sha


@pytest.fixture(scope="module")
def disk_vms(stack: Stack, disk_image) -> dict[str, str]:
    bodies = {
        "img-disk-1": stack.create("img-disk-1", image="img-disk"),
        "img-disk-2": stack.create("img-disk-2", image="img-disk"),
        "img-disk-arm": stack.create("img-disk-arm", image="img-disk", arch="arm64", memory_mib=256),
    }
    for body in bodies.values():
        job = wait_job(stack.client, body["job"]["id"], timeout=180)
        assert job["state"] == "succeeded", job
    return {name: body["vm"]["id"] for name, body in bodies.items()}


def test_vms_from_one_image_share_one_read_only_base_through_their_own_overlays(stack, disk_image, disk_vms):
    base_source, sha = disk_image
    stored = IMAGES_CACHE / "store" / "sha256" / sha
    assert stored.stat().st_mode & 0o777 == 0o444
    backings = set()
    for vm_id in disk_vms.values():
        overlay = stack.vm_dir(vm_id) / "disk.qcow2"
        info = qemu_img_info(overlay)
        assert info["format"] == "qcow2"
        assert (info["backing-filename"], info["backing-filename-format"]) == (str(stored), "qcow2")
        backings.add(os.stat(info["backing-filename"]).st_ino)
    assert backings == {stored.stat().st_ino}
    # The guests wrote (firmware, NVRAM) only to their overlays: the base is what was registered.
    assert (
        hashlib.sha256(stored.read_bytes()).hexdigest() == sha == hashlib.sha256(base_source.read_bytes()).hexdigest()
    )


def test_disk_guests_boot_bios_on_amd64_and_uefi_on_arm64(stack, disk_vms):
    amd64, arm64 = stack.vm(disk_vms["img-disk-1"]), stack.vm(disk_vms["img-disk-arm"])
    assert (amd64["firmware"], amd64["disk_format"]) == ("bios", "qcow2")
    assert (arm64["firmware"], arm64["disk_format"]) == ("uefi", "qcow2")
    assert (stack.vm_dir(disk_vms["img-disk-arm"]) / "nvram.fd").is_file()
    assert arm64["memory_snapshot_ok"] is False and "UEFI" in arm64["capability_reasons"]["memory_snapshot_ok"]


def test_an_image_in_use_cannot_be_deleted(stack, disk_vms):
    response = stack.client.delete("/api/v1/images/img-disk")
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "image_in_use"


def test_delete_leaves_no_domain_disk_snapshot_metadata_or_nvram(stack, tiny_vms, disk_vms):
    # A real internal snapshot (with memory) of the tiny guest, so that there is snapshot metadata to remove.
    conn = libvirt.open("qemu:///system")
    try:
        dom = conn.lookupByUUIDString(tiny_vms[Arch.AMD64])
        dom.snapshotCreateXML("<domainsnapshot><name>img-before-delete</name></domainsnapshot>", 0)
        assert dom.snapshotNum() == 1
    finally:
        conn.close()
    for vm_id in [*tiny_vms.values(), *disk_vms.values()]:
        name = stack.vm(vm_id)["name"]
        assert stack.delete(vm_id)["state"] == "succeeded"
        assert not domain_exists(vm_id)
        assert not stack.vm_dir(vm_id).exists()
        assert not Path(f"/var/lib/libvirt/qemu/snapshot/archq-{name}").exists()
        assert not list(Path("/var/lib/libvirt/qemu/nvram").glob(f"archq-{name}_VARS*"))
        assert stack.client.get(f"/api/v1/vms/{vm_id}").status_code == 404
    assert not list((stack.settings.data_dir / "vms").iterdir())
    # The shared artifacts stay in the store for the next VM; the catalog entry can go now.
    assert stack.client.delete("/api/v1/images/img-disk").status_code == 204
