"""The conductor's re-sends against a run that begins meanwhile: a sweep reads the queued jobs, sends their
messages again, then records that it did. A worker whose run of one of them began in between has moved the job
to `running`; the job's history must not then show `queued` again (seen in CI as `running, queued, succeeded`
after the first sweep of a conductor on a fresh Redis, which re-sends every queued job)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

import redis

from queues.claims import ClaimStore
from tests.support.api import create_vm
from tests.support.services import wait_for
from web.services.jobs import record_job_update
from web.services.recovery import republish_after_broker_loss


class RunBeginsWhileSending(ClaimStore):
    """The sweep's claim store; while the sweep sends, a worker's `running` report of `job_id` is recorded by
    another thread (its own session), as the conductor's report consumer would."""

    def __init__(self, app, job_id: str) -> None:
        super().__init__(redis.Redis.from_url(app.extensions["archq"].settings.redis_url))
        self._app, self._job_id = app, job_id

    def set_tokens(self, tokens: Iterable[tuple[str, str]]) -> None:
        super().set_tokens(tokens)

        def report_running() -> None:
            with self._app.app_context():
                update = {"job_id": self._job_id, "state": "running", "host": "h1", "at": time.time(), "result": {}}
                assert record_job_update(update)

        thread = threading.Thread(target=report_running)
        thread.start()
        thread.join()


def queued_job(client) -> str:
    # arm64, native only, and no host at all: nothing consumes it.
    job_id = create_vm(client, arch="arm64", emulation="native_only")["job"]["id"]
    wait_for(lambda: client.get(f"/api/v1/jobs/{job_id}").get_json()["job"]["state"] == "queued", what="the publish")
    return job_id


def states(client, job_id: str) -> list[str]:
    return [event["state"] for event in client.get(f"/api/v1/jobs/{job_id}").get_json()["job"]["events"]]


def test_a_resend_after_broker_loss_does_not_record_queued_after_the_run_began(app, client):
    job_id = queued_job(client)
    ext = app.extensions["archq"]
    claims = RunBeginsWhileSending(app, job_id)
    assert claims.broker_data_lost()  # a fresh Redis: no sweep has marked its epoch yet
    with app.app_context():
        resent = republish_after_broker_loss(ext.celery, claims)
    assert states(client, job_id) == ["pending", "queued", "running"]
    assert resent == 0
    assert not claims.broker_data_lost()


def test_a_resend_after_broker_loss_is_recorded_on_jobs_still_queued(app, client):
    job_id = queued_job(client)
    ext = app.extensions["archq"]
    with app.app_context():
        assert republish_after_broker_loss(ext.celery, ext.claims) == 1
    events = client.get(f"/api/v1/jobs/{job_id}").get_json()["job"]["events"]
    assert [event["state"] for event in events] == ["pending", "queued", "queued"]
    assert "broker lost its queues" in events[-1]["message"]
