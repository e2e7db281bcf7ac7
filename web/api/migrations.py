from __future__ import annotations

from flask import Blueprint

from web.api import archq, json_body
from web.api.vms import accepted
from web.auth import current_actor
from web.idempotency import idempotent
from web.schemas import MigrateRequest
from web.services.migrations import submit_migrate
from web.services.rehome import submit_rehome

bp = Blueprint("migrations", __name__)


@bp.post("/vms/<vm_id>/migrate")
@idempotent
def migrate(vm_id: str):
    """Migrate a VM to another host: live (running) or cold (stopped)
    ---
    post:
      operationId: migrateVm
      description: Without target_host the least loaded live host that can take the VM is chosen. The VM is
        recorded on the target only when libvirt has finished.
      requestBody: {required: true, content: {application/json: {schema: MigrateRequest}}}
      responses:
        202: JobAccepted
        409: Error
    """
    request = MigrateRequest().load(json_body())
    return accepted(*submit_migrate(vm_id, request, archq().settings, actor=current_actor()))


@bp.post("/vms/<vm_id>/rehome")
@idempotent
def rehome(vm_id: str):
    """Move an emulated VM to a native host of its architecture (cold)
    ---
    post:
      description: >-
        Live migration between TCG and KVM is not supported by QEMU, so the VM is shut down, moved with its
        disk, redefined there as a native guest and started again if it was running. Afterwards it is
        `emulated: false`. The VM's `rehome_target` names the host it would go to.
      responses:
        202: JobAccepted
        409: Error
    """
    return accepted(*submit_rehome(vm_id, archq().settings, actor=current_actor()))
