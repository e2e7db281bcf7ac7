"""A small JSON client of the archq HTTP API (standard library only)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from urllib.parse import quote, urlencode

API_PREFIX = "/api/v1"


@dataclass
class ClientError(Exception):
    """The API answered an error (status >= 400), or could not be reached (status 0)."""

    status: int
    code: str
    message: str
    fields: dict = field(default_factory=dict)

    def __str__(self) -> str:
        text = f"{self.message} ({self.code}, HTTP {self.status})" if self.status else self.message
        for name, problems in self.fields.items():
            text += f"\n  {name}: {' '.join(problems) if isinstance(problems, list) else problems}"
        return text


def segment(value: str) -> str:
    """A path segment, escaped (ids and names come from the command line)."""
    return quote(value, safe="")


class ApiClient:
    def __init__(self, url: str, token: str, timeout: float = 30.0, project: str | None = None) -> None:
        base = url.rstrip("/")
        self.base = base if base.endswith(API_PREFIX) else base + API_PREFIX
        self.token = token
        self.timeout = timeout
        # An admin acting for one project: every request says so (`?project=`).
        self.project = project

    def request(self, method: str, path: str, body: dict | None = None, query: dict | None = None) -> dict:
        """The JSON answer of `method path`; raises ClientError on an error status or no connection."""
        url = self.base + path
        query = {**(query or {}), "project": self.project}
        if any(v is not None for v in query.values()):
            url += "?" + urlencode({k: v for k, v in query.items() if v is not None})
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            raise _error_of(exc) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ClientError(0, "unreachable", f"cannot reach the archq API at {self.base}: {reason}") from None
        return json.loads(payload) if payload else {}

    def get(self, path: str, **query) -> dict:
        return self.request("GET", path, query=query or None)

    def post(self, path: str, body: dict | None = None) -> dict:
        return self.request("POST", path, body=body)

    def patch(self, path: str, body: dict) -> dict:
        return self.request("PATCH", path, body=body)

    def delete(self, path: str) -> dict:
        return self.request("DELETE", path)


def _error_of(exc: urllib.error.HTTPError) -> ClientError:
    raw = exc.read()
    try:
        error = json.loads(raw)["error"]
        return ClientError(exc.code, error.get("code", "error"), error.get("message", ""), error.get("fields") or {})
    except (ValueError, KeyError, TypeError):
        return ClientError(exc.code, "http_error", raw.decode(errors="replace")[:500] or exc.reason)
