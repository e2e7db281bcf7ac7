"""A VM's own TCG CPU (`tcg_cpu`): only the configurations the admin allows (ARCHQ_TCG_CPUS_ALLOWED), for the
VM's arch; it travels to the worker in the job, and the VM's note says the CPU is its override."""

from __future__ import annotations

import dataclasses

import pytest

from queues.config import SettingError, Settings
from tests.support.api import TINY
from tests.support.fleet import beat
from web.extensions import db
from web.models import Job, Vm

PAUTH = "maximum,pauth-impdef=on"
ARM = {**TINY, "arch": "arm64"}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, tcg_cpus_allowed=(PAUTH,))


@pytest.fixture
def fleet(app):
    with app.app_context():
        beat("x", accel="kvm")
        yield


def refused(client, body: dict) -> str:
    response = client.post("/api/v1/vms", json=body)
    assert response.status_code == 422, response.get_json()
    return response.get_json()["error"]["code"]


def test_an_allowed_tcg_cpu_reaches_the_worker_and_the_vm_says_so(client, fleet):
    preview = client.post("/api/v1/vms/preview", json={**ARM, "tcg_cpu": PAUTH}).get_json()["preview"]
    assert PAUTH in preview["cpu_mode_note"] and "admin-approved" in preview["cpu_mode_note"]
    response = client.post("/api/v1/vms", json={**ARM, "tcg_cpu": PAUTH})
    assert response.status_code == 202, response.get_json()
    body = response.get_json()
    assert body["vm"]["tcg_cpu"] == PAUTH
    assert db.session.get(Job, body["job"]["id"]).payload["vm"]["tcg_cpu"] == PAUTH
    vm = db.session.get(Vm, body["vm"]["id"])
    vm.cpu_mode_effective = PAUTH  # as the worker reports it from the domain XML
    db.session.commit()
    shown = client.get(f"/api/v1/vms/{vm.id}").get_json()["vm"]
    assert shown["cpu_mode_effective"] == PAUTH
    assert "admin-approved tcg_cpu" in shown["cpu_mode_note"] and PAUTH in shown["cpu_mode_note"]


def test_other_tcg_cpus_are_refused(client, fleet):
    assert refused(client, {**ARM, "tcg_cpu": "maximum"}) == "tcg_cpu_not_allowed"
    assert refused(client, {**ARM, "tcg_cpu": "custom:qemu64"}) == "tcg_cpu_unknown"  # an amd64 model
    assert refused(client, {**ARM, "tcg_cpu": "custom:neoverse-v9"}) == "tcg_cpu_unknown"


def test_the_allowed_list_names_only_known_configurations(monkeypatch):
    monkeypatch.setenv("ARCHQ_TCG_CPUS_ALLOWED", f"{PAUTH} custom:qemu64")
    assert Settings.from_env().tcg_cpus_allowed == (PAUTH, "custom:qemu64")
    monkeypatch.setenv("ARCHQ_TCG_CPUS_ALLOWED", "max")
    with pytest.raises(SettingError, match="unknown max"):
        Settings.from_env()
