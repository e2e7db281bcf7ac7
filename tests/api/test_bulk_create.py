"""Bulk create (`count`) through POST /api/v1/vms on SQLite and PostgreSQL, a fleet registered by heartbeats:
N VMs named `<name>-<i>` with their jobs written in one transaction, placed by the strategy (each on another
host with `spread`), and all of them refused, with no row or reservation left behind, when one cannot be."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from tests.support.api import TINY, error_of
from tests.support.databases import KINDS, fresh_database
from tests.support.fleet import beat
from web.extensions import db
from web.models import Host, Job, Vm


@pytest.fixture(params=KINDS)
def settings(request, settings, tmp_path) -> Iterator:
    with fresh_database(request.param, tmp_path) as url:
        # Hosts beat once and stay live for the whole test.
        yield dataclasses.replace(settings, database_url=url, max_create_count=20, heartbeat_interval_s=3600)


@pytest.fixture
def fleet(app):
    """KVM hosts of 4 vCPUs (16 with overcommit) and 4 GiB each: sixteen 256 MiB VMs fill one by memory (an
    emulated VM also counts its translation cache: tests/api/test_emulated_capacity.py)."""

    def add(*names: str) -> None:
        with app.app_context():
            for name in names:
                beat(name, accel="kvm")

    return add


def counts(app) -> tuple[int, int]:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Vm)), db.session.scalar(
            select(func.count()).select_from(Job)
        )


def free_memory(app) -> dict[str, int]:
    with app.app_context():
        return dict(db.session.execute(select(Host.name, Host.free_memory_mib)).all())


@pytest.fixture
def transactions_of_new_vms(app) -> Iterator[list[int]]:
    """For each flush that inserts VMs, an id of the transaction it belongs to."""
    seen: list[int] = []

    def after_flush(session, _context) -> None:
        if any(isinstance(obj, Vm) for obj in session.new):
            root = session.get_transaction()
            seen.append(id(root))

    event.listen(Session, "after_flush", after_flush)
    yield seen
    event.remove(Session, "after_flush", after_flush)


def test_count_creates_named_vms_and_their_jobs_in_one_transaction(client, fleet, app, transactions_of_new_vms):
    fleet("a", "b")
    response = client.post("/api/v1/vms", json={**TINY, "name": "web", "count": 5, "placement": "least_loaded"})
    assert response.status_code == 202, response.get_json()
    body = response.get_json()
    assert body["count"] == 5
    assert [vm["name"] for vm in body["vms"]] == [f"web-{i}" for i in range(1, 6)]
    assert [job["vm_id"] for job in body["jobs"]] == [vm["id"] for vm in body["vms"]]
    assert {job["kind"] for job in body["jobs"]} == {"create"}
    # Placed by the strategy, each seeing what the ones before it reserved: least_loaded alternates.
    assert {vm["host"] for vm in body["vms"]} == {"a", "b"}
    assert counts(app) == (5, 5)
    assert len(set(transactions_of_new_vms)) == 1


def test_one_name_taken_refuses_them_all(client, fleet, app):
    fleet("a")
    assert client.post("/api/v1/vms", json={**TINY, "name": "db-3"}).status_code == 202
    before = free_memory(app)
    error = error_of(client.post("/api/v1/vms", json={**TINY, "name": "db", "count": 4}), 409)
    assert error["code"] == "name_taken" and "db-3" in error["message"] and "none was created" in error["message"]
    assert counts(app) == (1, 1)
    assert free_memory(app) == before


def test_no_room_for_the_last_refuses_them_all_and_keeps_no_reservation(client, fleet, app):
    fleet("a", "b")
    before = free_memory(app)
    # 32 VMs of 256 MiB fill both hosts; the 33rd does not fit: the maximum here is 20, so two requests.
    big = {**TINY, "memory_mib": 256, "placement": "best_fit"}
    assert client.post("/api/v1/vms", json={**big, "name": "fill", "count": 20}).status_code == 202
    after_first = free_memory(app)
    assert sum(before.values()) - sum(after_first.values()) == 20 * 256
    error = error_of(client.post("/api/v1/vms", json={**big, "name": "more", "count": 13}), 503)
    assert error["code"] == "no_capacity"
    assert counts(app) == (20, 20)
    assert free_memory(app) == after_first
    last = client.post("/api/v1/vms", json={**big, "name": "more", "count": 12})
    assert last.status_code == 202, (last.get_json(), free_memory(app))


def test_spread_puts_each_on_another_host_or_refuses(client, fleet, app):
    fleet("a", "b", "c")
    response = client.post("/api/v1/vms", json={**TINY, "name": "ha", "count": 3, "spread": True})
    assert response.status_code == 202, response.get_json()
    assert sorted(vm["host"] for vm in response.get_json()["vms"]) == ["a", "b", "c"]
    error = error_of(client.post("/api/v1/vms", json={**TINY, "name": "ha4", "count": 4, "spread": True}), 503)
    assert error["code"] == "no_capacity" and "spread" in error["message"]
    assert counts(app) == (3, 3)


def test_idempotency_key_covers_the_whole_request(client, fleet, app):
    fleet("a")
    body = {**TINY, "name": "idem", "count": 3}
    first = client.post("/api/v1/vms", json=body, headers={"Idempotency-Key": "bulk-1"})
    again = client.post("/api/v1/vms", json=body, headers={"Idempotency-Key": "bulk-1"})
    assert first.status_code == again.status_code == 202
    assert [vm["id"] for vm in again.get_json()["vms"]] == [vm["id"] for vm in first.get_json()["vms"]]
    # Routed to a queue (the default placement), not placed: every VM goes the first one's way.
    assert {job["queue"] for job in first.get_json()["jobs"]} == {"amd64"}
    assert {vm["host"] for vm in first.get_json()["vms"]} == {None}
    assert counts(app) == (3, 3)


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"count": 0}, "count"),
        ({"count": 21}, "count"),
        ({"name": "n" * 61, "count": 10}, "name"),
        ({"count": 2, "spread": True, "host": "a"}, "spread"),
    ],
)
def test_bad_counts_are_refused_before_anything(client, fleet, app, extra, field):
    fleet("a")
    error = error_of(client.post("/api/v1/vms", json={**TINY, "name": "bad", **extra}), 422)
    assert field in error["fields"]
    assert counts(app) == (0, 0)
