"""GET /api/v1/openapi.json documents every route: bodies, answers, the error shape, the bearer scheme and
the role each operation needs; a new blueprint is documented and protected without touching auth."""

from __future__ import annotations

import re
from pathlib import Path

from flask import Blueprint, jsonify
from swagger_ui_bundle import swagger_ui_path

from queues.vocabulary import JobKind, JobState, VmState
from web.auth import required_role

HTTP_METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE"}


def document(client) -> dict:
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    return response.get_json()


def openapi_path(rule: str) -> str:
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def test_every_route_is_documented_with_its_methods(app, anonymous_client):
    routed: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        # OpenAPI cannot describe a WebSocket (the console session, docs/console.md).
        if rule.rule.startswith(("/api/v1/", "/metrics")) and not rule.websocket:
            routed.setdefault(openapi_path(rule.rule), set()).update(set(rule.methods) & HTTP_METHODS)
    documented = {path: {m.upper() for m in ops} for path, ops in document(anonymous_client)["paths"].items()}
    assert documented == routed


def test_every_operation_has_a_success_schema_errors_and_the_role_rule(anonymous_client):
    doc = document(anonymous_client)
    assert doc["openapi"].startswith("3.")
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "a token from `archq token create` or POST /tokens",
    }
    error = doc["components"]["schemas"]["ErrorOut"]
    assert error["properties"]["error"] == {"$ref": "#/components/schemas/ErrorBody"}
    assert set(doc["components"]["schemas"]["ErrorBody"]["properties"]) == {"code", "message", "fields"}
    for path, operations in doc["paths"].items():
        concrete = re.sub(r"\{[^}]+\}", "x", path)
        for method, operation in operations.items():
            success = [code for code in operation["responses"] if code.startswith("2")]
            assert success, (method, path)
            for code in success:
                # Every answer with a body has its schema; 204 No Content has no body to describe.
                answer = operation["responses"][code]
                if "$ref" in answer:
                    answer = doc["components"]["responses"][answer["$ref"].rsplit("/", 1)[1]]
                assert ("content" in answer) == (code != "204"), (method, path, code)
            role = required_role(method.upper(), concrete)
            if role is None:
                assert operation["security"] == [], (method, path)
            else:
                assert operation["security"] == [{"bearerAuth": []}], (method, path)
                assert operation["x-archq-role"] == role.label
                assert {"401", "403"} <= set(operation["responses"]), (method, path)
            if "{" in path:
                assert "404" in operation["responses"], (method, path)
            if "requestBody" in operation:
                assert {"400", "413", "422"} <= set(operation["responses"]), (method, path)


def test_request_bodies_and_query_parameters_come_from_the_schemas(anonymous_client):
    doc = document(anonymous_client)
    create = doc["paths"]["/api/v1/vms"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/VmCreateRequest"
    }
    request = doc["components"]["schemas"]["VmCreateRequest"]
    assert set(request["required"]) == {"name", "arch", "vcpus", "memory_mib", "image"}
    assert request["additionalProperties"] is False
    assert "Idempotency-Key" in {p["name"] for p in create["parameters"]}
    query = {p["name"] for p in doc["paths"]["/api/v1/jobs"]["get"]["parameters"] if p["in"] == "query"}
    assert query == {"state", "kind", "vm_id", "host", "limit", "next", "project"}
    for path, schema in [
        ("/api/v1/images", "ImageCreateRequest"),
        ("/api/v1/vms/{vm_id}/snapshots", "SnapshotCreateRequest"),
        ("/api/v1/vms/{vm_id}/migrate", "MigrateRequest"),
    ]:
        body = doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert body == {"$ref": f"#/components/schemas/{schema}"}, path
    console = doc["paths"]["/api/v1/vms/{vm_id}/console"]["get"]
    query = [p for p in console["parameters"] if p["in"] == "query"]
    assert [(p["name"], p["schema"].get("maximum")) for p in query] == [("bytes", 64 * 1024), ("project", None)]
    action = doc["paths"]["/api/v1/vms/{vm_id}/{action}"]["post"]
    assert {"name": "action", "in": "path", "required": True,
            "schema": {"type": "string", "enum": ["start", "stop", "reboot"]}} in action["parameters"]  # fmt: skip


def test_a_create_answers_one_vm_and_job_or_with_count_every_vm_and_job(anonymous_client):
    doc = document(anonymous_client)
    answer = doc["paths"]["/api/v1/vms"]["post"]["responses"]["202"]
    answer = doc["components"]["responses"][answer["$ref"].rsplit("/", 1)[1]]
    shapes = answer["content"]["application/json"]["schema"]["anyOf"]
    schemas = doc["components"]["schemas"]
    required = [set(schemas[shape["$ref"].rsplit("/", 1)[1]]["required"]) for shape in shapes]
    assert required == [{"vm", "job"}, {"count", "vms", "jobs"}]


def test_a_new_blueprint_is_documented_from_its_docstring_and_protected_by_default(app):
    bp = Blueprint("widgets", __name__)

    @bp.post("/widgets/<widget_id>/polish")
    def polish(widget_id: str):
        """Polish a widget
        ---
        post:
          responses:
            202: {description: polished, content: {application/json: {schema: HealthOut}}}
        """
        return jsonify({"status": "ok"}), 202

    app.register_blueprint(bp, url_prefix="/api/v1")
    operation = document(app.test_client())["paths"]["/api/v1/widgets/{widget_id}/polish"]["post"]
    assert operation["summary"] == "Polish a widget"
    assert operation["x-archq-role"] == "admin" and {"401", "403", "404", "202"} <= set(operation["responses"])
    assert app.test_client().post("/api/v1/widgets/w/polish").status_code == 401


def test_operation_ids_are_plain_unique_camel_case_names(anonymous_client):
    doc = document(anonymous_client)
    ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))
    assert all(re.fullmatch(r"[a-z]+(?:[A-Z][a-z]+)*", i) for i in ids), ids
    assert doc["paths"]["/api/v1/vms"]["get"]["operationId"] == "listVms"
    assert doc["paths"]["/api/v1/vms"]["post"]["operationId"] == "createVm"
    assert doc["paths"]["/api/v1/jobs/{job_id}/cancel"]["post"]["operationId"] == "cancelJob"
    assert doc["servers"] == [{"url": "/", "description": "this archq API"}]


def test_states_and_kinds_are_enums_from_the_vocabulary_and_figures_are_typed(anonymous_client):
    schemas = document(anonymous_client)["components"]["schemas"]
    assert schemas["JobOut"]["properties"]["kind"]["enum"] == [k.value for k in JobKind]
    assert schemas["JobOut"]["properties"]["state"]["enum"] == [s.value for s in JobState]
    assert schemas["VmOut"]["properties"]["state"]["enum"] == [s.value for s in VmState]
    assert schemas["HostOut"]["properties"]["state"]["enum"] == ["up", "drained", "down"]
    assert schemas["VmOut"]["properties"]["accel"]["enum"] == ["kvm", "hvf", "tcg", None]
    assert schemas["ProgressOut"]["properties"]["percent"]["type"] == "number"
    assert schemas["CapacityOut"]["properties"]["memory_mib"]["type"] == "integer"
    jobs = document(anonymous_client)["paths"]["/api/v1/jobs"]["get"]
    query = {p["name"]: p["schema"] for p in jobs["parameters"] if p["in"] == "query"}
    assert query["kind"]["enum"] == [k.value for k in JobKind]


def test_swagger_ui_is_served_from_the_package_without_a_token(anonymous_client):
    page = anonymous_client.get("/api/v1/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    text = page.get_data(as_text=True)
    assert 'url: "openapi.json"' in text
    for asset in re.findall(r'(?:src|href)="docs/([^"]+)"', text):
        answer = anonymous_client.get(f"/api/v1/docs/{asset}")
        assert answer.status_code == 200, asset
        assert answer.data == (Path(swagger_ui_path) / asset).read_bytes()
    assert anonymous_client.get("/api/v1/docs/index.j2").status_code == 404
    assert anonymous_client.get("/api/v1/docs/..%2Fswagger-ui.js").status_code == 404
