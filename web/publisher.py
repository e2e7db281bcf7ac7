"""The API process's publisher thread: it drains committed job ids and dispatches them in batches.

A request only commits its job and hands its message over, so the response never waits on the broker. When
requests arrive faster than one publish, the ids accumulate and the next round sends them together, with
one connection and one token pipeline for the whole batch.
"""

from __future__ import annotations

import logging
import os
import queue
import threading

from flask import Flask

from web.services.dispatch import Outgoing, dispatch

log = logging.getLogger(__name__)

MAX_BATCH = 500


class Publisher:
    def __init__(self, app: Flask) -> None:
        self._app = app
        self._jobs: queue.SimpleQueue[Outgoing] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def notify(self, job: Outgoing) -> None:
        self._ensure_thread()
        self._jobs.put(job)

    def _ensure_thread(self) -> None:
        # gunicorn forks its workers after the app is built: each process needs its own thread.
        with self._lock:
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._jobs = queue.SimpleQueue()
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, name="archq-publisher", daemon=True)
                self._thread.start()

    def _next_batch(self) -> list[Outgoing]:
        batch = [self._jobs.get()]
        while len(batch) < MAX_BATCH:
            try:
                batch.append(self._jobs.get_nowait())
            except queue.Empty:
                break
        return batch

    def _run(self) -> None:
        ext = self._app.extensions["archq"]
        while True:
            batch = self._next_batch()
            try:
                with self._app.app_context():
                    dispatch(ext.celery, ext.claims, batch, actor="api")
            except Exception:
                # Whatever is left pending is swept up by the conductor; the thread must live on.
                log.exception("publishing %d job(s) failed", len(batch))
