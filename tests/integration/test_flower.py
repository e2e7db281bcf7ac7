"""Flower as `archq up` and compose run it (`archq flower`): behind basic auth, its Broker page lists archq's
queues with their depths, its worker pages answer, and heartbeats do not bury the jobs in its task list."""

from __future__ import annotations

import socket
import time

import pytest

from queues.celery_app import make_celery
from queues.names import STATIC_QUEUES, Task
from tests.support.api import create_vm, wait_host, wait_job
from tests.support.flower import start_flower
from tests.support.services import wait_for

WORKER = "archq@amd64-host"
CONDUCTOR = f"conductor@{socket.gethostname()}"


@pytest.fixture
def flower(processes):
    return start_flower(processes)


@pytest.fixture
def stack(settings, client, conductor, processes, flower):
    """The conductor and a hypervisor worker (real processes), both followed by Flower's event receiver and
    both answering remote control."""
    processes("worker", ARCHQ_HOSTNAME="amd64-host")
    wait_host(client, "amd64-host", timeout=60)

    def following() -> bool:
        return {WORKER, CONDUCTOR} <= {w["hostname"] for w in flower.json("/workers?json=1")["data"]}

    wait_for(following, timeout=30, interval=0.2, what="Flower to receive both workers' events")
    # A worker's events start before its remote-control queue is consumed (Celery's Heart bootstep needs only
    # Events; Control comes after Tasks), and Flower's worker page is built from a broadcast `inspect`: one sent
    # in between is never delivered, and the page says "Unable to get stats". Wait for both to answer a ping.
    control = make_celery(settings, main="flower-test").control
    for name in (WORKER, CONDUCTOR):
        wait_for(lambda name=name: control.ping(destination=[name], timeout=0.5), timeout=30, interval=0.2,
                 what=f"{name} to answer remote control")  # fmt: skip
    return flower


def test_flower_refuses_requests_without_its_password(flower):
    for path in ("/", "/broker", "/api/queues/length", "/api/tasks"):
        assert flower.get(path, auth=False)[0] == 401
        assert flower.get(path, password="wrong")[0] == 401


def test_flower_only_shows_it_never_acts_past_the_api(stack):
    flower = stack
    for path in (f"/api/worker/shutdown/{WORKER}", f"/api/worker/queue/cancel-consumer/{WORKER}?queue=amd64",
                 f"/api/task/send-task/{Task.DELETE_VM}", f"/api/task/send-task/{Task.JOB_UPDATE}"):  # fmt: skip
        assert flower.request("POST", path)[0] == 403, path
    assert flower.get(f"/worker/{WORKER}")[0] == 200


def test_the_broker_page_lists_archqs_queues_with_their_depths(flower, client):
    # An arm64 job that may not be emulated waits on `arm64` for a native host: no worker runs at all here.
    create_vm(client, name="waiting", arch="arm64", emulation="native_only")
    depths = wait_for(lambda: (d := flower.queue_depths()).get("arm64") == 1 and d, timeout=15,
                      what="Flower to count the waiting job")  # fmt: skip
    assert depths == {**dict.fromkeys(STATIC_QUEUES, 0), "arm64": 1}
    status, page = flower.get("/broker")
    assert status == 200
    for queue in STATIC_QUEUES:
        assert f'<tr id="{queue}">' in page


def test_worker_pages_answer_and_the_broker_page_adds_each_hosts_queue(stack):
    flower = stack
    for name, queue in ((WORKER, "host.amd64-host"), (CONDUCTOR, "control")):
        status, page = flower.get(f"/worker/{name}")
        assert status == 200, page
        assert f"<td>{queue}</td>" in page
    assert set(flower.queue_depths()) == {*STATIC_QUEUES, "host.amd64-host"}
    assert '<tr id="host.amd64-host">' in flower.get("/broker")[1]


def test_flowers_task_list_shows_the_jobs_and_no_heartbeats(stack, client, conductor):
    flower = stack
    # Longer than the period at which Flower, unless told not to, broadcasts `enable_events` to every worker.
    time.sleep(6)
    job_id = create_vm(client)["job"]["id"]
    assert wait_job(client, job_id)["state"] == "succeeded"
    # The worker kept beating meanwhile (every 0.5 s here), each beat a task the conductor ran.
    beats_before = client.get("/api/v1/hosts/amd64-host").get_json()["host"]["last_seen"]
    wait_for(lambda: client.get("/api/v1/hosts/amd64-host").get_json()["host"]["last_seen"] > beats_before,
             timeout=10, what="another heartbeat")  # fmt: skip

    tasks = wait_for(lambda: (t := flower.json("/api/tasks")).get(job_id, {}).get("state") == "SUCCESS" and t,
                     timeout=15, what="Flower to show the job's task succeeded")  # fmt: skip
    assert tasks[job_id]["name"] == Task.CREATE_VM
    assert {task["name"] for task in tasks.values()} == {Task.CREATE_VM}
    # Nor do heartbeats fill the conductor's log at INFO.
    assert f"{Task.HEARTBEAT}[" not in conductor.output()
