"""HTTP API blueprints under /api/v1: each view loads its input, calls a service, dumps the result."""

from __future__ import annotations

import json

from flask import Flask, current_app, request

from web.errors import BadRequest


def archq():
    return current_app.extensions["archq"]


def json_body() -> dict:
    try:
        body = request.get_json(silent=True)
    except RecursionError:
        # json.loads recurses per nesting level; a small body can nest deeper than the interpreter allows.
        body = None
    if body is None:
        raise BadRequest("the body must be valid JSON with Content-Type: application/json", code="malformed_json")
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object", code="malformed_json")
    try:
        # A `\ud800` escape parses to a lone surrogate, which is no Unicode text: the database drivers and
        # every encoder downstream fail on it.
        json.dumps(body, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise BadRequest(
            "the body must be valid Unicode: it has an unpaired surrogate escape (\\ud800-\\udfff)",
            code="malformed_json",
        ) from None
    return body


def register_blueprints(app: Flask) -> None:
    from web import metrics
    from web.api import hosts, images, jobs, migrations, snapshots, system, tokens, vms

    for module in (system, hosts, vms, snapshots, migrations, jobs, images, tokens):
        app.register_blueprint(module.bp, url_prefix="/api/v1")
    app.register_blueprint(metrics.bp)
