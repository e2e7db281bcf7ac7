"""A create's `cpu_mode` is checked against what its host reports from libvirt's domain capabilities: a
pinned host that cannot give the mode is 422, a fleet whose accelerated hosts all lack it is 409; under
TCG archq uses a named model anyway, so TCG hosts accept any mode."""

from __future__ import annotations

import time

import pytest

from queues import messages
from tests.support.api import TINY
from web.extensions import db
from web.services.hosts import record_heartbeat


def beat(name: str, accel: str, modes: list[str], arch: str = "amd64") -> dict:
    return messages.heartbeat.load({
        "host": name, "arch": arch, "accel": accel, "emulators": [], "queues": [arch, f"host.{name}"],
        "cpu_modes": {arch: modes}, "capacity": {"vcpus": 8, "memory_mib": 8192, "disk_mib": 10000},
        "allocated": {}, "domains": [], "started_at": time.time(), "at": time.time(),
        "networks": {"libvirt": ["archq"]},
    })  # fmt: skip


@pytest.fixture
def fleet(app):
    def add(*beats: dict) -> None:
        with app.app_context():
            for b in beats:
                record_heartbeat(b)
            db.session.commit()

    return add


def test_a_pinned_kvm_host_without_the_mode_is_422_with_its_modes(client, fleet):
    fleet(beat("kvm1", "kvm", ["host-model", "custom"]))
    response = client.post("/api/v1/vms", json={**TINY, "cpu_mode": "host-passthrough", "host": "kvm1"})
    assert response.status_code == 422, response.get_json()
    error = response.get_json()["error"]
    assert error["code"] == "cpu_mode_unsupported"
    assert "host-model, custom" in error["fields"]["cpu_mode"][0]


def test_a_fleet_whose_kvm_hosts_all_lack_the_mode_is_409(client, fleet):
    fleet(beat("kvm1", "kvm", ["host-model"]), beat("kvm2", "kvm", ["host-model", "custom"]))
    response = client.post("/api/v1/vms", json={**TINY, "cpu_mode": "host-passthrough"})
    assert response.status_code == 409
    assert "kvm1, kvm2 do not" in response.get_json()["error"]["message"]
    assert client.post("/api/v1/vms", json={**TINY, "cpu_mode": "host-model"}).status_code == 202


def test_one_kvm_host_with_the_mode_is_enough(client, fleet):
    fleet(beat("kvm1", "kvm", ["host-model"]), beat("kvm2", "kvm", ["host-model", "host-passthrough"]))
    assert client.post("/api/v1/vms", json={**TINY, "cpu_mode": "host-passthrough"}).status_code == 202


def test_a_placed_create_on_a_host_without_the_mode_is_409(client, fleet):
    fleet(beat("kvm1", "kvm", ["host-model"]))
    body = {**TINY, "cpu_mode": "host-passthrough", "placement": "least_loaded"}
    response = client.post("/api/v1/vms", json=body)
    assert response.status_code == 409 and response.get_json()["error"]["code"] == "cpu_mode_unsupported"


def test_tcg_hosts_take_any_mode(client, fleet):
    fleet(beat("tcg1", "tcg", ["custom"]))
    response = client.post("/api/v1/vms", json={**TINY, "cpu_mode": "host-passthrough", "host": "tcg1"})
    assert response.status_code == 202
    assert response.get_json()["vm"]["cpu_mode"] == "host-passthrough"
