"""The consumer watchdog: a Celery consumer on Redis can wedge after a broker restart (it stays connected
to nothing and never takes another message). When the worker's queues hold messages, it runs nothing, and
has received nothing for a while although Redis answers, the process exits and its supervisor
(`archq worker`) starts a fresh one. Crash-only: a restart is cheap, idempotent jobs and claims make it safe.
"""

from __future__ import annotations

import logging
import os
import threading
import time

import redis

log = logging.getLogger(__name__)

EXIT_WEDGED = 70


class Activity:
    """How many jobs this worker runs now, and since when it has taken none."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running = 0
        self._last = time.monotonic()

    def started(self) -> None:
        with self._lock:
            self._running += 1
            self._last = time.monotonic()

    def finished(self) -> None:
        with self._lock:
            self._running -= 1
            self._last = time.monotonic()

    def busy(self) -> bool:
        with self._lock:
            return self._running > 0

    def idle_for(self) -> float:
        with self._lock:
            return time.monotonic() - self._last


class ConsumerWatchdog(threading.Thread):
    def __init__(self, client: redis.Redis, queues: list[str], activity: Activity, stall_s: float = 20.0) -> None:
        super().__init__(name="archq-watchdog", daemon=True)
        self._redis = client
        self._queues = queues
        self._activity = activity
        self._stall_s = stall_s

    def wedged(self) -> bool:
        if self._activity.busy() or self._activity.idle_for() < self._stall_s:
            return False
        try:
            pipe = self._redis.pipeline(transaction=False)
            for queue in self._queues:
                pipe.llen(queue)
            return any(pipe.execute())
        except redis.RedisError:
            return False  # the broker itself is away: nothing to blame the consumer for

    def run(self) -> None:
        while True:
            time.sleep(self._stall_s / 4)
            if self.wedged():
                log.error("consumer wedged: messages wait on %s and none arrived for %.0fs; restarting",
                          ", ".join(self._queues), self._stall_s)  # fmt: skip
                logging.shutdown()
                os._exit(EXIT_WEDGED)
