"""Projects through the API: what a project's tokens see (another project's VMs and jobs answer 404), what an
admin sees and does for a project (`?project=`), the quota usage endpoint, refusals at the quota (create and
preview) and the quota given back when a create is cancelled."""

from __future__ import annotations

import pytest

from tests.support.api import TINY, create_vm, error_of
from tests.support.auth import authed_client
from web.services import tokens


@pytest.fixture
def teams(app, client):
    """Projects `blue` and `red`, each with an operator and a viewer."""
    for name in ("blue", "red"):
        assert client.post("/api/v1/projects", json={"name": name}).status_code == 201
    made = {}
    with app.app_context():
        for project in ("blue", "red"):
            for role in ("operator", "viewer"):
                made[project, role] = authed_client(app, tokens.create_token(f"{project}-{role}", role, project)[1])
    return made


def ids(answer: dict, key: str) -> set[str]:
    return {item["id"] for item in answer[key]}


def test_a_project_sees_and_acts_only_on_its_own_resources(client, teams):
    blue, red = teams["blue", "operator"], teams["red", "operator"]
    mine = create_vm(blue, name="web")
    vm_id, job_id = mine["vm"]["id"], mine["job"]["id"]
    assert mine["vm"]["project"] == mine["job"]["project"] == "blue"

    for path in (f"/api/v1/vms/{vm_id}", f"/api/v1/jobs/{job_id}", f"/api/v1/vms/{vm_id}/snapshots"):
        assert error_of(red.get(path), 404)["code"] == "not_found", path
        assert error_of(teams["red", "viewer"].get(path), 404)["code"] == "not_found", path
        assert blue.get(path).status_code == 200, path
        assert teams["blue", "viewer"].get(path).status_code == 200, path
    for method, path in [
        ("DELETE", f"/api/v1/vms/{vm_id}"),
        ("POST", f"/api/v1/vms/{vm_id}/stop"),
        ("POST", f"/api/v1/jobs/{job_id}/cancel"),
        ("POST", f"/api/v1/vms/{vm_id}/migrate"),
    ]:
        answer = red.open(path, method=method, json={} if path.endswith("migrate") else None)
        assert error_of(answer, 404)["code"] == "not_found", (method, path)
    assert red.get("/api/v1/vms").get_json()["vms"] == []
    assert red.get("/api/v1/jobs").get_json()["jobs"] == []
    assert ids(blue.get("/api/v1/vms").get_json(), "vms") == {vm_id}
    # Asking for another project is no way in either.
    assert error_of(red.get("/api/v1/vms?project=blue"), 404)["code"] == "project_not_found"


def test_an_admin_sees_every_project_and_acts_for_one(client, teams):
    blue = create_vm(teams["blue", "operator"], name="web")["vm"]["id"]
    red = create_vm(teams["red", "operator"], name="web")["vm"]["id"]
    assert ids(client.get("/api/v1/vms").get_json(), "vms") >= {blue, red}
    assert ids(client.get("/api/v1/vms?project=red").get_json(), "vms") == {red}
    assert {j["vm_id"] for j in client.get("/api/v1/jobs?project=blue").get_json()["jobs"]} == {blue}
    assert client.get(f"/api/v1/vms/{red}?project=blue").status_code == 404

    # Created for red: it counts against red's quota and red's tokens see it.
    made = client.post("/api/v1/vms?project=red", json={**TINY, "name": "db"}).get_json()
    assert made["vm"]["project"] == made["job"]["project"] == "red"
    assert teams["red", "viewer"].get(f"/api/v1/vms/{made['vm']['id']}").status_code == 200
    assert client.get("/api/v1/projects/red/usage").get_json()["usage"]["used"]["vms"] == 2
    assert error_of(client.get("/api/v1/vms?project=nowhere"), 404)["code"] == "project_not_found"


def test_names_and_idempotency_keys_are_per_project(client, teams):
    blue, red = teams["blue", "operator"], teams["red", "operator"]
    key = {"Idempotency-Key": "same-key"}
    first = blue.post("/api/v1/vms", json={**TINY, "name": "web"}, headers=key)
    second = red.post("/api/v1/vms", json={**TINY, "name": "web"}, headers=key)
    assert first.status_code == second.status_code == 202
    assert first.get_json()["vm"]["id"] != second.get_json()["vm"]["id"]
    assert "Idempotent-Replayed" not in second.headers
    assert error_of(blue.post("/api/v1/vms", json={**TINY, "name": "web"}), 409)["code"] == "name_taken"


def test_usage_shows_limits_used_and_remaining_to_the_project(client, teams):
    answer = client.patch("/api/v1/projects/blue/quota", json={"vms": 3, "vcpus": 4, "memory_mib": 1024})
    assert answer.status_code == 200, answer.get_json()
    create_vm(teams["blue", "operator"], name="a", vcpus=2, memory_mib=256)

    usage = teams["blue", "viewer"].get("/api/v1/projects/blue/usage").get_json()["usage"]
    assert usage == {
        "project": "blue",
        "limits": {"vms": 3, "vcpus": 4, "memory_mib": 1024, "emulated": None},
        "used": {"vms": 1, "vcpus": 2, "memory_mib": 256, "emulated": 0},
        "remaining": {"vms": 2, "vcpus": 2, "memory_mib": 768, "emulated": None},
    }
    assert error_of(teams["red", "viewer"].get("/api/v1/projects/blue/usage"), 404)["code"] == "project_not_found"
    assert [p["name"] for p in teams["red", "viewer"].get("/api/v1/projects").get_json()["projects"]] == ["red"]
    assert {"blue", "red", "default"} <= {p["name"] for p in client.get("/api/v1/projects").get_json()["projects"]}
    # Only an admin sets limits or makes projects.
    assert teams["blue", "operator"].patch("/api/v1/projects/blue/quota", json={"vms": 9}).status_code == 403
    assert teams["blue", "operator"].post("/api/v1/projects", json={"name": "mine"}).status_code == 403
    # A limit left out stays; null lifts one.
    client.patch("/api/v1/projects/blue/quota", json={"vcpus": None})
    limits = client.get("/api/v1/projects/blue").get_json()["project"]["usage"]["limits"]
    assert limits == {"vms": 3, "vcpus": None, "memory_mib": 1024, "emulated": None}


@pytest.mark.parametrize(
    ("quota", "request_", "resource", "limit", "used"),
    [
        ({"vms": 1}, {}, "vms", 1, 1),
        ({"vcpus": 3}, {"vcpus": 2}, "vcpus", 3, 2),
        ({"memory_mib": 300}, {"memory_mib": 256}, "memory_mib", 300, 256),
    ],
)
def test_a_create_over_the_quota_is_refused_naming_the_resource(client, teams, quota, request_, resource, limit, used):
    blue = teams["blue", "operator"]
    client.patch("/api/v1/projects/blue/quota", json=quota)
    create_vm(blue, name="first", **request_)

    body = {**TINY, "name": "second", **request_}
    error = error_of(blue.post("/api/v1/vms", json=body), 409)
    assert error["code"] == "quota_exceeded"
    assert resource in error["fields"] and f"limit {limit}, used {used}" in error["fields"][resource][0]
    assert f"{used} of {limit}" in error["message"]
    preview = blue.post("/api/v1/vms/preview", json=body).get_json()["preview"]
    assert (preview["accepted"], preview["status"], preview["error"]["code"]) == (False, 409, "quota_exceeded")
    # Another project's quota is its own.
    assert teams["red", "operator"].post("/api/v1/vms", json=body).status_code == 202


def test_a_cancelled_create_gives_the_quota_back(client, teams):
    # (A delete that succeeds on its host: tests/integration/test_projects_on_hosts.py.)
    blue = teams["blue", "operator"]
    client.patch("/api/v1/projects/blue/quota", json={"vms": 1})
    first = create_vm(blue, name="first")
    assert blue.post("/api/v1/vms", json={**TINY, "name": "second"}).status_code == 409

    assert blue.post(f"/api/v1/jobs/{first['job']['id']}/cancel").status_code == 202
    usage = client.get("/api/v1/projects/blue/usage").get_json()["usage"]
    assert usage["used"] == {"vms": 0, "vcpus": 0, "memory_mib": 0, "emulated": 0}
    create_vm(blue, name="second")


def test_a_token_belongs_to_an_existing_project(client):
    made = client.post("/api/v1/tokens", json={"name": "ci", "role": "viewer", "project": "nowhere"})
    assert error_of(made, 422)["fields"] == {"project": [made.get_json()["error"]["message"]]}
    client.post("/api/v1/projects", json={"name": "ci"})
    made = client.post("/api/v1/tokens", json={"name": "ci", "role": "viewer", "project": "ci"})
    assert made.status_code == 201 and made.get_json()["token"]["project"] == "ci"
    assert error_of(client.post("/api/v1/projects", json={"name": "ci"}), 409)["code"] == "project_exists"
