"""Every job a request queues names the token that asked for it: snapshots, reverts, snapshot deletes and
migrations as much as creates (the first event's actor is `token:<name>`)."""

from __future__ import annotations

import time

from tests.support.auth import authed_client, make_token
from tests.support.fleet import add_vm, beat
from web.services.jobs import record_job_update


def finish(job_id: str, **result) -> None:
    for state in ("running", "succeeded"):
        update = {"job_id": job_id, "state": state, "host": "a", "at": time.time()}
        assert record_job_update({**update, "result": result} if state == "succeeded" else update), state


def test_snapshot_revert_snapshot_delete_and_migrate_jobs_name_the_token(app):
    operator = authed_client(app, make_token(app, "operator", "ops-alice"))
    with app.app_context():
        beat("a")
        beat("b")
        vm_id = add_vm(disk_format="qcow2")
        requests = [
            ("POST", f"/api/v1/vms/{vm_id}/snapshots", {"name": "s1", "memory": True}, {}),
            ("POST", f"/api/v1/vms/{vm_id}/snapshots/s1/revert", None, {"state": "running"}),
            ("DELETE", f"/api/v1/vms/{vm_id}/snapshots/s1", None, {}),
            ("POST", f"/api/v1/vms/{vm_id}/migrate", {"target_host": "b"}, None),
        ]
        for method, path, body, result in requests:
            response = operator.open(path, method=method, json=body)
            assert response.status_code == 202, (path, response.get_json())
            job = operator.get(f"/api/v1/jobs/{response.get_json()['job']['id']}").get_json()["job"]
            assert job["events"][0]["actor"] == "token:ops-alice", (path, job["events"])
            if result is not None:
                finish(job["id"], **result)
