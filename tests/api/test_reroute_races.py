"""Re-routing a stranded job to emulation against a native worker that takes its old message meanwhile: the
sweep reads the stranded jobs, then moves each to the TCG queue under a new token. A native host that came back
in between and claimed the old message runs the job natively; the re-route must then leave it alone (before,
the row was re-routed, emulated and sent to `tcg.arm64` while the native run went on)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import pytest
import redis

from queues.claims import ClaimStore
from tests.support.api import create_vm
from tests.support.fleet import beat
from tests.support.services import wait_for
from web.extensions import db
from web.models import Job
from web.services.rerouting import reroute_stranded

NATIVE_WORKER = "archq@arm64-host"


@pytest.fixture
def settings(settings):
    # Stranded at once: the sweep below re-routes whatever waits on a native queue without a live native host.
    return dataclasses.replace(settings, native_wait_s=0.0)


class NativeWorkerClaimsFirst(ClaimStore):
    """The sweep's claim store. Before the sweep's first write to Redis, a native worker claims the job with
    the token of the message it received (the one the job had when the sweep read it)."""

    def __init__(self, app, job_id: str, token: str) -> None:
        super().__init__(redis.Redis.from_url(app.extensions["archq"].settings.redis_url))
        self._job_id, self._token, self._claimed = job_id, token, False

    def _native_worker_claims(self) -> None:
        if not self._claimed:
            self._claimed = True
            assert self.claim(self._job_id, self._token, NATIVE_WORKER, lease_s=30) == "claimed"

    def reissue_unless_claimed(self, job_id: str, token: str) -> bool:
        self._native_worker_claims()
        return super().reissue_unless_claimed(job_id, token)

    def set_tokens(self, tokens: Iterable[tuple[str, str]]) -> None:
        self._native_worker_claims()
        super().set_tokens(tokens)


def stranded_job(app, client) -> tuple[str, str]:
    """(job id, token) of an arm64 create queued on `arm64` with no host at all, once an amd64 host that
    emulates arm64 has joined."""
    job_id = create_vm(client, arch="arm64")["job"]["id"]
    wait_for(lambda: client.get(f"/api/v1/jobs/{job_id}").get_json()["job"]["state"] == "queued", what="the publish")
    with app.app_context():
        beat("amd64-host", arch="amd64", emulators=("arm64",))
        job = db.session.get(Job, job_id)
        assert job.queue == "arm64"
        return job_id, job.token


def test_a_job_a_native_worker_claimed_meanwhile_is_not_rerouted(app, client):
    job_id, token = stranded_job(app, client)
    ext = app.extensions["archq"]
    claims = NativeWorkerClaimsFirst(app, job_id, token)
    with app.app_context():
        assert reroute_stranded(ext.celery, claims, ext.settings) == 0
        job = db.session.get(Job, job_id)
        assert (job.queue, job.token, job.emulated, job.vm.emulated) == ("arm64", token, False, False)
    assert claims.holder(job_id) == NATIVE_WORKER
    events = client.get(f"/api/v1/jobs/{job_id}").get_json()["job"]["events"]
    assert not any("re-routed" in event["message"] for event in events)


def test_a_stranded_job_moves_to_tcg_under_a_token_that_redis_and_the_database_share(app, client):
    job_id, token = stranded_job(app, client)
    ext = app.extensions["archq"]
    with app.app_context():
        assert reroute_stranded(ext.celery, ext.claims, ext.settings) == 1
        job = db.session.get(Job, job_id)
        assert (job.queue, job.emulated, job.vm.emulated) == ("tcg.arm64", True, True)
        assert job.token != token and job.payload["token"] == job.token
        # The old message is stale for a native worker that receives it now; the new one is current.
        assert ext.claims.claim(job_id, token, NATIVE_WORKER, lease_s=30) == "stale"
        assert ext.claims.claim(job_id, job.token, "archq@amd64-host", lease_s=30) == "claimed"
