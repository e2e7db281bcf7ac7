from __future__ import annotations

from flask import Blueprint, jsonify

from web.api import json_body
from web.api_schemas import (
    ProjectCreateRequest,
    ProjectEnvelope,
    ProjectListOut,
    ProjectUsageOut,
    QuotaLimits,
)
from web.models import Project
from web.services import projects

bp = Blueprint("projects", __name__)


def project_view(project: Project) -> dict:
    return {"name": project.name, "created_at": project.created_at, "usage": projects.usage(project)}


@bp.get("/projects")
def list_projects():
    """List projects with their quotas and usage (a viewer or operator: its own)
    ---
    get:
      responses:
        200: {description: the projects, content: {application/json: {schema: ProjectListOut}}}
    """
    return jsonify(ProjectListOut().dump({"projects": [project_view(p) for p in projects.list_projects()]}))


@bp.post("/projects")
def create_project():
    """Create a project, with limits or none
    ---
    post:
      requestBody: {required: true, content: {application/json: {schema: ProjectCreateRequest}}}
      responses:
        201: {description: the project, content: {application/json: {schema: ProjectEnvelope}}}
        409: Error
    """
    request = ProjectCreateRequest().load(json_body())
    project = projects.create_project(request["name"], request["quota"])
    return jsonify(ProjectEnvelope().dump({"project": project_view(project)})), 201


@bp.get("/projects/<name>")
def get_project(name: str):
    """One project with its quota and usage
    ---
    get:
      responses:
        200: {description: the project, content: {application/json: {schema: ProjectEnvelope}}}
    """
    return jsonify(ProjectEnvelope().dump({"project": project_view(projects.get_project(name))}))


@bp.get("/projects/<name>/usage")
def usage(name: str):
    """A project's quota: limits, used and remaining per resource
    ---
    get:
      responses:
        200: {description: the usage, content: {application/json: {schema: ProjectUsageOut}}}
    """
    return jsonify(ProjectUsageOut().dump({"usage": projects.usage(projects.get_project(name))}))


@bp.patch("/projects/<name>/quota")
def set_quota(name: str):
    """Set a project's limits: the resources given change (null: no limit), the others stay
    ---
    patch:
      requestBody: {required: true, content: {application/json: {schema: QuotaLimits}}}
      responses:
        200: {description: the project, content: {application/json: {schema: ProjectEnvelope}}}
    """
    project = projects.set_quota(name, QuotaLimits().load(json_body()))
    return jsonify(ProjectEnvelope().dump({"project": project_view(project)}))
