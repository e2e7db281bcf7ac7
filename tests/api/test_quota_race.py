"""Fifty clients creating VMs in one project at the same moment, against a real `archq api` (several gunicorn
processes, so creates race across processes and group commits) on SQLite and on PostgreSQL: however they
interleave, the project never holds more than its quota, and every refusal is `quota_exceeded`."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator

import pytest

from tests.api.test_concurrent_creates import Answer, request
from tests.support.api import TINY
from tests.support.databases import KINDS, fresh_database
from tests.support.live_api import start_api
from web.services import tokens

CLIENTS = 50


@pytest.fixture(params=KINDS)
def settings(request, settings, tmp_path) -> Iterator:
    with fresh_database(request.param, tmp_path) as url:
        yield dataclasses.replace(settings, database_url=url)


@pytest.fixture
def api(app, processes, admin_token) -> tuple[str, str]:
    url, _process = start_api(processes, workers=4, threads=5, timeout=120)
    return url, admin_token


def fifty_at_once(send) -> list[Answer]:
    """`send(i)` from CLIENTS threads released together."""
    start = threading.Barrier(CLIENTS)
    answers: list[Answer] = []

    def client(index: int) -> None:
        start.wait()
        answers.append(send(index))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(answers) == CLIENTS
    return answers


@pytest.mark.parametrize(
    ("quota", "vcpus", "fits"),
    [({"vms": 7}, 1, 7), ({"vcpus": 10, "memory_mib": 100_000}, 3, 3)],
    ids=["vms", "vcpus"],
)
def test_fifty_concurrent_creates_never_pass_the_quota(app, api, quota, vcpus, fits):
    url, admin = api
    assert request(url, admin, "POST", "/projects", {"name": "team", "quota": quota}).status == 201
    with app.app_context():
        operator = tokens.create_token("team-operator", "operator", "team")[1]

    answers = fifty_at_once(
        lambda i: request(url, operator, "POST", "/vms", {**TINY, "name": f"vm-{i}", "vcpus": vcpus})
    )

    statuses = sorted(a.status for a in answers)
    assert statuses == [202] * fits + [409] * (CLIENTS - fits), [(a.status, a.body) for a in answers]
    assert {a.body["error"]["code"] for a in answers if a.status == 409} == {"quota_exceeded"}
    vms = request(url, operator, "GET", "/vms").body["vms"]
    assert len(vms) == fits
    used = request(url, operator, "GET", "/projects/team/usage").body["usage"]["used"]
    assert used == {"vms": fits, "vcpus": fits * vcpus, "memory_mib": fits * TINY["memory_mib"], "emulated": 0}
