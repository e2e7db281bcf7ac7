"""A small JSON client of the archq HTTP API over `requests`: one session per client, so a command's requests
(a list's pages, a job polled until it ends) reuse one connection."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import quote

if TYPE_CHECKING:
    import requests

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
        self._session: requests.Session | None = None

    @property
    def session(self) -> requests.Session:
        # Imported when the first request is made: `archq --help` and completion without a request skip it.
        import requests

        if self._session is None:
            self._session = requests.Session()
            self._session.headers["Accept"] = "application/json"
            if self.token:
                self._session.headers["Authorization"] = f"Bearer {self.token}"
        return self._session

    def request(self, method: str, path: str, body: dict | None = None, query: dict | None = None) -> dict:
        """The JSON answer of `method path`; raises ClientError on an error status or no connection."""
        import requests

        params = {k: v for k, v in {**(query or {}), "project": self.project}.items() if v is not None}
        try:
            response = self.session.request(
                method, self.base + path, json=body, params=params or None, timeout=self.timeout
            )
        except requests.RequestException as exc:
            reason = exc.__context__ or exc
            raise ClientError(0, "unreachable", f"cannot reach the archq API at {self.base}: {reason}") from None
        if response.status_code >= 400:
            raise _error_of(response)
        return response.json() if response.content else {}

    def get(self, path: str, **query) -> dict:
        return self.request("GET", path, query=query or None)

    def post(self, path: str, body: dict | None = None) -> dict:
        return self.request("POST", path, body=body)

    def patch(self, path: str, body: dict) -> dict:
        return self.request("PATCH", path, body=body)

    def delete(self, path: str) -> dict:
        return self.request("DELETE", path)

    def items(self, path: str, collection: str, *, most: int | None = None, **query) -> Iterator[dict]:
        """The items of a list, page after page (following `next`), at most `most` of them; `query` holds the
        filters and the page size (`limit`)."""
        given = 0
        cursor = None
        while True:
            page = self.get(path, **query, next=cursor)
            for item in page[collection]:
                if most is not None and given >= most:
                    return
                given += 1
                yield item
            cursor = page.get("next")
            if not cursor:
                return

    def every(self, path: str, collection: str, *, most: int | None = None, **query) -> dict:
        """A whole list (or its first `most` items) as one answer, `{collection: [...]}`, whatever the number
        of pages."""
        return {collection: list(self.items(path, collection, most=most, **query))}

    def close(self) -> None:
        if self._session is not None:
            self._session.close()


def _error_of(response: requests.Response) -> ClientError:
    try:
        error = response.json()["error"]
        return ClientError(
            response.status_code, error.get("code", "error"), error.get("message", ""), error.get("fields") or {}
        )
    except (ValueError, KeyError, TypeError):
        text = response.text[:500] or response.reason
        return ClientError(response.status_code, "http_error", text)
