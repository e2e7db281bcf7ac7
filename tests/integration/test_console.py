"""`GET /api/v1/vms/<id>/console`: the API asks the VM's worker through Redis for the tail of the serial log
it holds (the API never reads hosts' files); bounded by `?bytes=`, with clear errors when there is nothing
to show or nobody answers."""

from __future__ import annotations

import time

from queues import messages
from tests.support.api import create_vm, wait_host, wait_job
from web.extensions import db
from web.services.hosts import record_heartbeat

LOG = b"".join(b"line %05d of the boot log\n" % n for n in range(1000))


def running_vm(client, settings, name: str) -> str:
    accepted = create_vm(client, name=name)
    assert wait_job(client, accepted["job"]["id"])["state"] == "succeeded"
    return accepted["vm"]["id"]


def test_the_console_is_the_tail_of_the_log_on_the_vms_host(client, conductor, hypervisor_worker, settings):
    with hypervisor_worker():
        wait_host(client, "amd64-host")
        vm_id = running_vm(client, settings, "console")
        (settings.data_dir / "vms" / vm_id / "console.log").write_bytes(LOG)

        tail = client.get(f"/api/v1/vms/{vm_id}/console").get_json()["console"]
        assert tail["text"].encode() == LOG[-16 * 1024 :]
        assert (tail["size"], tail["offset"], tail["truncated"]) == (len(LOG), len(LOG) - 16 * 1024, True)
        assert tail["host"] == "amd64-host"

        last = "line 00999 of the boot log\n"
        small = client.get(f"/api/v1/vms/{vm_id}/console?bytes={len(last)}").get_json()["console"]
        assert small["text"] == last

        (settings.data_dir / "vms" / vm_id / "console.log").write_bytes(b"short\n")
        whole = client.get(f"/api/v1/vms/{vm_id}/console?bytes=65536").get_json()["console"]
        assert (whole["text"], whole["truncated"]) == ("short\n", False)

        for bad in ("0", "65537", "many"):
            response = client.get(f"/api/v1/vms/{vm_id}/console?bytes={bad}")
            assert response.status_code == 422 and "bytes" in response.get_json()["error"]["fields"]

        (settings.data_dir / "vms" / vm_id / "console.log").unlink()
        response = client.get(f"/api/v1/vms/{vm_id}/console")
        assert response.status_code == 404
        assert "no console log" in response.get_json()["error"]["message"]


def test_a_vm_not_on_a_host_yet_has_no_console(client):
    vm_id = create_vm(client, name="waiting", arch="arm64", emulation="native_only")["vm"]["id"]
    response = client.get(f"/api/v1/vms/{vm_id}/console")
    assert response.status_code == 409
    assert response.get_json()["error"]["fields"] == {"state": ["pending"]}
    assert client.get("/api/v1/vms/00000000-0000-0000-0000-000000000000/console").status_code == 404


def test_a_host_whose_worker_does_not_answer_is_503(client, app):
    with app.app_context():
        record_heartbeat(messages.heartbeat.load({
            "host": "silent", "arch": "amd64", "accel": "tcg", "emulators": [], "queues": ["amd64", "host.silent"],
            "cpu_modes": {}, "capacity": {"vcpus": 4, "memory_mib": 4096}, "allocated": {}, "domains": [],
            "started_at": time.time(), "at": time.time(), "networks": {"libvirt": ["archq"]},
        }))  # fmt: skip
        db.session.commit()
    vm_id = create_vm(client, name="unheard", host="silent")["vm"]["id"]
    started = time.monotonic()
    response = client.get(f"/api/v1/vms/{vm_id}/console")
    assert response.status_code == 503 and response.headers["Retry-After"]
    assert response.get_json()["error"]["code"] == "console_unavailable"
    assert time.monotonic() - started < 8
