"""The client commands for endpoints that other parts of archq serve (snapshots, migration, images) send
the documented requests: checked against a recording HTTP server on loopback that answers like the API."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
from click.testing import CliRunner

from queues.cli import main

VM_ID = "6f1b9a3e-8a51-4a2e-9d3c-2b1a7d0e4f11"
JOB = {"id": "j1", "kind": "snapshot", "state": "pending", "queue": "host.h1"}


class Recorder(BaseHTTPRequestHandler):
    requests: ClassVar[list[tuple[str, str, dict | None, str]]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        self.requests.append((self.command, self.path, body, self.headers.get("Authorization", "")))
        if self.path.endswith("/snapshots") and self.command == "GET":
            answer, status = {"snapshots": [{"name": "s1", "memory": True, "created_at": "2026-12-01T00:00:00Z"}]}, 200
        elif self.path == "/api/v1/images" and self.command == "GET":
            answer, status = {"images": [{"name": "debian-12", "arch": "amd64", "state": "ready"}]}, 200
        elif self.path == "/api/v1/images":
            answer, status = {"image": {"name": "debian-12"}}, 201
        else:
            answer, status = {"vm": {"id": VM_ID}, "job": JOB}, 202
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = _answer

    def log_message(self, *_args) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    Recorder.requests = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


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
        (["image", "list"], "GET", "/api/v1/images", None),
        (["image", "add", "debian-12", "--arch", "arm64", "--source", "https://example.org/d.qcow2", "--sha256",
          "ab" * 32], "POST", "/api/v1/images",
         {"name": "debian-12", "description": "", "artifacts": {"arm64": {
             "format": "qcow2", "source": "https://example.org/d.qcow2", "sha256": "ab" * 32}}}),
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
    images = CliRunner().invoke(main, ["image", "list", "--url", server, "--token", "t", "-o", "json"]).output
    assert json.loads(images)["images"][0]["name"] == "debian-12"
