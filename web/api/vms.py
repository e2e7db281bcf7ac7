from __future__ import annotations

from dataclasses import asdict

from flask import Blueprint, jsonify, request

from queues.vocabulary import JobKind
from web import console_ws
from web.api import archq, json_body, query_args
from web.api_schemas import ConsoleEnvelope, VmEventsEnvelope
from web.auth import current_actor
from web.console_ws import sock
from web.idempotency import idempotent
from web.models import Vm
from web.paging import filters_of, load_query, page_response
from web.schemas import ConsoleQuery, VmQuery, create_request_schema, job_out, vm_out
from web.services import attestations, console, vms

bp = Blueprint("vms", __name__)


def accepted(vm: Vm, job, **extra: dict) -> tuple:
    archq().announce(job)
    body = {"vm": vm_out.dump(vm), "job": job_out.dump(job), **extra}
    return jsonify(body), 202, {"Location": f"/api/v1/jobs/{job.id}"}


@bp.post("/vms")
@idempotent
def create_vm():
    """Create a VM
    ---
    post:
      description: Routed at submit time to a native or emulating queue, or a placed host. With `count`, that
        many VMs named `<name>-<i>` in one transaction, all accepted or all refused (the 202 lists every VM
        and job); `spread` puts each on a different host.
      requestBody: {required: true, content: {application/json: {schema: VmCreateRequest}}}
      responses:
        202: CreateAccepted
        409: Error
        503: Error
    """
    ext = archq()
    request = load_create(json_body())
    if request["count"] is None:
        vm, job = vms.submit_create(request, ext.settings, group=ext.creates, actor=current_actor())
        return accepted(vm, job)
    created = vms.submit_bulk_create(request, ext.settings, actor=current_actor())
    ext.announce(*(job for _vm, job in created))
    body = {
        "count": len(created),
        "vms": vm_out.dump([vm for vm, _job in created], many=True),
        "jobs": job_out.dump([job for _vm, job in created], many=True),
    }
    return jsonify(body), 202


@bp.post("/vms/preview")
def preview_vm():
    """Preview a create: where it would go, or why it would be refused (stores nothing)
    ---
    post:
      description: The same body and checks as POST /vms, answered without creating anything. A refusal that
        a create would answer (409, 422 from the catalog or fleet, 503) is a 200 here with `accepted` false,
        the `status` and the `error`; a body that does not validate is still a 422.
      requestBody: {required: true, content: {application/json: {schema: VmCreateRequest}}}
      responses:
        200: {description: the routing decision, content: {application/json: {schema: CreatePreviewOut}}}
    """
    ext = archq()
    preview = vms.preview_create(load_create(json_body()), ext.settings)
    return jsonify({"preview": preview})


def load_create(body: dict) -> dict:
    return create_request_schema(archq().settings).load(body)


@bp.get("/vms")
def list_vms():
    """List VMs (all but deleted ones), oldest first, a page at a time: follow `next` until it is null
    ---
    get:
      parameters:
        - {in: query, schema: VmQuery}
      responses:
        200:
          description: a page of VMs
          content: {application/json: {schema: VmListOut}}
          headers: {Link: NextLink}
    """
    query = load_query(VmQuery())
    page = vms.vm_page(filters_of(query), query["next"], query["limit"])
    return page_response("vms", vm_out.dump(page.rows, many=True), page)


@bp.get("/vms/<vm_id>")
def get_vm(vm_id: str):
    """One VM
    ---
    get:
      responses:
        200: {description: the VM, content: {application/json: {schema: VmEnvelope}}}
    """
    return jsonify({"vm": vm_out.dump(vms.get_vm(vm_id))})


@bp.delete("/vms/<vm_id>")
def delete_vm(vm_id: str):
    """Delete a VM: destroys and undefines its domain, removes its files
    ---
    delete:
      responses:
        202: JobAccepted
        409: Error
    """
    return accepted(*vms.submit_action(vm_id, JobKind.DELETE, archq().settings, actor=current_actor()))


@bp.post("/vms/<vm_id>/<any(start, stop, reboot):action>")
@idempotent
def vm_action(vm_id: str, action: str):
    """Start, stop (ACPI, forced after the stop timeout) or reboot a VM
    ---
    post:
      responses:
        202: JobAccepted
        409: Error
    """
    return accepted(*vms.submit_action(vm_id, JobKind(action), archq().settings, actor=current_actor()))


@bp.get("/vms/<vm_id>/attestations")
def vm_attestations(vm_id: str):
    """The VM's signed operation records, in chain order, with its hosts' public keys (a deleted VM's too)
    ---
    get:
      responses:
        200: {description: the chain, content: {application/json: {schema: AttestationChainOut}}}
    """
    return jsonify(attestations.chain(vms.get_vm(vm_id, deleted=True)))


@bp.get("/vms/<vm_id>/console")
def vm_console(vm_id: str):
    """The tail of the VM's serial console log, read by its host's worker
    ---
    get:
      parameters:
        - {in: query, schema: ConsoleQuery}
      responses:
        200: {description: the tail of the log, content: {application/json: {schema: ConsoleEnvelope}}}
        409: Error
        503:
          description: the host's worker did not answer in time; Retry-After says when to try again
          headers: {Retry-After: {schema: {type: integer}, description: seconds}}
          content: {application/json: {schema: ErrorOut}}
    """
    ext = archq()
    nbytes = ConsoleQuery().load(query_args())["bytes"]
    tail = console.console_tail(vm_id, nbytes, ext.console, ext.settings)
    return jsonify(ConsoleEnvelope().dump({"console": {"vm_id": vm_id, **asdict(tail)}}))


@sock.route("/vms/<vm_id>/console/ws", bp=bp)
def vm_console_session(ws, vm_id: str) -> None:
    """An interactive serial console (WebSocket; docs/console.md): binary frames are terminal bytes both ways,
    text frames JSON messages (`opened`, `ended`, `error`). `?force=1` takes over from the current writer."""
    console_ws.serve(ws, vm_id, current_actor(), request.args.get("force", "") in ("1", "true"))


@bp.get("/vms/<vm_id>/events")
def vm_events(vm_id: str):
    """What happened to the VM outside its jobs (console sessions), with who did it
    ---
    get:
      responses:
        200: {description: the VM's events, oldest first, content: {application/json: {schema: VmEventsEnvelope}}}
        404: Error
    """
    return jsonify(VmEventsEnvelope().dump({"events": console.vm_events(vm_id)}))
