"""Migration through archq on two real libvirt hosts (the two-host lab): the HTTP API, the conductor and
one real worker per host. Live A -> B -> A without a reboot, non-shared storage with the disk's content
checked on the target, cold migration, abort on cancel, a wrong SSH host key, and a source worker killed
mid-migration."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from queues.arch import Arch
from tests.support.migration_lab import Cluster, cluster
from tests.support.services import wait_for
from tests.support.twohosts import lab_available
from workers.guest.tiny import marker_line

pytestmark = pytest.mark.libvirtd

TICK = re.compile(r"^archq-tiny tick (\d+)$", re.MULTILINE)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    reason = lab_available()
    if reason:
        pytest.fail(f"two-host lab unavailable: {reason}")
    started = time.monotonic()
    with cluster(Path(tmp_path_factory.mktemp("mig"))) as c:
        print(f"\nmigration lab up in {time.monotonic() - started:.1f} s")
        yield c


def text(path: Path) -> str:
    return path.read_text(errors="replace").replace("\r", "") if path.exists() else ""


def ticks(path: Path) -> list[int]:
    return [int(n) for n in TICK.findall(text(path))]


def wait_job(lab: Cluster, job_id: str, timeout: float = 120) -> dict:
    last: dict = {}

    def done():
        last.update(lab.job(job_id))
        return last if last["state"] in ("succeeded", "failed", "cancelled") else None

    return wait_for(done, timeout=timeout, interval=0.2, what=lambda: f"job {job_id} to end; it is {last}")


def running_vm(lab: Cluster, name: str, arch: str = "amd64") -> str:
    response = lab.client.post(
        "/api/v1/vms", json={"name": name, "arch": arch, "vcpus": 1, "memory_mib": 128, "image": "tiny", "host": "h1"}
    )
    assert response.status_code == 202, response.get_json()
    vm_id = response.get_json()["vm"]["id"]
    job = wait_job(lab, response.get_json()["job"]["id"])
    assert job["state"] == "succeeded", job["error"]
    marker = marker_line(Arch(arch))
    wait_for(lambda: marker in text(lab.console("h1", vm_id)), timeout=90, what=f"{name}'s boot marker on h1")
    wait_for(lambda: len(ticks(lab.console("h1", vm_id))) >= 2, timeout=30, what=f"{name} ticking")
    return vm_id


def migrate(lab: Cluster, vm_id: str, **body) -> dict:
    response = lab.client.post(f"/api/v1/vms/{vm_id}/migrate", json=body)
    assert response.status_code == 202, response.get_json()
    return response.get_json()["job"]


def delete(lab: Cluster, vm_id: str) -> None:
    response = lab.client.delete(f"/api/v1/vms/{vm_id}")
    if response.status_code == 202:
        wait_job(lab, response.get_json()["job"]["id"])


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_a_guest_live_migrates_a_to_b_to_a_without_rebooting(lab: Cluster, arch: str):
    vm_id = running_vm(lab, f"mig-live-{arch}", arch)
    try:
        started = time.monotonic()
        job = migrate(lab, vm_id, target_host="h2")
        assert job["queue"] == "host.h1"
        done = wait_job(lab, job["id"])
        to_b = time.monotonic() - started
        assert done["state"] == "succeeded", done
        assert done["progress"]["phase"] == "completed" and done["progress"]["percent"] == 100
        assert (lab.vm(vm_id)["host"], lab.vm(vm_id)["state"]) == ("h2", "running")
        assert lab.where(vm_id) == {"h1": None, "h2": "running"}
        last_on_a = ticks(lab.console("h1", vm_id))[-1]
        wait_for(lambda: ticks(lab.console("h2", vm_id)), timeout=30, what="ticks on h2")
        # The guest's counter carries on where it was: its RAM moved, it did not boot again.
        assert ticks(lab.console("h2", vm_id))[0] >= last_on_a
        assert marker_line(Arch(arch)) not in text(lab.console("h2", vm_id))

        # Back, without naming a target: h1 is the only other host. Jobs on the VM now go to h2's queue.
        job = migrate(lab, vm_id)
        assert job["queue"] == "host.h2"
        done = wait_job(lab, job["id"])
        assert done["state"] == "succeeded", done
        assert (lab.vm(vm_id)["host"], lab.vm(vm_id)["state"]) == ("h1", "running")
        assert lab.where(vm_id) == {"h1": "running", "h2": None}
        last_on_b = ticks(lab.console("h2", vm_id))[-1]
        wait_for(lambda: ticks(lab.console("h1", vm_id))[-1] > last_on_b, timeout=30, what="ticks back on h1")
        both = text(lab.console("h1", vm_id)) + text(lab.console("h2", vm_id))
        assert both.count(marker_line(Arch(arch))) == 1
        seen = sorted(set(ticks(lab.console("h1", vm_id)) + ticks(lab.console("h2", vm_id))))
        assert seen[0] == 1 and seen == list(range(1, seen[-1] + 1))[-len(seen) :]
        print(f"\n{arch}: h1 -> h2 through archq in {to_b:.2f} s (job {done['result'].get('seconds')} s on the worker)")
    finally:
        delete(lab, vm_id)
