"""The client commands for endpoints that other parts of archq serve (snapshots, migration, images) send
the documented requests: checked against a recording HTTP server on loopback that answers like the API."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from client.cli import main
from tests.support.recording_api import VM_ID, Recorder


@pytest.mark.parametrize(
    ("args", "method", "path", "body"),
    [
        (["vm", "snapshot", "create", VM_ID, "s1", "--memory"], "POST", f"/api/v1/vms/{VM_ID}/snapshots",
         {"name": "s1", "memory": True}),
        (["vm", "snapshot", "create", VM_ID, "s1"], "POST", f"/api/v1/vms/{VM_ID}/snapshots",
         {"name": "s1", "memory": False}),
        (["vm", "snapshot", "list", VM_ID], "GET", f"/api/v1/vms/{VM_ID}/snapshots", None),
        (["vm", "snapshot", "revert", VM_ID, "s1"], "POST", f"/api/v1/vms/{VM_ID}/snapshots/s1/revert", None),
        (["vm", "snapshot", "delete", VM_ID, "s 1/x"], "DELETE", f"/api/v1/vms/{VM_ID}/snapshots/s%201%2Fx", None),
        (["vm", "migrate", VM_ID, "--target-host", "h2"], "POST", f"/api/v1/vms/{VM_ID}/migrate",
         {"target_host": "h2", "live": True}),
        (["vm", "migrate", VM_ID, "--offline"], "POST", f"/api/v1/vms/{VM_ID}/migrate", {"live": False}),
        (["images", "list"], "GET", "/api/v1/images", None),
        (["images", "add", "debian-12", "--arch", "arm64", "--source", "https://example.org/d.qcow2", "--sha256",
          "ab" * 32], "POST", "/api/v1/images",
         {"name": "debian-12", "description": "", "artifacts": {"arm64": {
             "format": "qcow2", "source": "https://example.org/d.qcow2", "sha256": "ab" * 32}}}),
        (["images", "show", "debian-12"], "GET", "/api/v1/images/debian-12", None),
        (["images", "delete", "debian-12"], "DELETE", "/api/v1/images/debian-12", None),
        (["host", "drain", "h1"], "POST", "/api/v1/hosts/h1/drain", None),
        (["host", "undrain", "h1"], "POST", "/api/v1/hosts/h1/undrain", None),
        (["system", "info"], "GET", "/api/v1/system/info", None),
        (["job", "list", "--vm", VM_ID, "--state", "failed"], "GET",
         f"/api/v1/jobs?state=failed&vm_id={VM_ID}&limit=50", None),
    ],
)  # fmt: skip
def test_commands_send_the_documented_requests_with_the_token(server, args, method, path, body):
    result = CliRunner().invoke(main, [*args, "--url", server, "--token", "archq_t"])
    assert result.exit_code == 0, result.output
    assert Recorder.requests == [(method, path, body, "Bearer archq_t")]


def test_list_output_shows_what_the_api_returns(server):
    shown = CliRunner().invoke(main, ["vm", "snapshot", "list", VM_ID, "--url", server, "--token", "t"]).output
    assert shown.splitlines()[0].split() == ["NAME", "MEMORY", "CREATED_AT"]
    assert shown.splitlines()[1].split()[:2] == ["s1", "yes"]
    images = CliRunner().invoke(main, ["images", "list", "--url", server, "--token", "t", "-o", "json"]).output
    assert json.loads(images)["images"][0]["name"] == "debian-12"
