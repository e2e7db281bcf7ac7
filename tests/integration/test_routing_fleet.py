"""Architecture-aware routing with real worker processes: native first, TCG fallback when the native
workers are gone, stranded jobs re-routed exactly once, native again when a native worker returns."""

from __future__ import annotations

import dataclasses

import pytest

from tests.conftest import CAPABILITIES
from tests.support.api import create_vm, wait_host, wait_job
from tests.support.services import wait_for


@pytest.fixture
def settings(settings):
    return dataclasses.replace(settings, native_wait_s=2.0)


@pytest.fixture
def fleet(client, conductor, processes):
    """An amd64 host (emulates arm64) and an arm64 host (emulates amd64), both on the libvirt test driver."""

    def start(name: str, capabilities: str):
        worker = processes(
            "worker", log_name=name, ARCHQ_HOSTNAME=name, ARCHQ_CAPABILITIES_FILE=str(CAPABILITIES[capabilities])
        )
        wait_host(client, name)
        return worker

    return {"amd64": start("amd64-host", "amd64"), "arm64": start("arm64-host", "arm64"), "start": start}


def test_each_architecture_runs_on_its_native_host(client, fleet):
    for arch in ("amd64", "arm64"):
        accepted = create_vm(client, name=f"native-{arch}", arch=arch)
        assert accepted["job"]["queue"] == arch
        assert accepted["vm"]["emulated"] is False and accepted["vm"]["emulation_warning"] == ""
        job = wait_job(client, accepted["job"]["id"])
        assert (job["state"], job["host"]) == ("succeeded", f"{arch}-host")


def test_without_a_native_host_a_job_runs_emulated_and_says_so(client, fleet):
    fleet["arm64"].kill()
    wait_host(client, "arm64-host", state="down")

    accepted = create_vm(client, name="emulated", arch="arm64")
    assert accepted["job"]["queue"] == "tcg.arm64"
    for carrier in (accepted["vm"], accepted["job"]):
        assert carrier["emulated"] is True
        assert carrier["accel"] == "tcg"
        assert "10-20x slower" in carrier["emulation_warning"]
    job = wait_job(client, accepted["job"]["id"])
    assert (job["state"], job["host"]) == ("succeeded", "amd64-host")
    vm = client.get(f"/api/v1/vms/{accepted['vm']['id']}").get_json()["vm"]
    assert (vm["host"], vm["emulated"], vm["accel"]) == ("amd64-host", True, "tcg")


def test_native_only_waits_for_a_native_host_and_runs_there_when_it_returns(client, fleet):
    fleet["arm64"].kill()
    wait_host(client, "arm64-host", state="down")

    accepted = create_vm(client, name="patient", arch="arm64", emulation="native_only")
    assert accepted["job"]["queue"] == "arm64"
    assert "native arm64 worker" in accepted["job"]["waiting_for"]
    wait_for(lambda: client.get(f"/api/v1/jobs/{accepted['job']['id']}").get_json()["job"]["state"] == "queued")

    fleet["start"]("arm64-host", "arm64")
    job = wait_job(client, accepted["job"]["id"])
    assert (job["state"], job["host"]) == ("succeeded", "arm64-host")


def test_a_stranded_job_is_rerouted_once_and_native_returns(client, fleet, settings):
    fleet["arm64"].kill()
    # The job is routed before the registry notices the death: it lands on the dead host's queue.
    accepted = create_vm(client, name="stranded", arch="arm64")
    assert accepted["job"]["queue"] == "arm64"

    job = wait_job(client, accepted["job"]["id"], timeout=settings.native_wait_s + 20)
    assert (job["state"], job["host"], job["queue"]) == ("succeeded", "amd64-host", "tcg.arm64")
    assert any("re-routed from arm64 to tcg.arm64" in e["message"] for e in job["events"])
    assert [e["state"] for e in job["events"]].count("running") == 1
    vm = client.get(f"/api/v1/vms/{accepted['vm']['id']}").get_json()["vm"]
    assert (vm["emulated"], vm["accel"]) == (True, "tcg")

    # The native host returns and finds the old message on its queue: a no-op, not a second run.
    fleet["start"]("arm64-host", "arm64")
    fresh = create_vm(client, name="native-again", arch="arm64")
    assert fresh["job"]["queue"] == "arm64" and fresh["vm"]["emulated"] is False
    assert wait_job(client, fresh["job"]["id"])["host"] == "arm64-host"
    again = client.get(f"/api/v1/jobs/{accepted['job']['id']}").get_json()["job"]
    assert again["events"] == job["events"]


@pytest.mark.parametrize("strategy", ["least_loaded", "best_fit", "round_robin", "random"])
def test_placement_strategies_send_the_job_to_the_chosen_host(client, fleet, strategy):
    accepted = create_vm(client, name=f"placed-{strategy.replace('_', '-')}", placement=strategy)
    assert accepted["job"]["queue"] == "host.amd64-host"
    assert wait_job(client, accepted["job"]["id"])["host"] == "amd64-host"


def test_a_pinned_host_of_the_wrong_arch_is_422(client, fleet):
    response = client.post(
        "/api/v1/vms",
        json={"name": "pinned", "arch": "amd64", "vcpus": 1, "memory_mib": 128, "image": "tiny",
              "host": "arm64-host", "emulation": "native_only"},
    )  # fmt: skip
    assert response.status_code == 422
    assert "host" in response.get_json()["error"]["fields"]


def test_a_pinned_host_runs_the_job(client, fleet):
    accepted = create_vm(client, name="pinned", arch="arm64", host="arm64-host")
    assert accepted["job"]["queue"] == "host.arm64-host"
    assert wait_job(client, accepted["job"]["id"])["host"] == "arm64-host"


def test_a_drained_host_takes_no_new_vms(client, fleet):
    assert client.post("/api/v1/hosts/arm64-host/drain").get_json()["host"]["state"] == "drained"
    accepted = create_vm(client, name="after-drain", arch="arm64")
    assert accepted["job"]["queue"] == "tcg.arm64"


def test_deleting_a_vm_on_a_down_host_is_409(client, fleet):
    accepted = create_vm(client, name="orphan", arch="arm64")
    wait_job(client, accepted["job"]["id"])
    fleet["arm64"].kill()
    wait_host(client, "arm64-host", state="down")
    response = client.delete(f"/api/v1/vms/{accepted['vm']['id']}")
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "host_down"
