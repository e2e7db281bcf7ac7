from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from web.api import archq
from web.errors import ApiError
from web.openapi import openapi_document
from web.services.system import system_info, unready

bp = Blueprint("system", __name__)


@bp.get("/health")
def health():
    """Liveness: the API process answers (no token needed)
    ---
    get:
      operationId: getHealth
      responses:
        200: {description: alive, content: {application/json: {schema: HealthOut}}}
    """
    return jsonify({"status": "ok"})


class NotReady(ApiError):
    status = 503
    code = "not_ready"


@bp.get("/ready")
def ready():
    """Readiness: the database and the broker answer, so a job can be accepted (no token needed)
    ---
    get:
      operationId: getReadiness
      responses:
        200: {description: ready, content: {application/json: {schema: ReadyOut}}}
        503: Error
    """
    problems = unready(archq().celery)
    if problems:
        down = " and ".join(sorted(problems))
        raise NotReady(
            f"not ready: the {down} {'is' if len(problems) == 1 else 'are'} down",
            fields={name: [problem] for name, problem in problems.items()},
        )
    return jsonify({"status": "ready", "checks": {"database": "ok", "broker": "ok"}})


@bp.get("/openapi.json")
def openapi():
    """This OpenAPI 3 document (no token needed)
    ---
    get:
      operationId: getOpenApi
      responses:
        200: {description: the document, content: {application/json: {schema: {type: object}}}}
    """
    return jsonify(openapi_document(current_app))


@bp.get("/system/info")
def info():
    """The API host's architecture, the broker, and live workers and queue depths per architecture
    ---
    get:
      operationId: getSystemInfo
      responses:
        200: {description: system information, content: {application/json: {schema: SystemInfoOut}}}
    """
    ext = archq()
    return jsonify(system_info(ext.settings, ext.celery))
