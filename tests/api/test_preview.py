"""POST /api/v1/vms/preview answers what POST /api/v1/vms would decide for the same body (queue, host,
emulation and its warning, or the refusal) and changes nothing: no VM, no job, no round-robin turn."""

from __future__ import annotations

import pytest

from tests.support.api import TINY
from tests.support.fleet import beat
from web.extensions import db
from web.models import Job, Vm


@pytest.fixture
def amd64_fleet(app):
    with app.app_context():
        beat("amd1", arch="amd64", accel="kvm", emulators=("arm64",))
        beat("amd2", arch="amd64", accel="kvm", emulators=("arm64",))


def preview(client, **fields) -> dict:
    response = client.post("/api/v1/vms/preview", json={**TINY, **fields})
    assert response.status_code == 200, response.get_json()
    return response.get_json()["preview"]


def stored(app) -> tuple[int, int]:
    with app.app_context():
        return db.session.query(Vm).count(), db.session.query(Job).count()


def test_an_arm64_guest_on_an_amd64_fleet_previews_emulated_with_the_warning_create_gives(app, client, amd64_fleet):
    seen = preview(client, arch="aarch64")
    assert stored(app) == (0, 0)
    assert (seen["accepted"], seen["status"], seen["error"]) == (True, 202, None)
    assert (seen["arch"], seen["queue"], seen["emulated"], seen["accel"]) == ("arm64", "tcg.arm64", True, "tcg")
    assert "cortex-a57" in seen["cpu_mode_note"]
    created = client.post("/api/v1/vms", json={**TINY, "arch": "aarch64"}).get_json()
    assert created["job"]["queue"] == seen["queue"]
    assert created["vm"]["emulation_warning"] == seen["emulation_warning"] != ""


def test_a_native_guest_previews_its_native_queue_without_warning_or_cpu_note(client, amd64_fleet):
    seen = preview(client)
    assert (seen["queue"], seen["emulated"], seen["accel"], seen["emulation_warning"]) == ("amd64", False, "kvm", "")
    assert seen["cpu_mode_note"] == ""


def test_round_robin_previews_the_next_host_without_taking_the_turn(client, amd64_fleet):
    first = preview(client, placement="round_robin")["host"]
    assert preview(client, placement="round_robin")["host"] == first
    created = client.post("/api/v1/vms", json={**TINY, "placement": "round_robin"}).get_json()
    assert created["vm"]["host"] == first
    assert preview(client, name="other", placement="round_robin")["host"] not in (first, None)


@pytest.mark.parametrize(
    ("fields", "status", "code"),
    [
        ({"arch": "arm64", "emulation": "native_only", "host": "amd1"}, 422, "validation_failed"),
        ({"image": "no-such-image"}, 422, "validation_failed"),
        ({"name": "demo"}, 409, "name_taken"),
    ],
)
def test_a_refusal_is_the_error_create_answers(app, client, amd64_fleet, fields, status, code):
    client.post("/api/v1/vms", json={**TINY, "name": "demo", "arch": "amd64"})
    before = stored(app)
    seen = preview(client, **fields)
    created = client.post("/api/v1/vms", json={**TINY, **fields})
    assert (seen["accepted"], seen["status"]) == (False, created.status_code) == (False, status)
    assert seen["error"] == created.get_json()["error"]
    assert seen["error"]["code"] == code
    assert stored(app) == before


def test_a_body_that_does_not_validate_is_422_as_for_create(client):
    response = client.post("/api/v1/vms/preview", json={**TINY, "vcpus": 0})
    assert response.status_code == 422
    assert "vcpus" in response.get_json()["error"]["fields"]


def test_a_viewer_may_not_preview(app):
    from tests.support.auth import authed_client, make_token

    viewer = authed_client(app, make_token(app, "viewer", "eyes"))
    assert viewer.post("/api/v1/vms/preview", json=TINY).status_code == 403
