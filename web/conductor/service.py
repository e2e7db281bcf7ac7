"""Running the conductor: its Celery worker on `control` and its sweeper thread."""

from __future__ import annotations

import socket

from flask import Flask

from queues.names import CONTROL
from web.conductor.sweeper import Sweeper
from web.conductor.tasks import register_tasks


def build_conductor(app: Flask) -> Sweeper:
    """Register the control tasks on the app's Celery app; returns the (unstarted) sweeper."""
    ext = app.extensions["archq"]
    register_tasks(ext.celery, app)
    return Sweeper(app, interval_s=max(0.2, ext.settings.dispatch_retry_s / 2))


def run_conductor(app: Flask) -> None:
    ext = app.extensions["archq"]
    sweeper = build_conductor(app)
    sweeper.start()
    try:
        ext.celery.Worker(
            hostname=f"conductor@{socket.gethostname()}",
            queues=[CONTROL],
            pool="solo",
            loglevel="INFO",
            # Mingle and gossip cost a second at start and nothing here uses them (Flower reads events).
            without_mingle=True,
            without_gossip=True,
        ).start()
    finally:
        sweeper.stop()
