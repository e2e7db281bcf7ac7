"""The conductor's periodic work: publish jobs left pending (the outbox sweep), re-route stranded ones."""

from __future__ import annotations

import logging
import threading
import time

import redis
from flask import Flask

from web.models import utcnow
from web.services.dispatch import dispatch_stale_pending
from web.services.jobs import prune_finished_jobs
from web.services.reconciler import mark_down_hosts_unknown
from web.services.recovery import (
    recover_running,
    republish_after_broker_loss,
    republish_swallowed,
    republish_unclaimed,
)
from web.services.rerouting import reroute_stranded

log = logging.getLogger(__name__)


# Old finished jobs are looked for once a minute, not at every sweep.
PRUNE_EVERY_S = 60.0


class Sweeper(threading.Thread):
    def __init__(self, app: Flask, interval_s: float) -> None:
        super().__init__(name="archq-sweeper", daemon=True)
        self._app = app
        self._interval_s = interval_s
        self._stopping = threading.Event()
        self._broker_up = True
        self._broker_back_at = None
        self._pruned_at: float | None = None

    def _watch_broker(self, claims) -> bool:
        try:
            claims.ping()
        except redis.RedisError:
            self._broker_up = False
            return False
        if not self._broker_up:
            self._broker_up, self._broker_back_at = True, utcnow()
        return True

    def _recently_back(self, settings) -> bool:
        back = self._broker_back_at
        return back is not None and (utcnow() - back).total_seconds() < settings.host_down_after_s * 2

    def sweep(self) -> None:
        ext = self._app.extensions["archq"]
        if not self._watch_broker(ext.claims):
            return
        with self._app.app_context():
            counts = {
                "re-sent after the broker lost its data": republish_after_broker_loss(ext.celery, ext.claims),
                "published after staying pending": dispatch_stale_pending(
                    ext.celery, ext.claims, ext.settings.dispatch_retry_s
                ),
                "re-routed to emulation": reroute_stranded(ext.celery, ext.claims, ext.settings),
                "recovered from a lost worker or report": recover_running(
                    ext.celery, ext.claims, ext.settings, self._broker_back_at
                ),
                "re-sent after their worker restarted": republish_swallowed(ext.celery, ext.claims, ext.settings),
                "re-sent, unclaimed too long": republish_unclaimed(ext.celery, ext.claims, ext.settings),
                "VMs marked unknown (host down)": 0
                if self._recently_back(ext.settings)
                else mark_down_hosts_unknown(ext.settings),
                "finished jobs pruned (past ARCHQ_JOB_RETENTION_DAYS)": self._prune(ext.settings),
            }
        for what, count in counts.items():
            if count:
                log.info("%s: %d", what, count)

    def _prune(self, settings) -> int:
        if self._pruned_at is not None and time.monotonic() - self._pruned_at < PRUNE_EVERY_S:
            return 0
        self._pruned_at = time.monotonic()
        return prune_finished_jobs(settings.job_retention_days)

    def run(self) -> None:
        while not self._stopping.wait(self._interval_s):
            try:
                self.sweep()
            except Exception:
                log.exception("sweep failed; retrying")

    def stop(self) -> None:
        self._stopping.set()
