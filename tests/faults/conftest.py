"""The fault suite's stack: real processes (Redis, `archq api` under gunicorn, conductor, workers) that the
scenarios kill and restart, and the tally every scenario prints."""

from __future__ import annotations

import dataclasses
import re
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from tests.support.auth import make_token
from tests.support.http import Api
from tests.support.services import ArchqProcess, RedisServer, free_port, wait_for

TERMINAL = ("succeeded", "failed", "cancelled")


class Stack:
    def __init__(self, app, processes, tmp_path: Path) -> None:
        self.app = app
        self._processes = processes
        self.tmp_path = tmp_path
        self.api_port = free_port()
        self.api: ArchqProcess | None = None
        self.client = Api(self.api_port, make_token(app, "admin", "faults"))

    def start_api(self) -> ArchqProcess:
        self.api = self._processes("api", "--bind", f"127.0.0.1:{self.api_port}", "--workers", "2",
                                   log_name=f"api-{time.monotonic_ns()}")  # fmt: skip
        wait_for(lambda: self.client.request("GET", "/health")[0] == 200, timeout=30, what="the API")
        return self.api

    def start_conductor(self) -> ArchqProcess:
        return self._processes("conductor", log_name=f"conductor-{time.monotonic_ns()}")

    def start_worker(self, name: str = "amd64-host", **env: str) -> ArchqProcess:
        worker = self._processes("worker", log_name=f"worker-{name}-{time.monotonic_ns()}", ARCHQ_HOSTNAME=name, **env)
        wait_for(lambda: self.host_state(name) == "up", timeout=90, what=f"host {name} up")
        return worker

    def host_state(self, name: str) -> str | None:
        status, body = self.client.request("GET", f"/hosts/{name}")
        return body["host"]["state"] if status == 200 else None

    def job(self, job_id: str) -> dict:
        return self.client.get(f"/jobs/{job_id}")["job"]

    def tally(self, scenario: str, job_ids: Iterable[str], timeout: float = 120) -> Counter:
        """Waits for every accepted job to end, then prints and returns the scenario's figures."""
        job_ids = list(job_ids)
        deadline = time.monotonic() + timeout
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            for job_id in job_ids:
                if states.get(job_id) not in TERMINAL:
                    states[job_id] = self.job(job_id)["state"]
            if all(s in TERMINAL for s in states.values()):
                break
            time.sleep(0.5)
        counts = Counter(states.values())
        executions = self.executions()
        duplicated = sum(1 for job_id in job_ids if executions[job_id] > 1 + self.resumes(job_id))
        figures = Counter(
            accepted=len(job_ids),
            succeeded=counts["succeeded"],
            failed=counts["failed"] + counts["cancelled"],
            lost=sum(1 for s in states.values() if s not in TERMINAL),
            duplicated=duplicated,
        )
        print(f"\n[{scenario}] " + " ".join(f"{k}={figures[k]}" for k in
                                             ("accepted", "succeeded", "failed", "lost", "duplicated")))  # fmt: skip
        return figures

    def job_payload(self, job_id: str) -> dict:
        from web.extensions import db
        from web.models import Job

        with self.app.app_context():
            return db.session.get(Job, job_id).payload

    def executions(self) -> Counter:
        """How many times workers ran each job (a claimed run logs `succeeded ...: 'claimed'`)."""
        runs: Counter = Counter()
        for log in self.tmp_path.glob("worker-*.log"):
            runs.update(re.findall(r"Task archq\.vm\.\w+\[([0-9a-f-]{36})\] succeeded in [0-9.e-]+s: 'claimed'",
                                   log.read_text(errors="replace")))  # fmt: skip
        return runs

    def resumes(self, job_id: str) -> int:
        return sum("resumed there" in e["message"] for e in self.job(job_id)["events"])


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A Redis of the scenario's own, persistent like production's: claims and queues survive a restart."""
    server = RedisServer(tmp_path_factory.mktemp("redis"), persistent=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def settings(settings):
    # Short leases: a killed worker's job is recovered within seconds.
    return dataclasses.replace(settings, lease_s=3.0, worker_lost_after_s=30.0)


@pytest.fixture
def stack(app, processes, tmp_path) -> Stack:
    return Stack(app, processes, tmp_path)
