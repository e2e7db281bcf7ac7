"""The UI's pages (GET): each loads what it shows from the services the API uses, dumped with the API's own
schemas, and renders a template. Fragments (`*_part`) are what the pages' scripts re-fetch to stay live."""

from __future__ import annotations

from flask import current_app, render_template, request, url_for
from marshmallow import ValidationError
from sqlalchemy import select
from werkzeug.exceptions import HTTPException

from queues.arch import ALL
from queues.vocabulary import LIVE_VM_STATES, JobState, VmState
from web.errors import ApiError, Unprocessable
from web.extensions import db
from web.models import Host
from web.paging import DEFAULT_LIMIT, Cursor
from web.schemas import job_out, snapshot_out, vm_out
from web.services import jobs, migrations, snapshots, vms
from web.services.hosts import host_views
from web.services.images import image_view, list_images, vm_counts
from web.services.system import system_info
from web.ui import bp

# The filters' choices: every state but `deleted` (deleted VMs are not listed).
VM_STATES = tuple(state.value for state in VmState if state in LIVE_VM_STATES)
JOB_STATES = tuple(state.value for state in JobState)


def _archq():
    return current_app.extensions["archq"]


def _hosts() -> list[dict]:
    settings = _archq().settings
    return host_views(list(db.session.scalars(select(Host).order_by(Host.name))), settings)


@bp.get("/")
def fleet():
    ext = _archq()
    return render_template(
        "ui/fleet.html",
        info=system_info(ext.settings, ext.celery),
        hosts=_hosts(),
        emulated=vms.emulated_counts(),
    )


@bp.get("/vms")
def vm_list():
    filters = {key: request.args.get(key) or None for key in ("arch", "state", "host")}
    given = {key: value for key, value in filters.items() if value}
    page = vms.vm_page(given, _cursor(request.args.get("next")), DEFAULT_LIMIT)
    return render_template(
        "ui/vms.html",
        vms=vm_out.dump(page.rows, many=True),
        next_page=url_for("ui.vm_list", **given, next=page.next) if page.next else None,
        filters=filters,
        arches=[a.value for a in ALL],
        states=VM_STATES,
        host_names=[h["name"] for h in _hosts()],
    )


def _cursor(text: str | None) -> list[str] | None:
    """A list page's `next` (the API's cursor, web/paging.py), refused like the API refuses it."""
    if not text:
        return None
    try:
        return Cursor().deserialize(text)
    except ValidationError as exc:
        raise Unprocessable("not a page of this list", fields={"next": exc.messages}) from exc


@bp.get("/vms/<vm_id>")
def vm_page(vm_id: str):
    vm = vms.get_vm(vm_id)
    return render_template(
        "ui/vm.html",
        vm=vm_out.dump(vm),
        snapshots=snapshot_out.dump(snapshots.list_snapshots(vm_id), many=True),
        targets=migrations.target_refusals(vm, _archq().settings),
        jobs=_vm_jobs(vm),
    )


@bp.get("/vms/<vm_id>/facts")
def vm_facts_part(vm_id: str):
    return render_template("ui/_vm_facts.html", vm=vm_out.dump(vms.get_vm(vm_id)))


@bp.get("/vms/<vm_id>/jobs")
def vm_jobs_part(vm_id: str):
    return render_template("ui/_jobs.html", jobs=_vm_jobs(vms.get_vm(vm_id)), with_vm=False)


def _vm_jobs(vm) -> list[dict]:
    return job_out.dump(list(reversed(vm.jobs)), many=True)


@bp.get("/vms/new")
def create_page():
    counts = vm_counts()
    return render_template(
        "ui/create.html",
        images=[_image(image, counts.get(image.name, 0)) for image in list_images()],
        arches=[a.value for a in ALL],
        host_names=[h["name"] for h in _hosts()],
        settings=_archq().settings,
    )


def _image(image, in_use: int) -> dict:
    """The catalog entry, with the architectures it has an artifact for (the create form shows them)."""
    return {**image_view(image, in_use), "archs": sorted(arch for arch, a in image.artifacts.items() if a)}


@bp.get("/jobs")
def job_list():
    return render_template("ui/jobs.html", jobs=_recent_jobs(), states=JOB_STATES, state=request.args.get("state"))


@bp.get("/jobs/part")
def job_list_part():
    return render_template("ui/_jobs.html", jobs=_recent_jobs(), with_vm=True)


def _recent_jobs() -> list[dict]:
    state = request.args.get("state") or None
    filters = {"state": state} if state in JOB_STATES else {}
    return job_out.dump(jobs.job_page(filters, None, 50).rows, many=True)


@bp.get("/jobs/<job_id>")
def job_page(job_id: str):
    return render_template("ui/job.html", job=job_out.dump(jobs.get_job(job_id)))


@bp.get("/jobs/<job_id>/part")
def job_part(job_id: str):
    return render_template("ui/_job.html", job=job_out.dump(jobs.get_job(job_id)))


@bp.errorhandler(ApiError)
def api_error_page(exc: ApiError):
    return render_template("ui/error.html", status=exc.status, message=exc.message), exc.status


@bp.errorhandler(HTTPException)
def http_error_page(exc: HTTPException):
    return render_template("ui/error.html", status=exc.code, message=exc.description), exc.code or 500
