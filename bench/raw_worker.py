"""The raw Celery baseline's worker: archq's Celery configuration (`make_celery`: JSON, acks_late, prefetch 1,
task events) on a threads pool of ARCHQ_WORKER_CONCURRENCY, started as `WorkerService.run` starts archq's,
with two trivial tasks. Run as `python -m bench.raw_worker` with ARCHQ_BROKER_URL / ARCHQ_REDIS_URL set."""

from __future__ import annotations

import time

import redis
from celery import Celery

from queues.celery_app import make_celery
from queues.config import Settings

QUEUE = "amd64"
HOSTNAME = "raw@bench"
STARTED = "bench.started"
NOOP = "bench.noop"


def build_app(settings: Settings) -> Celery:
    app = make_celery(settings, main="bench-raw")
    client = redis.Redis.from_url(settings.redis_url)

    @app.task(name=STARTED, acks_late=True, ignore_result=True)
    def started(key: str) -> None:
        """Tell the client when the task started."""
        client.rpush(key, repr(time.time()))

    @app.task(name=NOOP, acks_late=True, ignore_result=True)
    def noop(key: str, total: int) -> None:
        """Nothing; the task that completes the `total` tells the client when that was."""
        if client.incr(key) == total:
            client.rpush(f"{key}:done", repr(time.time()))

    return app


def main() -> None:
    settings = Settings.from_env()
    build_app(settings).Worker(
        hostname=HOSTNAME,
        queues=[QUEUE],
        pool="threads",
        concurrency=settings.worker_concurrency,
        loglevel="INFO",
        without_mingle=True,
        without_gossip=True,
    ).start()


if __name__ == "__main__":
    main()
