"""The OpenAPI 3 document of the HTTP API, generated from the marshmallow schemas and the views' docstrings.

How a view is documented: its docstring ends with `---` and YAML operations keyed by method, naming schemas
by class name (any marshmallow schema imported somewhere, e.g. in `web.api_schemas`):

    @bp.get("/vms/<vm_id>")
    def get_vm(vm_id):
        \"\"\"One VM.
        ---
        get:
          summary: One VM
          responses:
            200: {description: the VM, content: {application/json: {schema: VmEnvelope}}}
        \"\"\"

Every route under /api/v1 (and /metrics) is in the document, documented or not. What this module adds by
itself, so views state only their success answers and specific errors: the path parameters (from the URL
rule, `any(...)` as an enum), the `Idempotency-Key` header of `@idempotent` views, the bearer security and
required role (from `web.auth.required_role`), and the standard errors: 401/403 when a token is needed, 404
with path parameters, 400/413/422 on POST, 422 with query parameters, and gunicorn's own 414 (HTML) for a
request line over 4 KiB.
"""

from __future__ import annotations

import re
from typing import Any

from apispec import APISpec, BasePlugin
from apispec.ext.marshmallow import MarshmallowPlugin
from apispec_webframeworks.flask import FlaskPlugin
from flask import Flask
from werkzeug.routing import Rule

import web.api_schemas  # registers the envelope schemas by name
from web.auth import PROJECT_PREFIXES, required_role, under

TITLE = "archq"
VERSION = "1"
DOCUMENTED_PREFIXES = ("/api/v1/", "/metrics")
_RULE_ARG = re.compile(r"<(?:(?P<converter>\w+)(?:\((?P<args>[^)]*)\))?:)?(?P<name>\w+)>")
_ERRORS = {
    400: "malformed request (the body is not a JSON object)",
    401: "no token, or an unknown or revoked one",
    403: "the token's role is too weak for this request",
    404: "no such resource",
    409: "the resource is in a state that does not allow this",
    413: "the body is over the size limit",
    422: "invalid fields (a message per field) or a reused Idempotency-Key",
    503: "no host can take this now (Retry-After says when to try again); for /ready: `fields` names what is down",
}


def _path_parameters(rule: Rule) -> list[dict]:
    parameters = []
    for match in _RULE_ARG.finditer(rule.rule):
        schema: dict[str, Any] = {"type": "string"}
        if match["converter"] == "any":
            schema["enum"] = [item.strip().strip("'\"") for item in match["args"].split(",")]
        elif match["converter"] == "int":
            schema = {"type": "integer", "minimum": 0}
        parameters.append({"in": "path", "name": match["name"], "required": True, "schema": schema})
    return parameters


def operation_id(name: str, rule: Rule, method: str) -> str:
    """The view's name in camelCase (`list_vms` -> `listVms`), as generated clients name their methods; a view
    that answers several methods adds the method (`getWidget`, `deleteWidget`)."""
    methods = sorted(set(rule.methods or ()) - {"HEAD", "OPTIONS"})
    words = name.split("_")
    if len(methods) > 1:
        words = [method.lower(), *words]
    return words[0] + "".join(word.capitalize() for word in words[1:])


class ArchqPlugin(BasePlugin):
    """Adds what every operation has in common (see the module docstring)."""

    def operation_helper(self, path: str | None = None, operations: dict | None = None, **kwargs: Any) -> None:
        view, app = kwargs["view"], kwargs["app"]
        rule = FlaskPlugin._rule_for_view(view, app=app)
        for method in rule.methods or ():
            if method in ("HEAD", "OPTIONS"):
                continue
            operation = operations.setdefault(method.lower(), {})
            operation.setdefault("summary", (view.__doc__ or view.__name__).strip().splitlines()[0])
            operation.setdefault("operationId", operation_id(view.__name__, rule, method))
            operation.setdefault("tags", [rule.endpoint.split(".")[0]])
            self._parameters(operation, rule, view, method)
            self._security(operation, method, rule)
            self._errors(operation, rule, method)

    @staticmethod
    def _parameters(operation: dict, rule: Rule, view: Any, method: str) -> None:
        parameters = operation.setdefault("parameters", [])
        parameters.extend(_path_parameters(rule))
        if getattr(view, "idempotent", False) and method == "POST":
            parameters.append({
                "in": "header", "name": "Idempotency-Key", "required": False,
                "description": "the same key and body within 24 h answer the original response",
                "schema": {"type": "string", "minLength": 1, "maxLength": 255},
            })  # fmt: skip
        if under(rule.rule, PROJECT_PREFIXES):
            parameters.append({
                "in": "query", "name": "project", "required": False,
                "description": "admin: only this project's resources, and new ones go to it; others: their own "
                "project or none (an unknown project is a 404)",
                "schema": {"type": "string"},
            })  # fmt: skip

    @staticmethod
    def _security(operation: dict, method: str, rule: Rule) -> None:
        # A representative concrete path: the rule decides by prefix, never by a parameter's value.
        role = required_role(method, _RULE_ARG.sub("x", rule.rule))
        if role is None:
            operation["security"] = []
            return
        operation["security"] = [{"bearerAuth": []}]
        operation["x-archq-role"] = role.label
        operation["description"] = (operation.get("description", "") + f"\n\nRole: {role.label} or above.").strip()

    @staticmethod
    def _errors(operation: dict, rule: Rule, method: str) -> None:
        responses = operation.setdefault("responses", {})
        codes: set[int] = set()
        if operation.get("security"):
            codes |= {401, 403}
        if rule.arguments or any(p.get("name") == "project" for p in operation.get("parameters", [])):
            codes.add(404)
        if method in ("POST", "PUT", "PATCH"):
            codes |= {413, 422}
            if "requestBody" in operation:
                codes.add(400)
        if any(p.get("in") == "query" for p in operation.get("parameters", [])):
            codes.add(422)
        for code in sorted(codes):
            responses.setdefault(code, "Error")
        # gunicorn answers this itself, before archq sees the request.
        responses.setdefault(414, "UriTooLong")


def build_spec(app: Flask) -> dict:
    spec = APISpec(
        title=TITLE,
        version=VERSION,
        openapi_version="3.0.3",
        info={"description": "Architecture-aware VM provisioning. Every error is `{error: {code, message, fields}}`."},
        # Relative: the document is served by the API it describes, wherever that is mounted.
        servers=[{"url": "/", "description": "this archq API"}],
        plugins=[FlaskPlugin(), ArchqPlugin(), MarshmallowPlugin()],
    )
    spec.components.security_scheme(
        "bearerAuth",
        {"type": "http", "scheme": "bearer", "description": "a token from `archq token create` or POST /tokens"},
    )
    spec.components.schema("ErrorOut", schema=web.api_schemas.ErrorOut)
    spec.components.response(
        "Error",
        {
            "description": "; ".join(f"{code}: {text}" for code, text in _ERRORS.items()),
            "content": {"application/json": {"schema": "ErrorOut"}},
        },
    )
    spec.components.response(
        "JobAccepted",
        {
            "description": "the job is accepted; Location names it",
            "headers": {"Location": {"schema": {"type": "string"}, "description": "/api/v1/jobs/<job id>"}},
            "content": {"application/json": {"schema": "VmAcceptedOut"}},
        },
    )
    spec.components.schema("BulkAcceptedOut", schema=web.api_schemas.BulkAcceptedOut)
    spec.components.response(
        "CreateAccepted",
        {
            "description": "the create is accepted: one VM and its job (Location names the job), or, with `count`,"
            " every VM and job",
            "headers": {"Location": {"schema": {"type": "string"}, "description": "/api/v1/jobs/<job id>"}},
            "content": {
                "application/json": {
                    "schema": {
                        "anyOf": [
                            {"$ref": "#/components/schemas/VmAcceptedOut"},
                            {"$ref": "#/components/schemas/BulkAcceptedOut"},
                        ]
                    }
                }
            },
        },
    )
    spec.components.header(
        "NextLink",
        {
            "description": 'the next page with the same filters, `<...>; rel="next"` (absent on the last page)',
            "schema": {"type": "string"},
        },
    )
    spec.components.response(
        "UriTooLong",
        {
            "description": "the request line (path and query) is over the server's limit of 4 KiB",
            "content": {"text/html": {"schema": {"type": "string"}}},
        },
    )
    seen: set[str] = set()
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if rule.endpoint in seen or not rule.rule.startswith(DOCUMENTED_PREFIXES):
            continue
        if rule.websocket:
            continue  # OpenAPI 3 cannot describe a WebSocket: the console session is in docs/console.md
        seen.add(rule.endpoint)
        spec.path(view=app.view_functions[rule.endpoint], app=app)
    return spec.to_dict()


def openapi_document(app: Flask) -> dict:
    """The document, built once per app (routes do not change after start)."""
    document = app.extensions.get("archq_openapi")
    if document is None:
        document = app.extensions["archq_openapi"] = build_spec(app)
    return document
