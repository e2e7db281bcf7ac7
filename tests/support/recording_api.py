"""A recording HTTP server on loopback that answers like the archq API: what client commands send is checked
against it (tests/cli/conftest.py's `server` fixture)."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler
from typing import ClassVar

VM_ID = "6f1b9a3e-8a51-4a2e-9d3c-2b1a7d0e4f11"
JOB = {"id": "j1", "kind": "snapshot", "state": "pending", "queue": "host.h1"}


class Recorder(BaseHTTPRequestHandler):
    requests: ClassVar[list[tuple[str, str, dict | None, str]]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        self.requests.append((self.command, self.path, body, self.headers.get("Authorization", "")))
        if self.headers.get("Authorization") == "Bearer bad":
            answer, status = {"error": {"code": "unauthorized", "message": "a valid bearer token is required"}}, 401
        elif self.path.endswith("/snapshots") and self.command == "GET":
            answer, status = {"snapshots": [{"name": "s1", "memory": True, "created_at": "2026-12-01T00:00:00Z"}]}, 200
        elif self.path == "/api/v1/images" and self.command == "GET":
            answer, status = {"images": [{"name": "debian-12", "arch": "amd64", "state": "ready"}]}, 200
        elif self.path == "/api/v1/images":
            answer, status = {"image": {"name": "debian-12"}}, 201
        elif self.path.startswith("/api/v1/images/"):
            answer, status = {"image": {"name": "debian-12", "artifacts": {"amd64": {"format": "qcow2"}}}}, 200
        elif self.path.startswith("/api/v1/jobs?"):
            answer, status = {"jobs": [JOB], "next": None}, 200
        elif self.path == "/api/v1/system/info":
            answer, status = {"version": "0.1.0", "broker": "redis://127.0.0.1:6379/0"}, 200
        elif self.path == "/api/v1/hosts":
            answer, status = {"hosts": [{"name": "h1"}, {"name": "g2"}]}, 200
        elif self.path.startswith("/api/v1/hosts/"):
            answer, status = {"host": {"name": "h1", "drained": self.path.endswith("/drain")}}, 200
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
