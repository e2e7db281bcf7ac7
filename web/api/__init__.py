"""HTTP API blueprints under /api/v1: each view loads its input, calls a service, dumps the result."""

from __future__ import annotations

from flask import Flask, current_app, request

from web.errors import BadRequest, Unprocessable


def archq():
    return current_app.extensions["archq"]


def query_args() -> dict[str, str]:
    """The query string, less `project` (which any request may carry, see web/auth.py)."""
    return {key: value for key, value in request.args.items() if key != "project"}


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
    # A `\ud800` escape parses to a lone surrogate, which is no Unicode text (how non-UTF-8 bytes look once
    # they are in a JSON string): the database drivers and every encoder downstream fail on it.
    try:
        where = _surrogate_in(body)
    except RecursionError:
        raise BadRequest("the body nests too deeply", code="malformed_json") from None
    if where is not None:
        message = "must be valid Unicode text (UTF-8): it has an unpaired surrogate escape (\\ud800-\\udfff)"
        raise Unprocessable(f"{where}: {message}", fields={where: [message]})
    return body


def _surrogate_in(value: object, path: str = "") -> str | None:
    """The dotted path of the first string (or key) holding a lone surrogate, or None."""
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            return path or "(body)"
        return None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        here = f"{path}.{key}" if path else str(key)
        found = _surrogate_in(key, here) if isinstance(key, str) else None
        found = found or _surrogate_in(item, here)
        if found:
            return found
    return None


def register_blueprints(app: Flask) -> None:
    from web import metrics
    from web.api import docs, hosts, images, jobs, migrations, projects, snapshots, system, tokens, vms

    for module in (system, docs, hosts, vms, snapshots, migrations, jobs, images, tokens, projects):
        app.register_blueprint(module.bp, url_prefix="/api/v1")
    app.register_blueprint(metrics.bp)
