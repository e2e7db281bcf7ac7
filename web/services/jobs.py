"""Jobs as the API shows them, and how workers' reports change jobs and their VMs."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, exists, or_, select
from sqlalchemy.orm import aliased, selectinload
from sqlalchemy.orm.exc import StaleDataError

from queues.claims import ClaimStore
from queues.vocabulary import TERMINAL_JOB_STATES, JobState
from web.errors import Conflict, NotFound
from web.extensions import db
from web.models import Job, JobEvent, utcnow
from web.paging import Page, keyset_page
from web.services import attestations, migrations, projects
from web.services.job_effects import EFFECTS
from web.services.job_states import advance, note

log = logging.getLogger(__name__)


def get_job(job_id: str) -> Job:
    """A job of the current scope (another project's is not found)."""
    job = db.session.get(Job, job_id)
    if job is None or not projects.visible(job.project):
        raise NotFound(f"no job with id {job_id}")
    return job


def job_page(filters: dict, after: list[str] | None, limit: int) -> Page[Job]:
    """Jobs matching each given filter (vm_id, state, kind, host), newest first."""
    # A page's events and VMs in one query each, not one per job (the list shows both).
    query = projects.scoped(select(Job), Job.project).options(selectinload(Job.events), selectinload(Job.vm))
    for name, value in filters.items():
        query = query.where(getattr(Job, name) == value)
    return keyset_page(query, (Job.created_at, Job.id), after, limit, descending=True)


# Pruned a batch at a time, so one sweep never holds the database long.
PRUNE_BATCH = 500


def prune_finished_jobs(retention_days: float) -> int:
    """Delete jobs that ended more than `retention_days` ago, with their events; each VM keeps its newest job
    (what it shows as its queue). Returns how many went; 0 days keeps every job."""
    if retention_days <= 0:
        return 0
    cutoff = utcnow() - timedelta(days=retention_days)
    newer = aliased(Job)
    superseded = exists().where(newer.vm_id == Job.vm_id, newer.created_at > Job.created_at)
    ids = list(
        db.session.scalars(
            select(Job.id)
            .where(Job.state.in_(TERMINAL_JOB_STATES), Job.finished_at < cutoff, or_(Job.vm_id.is_(None), superseded))
            .limit(PRUNE_BATCH)
        )
    )
    if ids:
        db.session.execute(delete(JobEvent).where(JobEvent.job_id.in_(ids)))
        db.session.execute(delete(Job).where(Job.id.in_(ids)))
        db.session.commit()
    return len(ids)


def record_job_update(update: dict) -> bool:
    """Apply a worker's report; False when it is stale or a duplicate (nothing changes)."""
    for _attempt in range(5):
        try:
            return _record_job_update(update)
        except StaleDataError:
            # Someone else moved the job between our read and write: read it again and re-decide.
            db.session.rollback()
    raise RuntimeError(f"job {update['job_id']}: report not recorded after repeated write conflicts")


def _record_job_update(update: dict) -> bool:
    job = db.session.get(Job, str(update["job_id"]))
    if job is None:
        log.warning("report for unknown job %s ignored", update["job_id"])
        return False
    state = update["state"]
    error = update.get("error")
    message = error["message"] if error else ""
    at = datetime.fromtimestamp(update["at"], UTC)
    progress = update.get("progress")
    if progress is not None and state == JobState.RUNNING == job.state:
        # A progress report: the figures change, the state does not (no event either).
        job.progress = progress
        db.session.commit()
        return True
    if not advance(job, state, actor=f"worker:{update['host']}", message=message, at=at):
        log.info("job %s: %s report ignored, job is %s", job.id, state, job.state)
        db.session.rollback()
        return False
    job.host = update["host"]
    if progress is not None:
        job.progress = progress
    if state in TERMINAL_JOB_STATES and update.get("result"):
        # A failed or cancelled job's result says what it left (a migration: where the VM is).
        job.result = update["result"]
    if error:
        job.error_code, job.error_message = error["code"], error["message"]
    effects = EFFECTS[job.kind]
    if job.vm is not None:
        effects.apply(job.vm, job, state, update["host"])
        if state == JobState.SUCCEEDED:
            # In the report's transaction: a job that succeeded is never left without its record by a crash.
            attestations.store(job, job.vm, update["host"], update.get("attestation"))
    if state in TERMINAL_JOB_STATES:
        effects.settle(job)
    # After the source's record is stored: the target's arrival job links after it.
    migrations.queue_arrival(job)
    db.session.commit()
    return True


def cancel_job(job_id: str, claims: ClaimStore, actor: str = "api") -> Job:
    """Cancel a job. Not started yet: its messages become stale and it ends `cancelled`, before any side
    effect. Running: the worker is asked to stop and roll back (a migration is aborted through libvirt);
    the job ends `cancelled` when the worker confirms."""
    for _attempt in range(5):
        try:
            return _cancel_job(job_id, claims, actor)
        except StaleDataError:
            # The publisher or the conductor moved the job meanwhile: decide again on its fresh state.
            db.session.rollback()
    raise Conflict(f"job {job_id} keeps changing; retry the cancel", code="busy")


def _cancel_job(job_id: str, claims: ClaimStore, actor: str) -> Job:
    job = get_job(job_id)
    if job.state in TERMINAL_JOB_STATES:
        raise Conflict(f"job {job.id} already ended: {job.state}", code="wrong_state", fields={"state": [job.state]})
    if job.state in (JobState.PENDING, JobState.QUEUED) and claims.revoke_unless_claimed(job.id):
        advance(job, JobState.CANCELLED, actor, "cancelled before it started; nothing was done")
        job.error_code, job.error_message = "cancelled", "cancelled before it started"
        effects = EFFECTS[job.kind]
        if job.vm is not None:
            effects.cancelled_before_start(job.vm, job, job.host or "")
        effects.settle(job)
        db.session.commit()
        return job
    claims.request_cancel(job.id)
    note(job, actor, "cancel requested; the worker will stop and roll back")
    db.session.commit()
    return job
