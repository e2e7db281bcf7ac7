"""Bad input gets a JSON error a user can act on, with the right status; never a 500 or an HTML page."""

from __future__ import annotations

import pytest

from tests.support.api import TINY, error_of
from web import MAX_BODY_BYTES


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("arch", "sparc64", "unknown architecture"),
        ("arch", 64, "Not a valid string"),
        ("vcpus", 0, "between 1 and 64"),
        ("vcpus", 65, "between 1 and 64"),
        ("vcpus", "2", "Not a valid integer"),
        ("memory_mib", 63, "between 64 and"),
        ("memory_mib", 10**9, "between 64 and"),
        ("name", "Demo", "must be 1-63 characters"),
        ("name", "-demo", "must be 1-63 characters"),
        ("name", "a" * 64, "must be 1-63 characters"),
        ("name", "<vm>&'\"", "must be 1-63 characters"),
        ("image", "windows", "unknown image"),
        ("emulation", "sometimes", "Must be one of"),
    ],
)
def test_invalid_field_is_422_naming_the_field(client, field, value, fragment):
    error = error_of(client.post("/api/v1/vms", json={**TINY, field: value}), 422)
    assert error["code"] == "validation_failed"
    assert fragment in " ".join(error["fields"][field])


def test_missing_fields_are_each_named(client):
    error = error_of(client.post("/api/v1/vms", json={}), 422)
    assert set(error["fields"]) == {"name", "arch", "vcpus", "memory_mib", "image"}


def test_unknown_field_is_refused(client):
    error = error_of(client.post("/api/v1/vms", json={**TINY, "gpu": True}), 422)
    assert "gpu" in error["fields"]


@pytest.mark.parametrize("alias", ["x86_64", "X86-64", "amd64", "AMD64"])
def test_amd64_aliases_are_accepted_and_canonicalised(client, alias):
    response = client.post("/api/v1/vms", json={**TINY, "name": "alias-test", "arch": alias})
    assert response.status_code == 202
    assert response.get_json()["vm"]["arch"] == "amd64"


@pytest.mark.parametrize("alias", ["aarch64", "ARM64", "arm64v8"])
def test_arm64_aliases_are_accepted_and_canonicalised(client, alias):
    response = client.post("/api/v1/vms", json={**TINY, "name": "alias-test", "arch": alias})
    assert response.status_code == 202
    assert response.get_json()["vm"]["arch"] == "arm64"


@pytest.mark.parametrize(
    ("body", "content_type"),
    [("{not json", "application/json"), ("[1, 2]", "application/json"), ("name=demo", "text/plain")],
)
def test_malformed_body_is_400(client, body, content_type):
    error = error_of(client.post("/api/v1/vms", data=body, content_type=content_type), 400)
    assert error["code"] == "malformed_json"


def test_huge_body_is_413(client):
    error_of(client.post("/api/v1/vms", json={**TINY, "name": "x" * (MAX_BODY_BYTES + 1)}), 413)


@pytest.mark.parametrize(
    "path", ["/api/v1/vms/00000000-0000-0000-0000-000000000000", "/api/v1/jobs/nope", "/api/v1/hosts/nope"]
)
def test_unknown_id_is_404(client, path):
    assert error_of(client.get(path), 404)["code"] == "not_found"


def test_unknown_route_and_method_are_json(client):
    error_of(client.get("/api/v1/nothing-here"), 404)
    error_of(client.put("/api/v1/vms"), 405)


def test_a_second_vm_with_a_live_name_is_409(client):
    assert client.post("/api/v1/vms", json=TINY).status_code == 202
    assert error_of(client.post("/api/v1/vms", json=TINY), 409)["code"] == "name_taken"


def test_deleting_a_vm_whose_create_has_not_finished_is_409(client):
    vm_id = client.post("/api/v1/vms", json=TINY).get_json()["vm"]["id"]
    assert error_of(client.delete(f"/api/v1/vms/{vm_id}"), 409)["code"] == "vm_busy"


def test_job_list_filters_are_validated(client):
    error = error_of(client.get("/api/v1/jobs?state=bogus"), 422)
    assert "state" in error["fields"]
