"""The conductor's periodic work: publish jobs left pending (the outbox sweep), re-route stranded ones."""

from __future__ import annotations

import logging
import threading

from flask import Flask

from web.services.dispatch import dispatch_stale_pending
from web.services.rerouting import reroute_stranded

log = logging.getLogger(__name__)


class Sweeper(threading.Thread):
    def __init__(self, app: Flask, interval_s: float) -> None:
        super().__init__(name="archq-sweeper", daemon=True)
        self._app = app
        self._interval_s = interval_s
        self._stopping = threading.Event()

    def sweep(self) -> None:
        ext = self._app.extensions["archq"]
        with self._app.app_context():
            sent = dispatch_stale_pending(ext.celery, ext.claims, ext.settings.dispatch_retry_s)
            rerouted = reroute_stranded(ext.celery, ext.claims, ext.settings)
        if sent:
            log.info("published %d job(s) that were left pending", sent)
        if rerouted:
            log.info("re-routed %d stranded job(s) to emulation", rerouted)

    def run(self) -> None:
        while not self._stopping.wait(self._interval_s):
            try:
                self.sweep()
            except Exception:
                log.exception("sweep failed; retrying")

    def stop(self) -> None:
        self._stopping.set()
