"""Submission throughput: POST /api/v1/vms accepted per second by `archq api` (gunicorn, its own SQLite
database, or PostgreSQL with `--postgres URL`, and Redis) from concurrent keep-alive clients, against:
- the reference a user would write instead (bench/reference_app.py: Flask under the same gunicorn settings,
  marshmallow validation, one row insert, send_task on Celery's pooled producer), on the same kind of database;
- raw Celery `send_task` per second of the same message to the same queue with Celery's pooled producer;
- and archq's bulk create: VMs accepted per second through POST /vms with `count`, against that same raw
  send_task rate (the same number of messages).
All from the same number of client threads. No worker consumes. archq also gets "queued/s": accepted jobs
over the time until its outbox publisher has sent all of them. After the measured rounds, py-spy profiles one
more archq round and prints where the time goes."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import redis

from bench.common import (
    TINY,
    Child,
    Http,
    Samples,
    Stack,
    alternate,
    begin,
    bench_parser,
    compare,
    end,
    fresh_postgres,
    none_in_state,
)
from bench.raw_worker import QUEUE
from bench.reference_app import QUEUE as REFERENCE_QUEUE
from queues.celery_app import make_celery
from queues.names import Task
from tests.support.services import free_port, wait_for

FRAME = re.compile(r"^(?P<func>.*) \((?P<file>.*):\d+\)$")
ARCHQ_PACKAGES = ("web", "queues", "workers")


def hammer(clients: int, seconds: float, work: Callable[[int, float], int]) -> tuple[int, float]:
    """Run `work(client, deadline)` in `clients` threads started together; returns the sum of what they
    counted and the seconds from the start until the last one returned."""
    counts = [0] * clients
    gate = threading.Barrier(clients + 1)

    def client(index: int) -> None:
        gate.wait()
        counts[index] = work(index, started + seconds)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    started = time.perf_counter()
    gate.wait()
    for thread in threads:
        thread.join()
    return sum(counts), time.perf_counter() - started


def raw_message(name: str) -> tuple[str, dict]:
    """The message archq publishes for a create job (see web.services.vms), built directly."""
    job_id = str(uuid.uuid4())
    vm = {"id": str(uuid.uuid4()), "name": name, **TINY, "emulated": False}
    return job_id, {"version": 1, "job_id": job_id, "token": uuid.uuid4().hex, "kind": "create", "vm": vm}


def start_reference(stack: Stack, database_url: str, workers: int, threads: int) -> str:
    """bench/reference_app.py under gunicorn with archq's settings, its broker on Redis database 2; its URL."""
    port = free_port()
    child = stack.spawn(
        "reference",
        [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", str(workers),
         "--threads", str(threads), "--access-logfile", "-", "bench.reference_app:create_app()"],
        REF_DATABASE_URL=database_url,
        REF_BROKER_URL=stack.redis_url(2),
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}/api/v1"

    def answers() -> bool:
        child.check_alive()
        try:
            return Http(base, "").call("POST", "/vms", {})[0] == 422
        except OSError:
            return False

    wait_for(answers, timeout=30, interval=0.1, what="the reference to answer")
    return base


# --- profile -----------------------------------------------------------------------------------------------


def parse_profile(path: Path) -> list[tuple[list[str], int]]:
    """py-spy's raw (collapsed) stacks: the thread's frames from the outermost, and the sample count."""
    stacks = []
    for line in path.read_text().splitlines():
        text, _, count = line.rpartition(" ")
        frames = [f for f in text.split(";") if not f.startswith(("process ", "thread "))]
        if frames:
            stacks.append((frames, int(count)))
    return stacks


def frame_key(frame: str, line: bool = False) -> tuple[str, str]:
    """(function, file) of a py-spy frame, the file with `:line` when asked."""
    match = FRAME.match(frame)
    if not match:
        return frame, ""
    return match["func"], frame[match.start("file") : -1] if line else match["file"]


def is_archq(key: tuple[str, str]) -> bool:
    return key[1].split("/", 1)[0] in ARCHQ_PACKAGES


def package(file: str) -> str:
    top = file.split("/", 1)[0].removesuffix(".py")
    return f"archq {top}" if top in ARCHQ_PACKAGES else top or "?"


def print_profile(title: str, stacks: list[tuple[list[str], int]], top: int = 12) -> None:
    total = sum(count for _, count in stacks)
    print(f"-- {title}: {total} samples")
    if not total:
        return
    by_package: Counter[str] = Counter()
    by_frame: Counter[tuple[str, str]] = Counter()
    inclusive: Counter[tuple[str, str]] = Counter()
    call_sites: Counter[tuple[str, str]] = Counter()
    for frames, count in stacks:
        keys = [frame_key(f) for f in frames]
        by_package[package(keys[-1][1])] += count
        by_frame[keys[-1]] += count
        for key in {key for key in keys if is_archq(key)}:
            inclusive[key] += count
        innermost = next((frame_key(f, line=True) for f in reversed(frames) if is_archq(frame_key(f))), None)
        if innermost:
            call_sites[innermost] += count

    def share(counter: Counter, label: Callable) -> str:
        return "\n".join(f"     {n / total * 100:5.1f}%  {label(k)}" for k, n in counter.most_common(top))

    print("   self time by package (where the samples' innermost Python frame is):")
    print(share(by_package, str))
    print("   self time by function:")
    print(share(by_frame, lambda k: f"{k[0]} ({k[1]})"))
    print("   inclusive time of archq's functions:")
    print(share(inclusive, lambda k: f"{k[0]} ({k[1]})"))
    print("   innermost archq line of each sample (the archq statement that the time is spent under):")
    print(share(call_sites, lambda k: f"{k[0]} ({k[1]})"))


def profile_round(stack: Stack, api: Child, seconds: float, run_round: Callable[[int], Samples]) -> None:
    """One more archq round under py-spy twice: on-CPU samples of every API process, then wall-clock
    samples (idle included) of request handling and of the publisher while it publishes."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        print("-- profile skipped: py-spy is not installed (pip install py-spy)")
        return
    for mode in ("cpu", "wall"):
        output = stack.dir / f"profile-{mode}.txt"
        argv = [spy, "record", "--pid", str(api.pid), "--subprocesses", "--threads", "--nonblocking", "--rate",
                "100", "--format", "raw", "--output", str(output), "--duration", str(int(seconds) + 2)]  # fmt: skip
        recorder = stack.spawn(f"py-spy-{mode}", [*argv, "--idle"] if mode == "wall" else argv)
        time.sleep(1)  # attached to the API's processes before the load starts
        rates = run_round(-1 if mode == "cpu" else -2)
        try:
            recorder.wait(timeout=seconds + 30)
        except subprocess.TimeoutExpired:
            print(f"-- profile ({mode}) skipped: py-spy did not finish:\n{recorder.tail()}")
            return
        if not output.exists():
            print(f"-- profile ({mode}) skipped: py-spy wrote nothing:\n{recorder.tail()}")
            return
        stacks = parse_profile(output)
        rate = rates["accepted/s"][0]
        if mode == "cpu":
            print_profile(f"profile, on-CPU, all API processes (round at {rate:.0f} accepted/s under py-spy)", stacks)
            continue
        busy = [
            (frames, count)
            for frames, count in stacks
            if any(f.startswith("ThreadWorker.handle ") for f in frames)
            or (any(f.startswith("Publisher._run ") for f in frames) and not any("_next_batch" in f for f in frames))
        ]
        requests = sum(n for frames, n in busy if any(f.startswith("ThreadWorker.handle ") for f in frames))
        publishing = sum(n for _, n in busy) - requests
        print_profile(
            f"profile, wall clock of request threads ({requests} samples) and the publisher while it publishes "
            f"({publishing}), idle waits included (round at {rate:.0f} accepted/s)",
            busy,
        )


# --- main --------------------------------------------------------------------------------------------------


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--clients", type=int, default=16, help="client threads (default 16)")
    parser.add_argument("--api-workers", type=int, default=2, help="gunicorn workers of `archq api` (default 2)")
    parser.add_argument("--api-threads", type=int, default=8, help="threads per gunicorn worker (default 8)")
    parser.add_argument("--seconds", type=float, help="length of a round (default: 1 quick, 5 full)")
    parser.add_argument("--bulk", type=int, default=50, help="VMs per bulk create request (default 50)")
    parser.add_argument("--postgres", metavar="URL", help="e.g. postgresql+psycopg://postgres@127.0.0.1:5432/")
    args = parser.parse_args()
    rounds = args.rounds or (2 if args.quick else 7)
    seconds = args.seconds or (1.0 if args.quick else 5.0)
    started = begin("submit: POST /api/v1/vms accepted per second", args, probe_kvm=not args.quick)
    print(
        f"{rounds} rounds of {seconds:g} s per contender; {args.clients} client threads; `archq api` and the "
        f"reference with {args.api_workers} gunicorn workers x {args.api_threads} threads, "
        f"{'PostgreSQL' if args.postgres else 'SQLite'}; bulk requests of {args.bulk} VMs"
    )
    drops = []
    env = {}
    if args.postgres:
        env["ARCHQ_DATABASE_URL"], drop = fresh_postgres(args.postgres)
        reference_url, drop_reference = fresh_postgres(args.postgres)
        drops += [drop, drop_reference]
    try:
        with Stack(**env) as stack:
            if not args.postgres:
                reference_url = f"sqlite:///{stack.dir / 'reference.db'}"
            measure(stack, args, rounds, seconds, reference_url)
    finally:
        for drop in drops:
            drop()
    end(started)


def measure(stack: Stack, args, rounds: int, seconds: float, reference_url: str) -> None:
    api, base = stack.api(workers=args.api_workers, threads=args.api_threads)
    reference = start_reference(stack, reference_url, args.api_workers, args.api_threads)
    broker = redis.Redis.from_url(stack.redis_url(0))
    reference_broker = redis.Redis.from_url(stack.redis_url(2))
    celery = make_celery(stack.settings(), main="bench-client")
    monitor = Http(base, stack.token)
    failures: Counter[str] = Counter()

    def empty_queues() -> None:
        # Nobody consumes: drop what a round left so that Redis holds the same amount every round.
        for client, pattern in ((broker, f"{QUEUE}*"), (reference_broker, f"{REFERENCE_QUEUE}*")):
            for key in client.scan_iter(match=pattern):
                client.delete(key)

    def posting(url: str, who: str, body: Callable[[int, int, int], dict], per_request: int) -> Samples:
        def work(client: int, deadline: float) -> int:
            http, accepted, sent = Http(url, stack.token), 0, 0
            while time.perf_counter() < deadline:
                status, _body = http.call("POST", "/vms", body(number, client, sent))
                sent += 1
                if status == 202:
                    accepted += per_request
                else:
                    failures[f"{who} {status}"] += 1
            http.close()
            return accepted

        number = next(round_numbers)
        begun = time.perf_counter()
        accepted, elapsed = hammer(args.clients, seconds, work)
        samples = {"accepted/s": [accepted / elapsed]}
        if url == base:
            wait_for(lambda: none_in_state(monitor, "pending"), timeout=300, what="the outbox to publish every job")
            samples["queued/s"] = [accepted / (time.perf_counter() - begun)]
        empty_queues()
        return samples

    round_numbers = iter(range(10**6))

    def archq_round(_number: int) -> Samples:
        return posting(base, "archq", lambda n, c, i: {"name": f"r{n}-c{c}-{i}", **TINY}, 1)

    def bulk_round(_number: int) -> Samples:
        return posting(base, "bulk", lambda n, c, i: {"name": f"b{n}-c{c}-{i}", **TINY, "count": args.bulk}, args.bulk)

    def reference_round(_number: int) -> Samples:
        return posting(reference, "reference", lambda n, c, i: {"name": f"f{n}-c{c}-{i}", **TINY}, 1)

    def raw_round(number: int) -> Samples:
        def work(client: int, deadline: float) -> int:
            sent = 0
            while time.perf_counter() < deadline:
                job_id, message = raw_message(f"r{number}-c{client}-{sent}")
                with celery.producer_or_acquire() as producer:
                    celery.send_task(
                        Task.CREATE_VM,
                        kwargs={"job": message},
                        task_id=job_id,
                        queue=QUEUE,
                        producer=producer,
                        retry=False,
                    )
                sent += 1
            return sent

        sent, elapsed = hammer(args.clients, seconds, work)
        empty_queues()
        return {"accepted/s": [sent / elapsed]}

    results = alternate(
        rounds, {"archq": archq_round, "reference": reference_round, "bulk": bulk_round, "celery": raw_round}
    )
    if failures:
        print(f"answers other than 202: {dict(failures)}")
    archq, raw = results["archq"], results["celery"]
    compare(
        "single POST accepted per second, against the reference",
        "req/s",
        archq["accepted/s"],
        results["reference"]["accepted/s"],
        "reference",
        rate=True,
    )
    compare("accepted per second", "req/s", archq["accepted/s"], raw["accepted/s"], "celery send_task", rate=True)
    compare(
        f"VMs accepted per second through bulk requests of {args.bulk}",
        "VMs/s",
        results["bulk"]["accepted/s"],
        raw["accepted/s"],
        "celery send_task",
        rate=True,
    )
    compare(
        "archq queued (published by its outbox) per second",
        "jobs/s",
        archq["queued/s"],
        raw["accepted/s"],
        "celery send_task",
        rate=True,
    )
    profile_round(stack, api, seconds, archq_round)


if __name__ == "__main__":
    main()
