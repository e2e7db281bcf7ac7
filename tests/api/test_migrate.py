"""Migration requests: every refusal answers 409 before anything is queued; an accepted one is a `migrate`
job on the source host's queue; the worker's reports move the VM only when libvirt says where it is."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select

from queues import attestation
from tests.support.fleet import add_vm, beat
from web.extensions import db
from web.models import Host, Job, Vm, utcnow
from web.services.jobs import record_job_update
from web.services.migrations import adopt_moved_vms, arrival_of


@pytest.fixture
def fleet(app):
    """a, b: amd64 under TCG emulating arm64; k: amd64 with KVM, no emulator; r: arm64 under TCG, no emulator."""
    with app.app_context():
        beat("a")
        beat("b")
        beat("k", accel="kvm", emulators=())
        beat("r", arch="arm64", emulators=())
        yield


def migrate(client, vm_id: str, **body):
    return client.post(f"/api/v1/vms/{vm_id}/migrate", json=body)


def jobs_count() -> int:
    return db.session.scalar(select(func.count()).select_from(Job))


def assert_refused(client, vm_id: str, code: str, **body) -> dict:
    before = jobs_count()
    response = migrate(client, vm_id, **body)
    error = response.get_json()["error"]
    assert (response.status_code, error["code"]) == (409, code), error
    assert jobs_count() == before, "a refused migration queued a job"
    return error


def test_an_accepted_migration_is_a_job_on_the_source_hosts_queue(client, fleet):
    vm_id = add_vm()
    response = migrate(client, vm_id, target_host="b")
    assert response.status_code == 202, response.get_json()
    body = response.get_json()
    assert (body["job"]["kind"], body["job"]["queue"], body["job"]["host"]) == ("migrate", "host.a", "a")
    assert body["vm"]["state"] == "migrating"
    params = db.session.get(Job, body["job"]["id"]).payload["params"]
    assert params["live"] is True and params["target"] == {"name": "b", "address": "10.0.0.1", "ssh_port": 22}
    assert_refused(client, vm_id, "already_migrating", target_host="b")


def test_without_a_target_the_least_loaded_compatible_host_is_picked(client, fleet):
    add_vm(host="b")  # b holds a VM already; k accelerates (another domain type), r is arm64
    vm_id = add_vm()
    response = migrate(client, vm_id)
    assert response.status_code == 202, response.get_json()
    assert db.session.get(Job, response.get_json()["job"]["id"]).payload["params"]["target"]["name"] == "b"
    lonely = add_vm(host="k", accel="kvm")
    error = assert_refused(client, lonely, "no_target")
    assert set(error["fields"]) == {"a", "b", "r"}


@pytest.mark.parametrize(
    ("vm", "target", "code"),
    [
        ({}, "a", "same_host"),
        ({}, "k", "target_accel_mismatch"),  # a TCG domain cannot become a KVM one
        ({"host": "k", "accel": "kvm"}, "r", "target_arch_mismatch"),  # KVM amd64 guest, arm64 host
        ({"host": "k", "accel": "kvm"}, "a", "target_accel_mismatch"),  # nor a KVM one a TCG one
        ({"host": "r", "arch": "arm64"}, "k", "target_emulator_missing"),
        ({"host": "b"}, "r", "target_emulator_missing"),  # r has no amd64 emulator
        ({"cpu_mode": "host-passthrough"}, "b", "not_live_migratable"),
        ({"state": "stopped"}, "b", "vm_not_running"),
    ],
)
def test_refusals_before_anything_is_queued(client, fleet, vm, target, code):
    vm_id = add_vm(**vm)
    assert_refused(client, vm_id, code, target_host=target)


def test_a_tcg_guest_moves_between_any_hosts_that_run_it_under_tcg(client, fleet):
    # An arm64 guest emulated on an amd64 host and one native (TCG) on an arm64 host are both type 'qemu'.
    assert migrate(client, add_vm(arch="arm64", emulated=True), target_host="r").status_code == 202
    assert migrate(client, add_vm(host="r", arch="arm64"), target_host="a").status_code == 202


def test_a_passthrough_or_stopped_vm_may_move_cold(client, fleet):
    assert migrate(client, add_vm(cpu_mode="host-passthrough"), target_host="b", live=False).status_code == 202
    assert migrate(client, add_vm(state="stopped"), target_host="b", live=False).status_code == 202


def test_a_target_that_is_down_drained_full_or_unreachable_is_refused(client, app, fleet):
    vm_id = add_vm()
    host = db.session.get(Host, "b")
    host.drained = True
    db.session.commit()
    assert_refused(client, vm_id, "target_drained", target_host="b")
    host.drained, host.last_seen = False, utcnow() - timedelta(hours=1)
    db.session.commit()
    assert_refused(client, vm_id, "target_down", target_host="b")
    beat("b", memory_mib=100)
    assert_refused(client, vm_id, "target_no_capacity", target_host="b")
    beat("b", migration={})
    assert_refused(client, vm_id, "target_not_migratable", target_host="b")
    response = migrate(client, vm_id, target_host="nowhere")
    assert response.status_code == 422


def test_a_busy_vm_or_a_vm_on_a_down_host_is_refused(client, fleet):
    vm_id = add_vm(state="stopping")
    assert_refused(client, vm_id, "wrong_state", target_host="b")
    db.session.get(Host, "a").last_seen = utcnow() - timedelta(hours=1)
    db.session.commit()
    assert_refused(client, add_vm(), "host_down", target_host="b")


def report(job_id: str, state: str, host: str = "a", **fields) -> bool:
    return record_job_update({"job_id": job_id, "state": state, "host": host, "at": time.time(), **fields})


def accepted_job(client, **vm) -> tuple[str, str]:
    vm_id = add_vm(**vm)
    return vm_id, migrate(client, vm_id, target_host="b").get_json()["job"]["id"]


def test_progress_is_recorded_without_a_transition(client, fleet):
    _vm_id, job_id = accepted_job(client)
    assert report(job_id, "running")
    events = len(client.get(f"/api/v1/jobs/{job_id}").get_json()["job"]["events"])
    progress = {"percent": 42.0, "bytes_remaining": 10, "bytes_total": 100, "phase": "copying memory"}
    assert report(job_id, "running", progress=progress)
    job = client.get(f"/api/v1/jobs/{job_id}").get_json()["job"]
    assert (job["state"], job["progress"], len(job["events"])) == ("running", progress, events)


def test_the_vm_moves_only_when_the_worker_says_where_it_is(client, fleet):
    vm_id, job_id = accepted_job(client)
    report(job_id, "running")
    assert (db.session.get(Vm, vm_id).host, db.session.get(Vm, vm_id).state) == ("a", "migrating")
    report(job_id, "succeeded", result={"host": "b", "state": "running"})
    assert (db.session.get(Vm, vm_id).host, db.session.get(Vm, vm_id).state) == ("b", "running")

    # Failed after libvirt started: recorded where the worker found the domain.
    vm_id, job_id = accepted_job(client)
    report(job_id, "failed", result={"host": "a", "state": "running"}, error={"code": "migration_failed",
                                                                              "message": "x"})  # fmt: skip
    assert (db.session.get(Vm, vm_id).host, db.session.get(Vm, vm_id).state) == ("a", "running")

    # No location report (a worker timeout): unknown until a heartbeat says where it runs.
    vm_id, job_id = accepted_job(client)
    report(job_id, "failed", error={"code": "timeout", "message": "x"})
    assert (db.session.get(Vm, vm_id).host, db.session.get(Vm, vm_id).state) == ("a", "unknown")


def test_the_location_check_records_a_vm_where_it_runs(client, fleet):
    vm_id = add_vm(host="a")
    beat("a", domains=[])
    beat("b", domains=[{"uuid": vm_id, "name": "x", "state": "running", "reason": ""}])
    assert adopt_moved_vms(db.session.get(Host, "b")) == 1
    assert (db.session.get(Vm, vm_id).host, db.session.get(Vm, vm_id).state) == ("b", "running")
    # Reported running on both: nothing is decided from heartbeats.
    beat("a", domains=[{"uuid": vm_id, "name": "x", "state": "running", "reason": ""}])
    assert adopt_moved_vms(db.session.get(Host, "a")) == 0
    assert db.session.get(Vm, vm_id).host == "b"


def signed(key: Ed25519PrivateKey, job: Job, host: str, operation: str, domain_xml: str | None) -> dict:
    """The record a worker on `host` would sign for `job` (workers/attest.py), linked to the job's chain head."""
    params = job.payload["params"]
    details = {k: v for k, v in params.items() if isinstance(v, str | int | bool)}
    if isinstance(params.get("target"), dict):
        details["target"] = params["target"]["name"]
    return attestation.sign(
        key,
        {
            "format": attestation.FORMAT,
            "vm_id": job.vm_id,
            "operation": operation,
            "job_id": job.id,
            "host": host,
            "key": attestation.public_key_text(key.public_key()),
            "at": "2026-12-02T16:00:00.000000+00:00",
            "qemu_version": "7.2.0",
            "libvirt_version": "9.0.0",
            "accel": "tcg",
            "artifacts_sha256": {},
            "base_sha256": None,
            "domain_xml_sha256": attestation.sha256_hex(domain_xml) if domain_xml else None,
            "prev": job.payload["chain_head"],
            "details": details,
        },
    )


def arrivals(vm_id: str) -> list[Job]:
    return list(db.session.scalars(select(Job).where(Job.vm_id == vm_id, Job.kind == "migrate_in")))


def test_a_succeeded_migration_has_its_target_sign_the_arrival_once(client, fleet):
    keys = {name: Ed25519PrivateKey.generate() for name in ("a", "b")}
    for name, key in keys.items():
        db.session.get(Host, name).signing_keys = [attestation.public_key_text(key.public_key())]
    db.session.commit()
    vm_id, job_id = accepted_job(client)
    migration = db.session.get(Job, job_id)
    out = signed(keys["a"], migration, "a", "migrate_out", None)
    assert report(job_id, "succeeded", result={"host": "b", "state": "running"}, attestation=out)

    # One pending job on the target's queue, linked after the source's record, published by the conductor.
    [arrival] = arrivals(vm_id)
    assert (arrival.state, arrival.queue, arrival.host, arrival.task) == (
        "pending",
        "host.b",
        "b",
        "archq.vm.migrate_in",
    )
    assert arrival.payload["chain_head"] == attestation.record_hash(out["payload"])
    assert arrival.payload["params"] == {"from_host": "a", "migrate_job": job_id}
    assert arrival_of(job_id) == arrival.id
    assert any(f"job {arrival.id}" in e.message for e in migration.events)
    # A repeated report (the worker's retry, the recovery sweep) makes no second one.
    assert not report(job_id, "succeeded", result={"host": "b", "state": "running"}, attestation=out)
    assert len(arrivals(vm_id)) == 1
    # Until it ends the VM takes no other job: its records stay one chain.
    busy = client.post(f"/api/v1/vms/{vm_id}/stop")
    assert (busy.status_code, busy.get_json()["error"]["code"]) == (409, "vm_busy")

    # b signs with its own key; the VM stays what the migration left.
    assert report(arrival.id, "succeeded", host="b", result={"host": "b", "state": "running"},
                  attestation=signed(keys["b"], arrival, "b", "migrate_in", "<domain/>"))  # fmt: skip
    vm = db.session.get(Vm, vm_id)
    assert (vm.host, vm.state, arrival_of(job_id)) == ("b", "running", None)
    chain = client.get(f"/api/v1/vms/{vm_id}/attestations").get_json()
    assert [(r["payload"]["operation"], r["payload"]["host"]) for r in chain["records"]] == [
        ("migrate_out", "a"),
        ("migrate_in", "b"),
    ]
    assert attestation.verify_chain(vm_id, chain["records"], chain["keys"]) == []
    assert chain["unattested_jobs"] == []
    assert client.post(f"/api/v1/vms/{vm_id}/stop").status_code == 202


def test_an_arrival_signed_by_the_source_is_refused_and_a_failed_one_changes_nothing(client, fleet):
    key = Ed25519PrivateKey.generate()
    db.session.get(Host, "a").signing_keys = [attestation.public_key_text(key.public_key())]
    db.session.get(Host, "b").signing_keys = [attestation.public_key_text(Ed25519PrivateKey.generate().public_key())]
    db.session.commit()
    vm_id, job_id = accepted_job(client)
    report(job_id, "succeeded", result={"host": "b", "state": "running"})
    [arrival] = arrivals(vm_id)
    # Reported by b but signed with a's key: b's key is the only one trusted for b.
    report(arrival.id, "succeeded", host="b", attestation=signed(key, arrival, "b", "migrate_in", "<domain/>"))
    assert any("attestation refused" in e.message for e in arrival.events)
    chain = client.get(f"/api/v1/vms/{vm_id}/attestations").get_json()
    assert chain["records"] == [] and chain["unattested_jobs"] == [job_id, arrival.id]

    vm_id, job_id = accepted_job(client)
    report(job_id, "succeeded", result={"host": "b", "state": "running"})
    [arrival] = arrivals(vm_id)
    report(arrival.id, "failed", host="b", error={"code": "domain_missing", "message": "not here"})
    assert (db.session.get(Vm, vm_id).host, db.session.get(Vm, vm_id).state) == ("b", "running")

    # A migration that failed, or ended with the VM still on its source, has no arrival to sign.
    vm_id, job_id = accepted_job(client)
    report(job_id, "failed", result={"host": "a", "state": "running"}, error={"code": "x", "message": "x"})
    assert arrivals(vm_id) == []
