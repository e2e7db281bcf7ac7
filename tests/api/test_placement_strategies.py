"""Each placement strategy, through POST /api/v1/vms on a fleet registered by heartbeats, picks the host its
definition says from the database's indexes: drained and full hosts never, a NIC's bridge only where it exists,
emulating hosts only when no native one is live."""

from __future__ import annotations

import time

import pytest

from queues import messages
from tests.support.api import TINY
from web.extensions import db
from web.services.hosts import record_heartbeat


def beat(name: str, arch: str = "amd64", memory_mib: int = 8192, bridges: tuple[str, ...] = ()) -> dict:
    other = "arm64" if arch == "amd64" else "amd64"
    return messages.heartbeat.load({
        "host": name, "arch": arch, "accel": "kvm", "emulators": [other], "queues": [arch, f"tcg.{other}"],
        "cpu_modes": {}, "capacity": {"vcpus": 8, "memory_mib": memory_mib, "disk_mib": 100_000}, "allocated": {},
        "domains": [], "started_at": time.time(), "at": time.time(),
        "networks": {"libvirt": ["archq"], "bridges": list(bridges)},
    })  # fmt: skip


@pytest.fixture
def fleet(app):
    def add(*beats: dict) -> None:
        with app.app_context():
            for b in beats:
                record_heartbeat(b)
            db.session.commit()

    return add


def placed(client, name: str, **body) -> str:
    response = client.post("/api/v1/vms", json={**TINY, "name": name, **body})
    assert response.status_code == 202, response.get_json()
    return response.get_json()["vm"]["host"]


def test_least_loaded_avoids_the_host_that_already_holds_vms(client, fleet):
    fleet(beat("a"), beat("b"))
    placed(client, "on-a", host="a", memory_mib=4096)
    assert placed(client, "next", placement="least_loaded") == "b"


def test_best_fit_packs_the_host_with_least_room_left(client, fleet):
    fleet(beat("a"), beat("b"))
    placed(client, "on-b", host="b", memory_mib=4096)
    assert placed(client, "next", placement="best_fit") == "b"


def test_round_robin_takes_each_fitting_host_in_turn(client, fleet):
    fleet(beat("a"), beat("b"), beat("c"))
    picks = [placed(client, f"rr-{n}", placement="round_robin") for n in range(6)]
    assert picks == ["a", "b", "c", "a", "b", "c"]


def test_random_spreads_over_fitting_hosts_only(client, fleet):
    fleet(beat("a"), beat("b"), beat("full", memory_mib=64))
    picks = {placed(client, f"rnd-{n}", placement="random") for n in range(30)}
    assert picks == {"a", "b"}


@pytest.mark.parametrize("strategy", ["least_loaded", "best_fit", "round_robin", "random"])
def test_a_drained_host_is_never_chosen(client, fleet, strategy):
    fleet(beat("a"), beat("b"))
    assert client.post("/api/v1/hosts/a/drain").status_code == 200
    assert {placed(client, f"d-{n}", placement=strategy) for n in range(4)} == {"b"}


def test_a_bridged_nic_goes_to_the_host_with_the_bridge(client, fleet):
    fleet(beat("a"), beat("b", bridges=("br0",)))
    network = {"mode": "bridge", "bridge": "br0"}
    assert placed(client, "bridged", placement="least_loaded", network=network) == "b"


def test_without_a_live_native_host_an_emulating_one_is_chosen(client, fleet):
    fleet(beat("x86"))
    response = client.post("/api/v1/vms", json={**TINY, "name": "arm", "arch": "arm64", "placement": "best_fit"})
    assert response.status_code == 202, response.get_json()
    assert (response.get_json()["vm"]["host"], response.get_json()["vm"]["emulated"]) == ("x86", True)


def test_a_full_native_host_is_waited_for_not_emulated_elsewhere(client, fleet):
    fleet(beat("x86"), beat("arm", arch="arm64", memory_mib=64))
    response = client.post("/api/v1/vms", json={**TINY, "name": "arm", "arch": "arm64", "placement": "least_loaded"})
    assert response.status_code == 503
    error = response.get_json()["error"]
    assert error["code"] == "no_capacity" and "none of 1 live host(s) for arm64" in error["message"]
