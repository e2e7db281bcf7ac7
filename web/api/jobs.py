from __future__ import annotations

from flask import Blueprint, jsonify, request

from web.api import archq
from web.idempotency import idempotent
from web.schemas import JobQuery, job_out
from web.services import jobs

bp = Blueprint("jobs", __name__)


@bp.get("/jobs/<job_id>")
def get_job(job_id: str):
    return jsonify({"job": job_out.dump(jobs.get_job(job_id))})


@bp.post("/jobs/<job_id>/cancel")
@idempotent
def cancel(job_id: str):
    job = jobs.cancel_job(job_id, archq().claims)
    return jsonify({"job": job_out.dump(job)}), 202


@bp.get("/jobs")
def list_jobs():
    query = JobQuery().load(request.args.to_dict())
    rows = jobs.list_jobs(query.get("state"), query.get("kind"), query["limit"], query["offset"])
    return jsonify({"jobs": job_out.dump(rows, many=True), "limit": query["limit"], "offset": query["offset"]})
