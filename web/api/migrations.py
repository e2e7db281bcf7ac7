from __future__ import annotations

from flask import Blueprint

from web.api import archq, json_body
from web.api.vms import accepted
from web.idempotency import idempotent
from web.schemas import MigrateRequest
from web.services.migrations import submit_migrate

bp = Blueprint("migrations", __name__)


@bp.post("/vms/<vm_id>/migrate")
@idempotent
def migrate(vm_id: str):
    return accepted(*submit_migrate(vm_id, MigrateRequest().load(json_body()), archq().settings))
