"""Snapshots through the API and a real worker on the libvirt test driver: the policy's refusals answer 409
with a reason before anything is queued, and a snapshot job taken twice leaves one libvirt snapshot."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
import redis
from sqlalchemy import func, select

from queues.claims import ClaimStore
from tests.support.api import create_vm, wait_host, wait_job
from workers.snapshots import snapshot_vm


@pytest.fixture
def worker(client, conductor, hypervisor_worker):
    with hypervisor_worker("amd64-host") as service:
        wait_host(client, "amd64-host")
        yield service


def running_vm(client, name: str = "snap-t") -> str:
    accepted = create_vm(client, name=name)
    assert wait_job(client, accepted["job"]["id"])["state"] == "succeeded"
    return accepted["vm"]["id"]


def take(client, vm_id: str, name: str, memory: bool) -> dict:
    response = client.post(f"/api/v1/vms/{vm_id}/snapshots", json={"name": name, "memory": memory})
    assert response.status_code == 202, response.get_json()
    body = response.get_json()
    assert body["snapshot"]["state"] == "creating"
    return wait_job(client, body["job"]["id"])


def act(client, method: str, path: str) -> dict:
    response = client.open(path, method=method)
    assert response.status_code == 202, response.get_json()
    return wait_job(client, response.get_json()["job"]["id"])


def snapshots(client, vm_id: str) -> dict[str, dict]:
    return {s["name"]: s for s in client.get(f"/api/v1/vms/{vm_id}/snapshots").get_json()["snapshots"]}


def vm(client, vm_id: str) -> dict:
    return client.get(f"/api/v1/vms/{vm_id}").get_json()["vm"]


def job_count(client) -> int:
    from web.extensions import db
    from web.models import Job

    with client.application.app_context():
        return db.session.scalar(select(func.count()).select_from(Job))


def set_vm(client, vm_id: str, **columns) -> None:
    from web.extensions import db
    from web.models import Vm

    with client.application.app_context():
        row = db.session.get(Vm, vm_id)
        for name, value in columns.items():
            setattr(row, name, value)
        db.session.commit()


def test_create_reports_the_disk_the_snapshots_live_in(client, worker):
    created = vm(client, running_vm(client))
    assert (created["disk_format"], created["firmware"]) == ("qcow2", "direct")
    assert created["cpu_mode_effective"] == "custom:qemu64"
    assert created["memory_snapshot_ok"] is True and created["revertable"] is True
    host = client.get("/api/v1/hosts/amd64-host").get_json()["host"]
    assert host["libvirt_version"] >= 9_000_000
    assert host["snapshot_support"]["internal_memory"] is True
    assert host["snapshot_support"]["external_revert"] is (host["libvirt_version"] >= 9_009_000)


def test_memory_snapshot_revert_and_delete(client, worker):
    vm_id = running_vm(client)
    job = take(client, vm_id, "before-upgrade", memory=True)
    assert job["state"] == "succeeded", job
    assert job["kind"] == "snapshot" and job["queue"] == "host.amd64-host"
    assert job["progress"] == {"phase": "done", "percent": 100}
    # Progress reports change the figures, never the state: one `running` event, no bogus transition.
    assert [e["state"] for e in job["events"]] == ["pending", "queued", "running", "succeeded"]
    listed = snapshots(client, vm_id)["before-upgrade"]
    assert (listed["state"], listed["memory"], listed["kind"], listed["job_id"]) == (
        "ready", True, "internal", job["id"],
    )  # fmt: skip
    assert vm(client, vm_id)["snapshot_kind"] == "internal"
    libvirt_snapshot = worker.hypervisor.snapshot(vm_id, "before-upgrade")
    assert libvirt_snapshot.memory and job["id"] in libvirt_snapshot.description

    reverted = act(client, "POST", f"/api/v1/vms/{vm_id}/snapshots/before-upgrade/revert")
    assert (reverted["state"], reverted["kind"], reverted["result"]["state"]) == ("succeeded", "revert", "running")
    assert vm(client, vm_id)["state"] == "running"

    deleted = act(client, "DELETE", f"/api/v1/vms/{vm_id}/snapshots/before-upgrade")
    assert (deleted["state"], deleted["kind"]) == ("succeeded", "snapshot_delete")
    assert snapshots(client, vm_id) == {}
    assert worker.hypervisor.snapshots(vm_id) == []
    assert vm(client, vm_id)["snapshot_kind"] is None


def test_disk_only_snapshots_of_a_stopped_vm_are_listed_and_deleted(client, worker):
    vm_id = running_vm(client)
    assert act(client, "POST", f"/api/v1/vms/{vm_id}/stop")["state"] == "succeeded"
    for name in ("one", "two"):
        assert take(client, vm_id, name, memory=False)["state"] == "succeeded"
    listed = snapshots(client, vm_id)
    assert sorted(listed) == ["one", "two"]
    assert all(s["memory"] is False and s["state"] == "ready" for s in listed.values())
    assert sorted(s.name for s in worker.hypervisor.snapshots(vm_id)) == ["one", "two"]

    assert act(client, "DELETE", f"/api/v1/vms/{vm_id}/snapshots/one")["state"] == "succeeded"
    assert sorted(snapshots(client, vm_id)) == ["two"]
    assert vm(client, vm_id)["snapshot_kind"] == "internal", "one snapshot is left"
    reverted = act(client, "POST", f"/api/v1/vms/{vm_id}/snapshots/two/revert")
    assert reverted["result"]["state"] == "stopped"
    assert act(client, "DELETE", f"/api/v1/vms/{vm_id}/snapshots/two")["state"] == "succeeded"
    assert vm(client, vm_id)["snapshot_kind"] is None


def refused(client, method: str, path: str, body: dict | None = None, status: int = 409) -> dict:
    before = job_count(client)
    response = client.open(path, method=method, json=body)
    assert response.status_code == status, response.get_json()
    assert job_count(client) == before, "a refused request queues nothing"
    error = response.get_json()["error"]
    assert error["message"]
    return error


def queued_job(client, vm_id: str) -> str:
    from web.extensions import db
    from web.models import Job, JobEvent, Vm

    with client.application.app_context():
        job = Job(id=str(uuid.uuid4()), kind="reboot", state="queued", queue="nobody", vm=db.session.get(Vm, vm_id),
                  task="archq.vm.reboot", payload={}, token="t", result={})  # fmt: skip
        job.events.append(JobEvent(state="queued", actor="test"))
        db.session.add(job)
        db.session.commit()
        return job.id


def test_every_refusal_answers_409_with_a_reason_and_queues_nothing(client, worker):
    vm_id = running_vm(client)
    url = f"/api/v1/vms/{vm_id}/snapshots"
    assert take(client, vm_id, "kept", memory=True)["state"] == "succeeded"

    assert refused(client, "POST", url, {"name": "kept", "memory": True})["code"] == "snapshot_exists"
    error = refused(client, "POST", url, {"name": "disk", "memory": False})
    assert error["code"] == "wrong_state" and "stopped" in error["message"]
    assert refused(client, "POST", url, {"name": "Bad_Name", "memory": True}, status=422)["code"]
    assert refused(client, "POST", url, {"name": "no-memory-flag"}, status=422)["fields"]["memory"]
    assert refused(client, "POST", f"{url}/nope/revert", status=404)["code"]
    assert refused(client, "DELETE", f"{url}/nope", status=404)["code"]

    set_vm(client, vm_id, firmware="uefi")
    error = refused(client, "POST", url, {"name": "uefi", "memory": True})
    assert error["code"] == "snapshot_unsupported" and "UEFI" in error["message"]
    assert refused(client, "POST", f"{url}/kept/revert")["code"] == "revert_unsupported"
    set_vm(client, vm_id, firmware="direct", disk_format="raw")
    error = refused(client, "POST", url, {"name": "raw", "memory": True})
    assert error["code"] == "snapshot_unsupported" and "raw" in error["message"]
    set_vm(client, vm_id, disk_format="qcow2", snapshot_kind="external")
    assert refused(client, "POST", url, {"name": "mixed", "memory": True})["code"] == "snapshot_chain_mixed"
    error = refused(client, "POST", f"{url}/kept/revert")
    assert error["code"] == "revert_unsupported" and "9.9" in error["message"]
    set_vm(client, vm_id, snapshot_kind="internal")

    # A job in flight (one no worker will take before the test is done with it) makes the VM busy.
    in_flight = queued_job(client, vm_id)
    assert refused(client, "POST", url, {"name": "busy", "memory": True})["code"] == "vm_busy"
    assert refused(client, "POST", f"{url}/kept/revert")["code"] == "vm_busy"
    assert refused(client, "DELETE", f"{url}/kept")["code"] == "vm_busy"
    assert client.post(f"/api/v1/jobs/{in_flight}/cancel").status_code == 202
    assert act(client, "POST", f"/api/v1/vms/{vm_id}/stop")["state"] == "succeeded"
    error = refused(client, "POST", url, {"name": "stopped", "memory": True})
    assert error["code"] == "wrong_state" and "running" in error["message"]


def test_a_snapshot_that_never_became_ready_cannot_be_reverted_to(client, worker):
    vm_id = running_vm(client)
    # The worker finds a snapshot of this name that another job took, and fails the job.
    worker.hypervisor.create_internal_snapshot(vm_id, "taken", "archq job someone-else", memory=True)
    failed = take(client, vm_id, "taken", memory=True)
    assert (failed["state"], failed["error"]["code"]) == ("failed", "snapshot_exists")
    assert vm(client, vm_id)["state"] == "running", "a failed snapshot leaves the VM as it was"
    assert snapshots(client, vm_id)["taken"]["state"] == "failed"
    error = refused(client, "POST", f"/api/v1/vms/{vm_id}/snapshots/taken/revert")
    assert error["code"] == "snapshot_not_ready"
    # The failed record does not hold the name; the delete removes the stray libvirt snapshot too.
    assert act(client, "DELETE", f"/api/v1/vms/{vm_id}/snapshots/taken")["state"] == "succeeded"
    assert worker.hypervisor.snapshots(vm_id) == []
    assert take(client, vm_id, "taken", memory=True)["state"] == "succeeded"


def test_the_same_snapshot_job_delivered_twice_takes_one_snapshot(client, settings, worker):
    vm_id = running_vm(client)
    response = client.post(f"/api/v1/vms/{vm_id}/snapshots", json={"name": "once", "memory": True})
    job_id = response.get_json()["job"]["id"]
    first = wait_job(client, job_id)
    assert first["result"]["reused"] is False
    message = job_payload(client, job_id)

    # A re-delivery of the message: the claim is done, the operation does not run again.
    assert worker.runner.run(message, snapshot_vm) == "done"
    # The worker died after libvirt took the snapshot, before it reported: its lease lapsed and recovery
    # resumed the job with a new token. The operation runs again and finds the snapshot its job took.
    claims = ClaimStore.from_url(settings.redis_url)
    redis.Redis.from_url(settings.redis_url).delete(f"archq:job:{job_id}:claim")
    claims.set_tokens([(job_id, "resumed")])
    resumed = {**message, "token": "resumed"}
    outcomes: list[str] = []
    threads = [threading.Thread(target=lambda: outcomes.append(worker.runner.run(resumed, snapshot_vm)))
               for _ in range(3)]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert outcomes.count("claimed") == 1, outcomes
    stored = claims.result(job_id)
    assert '"reused": true' in stored
    assert [s.name for s in worker.hypervisor.snapshots(vm_id)] == ["once"]
    # Another job asking for the same name is not fooled into success.
    again = {**message, "job_id": str(uuid.uuid4()), "token": "other"}
    claims.set_tokens([(again["job_id"], "other")])
    assert worker.runner.run(again, snapshot_vm) == "claimed"
    assert '"code": "snapshot_exists"' in claims.result(again["job_id"])
    assert [s.name for s in worker.hypervisor.snapshots(vm_id)] == ["once"]


def test_a_snapshot_over_its_time_limit_fails_and_leaves_no_snapshot(client, conductor, hypervisor_worker):
    with hypervisor_worker("amd64-host", time_limits={"create": 600.0, "snapshot": 0.0}) as worker:
        wait_host(client, "amd64-host")
        vm_id = running_vm(client)
        job = take(client, vm_id, "too-slow", memory=True)
        assert (job["state"], job["error"]["code"]) == ("failed", "timeout"), job
        assert worker.hypervisor.snapshots(vm_id) == [], "the snapshot it took was rolled back"
        assert snapshots(client, vm_id)["too-slow"]["state"] == "failed"


def test_a_progress_report_changes_figures_not_state(app):
    from web.extensions import db
    from web.models import Job, JobEvent, Vm
    from web.services.jobs import record_job_update

    with app.app_context():
        vm_row = Vm(id=str(uuid.uuid4()), name="snap-p", arch="amd64", vcpus=1, memory_mib=64, image="tiny",
                    state="running")  # fmt: skip
        job = Job(id=str(uuid.uuid4()), kind="snapshot", state="queued", queue="host.h", vm=vm_row, task="t",
                  payload={"params": {"snapshot": "s"}}, token="t", result={})  # fmt: skip
        job.events.append(JobEvent(state="queued", actor="test"))
        db.session.add_all([vm_row, job])
        db.session.commit()
        base = {"job_id": uuid.UUID(job.id), "host": "h", "at": time.time(), "result": {}, "error": None}
        assert record_job_update({**base, "state": "running", "progress": None})
        assert record_job_update({**base, "state": "running", "progress": {"phase": "saving", "percent": 40}})
        assert not record_job_update({**base, "state": "running", "progress": None}), "a duplicate running report"
        db.session.refresh(job)
        assert job.state == "running" and job.progress == {"phase": "saving", "percent": 40}
        assert [e.state for e in job.events] == ["queued", "running"]
        assert record_job_update({**base, "state": "succeeded", "result": {"snapshot": "s"}})
        assert not record_job_update({**base, "state": "running", "progress": {"phase": "late"}})
        db.session.refresh(job)
        assert job.state == "succeeded" and job.progress == {"phase": "saving", "percent": 40}


def job_payload(client, job_id: str) -> dict:
    from web.extensions import db
    from web.models import Job

    with client.application.app_context():
        return db.session.get(Job, job_id).payload
