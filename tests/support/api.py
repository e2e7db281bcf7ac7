"""Small helpers for driving the API in tests."""

from __future__ import annotations

from tests.support.services import wait_for

TINY = {"name": "demo", "arch": "amd64", "vcpus": 1, "memory_mib": 128, "image": "tiny"}


def create_vm(client, **fields) -> dict:
    response = client.post("/api/v1/vms", json={**TINY, **fields})
    assert response.status_code == 202, response.get_json()
    return response.get_json()


def wait_job(client, job_id: str, states=("succeeded", "failed", "cancelled"), timeout: float = 30) -> dict:
    last: dict = {}

    def done():
        last.update(client.get(f"/api/v1/jobs/{job_id}").get_json()["job"])
        return last if last["state"] in states else None

    return wait_for(done, timeout=timeout, what=lambda: f"job to reach {states}; it is {last}")


def wait_host(client, name: str, state: str = "up", timeout: float = 15) -> dict:
    def seen():
        response = client.get(f"/api/v1/hosts/{name}")
        host = response.get_json().get("host") if response.status_code == 200 else None
        return host if host and host["state"] == state else None

    return wait_for(seen, timeout=timeout, what=f"host {name} to be {state}")


def error_of(response, status: int) -> dict:
    """The `{"code", "message", "fields"}` of an error answer, after checking its status and shape."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json
    error = response.get_json()["error"]
    assert set(error) == {"code", "message", "fields"}
    return error
