"""Attestations through the real stack on the libvirt test driver: each operation a worker completes adds a record
its host signed to the VM's chain, the chain verifies offline, and an edited stored record is caught and named."""

from __future__ import annotations

import json
import time

from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select

from client.cli import main as cli
from client.commands import wait_for_arrival
from client.http import ApiClient
from queues import attestation, messages
from queues.names import CONTROL, Task
from tests.support.api import create_vm, wait_host, wait_job
from tests.support.fleet import beat
from tests.support.live_api import live_api  # noqa: F401  (a fixture)
from tests.support.services import wait_for
from web.extensions import db
from web.models import Attestation, Host, Vm
from web.services.migrations import queue_migrate
from workers.attest import signing_key_path


def act(client, method: str, path: str, **body) -> dict:
    response = client.open(path, method=method, json=body or None)
    assert response.status_code == 202, response.get_json()
    job = wait_job(client, response.get_json()["job"]["id"])
    assert job["state"] == "succeeded", job
    return job


def chain_of(client, vm_id: str) -> dict:
    response = client.get(f"/api/v1/vms/{vm_id}/attestations")
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def verify_offline(chain: dict, tmp_path) -> tuple[int, str]:
    """`archq vm attest verify --file`: no API, only the exported chain."""
    path = tmp_path / "chain.json"
    path.write_text(json.dumps(chain))
    result = CliRunner().invoke(cli, ["vm", "attest", "verify", "--file", str(path)])
    return result.exit_code, result.output


def test_a_vms_life_is_a_verified_chain_and_an_edit_is_named(client, conductor, hypervisor_worker, tmp_path):
    with hypervisor_worker("amd64-host") as service:
        host = wait_host(client, "amd64-host")
        key = attestation.public_key_text(service.runner.ctx.signing_key.public_key())
        assert host["signing_key"] == {"fingerprint": attestation.fingerprint(key), "offered": None}

        accepted = create_vm(client, name="attested")
        vm_id = accepted["vm"]["id"]
        jobs = [wait_job(client, accepted["job"]["id"])]
        assert jobs[0]["state"] == "succeeded", jobs[0]
        jobs.append(act(client, "POST", f"/api/v1/vms/{vm_id}/stop"))
        jobs.append(act(client, "POST", f"/api/v1/vms/{vm_id}/snapshots", name="s1", memory=False))
        jobs.append(act(client, "POST", f"/api/v1/vms/{vm_id}/snapshots/s1/revert"))
        jobs.append(act(client, "DELETE", f"/api/v1/vms/{vm_id}/snapshots/s1"))
        jobs.append(act(client, "POST", f"/api/v1/vms/{vm_id}/start"))
        jobs.append(act(client, "POST", f"/api/v1/vms/{vm_id}/reboot"))
        jobs.append(act(client, "DELETE", f"/api/v1/vms/{vm_id}"))

    chain = chain_of(client, vm_id)
    records = chain["records"]
    assert [r["payload"]["operation"] for r in records] == [
        "create",
        "stop",
        "snapshot",
        "revert",
        "snapshot_delete",
        "start",
        "reboot",
        "delete",
    ]
    assert [r["payload"]["job_id"] for r in records] == [j["id"] for j in jobs]
    assert chain["keys"] == {"amd64-host": [key]}
    first, last = records[0]["payload"], records[-1]["payload"]
    assert (first["host"], first["accel"], first["libvirt_version"], first["prev"]) == (
        "amd64-host",
        "tcg",
        "9.0.0",
        None,
    )
    assert first["domain_xml_sha256"] and last["domain_xml_sha256"] is None  # the delete left no domain
    assert records[2]["payload"]["details"] == {"snapshot": "s1", "memory": False}
    assert attestation.verify_chain(vm_id, records, chain["keys"]) == []
    assert chain["unattested_jobs"] == []
    assert verify_offline(chain, tmp_path)[0] == 0

    # Someone with database access rewrites what the second record says happened.
    with client.application.app_context():
        row = db.session.scalar(select(Attestation).where(Attestation.vm_id == vm_id, Attestation.seq == 1))
        row.payload = row.payload.replace('"operation":"stop"', '"operation":"reboot"')
        db.session.commit()
    tampered = chain_of(client, vm_id)
    problems = attestation.verify_chain(vm_id, tampered["records"], tampered["keys"])
    # The edited record: its signature and its stored hash; the next one: its link.
    assert [(p.index, p.job_id) for p in problems] == [(1, jobs[1]["id"])] * 2 + [(2, jobs[2]["id"])]
    assert "signature does not match" in problems[0].message
    code, output = verify_offline(tampered, tmp_path)
    assert code == 1 and f"record 1 (job {jobs[1]['id']})" in output and "chain NOT verified" in output


def test_the_target_signs_the_arrival_of_a_migration_with_its_own_key(
    client,
    conductor,
    hypervisor_worker,
    live_api,  # noqa: F811
    tmp_path,
):
    """A VM that moved from h0 (its source, which signed `migrate_out`) to amd64-host: when the conductor records
    the migration, it queues the target's `migrate_in` job; the target's real worker signs the arrival with its
    own key, hashing the domain as it stands there, and later operations there link after it."""
    source_key = Ed25519PrivateKey.generate()
    with hypervisor_worker("amd64-host") as service:
        wait_host(client, "amd64-host")
        accepted = create_vm(client, name="arriving")
        vm_id = accepted["vm"]["id"]
        assert wait_job(client, accepted["job"]["id"])["state"] == "succeeded"
        # Rewind: the VM is recorded on h0, about to move to amd64-host (where its domain already is).
        with client.application.app_context():
            beat("h0")
            db.session.get(Host, "h0").signing_keys = [attestation.public_key_text(source_key.public_key())]
            vm = db.session.get(Vm, vm_id)
            vm.host = "h0"
            _vm, job = queue_migrate(vm, db.session.get(Host, "amd64-host"), {"live": True}, "migrate", "test")
            migration = {"id": job.id, "head": job.payload["chain_head"]}
        departure = attestation.sign(
            source_key,
            {
                **chain_of(client, vm_id)["records"][0]["payload"],
                "operation": "migrate_out",
                "job_id": migration["id"],
                "host": "h0",
                "key": attestation.public_key_text(source_key.public_key()),
                "domain_xml_sha256": None,
                "prev": migration["head"],
                "details": {"live": True, "target": "amd64-host", "from_host": "h0", "from_state": "running"},
            },
        )
        # h0's worker reports the success through the broker, as a worker does.
        celery = client.application.extensions["archq"].celery
        for state in ("running", "succeeded"):
            update = {"job_id": migration["id"], "state": state, "host": "h0", "at": time.time(),
                      "result": {"host": "amd64-host", "state": "running"} if state == "succeeded" else {},
                      "attestation": departure if state == "succeeded" else None}  # fmt: skip
            celery.send_task(Task.JOB_UPDATE, kwargs={"update": messages.job_update.dump(update)}, queue=CONTROL)
        migrated = wait_job(client, migration["id"])
        assert migrated["state"] == "succeeded", migrated
        # Found and waited for as `archq vm migrate --wait` does, through the API.
        arrival = wait_for_arrival(ApiClient(live_api.url, live_api.operator_token), migrated, timeout=30)
        assert arrival is not None and arrival["state"] == "succeeded", arrival
        assert (arrival["queue"], arrival["host"]) == ("host.amd64-host", "amd64-host")
        assert any(f"job {arrival['id']}" in e["message"] for e in migrated["events"])
        defined = service.runner.ctx.hypervisor.xml_desc(vm_id, inactive=True)
        stop = act(client, "POST", f"/api/v1/vms/{vm_id}/stop")
        target_key = attestation.public_key_text(service.runner.ctx.signing_key.public_key())

    chain = chain_of(client, vm_id)
    records = chain["records"]
    assert [(r["payload"]["operation"], r["payload"]["host"], r["payload"]["job_id"]) for r in records] == [
        ("create", "amd64-host", accepted["job"]["id"]),
        ("migrate_out", "h0", migration["id"]),
        ("migrate_in", "amd64-host", arrival["id"]),
        ("stop", "amd64-host", stop["id"]),
    ]
    arrived = records[2]["payload"]
    assert arrived["key"] == target_key and arrived["prev"] == records[1]["hash"]
    assert arrived["domain_xml_sha256"] == attestation.sha256_hex(defined)
    assert arrived["details"] == {"from_host": "h0", "migrate_job": migration["id"]}
    assert chain["keys"]["h0"] == [attestation.public_key_text(source_key.public_key())]
    assert chain["keys"]["amd64-host"] == [target_key]
    assert attestation.verify_chain(vm_id, records, chain["keys"]) == [] and chain["unattested_jobs"] == []
    code, output = verify_offline(chain, tmp_path)
    assert code == 0 and "4 record(s)" in output, output


def test_a_changed_host_key_is_refused_until_an_admin_trusts_it(client, conductor, hypervisor_worker, settings):
    with hypervisor_worker("amd64-host"):
        wait_host(client, "amd64-host")
        accepted = create_vm(client, name="before")
        before = accepted["vm"]["id"]
        assert wait_job(client, accepted["job"]["id"])["state"] == "succeeded"
    # The host comes back with a new key (its state directory was rebuilt, or someone else runs as it).
    signing_key_path(settings.data_dir, "amd64-host").unlink()
    with hypervisor_worker("amd64-host") as service:
        offered = attestation.fingerprint(attestation.public_key_text(service.runner.ctx.signing_key.public_key()))

        def flagged() -> bool:
            return client.get("/api/v1/hosts/amd64-host").get_json()["host"]["signing_key"]["offered"] == offered

        wait_for(flagged, timeout=15, what="the new key flagged")
        accepted = create_vm(client, name="after")
        after = accepted["vm"]["id"]
        create = wait_job(client, accepted["job"]["id"])
        assert create["state"] == "succeeded", create
        assert any("attestation refused" in e["message"] for e in create["events"]), create["events"]
        assert chain_of(client, after)["records"] == []
        assert chain_of(client, after)["unattested_jobs"] == [create["id"]]

        wrong = client.post("/api/v1/hosts/amd64-host/trust-key", json={"fingerprint": "SHA256:" + "A" * 43})
        assert wrong.status_code == 409 and wrong.get_json()["error"]["code"] == "fingerprint_mismatch"
        trusted = client.post("/api/v1/hosts/amd64-host/trust-key", json={"fingerprint": offered})
        assert trusted.status_code == 200, trusted.get_json()
        assert trusted.get_json()["host"]["signing_key"] == {"fingerprint": offered, "offered": None}
        act(client, "POST", f"/api/v1/vms/{after}/stop")

    # The refused create is missing from the chain (visibly: it starts at the stop); the old key still verifies
    # the records it signed.
    chain = chain_of(client, after)
    assert [r["payload"]["operation"] for r in chain["records"]] == ["stop"]
    assert chain["unattested_jobs"] == [create["id"]]
    assert attestation.verify_chain(after, chain["records"], chain["keys"]) == []
    old = chain_of(client, before)
    assert len(old["keys"]["amd64-host"]) == 2
    assert attestation.verify_chain(before, old["records"], old["keys"]) == []
    with client.application.app_context():
        assert db.session.get(Host, "amd64-host").offered_signing_key is None
