"""A run's lease against the conductor's recovery: a run that is alive is never resumed, however long its
operation holds the worker process (here: the interpreter itself, as a libvirt call that does not let go of it
would), while a run that is really gone still is."""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest

from queues import messages
from queues.claims import ClaimStore
from tests.support.api import create_vm, wait_host, wait_job
from tests.support.services import wait_for
from web.extensions import db
from web.models import Job


@pytest.fixture
def settings(settings):
    # A starved worker sends no heartbeat either and its host looks down; it is judged lost only after this.
    return dataclasses.replace(settings, worker_lost_after_s=30)


def hold_the_interpreter(seconds: float) -> None:
    """Keep every other thread of this process from running for `seconds`: sum() over a range runs in C
    without ever releasing the GIL (measured first, as the machine's speed varies)."""
    started = time.perf_counter()
    sum(range(1_000_000))
    per_item = (time.perf_counter() - started) / 1_000_000
    sum(range(int(seconds / per_item)))


def parked_create(client) -> dict:
    """A create job no worker consumes (an arm64 guest that must run natively, on an amd64-only fleet), once
    published: a run reporting before the API's publisher recorded `queued` would see that event after its own."""
    accepted = create_vm(client, arch="arm64", emulation="native_only")
    job_id = accepted["job"]["id"]
    wait_for(lambda: client.get(f"/api/v1/jobs/{job_id}").get_json()["job"]["state"] == "queued", what="the publish")
    with client.application.app_context():
        return dict(db.session.get(Job, accepted["job"]["id"]).payload)


def states_after_running(client, job_id: str) -> list[str]:
    events = client.get(f"/api/v1/jobs/{job_id}").get_json()["job"]["events"]
    states = [event["state"] for event in events]
    return states[states.index("running") :]


def test_a_run_that_holds_its_process_past_the_lease_is_not_resumed(client, conductor, hypervisor_worker, settings):
    with hypervisor_worker("amd64-host") as worker:
        wait_host(client, "amd64-host")
        message = parked_create(client)
        runs: list[int] = []

        def slow_step(ctx, vm):
            runs.append(1)
            # Longer than the lease; shorter than the host may stay silent before it is judged lost.
            hold_the_interpreter(settings.lease_s * 1.6)
            # Back, the run goes on while the conductor looks at it again: it must still see it alive.
            time.sleep(settings.lease_s)
            return {"host": ctx.host.name, "state": "running"}

        runner = threading.Thread(target=worker.runner.run, args=(message, slow_step))
        runner.start()
        runner.join(timeout=settings.lease_s * 10)
        job = wait_job(client, message["job_id"])

    assert runs == [1]
    assert job["state"] == "succeeded", job
    events = [(event["state"], event["actor"], event["message"]) for event in job["events"]]
    assert states_after_running(client, job["id"]) == ["running", "succeeded"], events


def test_a_run_that_is_gone_is_resumed(client, conductor, hypervisor_worker, settings):
    with hypervisor_worker("amd64-host") as worker:
        wait_host(client, "amd64-host")
        message = parked_create(client)
        job_id = message["job_id"]
        # A run claimed the job and said so, then its process died: no renewal, and the worker that lives on
        # the host (a restarted one) does not list the job.
        claims = ClaimStore.from_url(settings.redis_url)
        assert claims.claim(job_id, message["token"], "amd64-host/dead-run", settings.lease_s).value == "claimed"
        update = {"job_id": job_id, "state": "running", "host": "amd64-host", "at": time.time(), "result": {}}
        worker.runner.report(job_id, messages.job_update.dump(update))

        def job() -> dict:
            return client.get(f"/api/v1/jobs/{job_id}").get_json()["job"]

        wait_for(
            lambda: any("resumed there" in event["message"] for event in job()["events"]),
            timeout=settings.lease_s * 6,
            what=lambda: f"the conductor to resume the job; it is {job()}",
        )
