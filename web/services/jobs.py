"""Jobs as the API shows them, and how workers' reports change jobs and their VMs."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm.exc import StaleDataError

from web.errors import NotFound
from web.extensions import db
from web.models import Job, Vm
from web.services.job_states import FAILED, RUNNING, SUCCEEDED, advance

log = logging.getLogger(__name__)


def get_job(job_id: str) -> Job:
    job = db.session.get(Job, job_id)
    if job is None:
        raise NotFound(f"no job with id {job_id}")
    return job


def list_jobs(state: str | None, kind: str | None, limit: int, offset: int) -> list[Job]:
    query = select(Job).order_by(Job.created_at.desc(), Job.id).limit(limit).offset(offset)
    if state:
        query = query.where(Job.state == state)
    if kind:
        query = query.where(Job.kind == kind)
    return list(db.session.scalars(query))


def _apply_to_vm(vm: Vm, job: Job, state: str, host: str) -> None:
    if state == RUNNING:
        vm.host = host
        if job.kind == "create":
            vm.state = "creating"
    elif state == SUCCEEDED:
        result = job.result
        if job.kind == "create":
            vm.state = result.get("state", "running")
            vm.host = result.get("host", host)
            vm.accel = result.get("accel", vm.accel)
            vm.emulated = result.get("emulated", vm.emulated)
        elif job.kind == "delete":
            vm.state = "deleted"
    elif state == FAILED:
        # A failed create leaves nothing to run; a failed delete leaves the VM in a state archq cannot vouch for.
        vm.state = "failed" if job.kind == "create" else "unknown"


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
    if not advance(job, state, actor=f"worker:{update['host']}", message=message, at=at):
        log.info("job %s: %s report ignored, job is %s", job.id, state, job.state)
        db.session.rollback()
        return False
    job.host = update["host"]
    if state == SUCCEEDED:
        job.result = update.get("result") or {}
    if error:
        job.error_code, job.error_message = error["code"], error["message"]
    if job.vm is not None:
        _apply_to_vm(job.vm, job, state, update["host"])
    db.session.commit()
    return True
