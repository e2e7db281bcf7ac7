"""Placement keeps the capacity view consistent under concurrency: many creates racing for the last free slots
of a host, through a real `archq api` (two gunicorn processes, several threads each) on SQLite and on
PostgreSQL, fill the host exactly and refuse the rest with 503 no_capacity."""

from __future__ import annotations

import dataclasses
import http.client
import json
import threading
import time
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import psycopg
import pytest
from sqlalchemy import func, select

from queues import messages
from tests.support.api import TINY
from tests.support.auth import make_token
from tests.support.live_api import start_api
from web.extensions import db
from web.models import Host, Vm
from web.services.hosts import record_heartbeat

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/"
POSTGRES_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
# The host has room for this many tiny (128 MiB) VMs: memory is the tight resource.
SLOTS = 5
CLIENTS = 24


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'archq.db'}"
        return
    name = f"archq_race_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(POSTGRES_ADMIN, autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL with trust auth at 127.0.0.1:5432: {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield POSTGRES + name
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture
def settings(settings, database_url):
    # Beats are sent by the test alone: the host must stay live for the whole race.
    return dataclasses.replace(settings, database_url=database_url, heartbeat_interval_s=60)


@pytest.fixture
def api_url(app, processes) -> str:
    # Two processes of several threads: reservations race across processes, not only inside one.
    return start_api(processes, workers=2, threads=8)[0]


def heartbeat(app, name: str, memory_mib: int) -> None:
    beat = messages.heartbeat.load({
        "host": name, "arch": "amd64", "accel": "kvm", "emulators": [], "queues": ["amd64", f"host.{name}"],
        "cpu_modes": {}, "capacity": {"vcpus": 64, "memory_mib": memory_mib, "disk_mib": 100_000},
        "allocated": {}, "domains": [], "started_at": time.time(), "at": time.time(),
        "networks": {"libvirt": ["archq"]},
    })  # fmt: skip
    with app.app_context():
        record_heartbeat(beat)
        db.session.commit()


def race(url: str, token: str, bodies: list[dict]) -> list[tuple[int, dict]]:
    """POST every body at once, one connection and thread each, released together."""
    start = threading.Barrier(len(bodies))
    answers: list[tuple[int, dict]] = [(0, {})] * len(bodies)

    def post(index: int) -> None:
        connection = http.client.HTTPConnection(urlsplit(url).netloc, timeout=60)
        connection.connect()
        start.wait()
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        connection.request("POST", "/api/v1/vms", json.dumps(bodies[index]), headers)
        response = connection.getresponse()
        answers[index] = (response.status, json.loads(response.read()))
        connection.close()

    threads = [threading.Thread(target=post, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


@pytest.mark.parametrize("placement", [{"placement": "least_loaded"}, {"placement": "round_robin"}, {"host": "solo"}])
def test_concurrent_creates_take_a_hosts_last_slots_once(app, api_url, placement):
    heartbeat(app, "solo", memory_mib=SLOTS * TINY["memory_mib"])
    token = make_token(app, "operator", "racer")
    bodies = [{**TINY, **placement, "name": f"racer-{i}"} for i in range(CLIENTS)]

    answers = race(api_url, token, bodies)

    statuses = sorted(status for status, _ in answers)
    assert statuses == [202] * SLOTS + [503] * (CLIENTS - SLOTS), answers
    refusals = {body["error"]["code"] for status, body in answers if status == 503}
    assert refusals == {"no_capacity"}
    with app.app_context():
        placed = db.session.execute(select(func.count(), func.sum(Vm.memory_mib)).where(Vm.host == "solo")).one()
        assert tuple(placed) == (SLOTS, SLOTS * TINY["memory_mib"])
        assert db.session.get(Host, "solo").free_memory_mib == 0


def test_a_heartbeat_recounts_what_the_vms_placed_on_the_host_hold(app, api_url):
    heartbeat(app, "solo", memory_mib=SLOTS * TINY["memory_mib"])
    token = make_token(app, "operator", "racer")
    answers = race(api_url, token, [{**TINY, "placement": "best_fit", "name": f"vm-{i}"} for i in range(2)])
    assert [status for status, _ in answers] == [202, 202]

    # The host grows: the next beat gives it the new room, less what the two VMs hold.
    heartbeat(app, "solo", memory_mib=10 * TINY["memory_mib"])
    with app.app_context():
        host = db.session.get(Host, "solo")
        assert (host.free_memory_mib, host.free_vcpus) == (8 * TINY["memory_mib"], 64 * 4 - 2)
