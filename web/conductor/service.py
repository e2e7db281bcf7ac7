"""Running the conductor: its Celery worker on `control` and its sweeper thread."""

from __future__ import annotations

import logging
import socket

import redis
from flask import Flask

from queues.names import CONTROL, Task
from web.conductor.leader import LeaderLease
from web.conductor.sweeper import Sweeper
from web.conductor.tasks import register_tasks


def build_conductor(app: Flask) -> Sweeper:
    """Register the control tasks on the app's Celery app; returns the (unstarted) sweeper."""
    ext = app.extensions["archq"]
    register_tasks(ext.celery, app)
    client = redis.Redis.from_url(ext.settings.redis_url)
    lease = LeaderLease(client, ext.settings.leader_lease_s)
    return Sweeper(app, interval_s=max(0.2, ext.settings.dispatch_retry_s / 2), lease=lease, liveness=client)


class HeartbeatsAtDebug(logging.Filter):
    """Celery logs every task it receives and finishes at INFO; a heartbeat every few seconds per host would
    bury the jobs' lines. Heartbeat records become DEBUG, shown only when their logger is at DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        data = getattr(record, "data", None)
        if not isinstance(data, dict) or data.get("name") != Task.HEARTBEAT:
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def run_conductor(app: Flask) -> None:
    ext = app.extensions["archq"]
    sweeper = build_conductor(app)
    sweeper.start()
    for name in ("celery.worker.strategy", "celery.app.trace"):  # Celery's "received" and "succeeded in"
        logging.getLogger(name).addFilter(HeartbeatsAtDebug())
    try:
        ext.celery.Worker(
            hostname=f"conductor@{socket.gethostname()}",
            queues=[CONTROL],
            pool="solo",
            loglevel="INFO",
            # No task events: its tasks are heartbeats and job reports, which would bury the jobs in
            # Flower's task list. It still sends worker events, so Flower lists it as a worker.
            task_events=False,
            # Mingle and gossip cost a second at start and nothing here uses them (Flower reads events).
            without_mingle=True,
            without_gossip=True,
        ).start()
    finally:
        sweeper.stop()
