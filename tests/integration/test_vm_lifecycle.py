"""A VM's life through the real stack: HTTP -> outbox -> Celery on Redis -> worker -> libvirt test driver
-> report on `control` -> conductor -> database."""

from __future__ import annotations

import libvirt

from tests.support.api import create_vm, wait_host, wait_job


def domain_state(vm_id: str) -> int | None:
    conn = libvirt.open("test:///default")
    try:
        return conn.lookupByUUIDString(vm_id).state()[0]
    except libvirt.libvirtError:
        return None
    finally:
        conn.close()


def test_create_runs_the_domain_and_delete_removes_it(client, conductor, hypervisor_worker):
    with hypervisor_worker("amd64-host"):
        wait_host(client, "amd64-host")
        accepted = create_vm(client)
        vm_id, job_id = accepted["vm"]["id"], accepted["job"]["id"]
        assert accepted["job"]["queue"] == "amd64"

        job = wait_job(client, job_id)
        assert job["state"] == "succeeded", job
        assert [e["state"] for e in job["events"]] == ["pending", "queued", "running", "succeeded"]
        vm = client.get(f"/api/v1/vms/{vm_id}").get_json()["vm"]
        assert (vm["state"], vm["host"], vm["accel"]) == ("running", "amd64-host", "tcg")
        assert domain_state(vm_id) == libvirt.VIR_DOMAIN_RUNNING

        deletion = client.delete(f"/api/v1/vms/{vm_id}")
        assert deletion.status_code == 202
        assert deletion.get_json()["job"]["queue"] == "host.amd64-host"
        assert wait_job(client, deletion.get_json()["job"]["id"])["state"] == "succeeded"
        assert domain_state(vm_id) is None
        assert client.get(f"/api/v1/vms/{vm_id}").status_code == 404


def test_job_accepted_while_the_broker_is_down_runs_once_it_is_back(client, conductor, processes, redis_server):
    processes("worker", ARCHQ_HOSTNAME="amd64-host")
    wait_host(client, "amd64-host")
    redis_server.stop()
    try:
        accepted = create_vm(client, name="during-outage")
        assert accepted["job"]["state"] == "pending"
    finally:
        redis_server.start()
    job = wait_job(client, accepted["job"]["id"], timeout=60)
    assert job["state"] == "succeeded", job
    # The restarted Redis lost its data, so the conductor may re-send the queued job (noted as an event in
    # state `queued`); the job still ran once.
    states = [e["state"] for e in job["events"]]
    assert [s for i, s in enumerate(states) if i == 0 or s != states[i - 1]] == [
        "pending",
        "queued",
        "running",
        "succeeded",
    ]
    assert states.count("running") == 1
    vm = client.get(f"/api/v1/vms/{accepted['vm']['id']}").get_json()["vm"]
    assert (vm["state"], vm["host"]) == ("running", "amd64-host")
