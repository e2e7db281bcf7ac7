"""Twenty clients sending the same create at the same moment, against a real `archq api` (several gunicorn
processes, so requests race across processes as in production) on SQLite and on PostgreSQL: one VM and one
job whatever the interleaving."""

from __future__ import annotations

import dataclasses
import http.client
import json
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from tests.support.api import TINY
from tests.support.databases import KINDS, fresh_database
from tests.support.live_api import start_api

CLIENTS = 20


@pytest.fixture(params=KINDS)
def settings(request, settings, tmp_path) -> Iterator:
    with fresh_database(request.param, tmp_path) as url:
        yield dataclasses.replace(settings, database_url=url)


@dataclasses.dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: dict


def request(url: str, token: str, method: str, path: str, body: dict | None = None, **headers: str) -> Answer:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        payload = json.dumps(body).encode() if body is not None else None
        conn.request(
            method,
            f"/api/v1{path}",
            body=payload,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json", **headers},
        )
        response = conn.getresponse()
        return Answer(response.status, dict(response.getheaders()), json.loads(response.read() or b"{}"))
    finally:
        conn.close()


def all_at_once(send, clients: int = CLIENTS) -> list[Answer]:
    """`send()` from `clients` threads released together."""
    start = threading.Barrier(clients)
    answers: list[Answer] = []

    def client() -> None:
        start.wait()
        answers.append(send())

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(answers) == clients
    return answers


@pytest.fixture
def api(app, processes, admin_token) -> tuple[str, str]:
    # Four workers booting on a loaded 2-core machine took over 30 s to answer.
    url, _process = start_api(processes, workers=4, threads=5, timeout=120)
    return url, admin_token


def vms_and_jobs(url: str, token: str, name: str) -> tuple[list[dict], list[dict]]:
    vms = [vm for vm in request(url, token, "GET", "/vms").body["vms"] if vm["name"] == name]
    ids = {vm["id"] for vm in vms}
    jobs = [job for job in request(url, token, "GET", "/jobs?limit=500").body["jobs"] if job["vm_id"] in ids]
    return vms, jobs


# A race is a matter of timing: each test races several times, a new name (and key) each round.
ROUNDS = 5


def test_one_idempotency_key_yields_one_vm_and_one_job_however_many_clients_race(api):
    url, token = api
    for round_ in range(ROUNDS):
        body, key = {**TINY, "name": f"keyed-{round_}"}, {"Idempotency-Key": f"race-{round_}"}
        answers = all_at_once(lambda: request(url, token, "POST", "/vms", body, **key))  # noqa: B023

        vms, jobs = vms_and_jobs(url, token, body["name"])
        assert len(vms) == 1 and len(jobs) == 1, (round_, vms, jobs)
        accepted = [a for a in answers if a.status == 202]
        in_flight = [a for a in answers if a.status == 409]
        assert len(accepted) + len(in_flight) == CLIENTS, [(a.status, a.body) for a in answers]
        # Every accepted answer is the one job; a client that came while the first ran is told to retry.
        assert {a.body["job"]["id"] for a in accepted} == {jobs[0]["id"]}
        for answer in in_flight:
            assert answer.body["error"]["code"] == "idempotency_key_in_flight", (round_, answer.body)
            assert int(answer.headers["Retry-After"]) >= 1
        # Retried once the first has answered, every client gets that answer.
        again = request(url, token, "POST", "/vms", body, **key)
        assert again.status == 202 and again.body["job"]["id"] == jobs[0]["id"]


def test_one_name_yields_one_vm_however_many_clients_race(api):
    url, token = api
    for round_ in range(ROUNDS):
        body = {**TINY, "name": f"named-{round_}"}
        answers = all_at_once(lambda: request(url, token, "POST", "/vms", body))  # noqa: B023

        vms, jobs = vms_and_jobs(url, token, body["name"])
        assert len(vms) == 1 and len(jobs) == 1, (round_, vms, jobs)
        statuses = sorted(a.status for a in answers)
        assert statuses == [202] + [409] * (CLIENTS - 1), (round_, [(a.status, a.body) for a in answers])
        assert {a.body["error"]["code"] for a in answers if a.status == 409} == {"name_taken"}
