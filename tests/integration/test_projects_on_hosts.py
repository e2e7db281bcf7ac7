"""Projects on a real worker (libvirt test driver, conductor, Redis): two projects' VMs of one name run side
by side on one host, an emulated VM counts against the emulated limit, and a delete that succeeds on the host
gives the VM's share of the quota back."""

from __future__ import annotations

import libvirt

from tests.support.api import TINY, create_vm, error_of, wait_host, wait_job
from tests.support.auth import authed_client
from web.services import tokens


def domain_names() -> set[str]:
    conn = libvirt.open("test:///default")
    try:
        return {domain.name() for domain in conn.listAllDomains()}
    finally:
        conn.close()


def usage(client, project: str) -> dict:
    return client.get(f"/api/v1/projects/{project}/usage").get_json()["usage"]["used"]


def test_projects_share_a_host_and_a_delete_frees_the_quota(app, client, conductor, hypervisor_worker):
    client.post("/api/v1/projects", json={"name": "blue", "quota": {"vms": 2, "emulated": 0}})
    with app.app_context():
        blue = authed_client(app, tokens.create_token("blue-operator", "operator", "blue")[1])
    with hypervisor_worker("amd64-host"):
        wait_host(client, "amd64-host")
        theirs = create_vm(client, name="web")
        mine = create_vm(blue, name="web")
        for accepted in (theirs, mine):
            assert wait_job(client, accepted["job"]["id"])["state"] == "succeeded"
        # `default` keeps plain domain names; another project's are qualified by the project.
        assert {"archq-web", "archq-blue.web"} <= domain_names()

        # arm64 on this amd64 host is emulated: blue may run none.
        arm = {**TINY, "name": "arm", "arch": "arm64"}
        error = error_of(blue.post("/api/v1/vms", json=arm), 409)
        assert error["code"] == "quota_exceeded" and "emulated" in error["fields"], error
        client.patch("/api/v1/projects/blue/quota", json={"emulated": 1})
        emulated = create_vm(blue, **arm)
        assert emulated["vm"]["emulated"] is True
        assert wait_job(client, emulated["job"]["id"])["state"] == "succeeded"
        assert usage(client, "blue") == {"vms": 2, "vcpus": 2, "memory_mib": 256, "emulated": 1}
        assert error_of(blue.post("/api/v1/vms", json={**TINY, "name": "third"}), 409)["code"] == "quota_exceeded"

        # Held while the delete runs; given back when the host says it is done.
        deletion = blue.delete(f"/api/v1/vms/{mine['vm']['id']}")
        assert deletion.status_code == 202
        assert wait_job(client, deletion.get_json()["job"]["id"])["state"] == "succeeded"
        assert "archq-blue.web" not in domain_names() and "archq-web" in domain_names()
        assert usage(client, "blue") == {"vms": 1, "vcpus": 1, "memory_mib": 128, "emulated": 1}
        third = create_vm(blue, name="third")
        for vm_id in (theirs["vm"]["id"], emulated["vm"]["id"], third["vm"]["id"]):
            job = client.delete(f"/api/v1/vms/{vm_id}").get_json()["job"]
            wait_job(client, job["id"])
        assert usage(client, "blue") == {"vms": 0, "vcpus": 0, "memory_mib": 0, "emulated": 0}
