"""Recovery on real QEMU: a worker killed mid-job, a worker gone for good, and the reconciler noticing a
guest killed behind archq's back."""

from __future__ import annotations

import os
import signal
import subprocess

import libvirt
import pytest

from tests.support.api import create_vm, wait_host, wait_job
from tests.support.domains import force_remove
from tests.support.services import wait_for

pytestmark = pytest.mark.libvirtd


def running_vm(client, name: str, **fields) -> str:
    accepted = create_vm(client, name=name, **fields)
    assert wait_job(client, accepted["job"]["id"], timeout=120)["state"] == "succeeded"
    return accepted["vm"]["id"]


def start_stop(client, vm_id: str) -> str:
    """A stop takes the graceful timeout: the tiny guest ignores ACPI, so it is forced off after it."""
    response = client.post(f"/api/v1/vms/{vm_id}/stop")
    assert response.status_code == 202
    job_id = response.get_json()["job"]["id"]
    wait_for(lambda: client.get(f"/api/v1/jobs/{job_id}").get_json()["job"]["state"] == "running", timeout=30)
    return job_id


def test_a_worker_killed_mid_job_is_resumed_on_its_host(client, start_qemu_worker):
    worker = start_qemu_worker()
    wait_host(client, "qemu-host", timeout=90)
    vm_id = running_vm(client, "resumed")
    try:
        job_id = start_stop(client, vm_id)
        worker.kill()
        start_qemu_worker()
        job = wait_job(client, job_id, timeout=90)
        assert job["state"] == "succeeded", job
        assert any("stopped renewing its lease; resumed there" in e["message"] for e in job["events"])
        assert client.get(f"/api/v1/vms/{vm_id}").get_json()["vm"]["state"] == "stopped"
    finally:
        force_remove(vm_id)


def test_a_worker_gone_for_good_fails_its_job_with_worker_lost(client, start_qemu_worker):
    worker = start_qemu_worker()
    wait_host(client, "qemu-host", timeout=90)
    vm_id = running_vm(client, "lost")
    try:
        job_id = start_stop(client, vm_id)
        worker.kill()
        job = wait_job(client, job_id, timeout=90)
        assert (job["state"], job["error"]["code"]) == ("failed", "worker_lost"), job
        assert "qemu-host is down" in job["error"]["message"]
        assert client.get(f"/api/v1/vms/{vm_id}").get_json()["vm"]["state"] == "unknown"
    finally:
        force_remove(vm_id)


def kill_qemu(vm_name: str) -> None:
    pid = int(subprocess.run(["pgrep", "-f", f"guest=archq-{vm_name},"], capture_output=True, text=True,
                             check=True).stdout.split()[0])  # fmt: skip
    os.kill(pid, signal.SIGKILL)


def test_the_reconciler_applies_the_restart_policy(client, start_qemu_worker):
    start_qemu_worker()
    wait_host(client, "qemu-host", timeout=90)
    always = running_vm(client, "always", restart_policy="always")
    never = running_vm(client, "never")
    try:
        kill_qemu("always")
        kill_qemu("never")

        def restarted() -> bool:
            jobs = client.get("/api/v1/jobs?kind=start").get_json()["jobs"]
            return any(j["vm_id"] == always and j["state"] == "succeeded" for j in jobs)

        wait_for(
            restarted,
            timeout=60,
            what=lambda: (
                "the reconciler to restart the VM with restart_policy=always; VMs: "
                + str(client.get("/api/v1/vms").get_json())
                + " host: "
                + str(client.get("/api/v1/hosts/qemu-host").get_json())
            ),
        )
        start_job = next(j for j in client.get("/api/v1/jobs?kind=start").get_json()["jobs"] if j["vm_id"] == always)
        assert start_job["events"][0]["actor"] == "reconciler"
        assert client.get(f"/api/v1/vms/{always}").get_json()["vm"]["state"] == "running"
        wait_for(lambda: client.get(f"/api/v1/vms/{never}").get_json()["vm"]["state"] == "stopped", timeout=30)
    finally:
        force_remove(always)
        force_remove(never)


def test_domains_archq_does_not_manage_are_reported_untouched(client, start_qemu_worker):
    conn = libvirt.open("qemu:///system")
    dom = conn.defineXML(
        "<domain type='qemu'><name>hand-made</name><memory unit='MiB'>64</memory>"
        "<os><type arch='x86_64'>hvm</type></os></domain>"
    )
    try:
        start_qemu_worker()
        wait_host(client, "qemu-host", timeout=90)

        def listed():
            host = client.get("/api/v1/hosts/qemu-host").get_json()["host"]
            return [d for d in host["unmanaged_domains"] if d["name"] == "hand-made"]

        assert wait_for(listed, timeout=30)[0]["uuid"] == dom.UUIDString()
        assert conn.lookupByName("hand-made").UUIDString() == dom.UUIDString()
    finally:
        dom.undefine()
        conn.close()
