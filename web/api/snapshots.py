from __future__ import annotations

from flask import Blueprint

from web.api import archq, json_body
from web.api.vms import accepted
from web.auth import current_actor
from web.idempotency import idempotent
from web.paging import filters_of, load_query, page_response
from web.schemas import SnapshotCreateRequest, SnapshotQuery, snapshot_out
from web.services import snapshots

bp = Blueprint("snapshots", __name__)


@bp.get("/vms/<vm_id>/snapshots")
def list_snapshots(vm_id: str):
    """List a VM's snapshots, oldest first, a page at a time: follow `next` until it is null
    ---
    get:
      parameters:
        - {in: query, schema: SnapshotQuery}
      responses:
        200:
          description: a page of snapshots
          content: {application/json: {schema: SnapshotListOut}}
          headers: {Link: NextLink}
    """
    query = load_query(SnapshotQuery())
    page = snapshots.snapshot_page(vm_id, filters_of(query), query["next"], query["limit"])
    return page_response("snapshots", snapshot_out.dump(page.rows, many=True), page)


@bp.post("/vms/<vm_id>/snapshots")
@idempotent
def create_snapshot(vm_id: str):
    """Take an internal snapshot: with memory of a running VM, disk-only of a stopped one
    ---
    post:
      requestBody: {required: true, content: {application/json: {schema: SnapshotCreateRequest}}}
      responses:
        202:
          description: the job is accepted; Location names it
          headers: {Location: {schema: {type: string}, description: /api/v1/jobs/<job id>}}
          content: {application/json: {schema: SnapshotAcceptedOut}}
        409: Error
    """
    request = SnapshotCreateRequest().load(json_body())
    vm, job, snapshot = snapshots.submit_snapshot(vm_id, request, archq().settings, actor=current_actor())
    return accepted(vm, job, snapshot=snapshot_out.dump(snapshot))


@bp.post("/vms/<vm_id>/snapshots/<name>/revert")
@idempotent
def revert(vm_id: str, name: str):
    """Revert a VM to a ready snapshot: running after one with memory, stopped after a disk-only one
    ---
    post:
      operationId: revertSnapshot
      responses:
        202: JobAccepted
        409: Error
    """
    return accepted(*snapshots.submit_revert(vm_id, name, archq().settings, actor=current_actor()))


@bp.delete("/vms/<vm_id>/snapshots/<name>")
def delete_snapshot(vm_id: str, name: str):
    """Delete a snapshot
    ---
    delete:
      responses:
        202: JobAccepted
        409: Error
    """
    return accepted(*snapshots.submit_snapshot_delete(vm_id, name, archq().settings, actor=current_actor()))
