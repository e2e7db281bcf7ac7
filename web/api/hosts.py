from __future__ import annotations

from flask import Blueprint, jsonify
from sqlalchemy import select

from web.api import archq
from web.extensions import db
from web.idempotency import idempotent
from web.models import Host
from web.schemas import host_out
from web.services import hosts
from web.services.hosts import host_view

bp = Blueprint("hosts", __name__)


@bp.get("/hosts")
def list_hosts():
    settings = archq().settings
    rows = db.session.scalars(select(Host).order_by(Host.name)).all()
    return jsonify({"hosts": host_out.dump([host_view(h, settings) for h in rows], many=True)})


@bp.get("/hosts/<name>")
def get_host(name: str):
    return jsonify({"host": host_out.dump(host_view(hosts.get_host(name), archq().settings))})


@bp.post("/hosts/<name>/drain")
@idempotent
def drain(name: str):
    return jsonify({"host": host_out.dump(host_view(hosts.set_drained(name, True), archq().settings))})


@bp.post("/hosts/<name>/undrain")
@idempotent
def undrain(name: str):
    return jsonify({"host": host_out.dump(host_view(hosts.set_drained(name, False), archq().settings))})
