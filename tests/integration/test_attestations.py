"""Attestations through the real stack on the libvirt test driver: each operation a worker completes adds a record
its host signed to the VM's chain, the chain verifies offline, and an edited stored record is caught and named."""

from __future__ import annotations

import json

from click.testing import CliRunner
from sqlalchemy import select

from client.cli import main as cli
from queues import attestation
from tests.support.api import create_vm, wait_host, wait_job
from tests.support.services import wait_for
from web.extensions import db
from web.models import Attestation, Host
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
