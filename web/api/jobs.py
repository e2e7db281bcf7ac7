from __future__ import annotations

from flask import Blueprint, jsonify

from web.api import archq, query_args
from web.auth import current_actor
from web.idempotency import idempotent
from web.schemas import JobQuery, job_out
from web.services import jobs

bp = Blueprint("jobs", __name__)


@bp.get("/jobs/<job_id>")
def get_job(job_id: str):
    """One job with its events
    ---
    get:
      responses:
        200: {description: the job, content: {application/json: {schema: JobEnvelope}}}
    """
    return jsonify({"job": job_out.dump(jobs.get_job(job_id))})


@bp.post("/jobs/<job_id>/cancel")
@idempotent
def cancel(job_id: str):
    """Cancel a job: before it starts nothing is done; a running one stops and rolls back
    ---
    post:
      responses:
        202: {description: cancelled or asked to stop, content: {application/json: {schema: JobEnvelope}}}
        409: Error
    """
    job = jobs.cancel_job(job_id, archq().claims, actor=current_actor())
    return jsonify({"job": job_out.dump(job)}), 202


@bp.get("/jobs")
def list_jobs():
    """List jobs, newest first
    ---
    get:
      parameters:
        - {in: query, schema: JobQuery}
      responses:
        200: {description: a page of jobs, content: {application/json: {schema: JobListOut}}}
    """
    query = JobQuery().load(query_args())
    vm_id = str(query["vm_id"]) if "vm_id" in query else None
    rows = jobs.list_jobs(query.get("state"), query.get("kind"), query["limit"], query["offset"], vm_id)
    return jsonify({"jobs": job_out.dump(rows, many=True), "limit": query["limit"], "offset": query["offset"]})
