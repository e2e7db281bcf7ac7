"""Remote control (pidbox) across Redis restarts: workers and the conductor keep running jobs without a
restart, and Flower's worker page, which asks the worker over pidbox, answers again once Redis is back."""

from __future__ import annotations

import threading
import time

from tests.faults.test_faults import assert_clean, submit
from tests.support.flower import start_flower
from tests.support.services import wait_for


def test_workers_and_flowers_worker_page_survive_redis_restarts_mid_burst(stack, redis_server, processes):
    stack.start_api()
    conductor = stack.start_conductor()
    worker = stack.start_worker()
    flower = start_flower(processes)
    page = "/worker/archq@amd64-host"
    wait_for(lambda: flower.get(page)[0] == 200, timeout=30, what="the worker page")
    for round_ in range(3):
        # Redis goes away while jobs run and Flower asks the worker over pidbox, and comes back 3 s later.
        outage = threading.Timer(0.5, redis_server.stop)
        restart = threading.Timer(3.5, redis_server.start)
        outage.start()
        restart.start()
        pages = threading.Thread(target=lambda: [flower.get(page) for _ in range(10)])
        pages.start()
        job_ids = submit(stack, 60, f"rc{round_}", accept_503=True)
        outage.join()
        restart.join()
        pages.join()
        back = time.monotonic()
        figures = stack.tally(f"redis restarted mid-burst ({round_ + 1})", job_ids, timeout=120)
        assert_clean(figures)
        assert figures["succeeded"] == figures["accepted"]
        wait_for(lambda: flower.get(page)[0] == 200, timeout=60, what="the worker page after a Redis restart")
        print(f"round {round_ + 1}: jobs done and the worker page back {time.monotonic() - back:.1f}s after Redis")
    # Neither crashed: the worker's supervisor never had to start it again, and the conductor still runs.
    assert "worker exited" not in worker.output(), worker.output()[-5000:]
    assert conductor.proc.poll() is None, conductor.output()[-5000:]
