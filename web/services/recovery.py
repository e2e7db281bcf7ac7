"""The conductor's recovery sweep: nothing accepted is left behind.

- Redis lost its data (restart without persistence, flush): every `queued` job's message went with it, so
  all of them are published again (their tokens unchanged: a message that did survive stays harmless).
- A `running` job whose worker finished but whose report never arrived: the report stored beside the
  `done` claim is applied.
- A `running` job whose lease lapsed (worker killed, host gone): resumed on the same host when it is up
  (every operation re-checks libvirt, so resuming is safe), else failed with `worker_lost`. A lapsed lease
  alone does not prove the run is gone (its process may have stalled past the lease): it is resumed only
  once the lapse has lasted more than a renewal interval and a heartbeat of its host sent since the lapse
  does not list it among the jobs running there.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import redis
from celery import Celery
from sqlalchemy import and_, or_, select

from queues import messages
from queues.claims import DONE, RENEWALS_PER_LEASE, ClaimStore
from queues.config import Settings
from queues.liveness import last_mark
from queues.names import host_queue
from queues.vocabulary import JobState, VmState
from web.extensions import db
from web.models import Host, Job, utcnow
from web.services.dispatch import BROKER_ERRORS, note_resent, publish, reissue
from web.services.hosts import host_state
from web.services.job_effects import EFFECTS
from web.services.job_states import advance, note
from web.services.jobs import record_job_update

log = logging.getLogger(__name__)

MAX_RESUMES = 5


def republish_after_broker_loss(celery: Celery, claims: ClaimStore) -> int:
    if not claims.broker_data_lost():
        return 0
    jobs = db.session.scalars(select(Job).where(Job.state == JobState.QUEUED)).all()
    try:
        publish(celery, claims, jobs)
    except BROKER_ERRORS:
        log.warning("broker lost its data and is unavailable again; queued jobs will be re-sent later")
        return 0
    message = "the broker lost its queues (restarted without persistence?); message sent again"
    resent = note_resent([job.id for job in jobs], "conductor", message)
    claims.mark_epoch()
    return resent


def republish_swallowed(celery: Celery, claims: ClaimStore, settings: Settings) -> int:
    """A worker takes a message before it claims the job; killed in between, it takes the message with it
    (Redis would give it back only after the visibility timeout, hours later). A queued job published before
    a consumer of its queue restarted, and still unclaimed, is sent again (same token: harmless if the
    message did survive)."""
    restarts: dict[str, datetime] = {}
    for host in db.session.scalars(select(Host).where(Host.worker_started_at.is_not(None))):
        started = _aware(host.worker_started_at)
        for queue in host.queues:
            restarts[queue] = max(restarts.get(queue, started), started)
    if not restarts:
        return 0
    grace = utcnow() - timedelta(seconds=1)
    jobs = [
        job
        for job in db.session.scalars(
            select(Job)
            .where(Job.state == JobState.QUEUED, Job.queue.in_(list(restarts)), Job.queued_at <= grace)
            .limit(500)
        )
        if _aware(job.queued_at) < restarts[job.queue] and claims.holder(job.id) is None
    ]
    if not jobs:
        return 0
    try:
        publish(celery, claims, jobs)
    except BROKER_ERRORS:
        return 0
    return sum(
        note_resent(
            [job.id for job in same_queue],
            "conductor",
            f"a worker consuming {queue} restarted after it was sent; sent again",
            queued_at=utcnow(),
        )
        for queue, same_queue in _by_queue(jobs).items()
    )


def republish_unclaimed(celery: Celery, claims: ClaimStore, settings: Settings) -> int:
    """The database is the source of truth, the queue only transport: a queued job that no worker claimed
    although a live worker consumes its queue is published again, with backoff (1, 2, 4 ... 32 leases).
    Copies are harmless: the claim lets one run."""
    live_queues = {
        q for host in db.session.scalars(select(Host)) if host_state(host, settings) == "up" for q in host.queues
    }
    now = utcnow()
    jobs = [
        job
        for job in db.session.scalars(
            select(Job)
            .where(Job.state == JobState.QUEUED, Job.queued_at <= now - timedelta(seconds=settings.lease_s))
            .limit(200)
        )
        if job.queue in live_queues
        and (now - _aware(job.queued_at)).total_seconds() >= settings.lease_s * 2 ** min(job.attempts - 1, 5)
        and claims.holder(job.id) is None
    ]
    if not jobs:
        return 0
    try:
        publish(celery, claims, jobs)
    except BROKER_ERRORS:
        return 0
    return sum(
        note_resent(
            [job.id for job in same_queue],
            "conductor",
            f"not claimed although {queue} has live workers; sent again",
            queued_at=now,
            attempts=Job.attempts + 1,
        )
        for queue, same_queue in _by_queue(jobs).items()
    )


def _by_queue(jobs: Sequence[Job]) -> dict[str, list[Job]]:
    grouped: dict[str, list[Job]] = {}
    for job in jobs:
        grouped.setdefault(job.queue, []).append(job)
    return grouped


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def recover_running(
    celery: Celery,
    claims: ClaimStore,
    liveness: redis.Redis,
    settings: Settings,
    broker_back_at: datetime | None = None,
) -> int:
    """`liveness`: where workers mark their hosts alive with their runs' jobs (queues/liveness.py).
    `broker_back_at`: when the broker last came back after an outage. No heartbeat could arrive during it, so no
    host is judged lost until they have had time to beat again."""
    cutoff = utcnow() - timedelta(seconds=settings.lease_s)
    # A job resumed less than a lease ago gets that lease to be claimed again before it is judged.
    jobs = db.session.scalars(
        select(Job)
        .where(
            or_(
                and_(
                    Job.state == JobState.RUNNING,
                    Job.started_at <= cutoff,
                    or_(Job.queued_at.is_(None), Job.queued_at <= cutoff),
                ),
                # Both its reports lost (conductor down, broker gone): only its `done` claim tells it ran.
                and_(Job.state == JobState.QUEUED, Job.queued_at <= cutoff),
            )
        )
        .limit(200)
    ).all()
    handled = 0
    for job in jobs:
        holder = claims.holder(job.id)
        if holder == DONE:
            stored = claims.result(job.id)
            if stored:
                record_job_update(messages.job_update.load(json.loads(stored)))
                handled += 1
        elif holder is None and job.state == JobState.RUNNING:
            _lapsed(celery, claims, liveness, settings, job, broker_back_at)
            handled += 1
    return handled


def _run_gone(claims: ClaimStore, liveness: redis.Redis, settings: Settings, job: Job, host: Host) -> bool:
    """Sure that the run holding `job` on its (live) host is gone: its lease ended more than a renewal interval
    ago (a late renewal would have landed), and a mark the host's worker made since then does not list the job
    (both ages by Redis's clock)."""
    lapsed = claims.lapsed_for(job.id)
    if lapsed is None:
        lapsed = settings.lease_s  # a claim made before leases recorded their end: it lapsed at least this long ago
    if lapsed <= settings.lease_s / RENEWALS_PER_LEASE:
        return False
    mark = last_mark(liveness, host.name)
    return mark is not None and mark.age_s < lapsed and job.id not in mark.running_jobs


def _lapsed(
    celery: Celery,
    claims: ClaimStore,
    liveness: redis.Redis,
    settings: Settings,
    job: Job,
    broker_back_at: datetime | None,
) -> None:
    host = db.session.get(Host, job.host) if job.host else None
    state = host_state(host, settings) if host is not None else "down"
    if state == "down" and host is not None:
        silent_since = max(_aware(host.last_seen), broker_back_at or _aware(host.last_seen))
        if (utcnow() - silent_since).total_seconds() < settings.worker_lost_after_s:
            return  # a worker restarting, a host rebooting, the broker back: give the host time to return
    if state != "down" and not _run_gone(claims, liveness, settings, job, host):
        return
    if state != "down" and job.attempts <= MAX_RESUMES:
        reissue(job, host_queue(job.host))
        job.attempts += 1
        job.queued_at = utcnow()
        try:
            publish(celery, claims, [job])
        except BROKER_ERRORS:
            db.session.rollback()
            return
        note(
            job,
            "conductor",
            f"the worker on {job.host} stopped renewing its lease; resumed there (attempt {job.attempts})",
        )
        db.session.commit()
        return
    reason = (
        f"host {job.host} is down (no heartbeat for {settings.worker_lost_after_s:.0f}s)"
        if state == "down"
        else f"it was resumed {MAX_RESUMES} times"
    )
    advance(job, JobState.FAILED, "conductor", f"worker lost: {reason}")
    job.error_code = "worker_lost"
    job.error_message = (
        f"the worker running this {job.kind} on {job.host} stopped renewing its lease and {reason}; "
        f"VM {job.vm_id} is marked unknown: it may or may not exist on {job.host}. Check the host, then delete "
        "the VM or retry."
    )
    if job.vm is not None:
        job.vm.state = VmState.UNKNOWN
    EFFECTS[job.kind].settle(job)
    db.session.commit()
