"""A real Flower (`archq flower`) on a free port behind basic auth, and an HTTP client for its pages."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Callable

from tests.support.services import ArchqProcess, free_port, wait_for

USER, PASSWORD = "ops", "flower-test-password"


class Flower:
    def __init__(self, process: ArchqProcess, port: int) -> None:
        self.process = process
        self.url = f"http://127.0.0.1:{port}"

    def get(self, path: str, *, auth: bool = True, password: str = PASSWORD, timeout: float = 10) -> tuple[int, str]:
        """(status, body) of a GET; with `auth`, basic auth credentials are sent (Flower's unless told)."""
        return self.request("GET", path, auth=auth, password=password, timeout=timeout)

    def request(
        self, method: str, path: str, *, auth: bool = True, password: str = PASSWORD, timeout: float = 10
    ) -> tuple[int, str]:
        request = urllib.request.Request(self.url + path, method=method, data=b"" if method == "POST" else None)
        if auth:
            token = base64.b64encode(f"{USER}:{password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(errors="replace")

    def json(self, path: str) -> dict:
        status, body = self.get(path)
        assert status == 200, (path, status, body)
        return json.loads(body)

    def queue_depths(self) -> dict[str, int]:
        """The Broker page's queues and their depths, as Flower's API gives them."""
        return {q["name"]: q["messages"] for q in self.json("/api/queues/length")["active_queues"]}

    def answers(self) -> bool:
        assert self.process.proc.poll() is None, self.process.output()
        try:
            return self.get("/healthcheck", auth=False, timeout=1)[0] == 200
        except OSError:
            return False


def start_flower(processes: Callable[..., ArchqProcess]) -> Flower:
    port = free_port()
    process = processes(
        "flower", ARCHQ_FLOWER_PORT=str(port), ARCHQ_FLOWER_ADDRESS="127.0.0.1",
        ARCHQ_FLOWER_BASIC_AUTH=f"{USER}:{PASSWORD}",
    )  # fmt: skip
    flower = Flower(process, port)
    wait_for(flower.answers, timeout=30, interval=0.1, what="Flower to answer")
    return flower
