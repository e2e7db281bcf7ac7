from __future__ import annotations

from flask import Blueprint, jsonify

from web.api import archq
from web.services.system import system_info

bp = Blueprint("system", __name__)


@bp.get("/health")
def health():
    return jsonify({"status": "ok"})


@bp.get("/system/info")
def info():
    ext = archq()
    return jsonify(system_info(ext.settings, ext.celery))
