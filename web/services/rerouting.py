"""Stranded create jobs: waiting on a native queue that no live worker consumes. After ARCHQ_NATIVE_WAIT_S
they move to the TCG queue of their architecture when the request allowed emulation and a live host
emulates it. The new message carries a new dispatch token, so the old one becomes a no-op wherever it is; a
job whose old message a native worker claimed meanwhile stays where it is."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from celery import Celery
from sqlalchemy import select
from sqlalchemy.orm.exc import StaleDataError

from queues.arch import ALL, Arch
from queues.claims import ClaimStore
from queues.config import Settings
from queues.names import native_queue, tcg_queue
from queues.routing import Emulation, Fleet, emulation_warning
from queues.vocabulary import Accel, JobKind, JobState
from web.extensions import db
from web.models import Job, utcnow
from web.services.dispatch import BROKER_ERRORS, publish, reissue
from web.services.hosts import live_hosts
from web.services.job_states import note

log = logging.getLogger(__name__)


def stranded_jobs(settings: Settings, fleet: Fleet, limit: int = 200) -> list[Job]:
    stranded_arches = [a for a in ALL if not fleet.native_accels.get(a) and fleet.emulating.get(a)]
    if not stranded_arches:
        return []
    cutoff = utcnow() - timedelta(seconds=settings.native_wait_s)
    query = (
        select(Job)
        .where(
            Job.kind == JobKind.CREATE,
            Job.state.in_((JobState.PENDING, JobState.QUEUED)),
            Job.queue.in_([native_queue(a) for a in stranded_arches]),
            Job.created_at <= cutoff,
        )
        .order_by(Job.created_at)
        .limit(limit)
    )
    return [job for job in db.session.scalars(query) if job.vm and job.vm.emulation != Emulation.NATIVE_ONLY]


def reroute_stranded(celery: Celery, claims: ClaimStore, settings: Settings) -> int:
    moved = []
    for job in stranded_jobs(settings, Fleet.from_hosts(live_hosts(settings))):
        token = uuid.uuid4().hex
        # The new token goes to Redis first, and only while no worker has claimed the job: a native worker
        # that took the old message since the read above runs it there, and from then on no old message can
        # start a run, so no report can change the row while it is re-routed below.
        if claims.reissue_unless_claimed(job.id, token) and _reroute(job, token, settings):
            moved.append(job)
    if not moved:
        return 0
    try:
        publish(celery, claims, moved)
    except BROKER_ERRORS as exc:
        # Committed: the sweep's re-sends of pending and unclaimed jobs send them once the broker is back.
        log.warning("re-routed %d stranded job(s) but cannot send them yet: %s", len(moved), exc)
    return len(moved)


def _reroute(job: Job, token: str, settings: Settings) -> bool:
    """Move `job` to its architecture's TCG queue under `token` and commit; False if it left pending/queued
    meanwhile (cancelled). The commit checks the row's version: the outbox publisher may have marked it queued
    since it was read, and then the change is made again on the row as it is now."""
    for _ in range(3):
        if job.state not in (JobState.PENDING, JobState.QUEUED):
            return False
        arch = Arch(job.queue)
        old_queue = job.queue
        reissue(job, tcg_queue(arch), token, emulated=True)
        job.emulated = True
        job.waiting_for = ""
        job.vm.emulated, job.vm.accel, job.vm.emulation_warning = True, Accel.TCG, emulation_warning(arch)
        note(
            job,
            "conductor",
            f"re-routed from {old_queue} to {job.queue}: no live native {arch} worker for "
            f"{settings.native_wait_s:.0f}s; the guest will run under emulation",
        )
        try:
            db.session.commit()
            return True
        except StaleDataError:
            db.session.rollback()
    log.warning("job %s changed under three re-route attempts; the next sweep tries again", job.id)
    return False
