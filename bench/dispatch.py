"""Submit -> task started on the worker, p50/p99. archq: a create job through the HTTP API, the outbox
publisher, Redis, a real `archq worker` on the libvirt test driver (its `running` report gives the job's
started_at) and `archq conductor`. Baseline: a trivial raw Celery task on a worker with the same settings
(threads pool, prefetch 1, acks_late), from apply_async to the task starting (its timestamp comes back over
Redis). One job at a time, so no queueing is measured."""

from __future__ import annotations

import itertools
import time

import redis

from bench.common import (
    TEST_HOST,
    TINY,
    Samples,
    Stack,
    alternate,
    begin,
    bench_parser,
    compare,
    end,
    median,
    percentile,
    start_archq_and_raw,
    timestamp,
    wait_job,
    wait_worker,
)
from bench.raw_worker import QUEUE, STARTED
from queues.celery_app import make_celery

ARCHQ_METRICS = ("submit->started ms", "created->started ms", "created->queued ms", "queued->started ms")


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--per-round", type=int, help="jobs per round and contender (default: 5 quick, 30 full)")
    args = parser.parse_args()
    rounds = args.rounds or (2 if args.quick else 10)
    per_round = args.per_round or (5 if args.quick else 30)
    started = begin("dispatch: submit -> task started on the worker", args, probe_kvm=not args.quick)
    with Stack() as stack:
        _base, http, worker, raw_app = start_archq_and_raw(stack)
        wait_worker(make_celery(stack.settings(), main="bench-control"), f"archq@{TEST_HOST}", worker)
        replies = redis.Redis.from_url(stack.redis_url(1))
        numbers = itertools.count()
        print(f"{rounds} rounds of {per_round} sequential jobs per contender; worker concurrency 4, threads pool")

        def archq_round(_round: int) -> Samples:
            samples: Samples = {name: [] for name in ARCHQ_METRICS}
            for _ in range(per_round):
                submit = time.time()
                status, body = http.call("POST", "/vms", {"name": f"d{next(numbers)}", **TINY})
                if status != 202:
                    raise RuntimeError(f"POST /vms answered {status}: {body}")
                job = wait_job(http, body["job"]["id"], interval=0.02)
                created, queued, begun = (timestamp(job[f]) for f in ("created_at", "queued_at", "started_at"))
                for name, since, until in (
                    ("submit->started ms", submit, begun),
                    ("created->started ms", created, begun),
                    ("created->queued ms", created, queued),
                    ("queued->started ms", queued, begun),
                ):
                    samples[name].append((until - since) * 1000)
            return samples

        def raw_round(_round: int) -> Samples:
            latencies = []
            for _ in range(per_round):
                key = f"bench:started:{next(numbers)}"
                submit = time.time()
                raw_app.send_task(STARTED, args=[key], queue=QUEUE)
                reply = replies.blpop([key], timeout=30)
                if reply is None:
                    raise RuntimeError("the raw task did not start within 30 s")
                latencies.append((float(reply[1]) - submit) * 1000)
            return {"submit->started ms": latencies}

        results = alternate(rounds, {"archq": archq_round, "celery": raw_round})
    raw = results["celery"]["submit->started ms"]
    compare("submit -> started (client clock)", "ms", results["archq"]["submit->started ms"], raw, "celery", rate=False)
    compare(
        "archq job created_at -> started_at (server clocks) vs celery apply_async -> started",
        "ms",
        results["archq"]["created->started ms"],
        raw,
        "celery",
        rate=False,
    )
    print("-- where archq's time goes (created_at -> queued_at: the outbox publisher, committed to published and")
    print("   recorded; queued_at -> started_at: Redis, the worker's consumer, its claim and `running` report)")
    for name in ("created->queued ms", "queued->started ms"):
        values = results["archq"][name]
        print(f"   {name:<22} median {median(values):10.2f} ms, p99 {percentile(values, 99):.2f}")
    end(started)


if __name__ == "__main__":
    main()
