"""A job runs at most once per dispatch, however often its message is delivered."""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import timedelta

import pytest
import redis

from queues import messages
from queues.claims import Claim, ClaimStore
from queues.liveness import mark_alive
from tests.support.api import create_vm, wait_host, wait_job
from tests.support.fleet import beat
from tests.support.services import wait_for
from web.extensions import db
from web.models import Job, utcnow
from web.services.recovery import recover_running


@pytest.fixture
def claims(settings) -> ClaimStore:
    return ClaimStore.from_url(settings.redis_url)


def test_only_the_current_token_can_claim(claims):
    claims.set_tokens([("job-1", "token-a")])
    assert claims.claim("job-1", "token-old", "w1", lease_s=5) is Claim.STALE
    assert claims.claim("job-1", "token-a", "w1", lease_s=5) is Claim.CLAIMED


def test_a_first_message_needs_no_token_written_and_its_claim_fixes_the_token(claims):
    assert claims.claim("job-1", "token-a", "w1", lease_s=5) is Claim.CLAIMED
    assert claims.claim("job-1", "token-b", "w2", lease_s=5) is Claim.STALE


def test_a_job_cancelled_before_its_first_message_is_claimed_stays_cancelled(claims):
    assert claims.revoke_unless_claimed("job-1")
    assert claims.claim("job-1", "token-a", "w1", lease_s=5) is Claim.STALE


def test_a_re_dispatch_makes_the_first_message_stale(claims):
    claims.set_tokens([("job-1", "token-b")])
    assert claims.claim("job-1", "token-a", "w1", lease_s=5) is Claim.STALE
    assert claims.claim("job-1", "token-b", "w1", lease_s=5) is Claim.CLAIMED


def test_a_live_lease_keeps_others_out_and_done_is_final(claims):
    claims.set_tokens([("job-1", "t")])
    assert claims.claim("job-1", "t", "w1", lease_s=5) is Claim.CLAIMED
    assert claims.claim("job-1", "t", "w2", lease_s=5) is Claim.TAKEN
    assert claims.finish("job-1", "w1")
    assert claims.claim("job-1", "t", "w2", lease_s=5) is Claim.DONE


def test_a_run_whose_lease_lapsed_unnoticed_still_ends_the_job(claims):
    # A broker outage longer than the lease: nobody took the job over, so the run's outcome stands and a
    # re-delivered message finds the job done.
    assert claims.claim("job-1", "t", "w1", lease_s=0.2) is Claim.CLAIMED
    time.sleep(0.4)
    assert claims.finish("job-1", "w1", "the report")
    assert claims.claim("job-1", "t", "w2", lease_s=5) is Claim.DONE
    assert claims.result("job-1") == "the report"


def test_a_lapsed_lease_can_be_taken_over(claims):
    claims.set_tokens([("job-1", "t")])
    assert claims.claim("job-1", "t", "w1", lease_s=0.2) is Claim.CLAIMED
    time.sleep(0.4)
    assert claims.claim("job-1", "t", "w2", lease_s=5) is Claim.CLAIMED
    assert not claims.finish("job-1", "w1"), "the old holder must not end a job it no longer owns"


def test_the_lease_is_renewed_while_the_job_runs(claims):
    claims.set_tokens([("job-1", "t")])
    claims.claim("job-1", "t", "w1", lease_s=0.3)
    with claims.lease("job-1", "w1", "t", lease_s=0.3):
        time.sleep(0.9)
        assert claims.holder("job-1") == "w1"


def test_a_claimed_job_cannot_be_revoked(claims):
    claims.set_tokens([("job-1", "t")])
    claims.claim("job-1", "t", "w1", lease_s=5)
    assert not claims.revoke_unless_claimed("job-1")
    assert claims.claim("job-1", "t", "w1", lease_s=5) is Claim.CLAIMED


def test_a_publisher_that_read_the_job_before_the_cancel_cannot_revive_it(claims):
    claims.set_tokens([("job-1", "t")])
    assert claims.revoke_unless_claimed("job-1")
    claims.set_tokens([("job-1", "t")])
    assert claims.claim("job-1", "t", "w1", lease_s=5) is Claim.STALE


def test_a_revoked_job_is_stale_for_every_message(claims):
    claims.set_tokens([("job-1", "t")])
    assert claims.revoke_unless_claimed("job-1")
    assert claims.claim("job-1", "t", "w1", lease_s=5) is Claim.STALE


def test_duplicate_deliveries_run_the_operation_once(client, conductor, hypervisor_worker):
    with hypervisor_worker("amd64-host") as worker:
        wait_host(client, "amd64-host")
        accepted = create_vm(client)
        job = wait_job(client, accepted["job"]["id"])
        assert job["state"] == "succeeded"

        message = dict(job_payload(client, accepted["job"]["id"]))
        calls: list[int] = []
        started = threading.Barrier(3)

        def operation(ctx, vm):
            calls.append(1)
            time.sleep(0.2)
            return {"host": ctx.host.name, "state": "running"}

        outcomes: list[str] = []

        def deliver():
            started.wait()
            outcomes.append(worker.runner.run(message, operation))

        # The job already ended: every re-delivery of its message is a no-op.
        threads = [threading.Thread(target=deliver) for _ in range(3)]
        for t in threads:
            t.start()
        started_at = time.monotonic()
        for t in threads:
            t.join(timeout=10)
        assert time.monotonic() - started_at < 10
        assert calls == []
        assert outcomes == ["done", "done", "done"]


def test_concurrent_deliveries_of_a_new_dispatch_run_once(settings, hypervisor_worker, claims):
    with hypervisor_worker("amd64-host") as worker:
        job_id, token = str(uuid.uuid4()), "fresh"
        claims.set_tokens([(job_id, token)])
        message = {
            "job_id": job_id,
            "token": token,
            "kind": "create",
            "vm": {"id": str(uuid.uuid4()), "name": "dup", "arch": "amd64", "vcpus": 1, "memory_mib": 128,
                   "image": "tiny"},
        }  # fmt: skip
        calls: list[int] = []
        barrier = threading.Barrier(4)

        def operation(ctx, vm):
            calls.append(1)
            time.sleep(0.3)
            return {"host": ctx.host.name}

        outcomes: list[str] = []

        def deliver():
            barrier.wait()
            outcomes.append(worker.runner.run(message, operation))

        threads = [threading.Thread(target=deliver) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=10)
        assert calls == [1]
        assert sorted(outcomes) == ["claimed", "taken", "taken", "taken"]
        assert redis.Redis.from_url(settings.redis_url).get(f"archq:job:{job_id}:claim") == b"done"


def job_payload(client, job_id: str) -> dict:
    with client.application.app_context():
        return db.session.get(Job, job_id).payload


def test_a_job_whose_reports_were_all_lost_ends_from_its_done_claim(app, client, claims):
    """The worker ran the job and stored its outcome with the `done` claim, but neither its `running` nor its
    `succeeded` report reached the conductor: the recovery sweep applies the stored outcome."""
    accepted = create_vm(client, name="unreported")
    job_id = accepted["job"]["id"]
    wait_for(lambda: client.get(f"/api/v1/jobs/{job_id}").get_json()["job"]["state"] == "queued", timeout=10)
    token = job_payload(client, job_id)["token"]
    assert claims.claim(job_id, token, "amd64-host/w", lease_s=5) is Claim.CLAIMED
    outcome = messages.job_update.dump(
        {"job_id": job_id, "state": "succeeded", "host": "amd64-host", "at": time.time(),
         "result": {"host": "amd64-host", "state": "running", "accel": "tcg"}, "error": None, "progress": None}
    )  # fmt: skip
    assert claims.finish(job_id, "amd64-host/w", json.dumps(outcome))
    ext = app.extensions["archq"]
    with app.app_context():
        job = db.session.get(Job, job_id)
        job.queued_at = job.queued_at - timedelta(seconds=ext.settings.lease_s + 1)
        db.session.commit()
        liveness = redis.Redis.from_url(ext.settings.redis_url)
        assert recover_running(ext.celery, ext.claims, liveness, ext.settings) == 1
    job = client.get(f"/api/v1/jobs/{job_id}").get_json()["job"]
    assert job["state"] == "succeeded"
    assert client.get(f"/api/v1/vms/{accepted['vm']['id']}").get_json()["vm"]["state"] == "running"


def test_a_lapsed_lease_is_judged_by_the_hosts_last_mark_and_the_jobs_it_lists(app, client, claims, settings):
    """A run held its process past its lease (a libvirt call that keeps the GIL): its lease lapsed, and the
    host's full heartbeat that lists the job still waits in the control queue while the liveness mark that
    says the host is alive is already in Redis. The conductor resumes the job only if a mark made after the
    lapse does not list it."""
    liveness = redis.Redis.from_url(settings.redis_url)
    ext = app.extensions["archq"]
    accepted = create_vm(client, name="held")
    job_id = accepted["job"]["id"]
    wait_for(lambda: client.get(f"/api/v1/jobs/{job_id}").get_json()["job"]["state"] == "queued", timeout=10)
    with app.app_context():
        beat("amd64-host")  # recorded before the claim: it cannot list the job
        job = db.session.get(Job, job_id)
        long_ago = utcnow() - timedelta(seconds=settings.lease_s + 1)
        job.state, job.host, job.started_at, job.queued_at = "running", "amd64-host", long_ago, long_ago
        db.session.commit()
    assert claims.claim(job_id, job_payload(client, job_id)["token"], "amd64-host/w", lease_s=0.1) is Claim.CLAIMED
    wait_for(lambda: claims.lapsed_for(job_id) > settings.lease_s / 2, timeout=10, what="the lease to lapse")

    def resumed_after_recovery() -> bool:
        with app.app_context():
            recover_running(ext.celery, ext.claims, liveness, settings)
        events = client.get(f"/api/v1/jobs/{job_id}").get_json()["job"]["events"]
        return any("resumed there" in event["message"] for event in events)

    mark_alive(liveness, "amd64-host", [job_id])
    assert not resumed_after_recovery()
    mark_alive(liveness, "amd64-host", [])
    assert resumed_after_recovery()
