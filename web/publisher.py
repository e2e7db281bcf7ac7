"""The API process's publisher: committed jobs reach the broker at once when it is idle, in batches when
requests arrive faster than one publish.

A request commits its job and hands the job's message here. If nothing is being published, the request's
own thread publishes it right away: no hand-off to another thread, so the worker can start while the
response is still being written. Otherwise the message joins the queue of the publisher thread, which sends
everything waiting in one round on one connection. A job's first message needs no token written before
it (see queues/claims.py), so a publish is one broker round trip per message. Either way the publisher thread then
records the jobs as `queued`, a whole batch in one transaction, off the request path. Only one thread
publishes at a time: Celery's task-sent event dispatcher shares one connection, which concurrent publishers
hang.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from flask import Flask

from web.services.dispatch import BROKER_ERRORS, Outgoing, mark_published, publish

log = logging.getLogger(__name__)

MAX_BATCH = 500


@dataclass(frozen=True)
class _Entry:
    job: Outgoing
    sent: bool


class Publisher:
    def __init__(self, app: Flask) -> None:
        self._app = app
        self._entries: queue.SimpleQueue[_Entry] = queue.SimpleQueue()
        self._sending = threading.Lock()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0
        # Jobs handed over and not yet recorded as published (see wait_idle).
        self._outstanding = 0
        self._idle = threading.Condition()

    def notify(self, *jobs: Outgoing) -> None:
        """Jobs just committed (a bulk create's all at once: one publish round on one connection)."""
        self._ensure_thread()
        with self._idle:
            self._outstanding += len(jobs)
        sent = False
        if self._sending.acquire(blocking=False):
            try:
                sent = self._send(jobs)
            finally:
                self._sending.release()
        for job in jobs:
            self._entries.put(_Entry(job, sent))

    def _send(self, jobs: Sequence[Outgoing]) -> bool:
        ext = self._app.extensions["archq"]
        try:
            publish(ext.celery, ext.claims, jobs, first=True)
        except BROKER_ERRORS as exc:
            # They stay pending; the conductor's sweep publishes them when the broker is back.
            log.warning("broker unavailable, %d job(s) stay pending: %s", len(jobs), exc)
            return False
        except Exception:
            # The jobs are committed: a request must not fail for its publish; the sweep retries them.
            log.exception("publishing %d job(s) failed; they stay pending", len(jobs))
            return False
        return True

    def _ensure_thread(self) -> None:
        # gunicorn forks its workers after the app is built: each process needs its own thread.
        with self._lock:
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._entries = queue.SimpleQueue()
                self._sending = threading.Lock()
                self._pid = os.getpid()
                self._outstanding = 0
                self._thread = threading.Thread(target=self._run, name="archq-publisher", daemon=True)
                self._thread.start()

    def _next_batch(self) -> list[_Entry]:
        batch = [self._entries.get()]
        while len(batch) < MAX_BATCH:
            try:
                batch.append(self._entries.get_nowait())
            except queue.Empty:
                break
        return batch

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            try:
                self._publish_and_record(batch)
            except Exception:
                # Whatever is left pending is swept up by the conductor; the thread must live on.
                log.exception("publishing %d job(s) failed", len(batch))
            finally:
                with self._idle:
                    self._outstanding -= len(batch)
                    self._idle.notify_all()

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until every job handed over is published and recorded, so that nothing of this process still
        uses the database (an app torn down, its engine disposed); False if `timeout_s` passed first."""
        with self._idle:
            return self._idle.wait_for(lambda: self._outstanding <= 0, timeout_s)

    def _publish_and_record(self, batch: list[_Entry]) -> None:
        published = [entry.job.id for entry in batch if entry.sent]
        unsent = [entry.job for entry in batch if not entry.sent]
        if unsent:
            with self._sending:
                if self._send(unsent):
                    published += [job.id for job in unsent]
        with self._app.app_context():
            mark_published(published, actor="api")
