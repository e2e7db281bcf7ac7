"""Drain rate: create jobs per second through a real `archq worker` on the libvirt test driver (with the API,
its outbox and `archq conductor` recording every report) vs raw Celery noop tasks per second on a worker with
the same settings (threads pool of 4, prefetch 1, acks_late). Each round queues N messages while the
worker's consumer is cancelled, then adds the consumer back and times until all N are done: archq's rate as
the API shows the jobs succeeded ("recorded") and as the worker finished them (its reports' timestamps),
the baseline's as the last task ended."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import redis
from celery import Celery

from bench.common import (
    TEST_HOST,
    TINY,
    Http,
    Samples,
    Stack,
    alternate,
    begin,
    bench_parser,
    compare,
    end,
    none_in_state,
    start_archq_and_raw,
    timestamp,
    wait_worker,
)
from bench.raw_worker import HOSTNAME, NOOP, QUEUE
from queues.celery_app import make_celery
from tests.support.services import wait_for

SUBMITTERS = 8


def set_consuming(app: Celery, worker: str, on: bool) -> None:
    """Start or stop `worker` consuming QUEUE (Celery remote control), once it has confirmed."""
    command = app.control.add_consumer if on else app.control.cancel_consumer
    if not command(QUEUE, destination=[worker], reply=True, timeout=5):
        raise RuntimeError(f"worker {worker} did not confirm {'add' if on else 'cancel'}_consumer")


def recent_jobs(http: Http, count: int) -> list[dict]:
    """The `count` most recently created jobs (the list is newest first, a keyset page at a time)."""
    jobs: list[dict] = []
    after = ""
    while len(jobs) < count:
        limit = min(500, count - len(jobs))
        body = http.call("GET", f"/jobs?kind=create&limit={limit}{after}")[1]
        jobs.extend(body["jobs"])
        if body["next"] is None:
            break
        after = f"&next={body['next']}"
    return jobs


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--jobs", type=int, help="jobs per round and contender (default: 20 quick, 300 full)")
    args = parser.parse_args()
    rounds = args.rounds or (2 if args.quick else 5)
    count = args.jobs or (20 if args.quick else 300)
    started = begin("drain: create jobs per second through a worker", args, probe_kvm=not args.quick)
    with Stack() as stack:
        base, http, worker, raw_app = start_archq_and_raw(stack)
        archq_worker = f"archq@{TEST_HOST}"
        control = make_celery(stack.settings(), main="bench-control")
        wait_worker(control, archq_worker, worker)
        replies = redis.Redis.from_url(stack.redis_url(1))
        print(f"{rounds} rounds of {count} jobs per contender; worker concurrency 4, threads pool")

        def submit(name: str) -> None:
            # One connection per submission keeps the threads independent; the API is not what is measured.
            client = Http(base, stack.token)
            status, body = client.call("POST", "/vms", {"name": name, **TINY})
            client.close()
            if status != 202:
                raise RuntimeError(f"POST /vms answered {status}: {body}")

        def archq_round(number: int) -> Samples:
            set_consuming(control, archq_worker, on=False)
            with ThreadPoolExecutor(SUBMITTERS) as pool:
                list(pool.map(submit, [f"r{number}-{n}" for n in range(count)]))
            wait_for(lambda: none_in_state(http, "pending"), timeout=120, what="every job to be published")
            resumed = time.time()
            set_consuming(control, archq_worker, on=True)
            wait_for(
                lambda: none_in_state(http, "queued") and none_in_state(http, "running"),
                timeout=600,
                interval=0.02,
                what="every job to end",
            )
            recorded = time.time()
            jobs = recent_jobs(http, count)
            failed = [job for job in jobs if job["state"] != "succeeded"]
            if failed:
                raise RuntimeError(f"{len(failed)} job(s) did not succeed, e.g. {failed[0]}")
            finished = max(timestamp(job["finished_at"]) for job in jobs)
            return {"jobs/s": [count / (recorded - resumed)], "jobs/s worker-side": [count / (finished - resumed)]}

        def raw_round(number: int) -> Samples:
            key = f"bench:drain:{number}"
            set_consuming(raw_app, HOSTNAME, on=False)
            with raw_app.producer_or_acquire() as producer:
                for _ in range(count):
                    raw_app.send_task(NOOP, args=[key, count], queue=QUEUE, producer=producer)
            resumed = time.time()
            set_consuming(raw_app, HOSTNAME, on=True)
            reply = replies.blpop([f"{key}:done"], timeout=600)
            if reply is None:
                raise RuntimeError("the raw tasks did not all end within 600 s")
            seen = time.time()
            return {"jobs/s": [count / (seen - resumed)], "jobs/s worker-side": [count / (float(reply[1]) - resumed)]}

        results = alternate(rounds, {"archq": archq_round, "celery": raw_round})
    archq, raw = results["archq"], results["celery"]
    compare("completed, as the client sees it", "jobs/s", archq["jobs/s"], raw["jobs/s"], "celery noop", rate=True)
    compare(
        "completed, by the worker's clock",
        "jobs/s",
        archq["jobs/s worker-side"],
        raw["jobs/s worker-side"],
        "celery noop",
        rate=True,
    )
    end(started)


if __name__ == "__main__":
    main()
