"""Two real conductors on one PostgreSQL and one Redis: only the lease holder does the periodic work (here the
down-marking, which both would otherwise race for), and when it is killed the other takes over within the
lease plus a sweep."""

from __future__ import annotations

import dataclasses
import re
import socket
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
import redis
from sqlalchemy import func, select, update

from queues.vocabulary import VmState
from tests.support.databases import fresh_database
from tests.support.fleet import add_vm, beat
from tests.support.services import ArchqProcess, wait_for
from web.conductor.leader import LEADER_KEY
from web.extensions import db
from web.models import Host, Vm, utcnow

LEASE_S = 2.0
MARKED = re.compile(r"VMs marked unknown \(host down\): (\d+)")


@pytest.fixture
def settings(settings, tmp_path) -> Iterator:
    with fresh_database("postgresql", tmp_path) as url:
        yield dataclasses.replace(settings, database_url=url, leader_lease_s=LEASE_S)


def marked_by(conductor: ArchqProcess) -> int:
    return sum(int(n) for n in MARKED.findall(conductor.output()))


def leads(conductor: ArchqProcess) -> bool:
    return "leading the periodic work" in conductor.output()


def unknown_count(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Vm).where(Vm.state == VmState.UNKNOWN))


def add_vms_on_a_down_host(app, count: int, spacing_s: float) -> None:
    """VMs that claim to run on a host silent for an hour, one at a time while the conductors sweep."""
    for _ in range(count):
        with app.app_context():
            add_vm(host="gone")
        time.sleep(spacing_s)


def test_one_conductor_sweeps_and_another_takes_over_when_it_is_killed(app, settings, processes):
    with app.app_context():
        beat("gone")
        db.session.execute(update(Host).values(last_seen=utcnow() - timedelta(hours=1)))
        db.session.commit()
    first = processes("conductor", log_name="conductor-1")
    second = processes("conductor", log_name="conductor-2")
    wait_for(lambda: leads(first) or leads(second), timeout=30, what="a leader")
    leader, follower = (first, second) if leads(first) else (second, first)
    owner = redis.Redis.from_url(settings.redis_url).get(LEADER_KEY).decode()
    assert owner.startswith(f"{socket.gethostname()}:{leader.proc.pid}:")

    # Twelve VMs over three seconds (a dozen sweeps of each conductor): every one is marked by the leader.
    add_vms_on_a_down_host(app, 12, spacing_s=0.25)
    wait_for(lambda: unknown_count(app) == 12, timeout=20, what="the 12 VMs marked unknown")
    wait_for(lambda: marked_by(leader) == 12, timeout=10, what="the leader's log of the 12")
    assert marked_by(follower) == 0 and not leads(follower)

    leader.kill()
    killed_at = time.monotonic()
    wait_for(lambda: leads(follower), timeout=LEASE_S * 5, what="the survivor taking the lease")
    took_over_s = time.monotonic() - killed_at
    # At most the lease (the killed leader's last renewal) plus one sweep interval, and some slack for a busy CI.
    assert took_over_s < LEASE_S + 3, took_over_s
    assert (
        redis.Redis.from_url(settings.redis_url)
        .get(LEADER_KEY)
        .decode()
        .startswith(f"{socket.gethostname()}:{follower.proc.pid}:")
    )
    add_vms_on_a_down_host(app, 3, spacing_s=0.1)
    wait_for(lambda: unknown_count(app) == 15, timeout=20, what="the survivor marking the 3 new VMs")
    wait_for(lambda: marked_by(follower) == 3, timeout=10, what="the survivor's log of the 3")


def test_a_stopped_leader_hands_the_lease_over_at_once(app, settings, processes):
    first = processes("conductor", log_name="conductor-1")
    wait_for(lambda: leads(first), timeout=30, what="the first conductor leading")
    second = processes("conductor", log_name="conductor-2")
    # The second is up (it consumes `control`) but does not lead while the first holds the lease.
    wait_for(lambda: "ready" in second.output(), timeout=30, what="the second conductor's worker")
    assert not leads(second)
    first.stop()
    stopped_at = time.monotonic()
    wait_for(lambda: leads(second), timeout=LEASE_S * 5, what="the second conductor leading")
    # Released, not expired: the second takes it at its next sweep, well before the lease would have run out.
    assert time.monotonic() - stopped_at < LEASE_S, time.monotonic() - stopped_at
