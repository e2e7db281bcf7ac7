"""What a create says about the guest's network and first boot: defaults a user can rely on, normal forms,
secrets never echoed, and bad input refused with the field named before anything is queued."""

from __future__ import annotations

import hashlib
import subprocess

import pytest

from queues.networks import mac_for
from tests.support.api import TINY, error_of, wait_host, wait_job
from tests.support.services import wait_for
from web.extensions import db
from web.models import Image


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Real keys made by ssh-keygen: public lines by type, and a private key's text."""
    tmp = tmp_path_factory.mktemp("keys")
    made = {}
    for kind, extra in (("ed25519", []), ("ecdsa", []), ("rsa", ["-b", "3072"]), ("rsa1024", ["-b", "1024"])):
        path = tmp / kind
        key_type = "rsa" if kind.startswith("rsa") else kind
        subprocess.run(["ssh-keygen", "-q", "-t", key_type, *extra, "-N", "", "-C", f"{kind}@laptop", "-f", str(path)])
        made[kind] = path.with_suffix(".pub").read_text().strip()
    made["private"] = (tmp / "ed25519").read_text()
    return made


def create(client, **fields):
    return client.post("/api/v1/vms", json={**TINY, **fields})


def test_a_vm_gets_a_nat_nic_with_a_mac_from_its_id_and_its_name_as_hostname(client):
    vm = create(client, name="web-1").get_json()["vm"]
    assert vm["network"] == {"mode": "nat", "network": "archq"}
    assert vm["mac"] == mac_for(vm["id"]) and vm["mac"].startswith("52:54:")
    assert vm["hostname"] == "web-1"
    assert (vm["addresses"], vm["addresses_at"], vm["ssh_host_keys"]) == ([], None, [])


def test_a_vm_may_ask_for_no_nic(client):
    vm = create(client, network={"mode": "none"}).get_json()["vm"]
    assert vm["network"] == {"mode": "none"} and vm["mac"] is None


def test_keys_are_kept_in_normal_form_and_user_data_only_as_its_digest(client, keys):
    user_data = "#cloud-config\npackages: [htop]\nwrite_files:\n  - path: /etc/secret\n    content: hunter2\n"
    response = create(
        client, ssh_authorized_keys=[f"  {keys['ed25519']}  ", keys["rsa"]], user_data=user_data, hostname="Build-01"
    )
    assert response.status_code == 202, response.get_json()
    vm = response.get_json()["vm"]
    assert vm["ssh_authorized_keys"] == [keys["ed25519"], keys["rsa"]]
    assert vm["hostname"] == "build-01"
    assert vm["user_data"] == {"sha256": hashlib.sha256(user_data.encode()).hexdigest(), "size": len(user_data)}
    for path in (f"/api/v1/vms/{vm['id']}", "/api/v1/vms", f"/api/v1/jobs/{response.get_json()['job']['id']}"):
        assert "hunter2" not in client.get(path).get_data(as_text=True)


def test_a_script_is_user_data_too(client):
    response = create(client, user_data="#!/bin/sh\necho hello > /root/hello\n")
    assert response.status_code == 202, response.get_json()


BAD_INPUT = [
    ("ssh_authorized_keys", ["ssh-ed25519 AAAAnot-base64!!"], "base64"),
    ("ssh_authorized_keys", ["ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIN9rAHOaAvs0F5KjxR2tzHRwDTisIfAiVtk0shauVAos"], "type"),
    ("ssh_authorized_keys", ["ssh-dss AAAAB3NzaC1kc3MAAACBAP== old@box"], "DSA"),
    ("ssh_authorized_keys", "ssh-ed25519 AAAA", "Not a valid list"),
    ("user_data", "#cloud-config\n" + "a" * (64 * 1024), "64 KiB"),
    ("user_data", "packages: [htop]\n", "#cloud-config"),
    ("user_data", "#cloud-config\n: : [\n", "YAML"),
    ("hostname", "-bad-", "hostname"),
    ("hostname", "a" * 64, "63"),
    ("network", {"mode": "vlan"}, "Must be one of"),
    ("network", {"mode": "bridge"}, "required with mode bridge"),
    ("network", {"mode": "nat", "bridge": "br0"}, "not used with mode nat"),
    ("network", {"mode": "bridge", "bridge": "br0; reboot"}, "interface name"),
    ("disk_gib", 0, "between 1 and"),
]


@pytest.mark.parametrize(("field", "value", "fragment"), BAD_INPUT)
def test_bad_guest_input_is_422_naming_the_field_and_queues_nothing(client, field, value, fragment):
    error = error_of(create(client, **{field: value}), 422)
    assert error["code"] == "validation_failed"
    assert fragment in str(error["fields"][field]), error
    assert client.get("/api/v1/jobs").get_json()["jobs"] == []


@pytest.mark.parametrize("kind", ["rsa1024", "private"])
def test_weak_or_private_keys_are_refused(client, keys, kind):
    error = error_of(create(client, ssh_authorized_keys=[keys[kind]]), 422)
    assert "ssh_authorized_keys" in error["fields"]


def test_user_data_of_exactly_64_kib_is_accepted(client):
    header = "#!/bin/sh\n"
    response = create(client, user_data=header + "#" * (64 * 1024 - len(header)))
    assert response.status_code == 202, response.get_json()


def test_a_bridge_no_live_host_has_is_409_before_queueing(client, conductor, hypervisor_worker):
    with hypervisor_worker("amd64-host"):
        wait_host(client, "amd64-host")
        error = error_of(create(client, network={"mode": "bridge", "bridge": "br-nowhere"}), 409)
        assert error["code"] == "bridge_unavailable"
        assert "br-nowhere" in error["message"] and "network" in error["fields"]
        assert client.get("/api/v1/jobs").get_json()["jobs"] == []


def test_a_vm_shows_the_addresses_its_host_reports_and_how_fresh_they_are(client, conductor, hypervisor_worker):
    with hypervisor_worker("amd64-host"):
        host = wait_host(client, "amd64-host")
        assert "archq" in host["networks"]["libvirt"]
        accepted = create(client, name="addressed").get_json()
        vm_id = accepted["vm"]["id"]
        job = wait_job(client, accepted["job"]["id"])
        assert job["state"] == "succeeded", job["error"]

        def addressed() -> dict | None:
            vm = client.get(f"/api/v1/vms/{vm_id}").get_json()["vm"]
            return vm if vm["addresses"] else None

        # The libvirt test driver makes up an address for every NIC; what matters is that it travels.
        vm = wait_for(addressed, timeout=15, what="the VM's addresses")
        assert vm["addresses"][0]["mac"] == vm["mac"]
        assert vm["addresses"][0]["ipv4"] and vm["addresses"][0]["source"] in ("lease", "agent")
        assert vm["addresses_at"] is not None


def test_a_disk_smaller_than_the_images_is_422(app, client):
    with app.app_context():
        tiny = db.session.get(Image, "tiny").artifacts["amd64"]
        db.session.add(Image(name="big-disk", artifacts={"amd64": {**tiny, "virtual_size": 2 * 2**30 + 1}}))
        db.session.commit()
    error = error_of(create(client, image="big-disk", disk_gib=2), 422)
    assert error["fields"] == {"disk_gib": ["must be at least 3 GiB, the size of image 'big-disk''s disk"]}
    assert create(client, image="big-disk", disk_gib=3).status_code == 202
