"""Every endpoint but liveness and the OpenAPI document needs a bearer token; the role it needs follows from
the method and path; tokens are stored as hashes, listed and revoked; job events name the token."""

from __future__ import annotations

import pytest

from tests.support.api import TINY, error_of
from tests.support.auth import authed_client, make_token
from web.auth import required_role
from web.extensions import db
from web.models import ApiToken
from web.services.tokens import Role

PROTECTED = [
    ("GET", "/api/v1/vms"),
    ("GET", "/api/v1/jobs"),
    ("GET", "/api/v1/hosts"),
    ("GET", "/api/v1/system/info"),
    ("GET", "/api/v1/tokens"),
    ("GET", "/metrics"),
    ("POST", "/api/v1/vms"),
    ("DELETE", "/api/v1/vms/00000000-0000-0000-0000-000000000000"),
    ("POST", "/api/v1/hosts/h1/drain"),
    # Routes that do not exist (yet) are refused before routing: a new blueprint is protected by default.
    ("GET", "/api/v1/images"),
    ("POST", "/api/v1/vms/x/snapshots"),
]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_no_token_is_401_with_the_json_error(anonymous_client, method, path):
    response = anonymous_client.open(path, method=method, json={})
    error = error_of(response, 401)
    assert error["code"] == "unauthorized"
    assert "Bearer" in error["message"]
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "header", ["Bearer archq_not-a-real-token", "Bearer ", "Basic dXNlcjpwYXNz", "archq_token-without-scheme"]
)
def test_a_bad_token_is_401(anonymous_client, header):
    response = anonymous_client.get("/api/v1/vms", headers={"Authorization": header})
    assert error_of(response, 401)["code"] == "unauthorized"


def test_health_and_the_openapi_document_need_no_token(anonymous_client):
    assert anonymous_client.get("/api/v1/health").status_code == 200
    assert anonymous_client.get("/api/v1/openapi.json").status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "role"),
    [
        ("GET", "/api/v1/health", None),
        ("GET", "/api/v1/openapi.json", None),
        ("POST", "/api/v1/health", Role.ADMIN),
        ("GET", "/api/v1/vms", Role.VIEWER),
        ("HEAD", "/api/v1/vms", Role.VIEWER),
        ("GET", "/api/v1/images", Role.VIEWER),
        ("GET", "/api/v1/vms/abc/snapshots", Role.VIEWER),
        ("GET", "/metrics", Role.VIEWER),
        ("POST", "/api/v1/vms", Role.OPERATOR),
        ("DELETE", "/api/v1/vms/abc", Role.OPERATOR),
        ("POST", "/api/v1/vms/abc/snapshots", Role.OPERATOR),
        ("POST", "/api/v1/vms/abc/migrate", Role.OPERATOR),
        ("GET", "/api/v1/vms/abc/console", Role.OPERATOR),
        ("GET", "/api/v1/vms/abc/console/log", Role.OPERATOR),
        ("GET", "/api/v1/vms/abc/consoles", Role.VIEWER),
        ("POST", "/api/v1/jobs/abc/cancel", Role.OPERATOR),
        ("POST", "/api/v1/hosts/h1/drain", Role.ADMIN),
        ("POST", "/api/v1/images", Role.ADMIN),
        ("DELETE", "/api/v1/images/tiny", Role.ADMIN),
        ("GET", "/api/v1/tokens", Role.ADMIN),
        ("POST", "/api/v1/tokens", Role.ADMIN),
        ("POST", "/api/v1/vmsx", Role.ADMIN),
        ("POST", "/api/v1/something-new", Role.ADMIN),
    ],
)
def test_the_role_rule(method, path, role):
    assert required_role(method, path) == role


def test_viewer_reads_but_cannot_create(app):
    viewer = authed_client(app, make_token(app, "viewer"))
    assert viewer.get("/api/v1/vms").status_code == 200
    assert viewer.get("/api/v1/jobs").status_code == 200
    assert viewer.get("/metrics").status_code == 200
    error = error_of(viewer.post("/api/v1/vms", json={**TINY, "name": "sec-viewer"}), 403)
    assert error["code"] == "forbidden"
    assert "operator" in error["message"] and "viewer" in error["message"]


def test_operator_creates_vms_but_cannot_drain_hosts_or_manage_tokens(app):
    operator = authed_client(app, make_token(app, "operator", "ci"))
    assert operator.post("/api/v1/vms", json={**TINY, "name": "sec-operator"}).status_code == 202
    assert error_of(operator.post("/api/v1/hosts/amd64-host/drain"), 403)["code"] == "forbidden"
    assert error_of(operator.get("/api/v1/tokens"), 403)["code"] == "forbidden"
    assert error_of(operator.post("/api/v1/tokens", json={"name": "x", "role": "admin"}), 403)["code"] == "forbidden"


def test_a_job_names_the_token_that_asked_for_it(app):
    operator = authed_client(app, make_token(app, "operator", "ci"))
    body = operator.post("/api/v1/vms", json={**TINY, "name": "sec-actor"}).get_json()
    job = operator.get(f"/api/v1/jobs/{body['job']['id']}").get_json()["job"]
    assert job["events"][0]["actor"] == "token:ci"
    cancelled = operator.post(f"/api/v1/jobs/{job['id']}/cancel").get_json()["job"]
    assert cancelled["events"][-1]["actor"] == "token:ci"


def test_tokens_over_http_are_shown_once_stored_hashed_listed_and_revoked(app, client, anonymous_client):
    created = client.post("/api/v1/tokens", json={"name": "ci", "role": "operator"})
    assert created.status_code == 201, created.get_json()
    body = created.get_json()
    secret, token_id = body["secret"], body["token"]["id"]
    assert body["token"]["role"] == "operator"
    with app.app_context():
        stored = db.session.get(ApiToken, token_id)
        assert secret not in (stored.secret_sha256, stored.name, stored.id)
        assert len(stored.secret_sha256) == 64
    listed = client.get("/api/v1/tokens").get_json()["tokens"]
    assert {t["name"] for t in listed} >= {"tests", "ci"}
    assert secret not in str(listed)

    headers = {"Authorization": f"Bearer {secret}"}
    assert anonymous_client.get("/api/v1/vms", headers=headers).status_code == 200
    assert client.delete(f"/api/v1/tokens/{token_id}").get_json()["token"]["revoked_at"] is not None
    assert error_of(anonymous_client.get("/api/v1/vms", headers=headers), 401)["code"] == "unauthorized"
    assert "ci" not in {t["name"] for t in client.get("/api/v1/tokens").get_json()["tokens"]}


def test_a_second_active_token_with_the_same_name_is_409(client):
    assert client.post("/api/v1/tokens", json={"name": "ci", "role": "viewer"}).status_code == 201
    assert error_of(client.post("/api/v1/tokens", json={"name": "ci", "role": "viewer"}), 409)["code"] == "token_exists"


@pytest.mark.parametrize(
    "body", [{"name": "ci", "role": "root"}, {"name": "<ci>", "role": "viewer"}, {"role": "viewer"}, {"name": "ci"}]
)
def test_an_invalid_token_request_is_422(client, body):
    assert error_of(client.post("/api/v1/tokens", json=body), 422)["code"] == "validation_failed"


def test_revoking_an_unknown_token_is_404(client):
    assert error_of(client.delete("/api/v1/tokens/nope"), 404)["code"] == "token_not_found"
