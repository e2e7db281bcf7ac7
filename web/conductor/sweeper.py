"""The conductor's periodic work: publish jobs left pending (the outbox sweep), re-route stranded ones.

Only the conductor that holds the leader lease sweeps (web/conductor/leader.py); the others only consume
`control` until it goes away."""

from __future__ import annotations

import logging
import threading
import time

import redis
from flask import Flask

from queues.liveness import seen_after
from web.conductor.leader import LeaderLease
from web.models import utcnow
from web.services.dispatch import dispatch_ids, dispatch_stale_pending
from web.services.hosts import record_liveness
from web.services.jobs import prune_finished_jobs
from web.services.reconciler import mark_down_hosts_unknown, reconcile_returned_hosts
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
    def __init__(self, app: Flask, interval_s: float, lease: LeaderLease, liveness: redis.Redis) -> None:
        super().__init__(name="archq-sweeper", daemon=True)
        self._app = app
        self._interval_s = interval_s
        self.lease = lease
        self._liveness = liveness
        # Redis's clock at the last read of the hosts' marks (0: read every host once).
        self._seen_after = 0.0
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
        if not self._watch_broker(ext.claims) or not self.lease.hold():
            return
        celery, claims, settings = ext.celery, ext.claims, ext.settings
        steps = {
            "re-sent after the broker lost its data": lambda: republish_after_broker_loss(celery, claims),
            "published after staying pending": lambda: dispatch_stale_pending(
                celery, claims, settings.dispatch_retry_s
            ),
            "re-routed to emulation": lambda: reroute_stranded(celery, claims, settings),
            "recovered from a lost worker or report": lambda: recover_running(
                celery, claims, self._liveness, settings, self._broker_back_at
            ),
            "re-sent after their worker restarted": lambda: republish_swallowed(celery, claims, settings),
            "re-sent, unclaimed too long": lambda: republish_unclaimed(celery, claims, settings),
            "VMs marked unknown (host down)": lambda: (
                0 if self._recently_back(settings) else mark_down_hosts_unknown(settings)
            ),
            "VMs known again (their host is back)": lambda: self._reconcile_returned(celery, claims, settings),
            "finished jobs pruned (past ARCHQ_JOB_RETENTION_DAYS)": lambda: self._prune(settings),
        }
        with self._app.app_context():
            # First, so that the down-marking below sees every host that beat until now.
            seen = seen_after(self._liveness, self._seen_after)
            record_liveness(seen.ages)
            self._seen_after = seen.next_after
            for what, step in steps.items():
                # A leader that stalled past its lease leaves the rest to the conductor that took it over.
                if not self.lease.still_held():
                    log.warning("the leader lease ran short during a sweep; the rest is left to the next leader")
                    return
                count = step()
                if count:
                    log.info("%s: %d", what, count)

    def _reconcile_returned(self, celery, claims, settings) -> int:
        known, restarts = reconcile_returned_hosts(settings)
        if restarts:
            dispatch_ids(celery, claims, restarts, actor="reconciler")
        return known

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
        if self.is_alive():
            self.join(timeout=self._interval_s + 5)
        try:
            self.lease.release()
        except redis.RedisError:
            log.warning("could not release the leader lease; it expires by itself")
