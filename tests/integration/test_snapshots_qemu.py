"""Snapshots of real guests under libvirtd and QEMU. One booted guest per architecture serves the whole
module (booting under TCG costs seconds); the tiny guest prints `archq-tiny tick N` every second, so its
console log shows where a revert resumed it."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest
import redis

from queues.arch import Arch
from queues.config import Settings
from tests.conftest import IMAGES_CACHE
from tests.support.api import create_vm, wait_job
from tests.support.domains import force_remove
from tests.support.qemu_stack import qemu_stack
from tests.support.services import wait_for
from workers.guest.tiny import MARKER, marker_line

pytestmark = pytest.mark.libvirtd

TICK = re.compile(r"archq-tiny tick (\d+)")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, redis_server, tiny_built: Path) -> Iterator[tuple]:
    """The API in-process, a conductor and a worker on qemu:///system, shared by the module's tests."""
    redis.Redis.from_url(redis_server.url).flushall()
    with qemu_stack(tmp_path_factory.mktemp("snapq"), redis_server.url, "snap-qemu", IMAGES_CACHE) as base:
        yield base.client, base.settings


@pytest.fixture(scope="module")
def client(stack):
    return stack[0]


def boot(client, settings: Settings, arch: Arch) -> Iterator[str]:
    accepted = create_vm(client, name=f"snap-q-{arch.value}", arch=arch.value)
    vm_id = accepted["vm"]["id"]
    try:
        job = wait_job(client, accepted["job"]["id"], timeout=300)
        assert job["state"] == "succeeded", job
        console = console_of(settings, vm_id)
        wait_for(lambda: marker_line(arch) in console.read_text(errors="replace"), timeout=120, what="boot marker")
        yield vm_id
        # Deleting a VM that still has internal snapshots removes the domain, their metadata and its files.
        deletion = client.delete(f"/api/v1/vms/{vm_id}").get_json()["job"]
        assert wait_job(client, deletion["id"], timeout=60)["state"] == "succeeded"
        assert domain_snapshots(vm_id) is None
        assert not console.parent.exists()
    finally:
        force_remove(vm_id)


@pytest.fixture(scope="module")
def amd64_guest(stack) -> Iterator[str]:
    yield from boot(*stack, Arch.AMD64)


@pytest.fixture(scope="module")
def arm64_guest(stack) -> Iterator[str]:
    yield from boot(*stack, Arch.ARM64)


def console_of(settings: Settings, vm_id: str) -> Path:
    return settings.data_dir / "vms" / vm_id / "console.log"


def ticks(text: str) -> list[int]:
    return [int(n) for n in TICK.findall(text)]


def domain_snapshots(vm_id: str) -> list[str] | None:
    conn = libvirt.open("qemu:///system")
    try:
        return conn.lookupByUUIDString(vm_id).snapshotListNames()
    except libvirt.libvirtError:
        return None
    finally:
        conn.close()


def post(client, path: str, body: dict | None = None, timeout: float = 120) -> dict:
    response = client.post(path, json=body) if body is not None else client.post(path)
    assert response.status_code == 202, response.get_json()
    return wait_job(client, response.get_json()["job"]["id"], timeout=timeout)


def resumes_where_the_snapshot_was_taken(client, settings: Settings, vm_id: str, name: str) -> None:
    console = console_of(settings, vm_id)
    wait_for(lambda: len(ticks(console.read_text(errors="replace"))) >= 3, timeout=60, what="the guest to tick")
    before = ticks(console.read_text(errors="replace"))[-1]
    taken = post(client, f"/api/v1/vms/{vm_id}/snapshots", {"name": name, "memory": True})
    assert taken["state"] == "succeeded", taken
    assert taken["progress"] == {"phase": "done", "percent": 100}
    after = ticks(console.read_text(errors="replace"))[-1]
    # The guest runs on: its counter moves well past the snapshot point.
    wait_for(lambda: ticks(console.read_text(errors="replace"))[-1] >= after + 4, timeout=60, what="ticks")
    latest = ticks(console.read_text(errors="replace"))[-1]
    offset = console.stat().st_size

    reverted = post(client, f"/api/v1/vms/{vm_id}/snapshots/{name}/revert")
    assert reverted["state"] == "succeeded", reverted["error"]
    assert reverted["result"]["state"] == "running"

    def resumed() -> list[int]:
        with console.open("rb") as log:
            log.seek(offset)
            return ticks(log.read().decode(errors="replace"))

    first = wait_for(resumed, timeout=60, what="a tick after the revert")[0]
    # RAM went back: the counter continues from its value when the snapshot was taken (it was between
    # `before` and `after`), not from the latest value and not from a fresh boot.
    assert before < first <= after + 1 < latest, (before, after, latest, first)
    with console.open("rb") as log:
        log.seek(offset)
        assert MARKER not in log.read().decode(errors="replace"), "the guest must not boot again"
    assert client.get(f"/api/v1/vms/{vm_id}").get_json()["vm"]["state"] == "running"


def test_amd64_memory_snapshot_revert_resumes_the_guest(client, stack, amd64_guest):
    resumes_where_the_snapshot_was_taken(client, stack[1], amd64_guest, "amd64-mem")
    assert domain_snapshots(amd64_guest) == ["amd64-mem"]


def test_arm64_memory_snapshot_revert_resumes_the_guest(client, stack, arm64_guest):
    resumes_where_the_snapshot_was_taken(client, stack[1], arm64_guest, "arm64-mem")
    assert domain_snapshots(arm64_guest) == ["arm64-mem"]


def test_disk_only_snapshot_of_a_stopped_guest_listed_reverted_and_deleted(client, stack, amd64_guest):
    settings = stack[1]
    vm_id = amd64_guest
    assert post(client, f"/api/v1/vms/{vm_id}/stop")["state"] == "succeeded"
    taken = post(client, f"/api/v1/vms/{vm_id}/snapshots", {"name": "cold", "memory": False})
    assert taken["state"] == "succeeded", taken
    listed = {s["name"]: s for s in client.get(f"/api/v1/vms/{vm_id}/snapshots").get_json()["snapshots"]}
    assert listed["cold"]["memory"] is False and listed["cold"]["state"] == "ready"
    disk = settings.data_dir / "vms" / vm_id / "disk.qcow2"
    in_qcow2 = subprocess.run(["qemu-img", "snapshot", "-l", "-U", str(disk)], capture_output=True, text=True)
    assert " cold " in in_qcow2.stdout, in_qcow2

    # Reverting a stopped guest to its memory snapshot starts it where it was; back to `cold` stops it.
    assert post(client, f"/api/v1/vms/{vm_id}/snapshots/amd64-mem/revert")["result"]["state"] == "running"
    assert post(client, f"/api/v1/vms/{vm_id}/snapshots/cold/revert")["result"]["state"] == "stopped"
    assert client.get(f"/api/v1/vms/{vm_id}").get_json()["vm"]["state"] == "stopped"

    deleted = client.delete(f"/api/v1/vms/{vm_id}/snapshots/cold")
    assert deleted.status_code == 202
    assert wait_job(client, deleted.get_json()["job"]["id"], timeout=60)["state"] == "succeeded"
    assert domain_snapshots(vm_id) == ["amd64-mem"]
    in_qcow2 = subprocess.run(["qemu-img", "snapshot", "-l", "-U", str(disk)], capture_output=True, text=True)
    assert " cold " not in in_qcow2.stdout and " amd64-mem " in in_qcow2.stdout
    assert post(client, f"/api/v1/vms/{vm_id}/start")["state"] == "succeeded"
