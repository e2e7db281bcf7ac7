"""Faults on a real stack: every accepted job ends exactly once, whatever is killed or stopped meanwhile.
Each scenario prints `accepted=N succeeded=N failed=N lost=0 duplicated=0`."""

from __future__ import annotations

import random
import threading
import time

import pytest
from celery import Celery

from queues.celery_app import declare_queue, make_celery
from queues.names import Task
from tests.support.services import wait_for

TINY = {"arch": "amd64", "vcpus": 1, "memory_mib": 64, "image": "tiny"}


def submit(stack, n: int, prefix: str, *, accept_503: bool = False) -> list[str]:
    """Submits n creates from 8 client threads; returns the accepted job ids. Anything but 202 (or 503 when
    allowed, or a refused connection when the API itself is down) fails the scenario."""
    accepted: list[str] = []
    statuses: list[int] = []
    lock = threading.Lock()

    def client(start: int) -> None:
        from tests.support.http import Api

        api = Api(stack.api_port, stack.client.token)
        for i in range(start, n, 8):
            status, body = api.request("POST", "/vms", {"name": f"{prefix}-{i}", **TINY})
            with lock:
                statuses.append(status)
                if status == 202:
                    accepted.append(body["job"]["id"])

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    allowed = {202, 503} if accept_503 else {202}
    assert set(statuses) <= allowed | {0}, sorted(set(statuses))
    return accepted


def assert_clean(figures, accepted_at_least: int = 1) -> None:
    assert figures["accepted"] >= accepted_at_least
    assert figures["lost"] == 0
    assert figures["duplicated"] == 0


def test_redis_stopped_for_10s_during_a_burst(stack, redis_server):
    stack.start_api()
    stack.start_conductor()
    stack.start_worker()
    outage = threading.Timer(1.0, redis_server.stop)
    outage.start()
    restart = threading.Timer(11.0, redis_server.start)
    restart.start()
    job_ids = submit(stack, 300, "burst", accept_503=True)
    outage.join()
    restart.join()
    figures = stack.tally("redis down 10s during 300 creates", job_ids, timeout=180)
    assert_clean(figures, accepted_at_least=250)
    assert figures["succeeded"] == figures["accepted"]


def test_conductor_killed_and_restarted_mid_burst(stack):
    stack.start_api()
    conductor = stack.start_conductor()
    stack.start_worker()
    killer = threading.Timer(1.0, conductor.kill)
    killer.start()
    job_ids = submit(stack, 120, "cond")
    killer.join()
    time.sleep(2)
    stack.start_conductor()
    figures = stack.tally("conductor killed mid-burst", job_ids)
    assert_clean(figures, accepted_at_least=120)
    assert figures["succeeded"] == 120
    wait_for(lambda: stack.host_state("amd64-host") == "up", timeout=30, what="heartbeats to resume")


def test_api_killed_between_commit_and_enqueue(stack):
    api = stack.start_api()
    stack.start_conductor()
    stack.start_worker()
    killer = threading.Timer(0.5, api.kill)
    killer.start()
    job_ids = submit(stack, 200, "api")
    killer.join()
    stack.start_api()
    figures = stack.tally("API killed mid-burst", job_ids)
    assert_clean(figures)
    assert figures["succeeded"] == figures["accepted"]


def test_duplicate_delivery_runs_once(stack, settings):
    stack.start_api()
    stack.start_conductor()
    stack.start_worker()
    job_ids = submit(stack, 30, "dup")
    # Deliver every message a second and a third time, as a Redis re-delivery would.
    celery: Celery = make_celery(settings, main="fault-injector")
    declare_queue(celery, "amd64")
    for job_id in job_ids:
        payload = stack.job_payload(job_id)
        for _ in range(2):
            celery.send_task(Task.CREATE_VM, kwargs={"job": payload}, task_id=job_id, queue="amd64")
    figures = stack.tally("duplicate delivery x3", job_ids)
    time.sleep(2)
    figures = stack.tally("duplicate delivery x3 (after the extra copies)", job_ids)
    assert_clean(figures, accepted_at_least=30)
    assert figures["succeeded"] == 30


@pytest.mark.libvirtd
def test_worker_killed_mid_create_and_delete(stack, start_qemu_worker):
    stack.start_api()
    rng = random.Random(20261122)
    worker = start_qemu_worker()
    wait_for(lambda: stack.host_state("qemu-host") == "up", timeout=90)
    job_ids: list[str] = []
    vm_ids: list[str] = []
    kills = 0
    for i in range(10):
        status, body = stack.client.request("POST", "/vms", {"name": f"kill-{i}", **TINY})
        assert status == 202
        vm_ids.append(body["vm"]["id"])
        job_ids.append(body["job"]["id"])
        time.sleep(rng.uniform(0.0, 0.6))
        worker.kill()
        kills += 1
        worker = start_qemu_worker()
        wait_for(lambda: stack.host_state("qemu-host") == "up", timeout=90)
    stack.tally("kill -9 worker mid-create (creates)", job_ids, timeout=240)
    delete_ids: list[str] = []
    for vm_id in vm_ids:
        status, body = stack.client.request("DELETE", f"/vms/{vm_id}")
        if status != 202:
            continue  # a create that failed left nothing to delete
        delete_ids.append(body["job"]["id"])
        time.sleep(rng.uniform(0.0, 0.4))
        worker.kill()
        kills += 1
        worker = start_qemu_worker()
        wait_for(lambda: stack.host_state("qemu-host") == "up", timeout=90)
    figures = stack.tally(f"kill -9 worker mid-job x{kills}", job_ids + delete_ids, timeout=240)
    assert kills >= 20
    assert_clean(figures, accepted_at_least=20)
    import libvirt

    conn = libvirt.open("qemu:///system")
    try:
        leftovers = [d.name() for d in conn.listAllDomains() if d.name().startswith("archq-kill-")]
    finally:
        conn.close()
    assert leftovers == [], "every VM was deleted: no domain may remain"
    assert not any((stack.tmp_path / "data" / "vms" / vm_id).exists() for vm_id in vm_ids), "orphaned files"


@pytest.mark.libvirtd
def test_guest_killed_behind_archqs_back_is_restarted_by_policy(stack, start_qemu_worker):
    import os
    import signal
    import subprocess

    stack.start_api()
    start_qemu_worker()
    wait_for(lambda: stack.host_state("qemu-host") == "up", timeout=90)
    vms = []
    for i in range(3):
        status, body = stack.client.request("POST", "/vms", {"name": f"crash-{i}", "restart_policy": "always", **TINY})
        assert status == 202
        vms.append(body["vm"]["id"])
        assert stack.tally("create before the crash", [body["job"]["id"]])["succeeded"] == 1
    for i in range(3):
        pid = subprocess.run(["pgrep", "-f", f"guest=archq-crash-{i},"], capture_output=True, text=True).stdout.split()
        os.kill(int(pid[0]), signal.SIGKILL)

    def restart_jobs() -> list[str]:
        jobs = stack.client.get("/jobs?kind=start")["jobs"]
        return [j["id"] for j in jobs if j["vm_id"] in vms and j["events"][0]["actor"] == "reconciler"]

    started = wait_for(lambda: len(restart_jobs()) == 3 and restart_jobs(), timeout=60, what="three restarts")
    figures = stack.tally("QEMU killed behind archq's back, restart_policy=always", started)
    assert_clean(figures, accepted_at_least=3)
    assert figures["succeeded"] == 3
    deletes = []
    for vm_id in vms:
        assert stack.client.get(f"/vms/{vm_id}")["vm"]["state"] == "running"
        status, body = stack.client.request("DELETE", f"/vms/{vm_id}")
        assert status == 202
        deletes.append(body["job"]["id"])
    assert stack.tally("clean-up", deletes)["succeeded"] == 3
