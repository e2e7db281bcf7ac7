"""Re-homing emulated VMs: an emulated VM offers a live native host of its arch (`rehome_available`,
`rehome_target`), POST /vms/<id>/rehome queues a cold migrate whose worker report turns the VM native, and
`rehome: "auto"` queues it when a stop succeeds."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import func, select

from tests.support.fleet import add_vm, beat
from web.extensions import db
from web.models import Job, Vm
from web.services.jobs import record_job_update
from web.services.rehome import rehome_after_stop


@pytest.fixture
def fleet(app):
    """x: amd64 with KVM emulating arm64 under TCG."""
    with app.app_context():
        beat("x", accel="kvm")
        yield


def emulated_vm(**fields) -> str:
    return add_vm(host="x", arch="arm64", accel="tcg", emulated=True, **fields)


def shown(client, vm_id: str) -> dict:
    return client.get(f"/api/v1/vms/{vm_id}").get_json()["vm"]


def report(job_id: str, state: str, host: str, **fields) -> bool:
    return record_job_update({"job_id": job_id, "state": state, "host": host, "at": time.time(), **fields})


def test_the_offer_appears_when_a_native_host_joins_and_goes_with_it(client, fleet):
    vm_id = emulated_vm()
    assert (shown(client, vm_id)["rehome_available"], shown(client, vm_id)["rehome_target"]) == (False, None)
    refused = client.post(f"/api/v1/vms/{vm_id}/rehome")
    assert (refused.status_code, refused.get_json()["error"]["code"]) == (409, "no_native_host")
    beat("arm", arch="arm64", accel="kvm", emulators=())
    vm = shown(client, vm_id)
    assert (vm["rehome_available"], vm["rehome_target"], vm["rehome"]) == (True, "arm", "manual")
    # A native VM is offered nothing, and an arm64 host full for this VM is not a target.
    assert shown(client, add_vm(host="x", accel="kvm"))["rehome_available"] is False
    beat("arm", arch="arm64", accel="kvm", emulators=(), memory_mib=64)
    assert shown(client, vm_id)["rehome_available"] is False


def test_rehome_is_a_cold_migrate_that_leaves_the_vm_native(client, fleet):
    beat("arm", arch="arm64", accel="kvm", emulators=())
    vm_id = emulated_vm(cpu_mode_effective="custom:cortex-a57")
    response = client.post(f"/api/v1/vms/{vm_id}/rehome")
    assert response.status_code == 202, response.get_json()
    job = db.session.get(Job, response.get_json()["job"]["id"])
    assert (job.kind, job.queue) == ("migrate", "host.x")
    params = job.payload["params"]
    assert params["live"] is False and params["target"]["name"] == "arm"
    assert params["rehome"] == {"host": "arm", "accel": "kvm", "domain_type": "kvm", "cpu_mode": "host-model"}
    assert "not supported by QEMU" in job.events[0].message
    report(job.id, "running", "x")
    report(job.id, "succeeded", "x", result={"host": "arm", "state": "running", "cpu_mode_effective": "host-model"})
    vm = shown(client, vm_id)
    assert (vm["host"], vm["state"], vm["emulated"], vm["accel"]) == ("arm", "running", False, "kvm")
    assert (vm["cpu_mode_effective"], vm["cpu_mode_note"], vm["emulation_warning"]) == ("host-model", "", "")
    # The native host signs the arrival of the VM as it now is there.
    arrival = db.session.scalar(select(Job).where(Job.vm_id == vm_id, Job.kind == "migrate_in"))
    assert (arrival.queue, arrival.payload["vm"]["emulated"], arrival.payload["params"]["from_host"]) == (
        "host.arm",
        False,
        "x",
    )
    again = client.post(f"/api/v1/vms/{vm_id}/rehome")
    assert (again.status_code, again.get_json()["error"]["code"]) == (409, "not_emulated")


def test_a_failed_rehome_leaves_the_vm_emulated_where_it_is(client, fleet):
    beat("arm", arch="arm64", accel="kvm", emulators=())
    vm_id = emulated_vm()
    job_id = client.post(f"/api/v1/vms/{vm_id}/rehome").get_json()["job"]["id"]
    report(job_id, "failed", "x", result={"host": "x", "state": "running"},
           error={"code": "migration_failed", "message": "x"})  # fmt: skip
    vm = db.session.get(Vm, vm_id)
    assert (vm.host, vm.emulated, vm.accel) == ("x", True, "tcg")


def test_auto_rehome_is_queued_when_a_stop_succeeds(client, app, fleet):
    beat("arm", arch="arm64", accel="kvm", emulators=())
    manual, auto = emulated_vm(), emulated_vm(rehome="auto")
    stops = {}
    for vm_id in (manual, auto):
        stops[vm_id] = client.post(f"/api/v1/vms/{vm_id}/stop").get_json()["job"]["id"]
        report(stops[vm_id], "running", "x")
        report(stops[vm_id], "succeeded", "x", result={"state": "stopped"})
    settings = app.extensions["archq"].settings
    assert rehome_after_stop(stops[manual], settings) is None
    moving = rehome_after_stop(stops[auto], settings)
    job = db.session.get(Job, moving)
    assert (job.events[0].actor, job.payload["params"]["rehome"]["host"]) == ("rehome:auto", "arm")
    # A redelivered report does not queue it twice: the VM is busy with the re-home.
    assert rehome_after_stop(stops[auto], settings) is None
    assert db.session.scalar(select(func.count()).select_from(Job).where(Job.vm_id == auto)) == 2
