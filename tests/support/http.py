"""A small HTTP client for tests against a real `archq api` process (gunicorn), standard library only."""

from __future__ import annotations

import http.client
import json


class Api:
    def __init__(self, port: int, token: str = "") -> None:
        self.port = port
        # Sent as `Authorization: Bearer <token>` on every request when set.
        self.token = token
        self._conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: dict | None = None, timeout: float = 10) -> tuple[int, dict]:
        """(status, JSON body); status 0 when the connection failed (the API is down)."""
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if payload else {}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        for _attempt in range(2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
            try:
                self._conn.request(method, f"/api/v1{path}", body=payload, headers=headers)
                response = self._conn.getresponse()
                data = response.read()
                return response.status, json.loads(data) if data else {}
            except (ConnectionError, OSError, http.client.HTTPException):
                self._conn.close()
                self._conn = None
        return 0, {}

    def get(self, path: str) -> dict:
        status, body = self.request("GET", path)
        assert status == 200, (status, body)
        return body
