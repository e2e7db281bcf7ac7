"""The outbox: jobs are committed as `pending` with their message, then published in batches.

A job reaches the broker only after its row is committed, so a crash or a broker outage can delay it but
never lose it: whatever is still `pending` is published again by the conductor's sweep. Publishing twice
is harmless because the worker's claim checks the dispatch token.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import redis
from celery import Celery
from kombu.exceptions import KombuError, OperationalError
from sqlalchemy import insert, select, update

from queues.celery_app import declare_queue
from queues.claims import ClaimStore
from queues.vocabulary import JobState
from web.extensions import db
from web.models import Job, JobEvent, utcnow

log = logging.getLogger(__name__)

BROKER_ERRORS = (OperationalError, KombuError, redis.RedisError, ConnectionError, OSError)


@dataclass(frozen=True)
class Outgoing:
    """What publishing a job needs, detached from any database session: the API's request threads hand
    these to the publisher thread without it reading the jobs back."""

    id: str
    token: str
    task: str
    payload: dict
    queue: str


def reissue(job: Job, queue: str, token: str | None = None, **vm: object) -> None:
    """Make `job` a new message under a new dispatch token (`token`, or a fresh one), for `queue`, with `vm`
    fields of its message changed: whatever copies of the old message remain anywhere become no-ops."""
    job.token = token or uuid.uuid4().hex
    job.queue = queue
    job.payload = {**job.payload, "token": job.token, "vm": {**job.payload["vm"], **vm}}


def outgoing(job: Job) -> Outgoing:
    return Outgoing(job.id, job.token, job.task, job.payload, job.queue)


def publish(celery: Celery, claims: ClaimStore, jobs: Sequence[Job | Outgoing], *, first: bool = False) -> None:
    """Send the jobs' messages; raises one of BROKER_ERRORS if the broker cannot take them. `first`: no
    message of these jobs was ever sent, so their tokens need no write (the first claim adopts the token)."""
    if not jobs:
        return
    if not first:
        # The token goes first: a worker that receives the message must find it current.
        claims.set_tokens((job.id, job.token) for job in jobs)
    with celery.producer_or_acquire() as producer:
        for job in jobs:
            declare_queue(celery, job.queue)
            celery.send_task(
                job.task,
                kwargs={"job": job.payload},
                task_id=job.id,
                queue=job.queue,
                producer=producer,
                retry=False,
                # What Flower shows for the arguments. Given, Celery skips building a safe repr of the
                # whole payload for every message (most of a publish's CPU time).
                argsrepr="()",
                kwargsrepr=f"{{'job': {job.payload.get('kind', '?')} {job.id}}}",
            )


def dispatch(celery: Celery, claims: ClaimStore, jobs: Sequence[Job | Outgoing], actor: str) -> int:
    """Publish pending jobs and record them as queued; returns how many went out."""
    try:
        publish(celery, claims, jobs)
    except BROKER_ERRORS as exc:
        log.warning("broker unavailable, %d job(s) stay pending: %s", len(jobs), exc)
        db.session.rollback()
        return 0
    mark_published([job.id for job in jobs], actor)
    return len(jobs)


def mark_published(job_ids: Sequence[str], actor: str) -> None:
    """Record the jobs as queued, in two statements for the whole batch. Only jobs still `pending` move:
    a worker's report may have moved one on already (the message was faster than this commit), and the
    version bump makes a concurrent ORM write based on the old row fail instead of undoing this one."""
    if not job_ids:
        return
    now = utcnow()
    rows = db.session.execute(
        update(Job)
        .where(Job.id.in_(job_ids), Job.state == JobState.PENDING)
        .values(state=JobState.QUEUED, queued_at=now, attempts=Job.attempts + 1, version=Job.version + 1)
        .returning(Job.id, Job.queue)
        .execution_options(synchronize_session=False)
    ).all()
    if rows:
        db.session.execute(
            insert(JobEvent),
            [
                {"job_id": j, "at": now, "state": JobState.QUEUED, "actor": actor, "message": f"published to {q}"}
                for j, q in rows
            ],
        )
    db.session.commit()


def note_resent(job_ids: Sequence[str], actor: str, message: str, **values: object) -> int:
    """Record that the jobs' messages were sent again, for the jobs still `queued`, with `values` set on their
    rows (one UPDATE ... RETURNING, one INSERT). The sweep read them as queued before it published; a job a
    worker's report has moved on since (its run began) must not get a `queued` event after its `running`."""
    if not job_ids:
        return 0
    rows = db.session.execute(
        update(Job)
        .where(Job.id.in_(job_ids), Job.state == JobState.QUEUED)
        .values(version=Job.version + 1, **values)
        .returning(Job.id)
        .execution_options(synchronize_session=False)
    ).all()
    if rows:
        now = utcnow()
        db.session.execute(
            insert(JobEvent),
            [{"job_id": j, "at": now, "state": JobState.QUEUED, "actor": actor, "message": message} for (j,) in rows],
        )
    db.session.commit()
    return len(rows)


def dispatch_ids(celery: Celery, claims: ClaimStore, job_ids: Sequence[str], actor: str) -> int:
    jobs = db.session.scalars(select(Job).where(Job.id.in_(job_ids), Job.state == JobState.PENDING)).all()
    return dispatch(celery, claims, jobs, actor)


def dispatch_stale_pending(celery: Celery, claims: ClaimStore, older_than_s: float, limit: int = 500) -> int:
    """The sweep: publish jobs that stayed pending (broker was down, or the API died before publishing)."""
    cutoff = utcnow() - timedelta(seconds=older_than_s)
    jobs = db.session.scalars(
        select(Job).where(Job.state == JobState.PENDING, Job.created_at <= cutoff).order_by(Job.created_at).limit(limit)
    ).all()
    return dispatch(celery, claims, jobs, actor="conductor")
