"""Cancelling jobs, and the lifecycle actions guarded by the VM's state, through real workers."""

from __future__ import annotations

from tests.support.api import create_vm, wait_host, wait_job
from tests.support.fleet import add_vm, beat
from web.extensions import db
from web.models import Vm


def test_a_queued_job_is_cancelled_before_any_side_effect(client, conductor, hypervisor_worker):
    accepted = create_vm(client, arch="arm64", emulation="native_only")  # no worker can take it yet
    job_id = accepted["job"]["id"]
    response = client.post(f"/api/v1/jobs/{job_id}/cancel")
    assert response.status_code == 202
    assert response.get_json()["job"]["state"] == "cancelled"
    assert client.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 409

    # A native worker arriving later finds the message stale and does nothing.
    with hypervisor_worker("arm64-host", capabilities="arm64") as worker:
        wait_host(client, "arm64-host")
        fresh = create_vm(client, name="after-cancel", arch="arm64")
        assert wait_job(client, fresh["job"]["id"])["state"] == "succeeded"
        names = {d.name for d in worker.hypervisor.list_domains()}
        assert "archq-demo" not in names and "archq-after-cancel" in names
    job = client.get(f"/api/v1/jobs/{job_id}").get_json()["job"]
    assert job["state"] == "cancelled" and job["error"]["code"] == "cancelled"
    assert client.get(f"/api/v1/vms/{accepted['vm']['id']}").status_code == 404


def test_actions_follow_the_vm_state(client, conductor, hypervisor_worker):
    with hypervisor_worker("amd64-host"):
        wait_host(client, "amd64-host")
        vm_id = create_vm(client)["vm"]["id"]

        def act(action: str, expected_state: str) -> None:
            response = client.post(f"/api/v1/vms/{vm_id}/{action}")
            assert response.status_code == 202, response.get_json()
            assert wait_job(client, response.get_json()["job"]["id"])["state"] == "succeeded"
            assert client.get(f"/api/v1/vms/{vm_id}").get_json()["vm"]["state"] == expected_state

        wait_job(client, client.get("/api/v1/jobs?kind=create").get_json()["jobs"][0]["id"])
        refused = client.post(f"/api/v1/vms/{vm_id}/start")
        assert refused.status_code == 409
        assert refused.get_json()["error"]["fields"]["state"] == ["running"]
        act("reboot", "running")
        act("stop", "stopped")
        assert client.post(f"/api/v1/vms/{vm_id}/reboot").status_code == 409
        act("start", "running")


def test_an_action_while_another_job_runs_is_409(client):
    vm_id = create_vm(client)["vm"]["id"]
    response = client.post(f"/api/v1/vms/{vm_id}/stop")
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "vm_busy"


def test_a_job_over_its_time_limit_fails_with_timeout_and_is_rolled_back(client, conductor, hypervisor_worker):
    # A limit no create can meet: the worker waits for the operation, then undoes it.
    with hypervisor_worker("amd64-host", time_limits={"create": 1e-6}) as worker:
        wait_host(client, "amd64-host")
        accepted = create_vm(client, name="too-slow")
        job = wait_job(client, accepted["job"]["id"])
        assert (job["state"], job["error"]["code"]) == ("failed", "timeout")
        assert "rolled back" in job["error"]["message"]
        assert worker.hypervisor.domain(accepted["vm"]["id"]) is None
        assert client.get(f"/api/v1/vms/{accepted['vm']['id']}").get_json()["vm"]["state"] == "failed"


def test_a_cancelled_queued_action_leaves_the_vm_as_it_was(app, client):
    # A host that heartbeats but whose worker takes nothing: the jobs stay queued until cancelled.
    with app.app_context():
        beat("idle-host")
        stopped = add_vm("idle-host", state="stopped", desired_state="stopped")
        unknown = add_vm("idle-host", state="unknown", desired_state="stopped")
    for vm_id, submit in (
        (stopped, lambda vm_id: client.delete(f"/api/v1/vms/{vm_id}")),
        (unknown, lambda vm_id: client.post(f"/api/v1/vms/{vm_id}/start")),
    ):
        with app.app_context():
            before = (db.session.get(Vm, vm_id).state, db.session.get(Vm, vm_id).desired_state)
        job = submit(vm_id).get_json()["job"]
        assert client.post(f"/api/v1/jobs/{job['id']}/cancel").get_json()["job"]["state"] == "cancelled"
        with app.app_context():
            vm = db.session.get(Vm, vm_id)
            assert (vm.state, vm.desired_state) == before
