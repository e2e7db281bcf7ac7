from __future__ import annotations

from flask import Blueprint, jsonify

from web.api import archq, json_body
from web.api.vms import accepted
from web.idempotency import idempotent
from web.schemas import SnapshotCreateRequest, snapshot_out
from web.services import snapshots

bp = Blueprint("snapshots", __name__)


@bp.get("/vms/<vm_id>/snapshots")
def list_snapshots(vm_id: str):
    return jsonify({"snapshots": snapshot_out.dump(snapshots.list_snapshots(vm_id), many=True)})


@bp.post("/vms/<vm_id>/snapshots")
@idempotent
def create_snapshot(vm_id: str):
    request = SnapshotCreateRequest().load(json_body())
    vm, job, snapshot = snapshots.submit_snapshot(vm_id, request, archq().settings)
    return accepted(vm, job, snapshot=snapshot_out.dump(snapshot))


@bp.post("/vms/<vm_id>/snapshots/<name>/revert")
@idempotent
def revert(vm_id: str, name: str):
    return accepted(*snapshots.submit_revert(vm_id, name, archq().settings))


@bp.delete("/vms/<vm_id>/snapshots/<name>")
def delete_snapshot(vm_id: str, name: str):
    return accepted(*snapshots.submit_snapshot_delete(vm_id, name, archq().settings))
