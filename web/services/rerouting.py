"""Stranded create jobs: waiting on a native queue that no live worker consumes. After ARCHQ_NATIVE_WAIT_S
they move to the TCG queue of their architecture when the request allowed emulation and a live host
emulates it. The new message carries a new dispatch token, so the old one becomes a no-op wherever it is."""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import Celery
from sqlalchemy import select

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
    jobs = stranded_jobs(settings, Fleet.from_hosts(live_hosts(settings)))
    for job in jobs:
        arch = Arch(job.queue)
        old_queue = job.queue
        reissue(job, tcg_queue(arch), emulated=True)
        job.emulated = True
        job.waiting_for = ""
        job.vm.emulated, job.vm.accel, job.vm.emulation_warning = True, Accel.TCG, emulation_warning(arch)
        note(
            job,
            "conductor",
            f"re-routed from {old_queue} to {job.queue}: no live native {arch} worker for "
            f"{settings.native_wait_s:.0f}s; the guest will run under emulation",
        )
    if not jobs:
        return 0
    try:
        # Publish before committing: if the broker is down nothing changes and the next sweep retries.
        publish(celery, claims, jobs)
    except BROKER_ERRORS as exc:
        log.warning("cannot re-route %d stranded job(s) now: %s", len(jobs), exc)
        db.session.rollback()
        return 0
    db.session.commit()
    return len(jobs)
