"""Fifty clients creating VMs in one project at the same moment, against a real `archq api` (several gunicorn
processes, so creates race across processes and group commits) on SQLite and on PostgreSQL: however they
interleave, the project never holds more than its quota, and every refusal is `quota_exceeded`."""

from __future__ import annotations

import uuid

import pytest

# A real API with four processes on a fresh SQLite or PostgreSQL database (the fixtures), and the barrier.
from tests.api.test_concurrent_creates import all_at_once, api, request, settings  # noqa: F401
from tests.support.api import TINY
from web.services import tokens

CLIENTS = 50
ROUNDS = 3


@pytest.mark.parametrize(
    ("quota", "vcpus", "fits"),
    [({"vms": 7}, 1, 7), ({"vcpus": 10, "memory_mib": 100_000}, 3, 3)],
    ids=["vms", "vcpus"],
)
def test_fifty_concurrent_creates_never_pass_the_quota(app, api, quota, vcpus, fits):  # noqa: F811 (the fixture)
    url, admin = api
    # A race is a matter of timing: several rounds, each in a project of its own.
    for round_ in range(ROUNDS):
        project = f"team-{round_}"
        assert request(url, admin, "POST", "/projects", {"name": project, "quota": quota}).status == 201
        with app.app_context():
            operator = tokens.create_token(f"{project}-operator", "operator", project)[1]

        body = {**TINY, "vcpus": vcpus}
        answers = all_at_once(
            lambda: request(url, operator, "POST", "/vms", {**body, "name": f"vm-{uuid.uuid4().hex[:8]}"}),  # noqa: B023
            clients=CLIENTS,
        )

        statuses = sorted(a.status for a in answers)
        assert statuses == [202] * fits + [409] * (CLIENTS - fits), [(a.status, a.body) for a in answers]
        assert {a.body["error"]["code"] for a in answers if a.status == 409} == {"quota_exceeded"}
        assert len(request(url, operator, "GET", "/vms").body["vms"]) == fits
        used = request(url, operator, "GET", f"/projects/{project}/usage").body["usage"]["used"]
        assert used == {"vms": fits, "vcpus": fits * vcpus, "memory_mib": fits * TINY["memory_mib"], "emulated": 0}
