"""The UI's forms (POST): each parses its form into the API's request shape, calls the service the API calls,
and redirects to the page that shows the outcome; a refusal is flashed there with the API's message."""

from __future__ import annotations

from collections.abc import Callable

from flask import current_app, flash, redirect, render_template, request, url_for
from marshmallow import ValidationError
from werkzeug.wrappers import Response

from web.auth import current_actor
from web.errors import ApiError
from web.schemas import MigrateRequest, SnapshotCreateRequest, create_request_schema
from web.services import hosts, jobs, snapshots, vms
from web.services.migrations import submit_migrate
from web.ui import bp
from web.ui.forms import create_body, field_errors


def _archq():
    return current_app.extensions["archq"]


def _submit(submit: Callable[[], tuple], back: str) -> Response:
    """Run a job-submitting service; on success go to `back`, telling which job was queued."""
    try:
        _vm, job, *_ = submit()
    except ApiError as exc:
        flash(exc.message, "error")
    except ValidationError as exc:
        flash(field_errors(exc.messages), "error")
    else:
        _archq().announce(job)
        flash(f"{job.kind} job {job.id} accepted for queue {job.queue}", "ok")
    return redirect(back)


@bp.post("/vms/preview")
def preview_part():
    ext = _archq()
    try:
        body = create_request_schema(ext.settings).load(create_body(request.form))
    except ValidationError as exc:
        return render_template("ui/_preview.html", preview=None, invalid=exc.messages)
    preview = vms.preview_create(body, ext.settings)
    return render_template("ui/_preview.html", preview=preview, invalid=None)


@bp.post("/vms")
def create():
    ext = _archq()
    try:
        body = create_request_schema(ext.settings).load(create_body(request.form))
        if body["count"] is None:
            created = [vms.submit_create(body, ext.settings, actor=current_actor())]
        else:
            created = vms.submit_bulk_create(body, ext.settings, actor=current_actor())
    except ApiError as exc:
        flash(exc.message, "error")
    except ValidationError as exc:
        flash(field_errors(exc.messages), "error")
    else:
        ext.announce(*(job for _vm, job in created))
        if len(created) == 1:
            return redirect(url_for("ui.vm_page", vm_id=created[0][0].id))
        flash(f"{len(created)} VMs accepted: {created[0][0].name} to {created[-1][0].name}", "ok")
        return redirect(url_for("ui.vm_list"))
    # Back to the filled-in form, so nothing typed is lost.
    return current_app.view_functions["ui.create_page"]()


@bp.post("/vms/<vm_id>/<any(start, stop, reboot, delete):action>")
def vm_action(vm_id: str, action: str):
    back = url_for("ui.vm_list") if action == "delete" else url_for("ui.vm_page", vm_id=vm_id)
    return _submit(lambda: vms.submit_action(vm_id, action, _archq().settings, actor=current_actor()), back)


@bp.post("/vms/<vm_id>/snapshots")
def take_snapshot(vm_id: str):
    def submit() -> tuple:
        form = {"name": request.form.get("name", "").strip(), "memory": request.form.get("memory") == "on"}
        return snapshots.submit_snapshot(
            vm_id, SnapshotCreateRequest().load(form), _archq().settings, actor=current_actor()
        )

    return _submit(submit, url_for("ui.vm_page", vm_id=vm_id))


@bp.post("/vms/<vm_id>/snapshots/<name>/revert")
def revert_snapshot(vm_id: str, name: str):
    return _submit(
        lambda: snapshots.submit_revert(vm_id, name, _archq().settings, actor=current_actor()),
        url_for("ui.vm_page", vm_id=vm_id),
    )


@bp.post("/vms/<vm_id>/snapshots/<name>/delete")
def delete_snapshot(vm_id: str, name: str):
    return _submit(
        lambda: snapshots.submit_snapshot_delete(vm_id, name, _archq().settings, actor=current_actor()),
        url_for("ui.vm_page", vm_id=vm_id),
    )


@bp.post("/vms/<vm_id>/migrate")
def migrate(vm_id: str):
    def submit() -> tuple:
        form = {"live": request.form.get("mode", "live") == "live"}
        if target := request.form.get("target_host"):
            form["target_host"] = target
        return submit_migrate(vm_id, MigrateRequest().load(form), _archq().settings, actor=current_actor())

    return _submit(submit, url_for("ui.vm_page", vm_id=vm_id))


@bp.post("/jobs/<job_id>/cancel")
def cancel_job(job_id: str):
    try:
        job = jobs.cancel_job(job_id, _archq().claims, actor=current_actor())
    except ApiError as exc:
        flash(exc.message, "error")
    else:
        flash(f"job {job.id} is {job.state}", "ok")
    return redirect(url_for("ui.job_page", job_id=job_id))


@bp.post("/hosts/<name>/<any(drain, undrain):action>")
def drain_host(name: str, action: str):
    try:
        hosts.set_drained(name, action == "drain")
    except ApiError as exc:
        flash(exc.message, "error")
    else:
        flash(f"host {name} {'takes no new VMs' if action == 'drain' else 'takes new VMs again'}", "ok")
    return redirect(url_for("ui.fleet"))
