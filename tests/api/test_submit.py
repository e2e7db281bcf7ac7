"""What a submitter sees when the API accepts a job."""

from __future__ import annotations

import threading
import uuid

from tests.support.api import TINY
from tests.support.auth import authed_client, make_token


def test_create_answers_202_with_vm_job_and_location(client):
    response = client.post("/api/v1/vms", json=TINY)
    assert response.status_code == 202
    body = response.get_json()
    vm, job = body["vm"], body["job"]
    assert uuid.UUID(vm["id"]).version == 4
    assert (vm["name"], vm["arch"], vm["vcpus"], vm["memory_mib"], vm["state"]) == ("demo", "amd64", 1, 128, "pending")
    assert (job["kind"], job["vm_id"], job["queue"]) == ("create", vm["id"], "amd64")
    assert response.headers["Location"] == f"/api/v1/jobs/{job['id']}"
    assert job["created_at"].endswith("+00:00")


def test_accepted_job_is_published_and_marked_queued(client, redis_server):
    job_id = client.post("/api/v1/vms", json=TINY).get_json()["job"]["id"]
    from tests.support.services import wait_for

    job = wait_for(
        lambda: (j := client.get(f"/api/v1/jobs/{job_id}").get_json()["job"])["state"] == "queued" and j,
        timeout=10,
        what="the job to be published",
    )
    assert job["attempts"] == 1
    assert [e["state"] for e in job["events"]] == ["pending", "queued"]


def test_job_list_pages_and_filters(client):
    for n in range(3):
        client.post("/api/v1/vms", json={**TINY, "name": f"vm-{n}"})
    first = client.get("/api/v1/jobs?kind=create&limit=2").get_json()
    second = client.get("/api/v1/jobs", query_string={"kind": "create", "limit": 2, "next": first["next"]}).get_json()
    assert len(first["jobs"]) == 2 and len(second["jobs"]) == 1
    assert client.get("/api/v1/jobs?kind=delete").get_json()["jobs"] == []


def test_system_info_reports_the_api_host_and_broker(client):
    info = client.get("/api/v1/system/info").get_json()
    assert info["host_arch"] in ("amd64", "arm64")
    assert info["is_x86"] == (info["host_arch"] == "amd64")
    assert info["broker"]["reachable"] is True
    assert set(info["architectures"]) == {"amd64", "arm64"}


def test_concurrent_creates_with_one_name_make_one_vm(app, client):
    answers: list[int] = []
    token = make_token(app, "operator")

    def create() -> None:
        answers.append(authed_client(app, token).post("/api/v1/vms", json={**TINY, "name": "same"}).status_code)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == [202] + [409] * 7
    assert [vm["name"] for vm in client.get("/api/v1/vms").get_json()["vms"]] == ["same"]
