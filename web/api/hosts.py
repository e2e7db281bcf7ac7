from __future__ import annotations

from flask import Blueprint, jsonify
from sqlalchemy import select

from web.api import archq
from web.errors import NotFound
from web.extensions import db
from web.models import Host
from web.schemas import host_out
from web.services.hosts import host_view

bp = Blueprint("hosts", __name__)


@bp.get("/hosts")
def list_hosts():
    settings = archq().settings
    rows = db.session.scalars(select(Host).order_by(Host.name)).all()
    return jsonify({"hosts": host_out.dump([host_view(h, settings) for h in rows], many=True)})


@bp.get("/hosts/<name>")
def get_host(name: str):
    host = db.session.get(Host, name)
    if host is None:
        raise NotFound(f"no host named {name!r} has ever sent a heartbeat")
    return jsonify({"host": host_out.dump(host_view(host, archq().settings))})
