"""Heartbeats split in two (queues/liveness.py), with a real worker, conductor and Redis: an idle host sends its
full beat once and then only marks itself alive, yet stays up; when it dies it is down within the liveness
window; a full beat that no conductor recorded (lost) is sent again."""

from __future__ import annotations

import os
import signal
import time

import redis
from sqlalchemy import select

from queues.liveness import RECORDED_KEY, SEEN_KEY
from queues.names import CONTROL
from tests.support.api import wait_host
from tests.support.services import wait_for
from web.extensions import db
from web.models import Host


def last_seen(app, name: str):
    with app.app_context():
        return db.session.scalar(select(Host.last_seen).where(Host.name == name))


def test_an_idle_host_stays_up_on_liveness_marks_alone_and_goes_down_when_killed(
    app, client, conductor, processes, settings
):
    worker = processes("worker", log_name="idle-host", ARCHQ_HOSTNAME="idle-host")
    # Two Python processes starting on a loaded machine took 14 s once: the wait covers starting, not beating.
    wait_host(client, "idle-host", timeout=60)
    broker = redis.Redis.from_url(settings.redis_url)
    # Settled: the last full beat the worker sent is recorded and no other follows (its first beats may still
    # change, e.g. once its NAT network is up), over four intervals.
    settled: list[bytes | None] = []

    def steady() -> bool:
        settled.append(broker.hget(RECORDED_KEY, "idle-host"))
        return len(settled) >= 4 and settled[-1] is not None and len(set(settled[-4:])) == 1

    wait_for(steady, timeout=30, interval=settings.heartbeat_interval_s, what="the full beats to settle")

    # Idle: what the host says no longer changes, so its beats are marks only (no `control` message while
    # the conductor is paused), and the conductor still moves last_seen forward from them.
    os.killpg(conductor.proc.pid, signal.SIGSTOP)
    try:
        marked = broker.zscore(SEEN_KEY, "idle-host")
        wait_for(lambda: broker.zscore(SEEN_KEY, "idle-host") > marked + settings.heartbeat_interval_s * 8,
                 timeout=30, what="eight more beats")  # fmt: skip
        # At most one full beat (the free disk crossing a GiB) and one the paused conductor had already asked
        # for; a beat each time would be eight or more.
        assert broker.llen(CONTROL) <= 2
    finally:
        os.killpg(conductor.proc.pid, signal.SIGCONT)
    before = last_seen(app, "idle-host")
    wait_for(lambda: last_seen(app, "idle-host") > before, what="last_seen moved by the marks")
    assert client.get("/api/v1/hosts/idle-host").get_json()["host"]["state"] == "up"

    worker.kill()
    killed_at = time.monotonic()
    wait_host(client, "idle-host", state="down")
    # The conductor's sweep runs every dispatch_retry_s / 2: down within the window plus a sweep and slack.
    assert time.monotonic() - killed_at < settings.host_down_after_s + 3


def test_a_full_beat_no_conductor_recorded_is_sent_again(app, client, processes, settings):
    """The worker starts with no conductor: its first full beat expires in the queue (3 intervals). Started
    later, the conductor still learns the host, from the full beat the worker sends again."""
    processes("worker", log_name="early-host", ARCHQ_HOSTNAME="early-host")
    broker = redis.Redis.from_url(settings.redis_url)
    wait_for(lambda: broker.zscore(SEEN_KEY, "early-host") is not None, what="the worker's first mark")
    time.sleep(settings.heartbeat_interval_s * 4)
    processes("conductor")
    wait_host(client, "early-host", timeout=60)
    wait_for(lambda: broker.hget(RECORDED_KEY, "early-host") is not None, what="the re-sent full beat recorded")
