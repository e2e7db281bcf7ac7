"""A job's lines in a worker's JSON log carry the job, its VM, the host and the queue it came from, also
those written in the thread its operation runs in."""

from __future__ import annotations

import json

from tests.support.api import create_vm, wait_job
from tests.unit.test_logs import captured  # noqa: F401  (a fixture)


def test_a_workers_json_lines_name_the_job_vm_host_and_queue(client, conductor, hypervisor_worker, captured):  # noqa: F811
    stream = captured("json")
    with hypervisor_worker("amd64-host"):
        accepted = create_vm(client, name="logged")
        job = wait_job(client, accepted["job"]["id"])
        client.delete(f"/api/v1/vms/{accepted['vm']['id']}")
    assert job["state"] == "succeeded", job
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]
    mine = [line for line in lines if line.get("job_id") == job["id"]]
    assert [line["message"] for line in mine][:1] == [f"job {job['id']}: create running"], lines
    assert f"job {job['id']}: create succeeded" in [line["message"] for line in mine]
    assert {(line["vm_id"], line["host"], line["queue"]) for line in mine} == {
        (accepted["vm"]["id"], "amd64-host", job["queue"])
    }
