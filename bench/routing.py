"""Routing and placement time with 10, 1,000 and 10,000 registered hosts, in process: for each count a fresh
SQLite database gets that many live hosts through the conductor's heartbeat path, then `web.services.vms.decide`
(default placement `queue`, fleet summary cached) is timed against its raw baseline, the pure
`queues.routing.route_create` on a fleet summary built beforehand. Also timed: the fleet summary's rebuild (once
per second per API process), a page of GET /api/v1/hosts, and for every placement strategy (queue, least_loaded,
best_fit, round_robin, random, pinned) its decision and the whole POST /api/v1/vms handler (Flask test client;
median and p99), with each one's growth from 10 to 10,000 hosts."""

from __future__ import annotations

import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from flask import Flask
from sqlalchemy import create_engine, func, select, text

from bench.common import IMAGES_DIR, TINY, Samples, alternate, begin, bench_parser, end, median, percentile
from bench.heartbeats import fake_beat, register_hosts
from migrations import upgrade
from queues import messages
from queues.arch import Arch
from queues.config import Settings
from queues.networks import needs
from queues.routing import Emulation, Fleet, route_create
from queues.vocabulary import JobState
from tests.support.services import RedisServer
from web import create_app
from web.extensions import db
from web.models import Job
from web.schemas import VmCreateRequest
from web.services.hosts import FleetCache, fleet_cache, live_hosts, record_heartbeat, record_liveness
from web.services.images import register_tiny
from web.services.migrations import adopt_moved_vms
from web.services.reconciler import reconcile_host
from web.services.tokens import create_token
from web.services.vms import attachment, decide

COUNTS = (10, 1_000, 10_000)


def full_beat(settings: Settings, count: int) -> Callable[[], None]:
    """What the conductor's heartbeat task does with one full beat (a changed host), on hosts in turn."""
    hosts = iter(range(10**9))

    def call() -> None:
        beat = messages.heartbeat.load(fake_beat(next(hosts) % count, time.time()))
        host = record_heartbeat(beat)
        db.session.commit()
        adopt_moved_vms(host)
        reconcile_host(host, settings)

    return call


def liveness(count: int) -> Callable[[], None]:
    """What the leading conductor does with the liveness marks of every host (queues/liveness.py)."""
    ages = {f"host-{n:05d}": 0.0 for n in range(count)}
    return lambda: record_liveness(ages)


def per_call_us(calls: int, call: Callable[[], object]) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - started) / calls * 1e6


def timed(times: int, call: Callable[[], object]) -> Samples:
    """Wall clock and this process's CPU time per call, in ms: on a shared machine the CPU time is what the call
    costs, the wall clock also what other processes took from it."""
    samples: Samples = {"ms": [], "cpu ms": []}
    for _ in range(times):
        started, cpu = time.perf_counter(), time.process_time()
        call()
        samples["cpu ms"].append((time.process_time() - cpu) * 1000)
        samples["ms"].append((time.perf_counter() - started) * 1000)
    return samples


STRATEGIES = ("queue", "least_loaded", "best_fit", "round_robin", "random", "pinned")


def body(strategy: str) -> dict:
    """A tiny amd64 create with the strategy; `pinned` names the first amd64 host."""
    if strategy == "pinned":
        return {**TINY, "host": "host-00000"}
    return {**TINY, "placement": strategy}


def measure(app: Flask, settings: Settings, rounds: int, calls: int, singles: int, count: int) -> dict[str, Samples]:
    schema = VmCreateRequest(max_vcpus=settings.max_vcpus, max_memory_mib=settings.max_memory_mib)
    requests = {strategy: schema.load({"name": "routed", **body(strategy)}) for strategy in STRATEGIES}
    request = requests["queue"]
    arch, emulation = Arch(request["arch"]), Emulation(request["emulation"])
    need = needs(attachment(request["network"], settings), settings.nat_network)
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {create_token('bench-routing', 'operator')[1]}"

    def batches(call: Callable[[], object], warm: bool = False) -> list[float]:
        if warm:
            call()  # a stale fleet cache is refreshed here, outside the timing
        return [per_call_us(calls, call) for _ in range(singles)]

    fleet = Fleet.from_hosts(live_hosts(settings))
    cache = fleet_cache()

    def post(strategy: str, round_number: int) -> Callable[[], None]:
        names = iter(range(singles))

        def call() -> None:
            name = f"{strategy.replace('_', '-')}-{round_number}-{next(names)}"
            response = client.post("/api/v1/vms", json={**body(strategy), "name": name})
            if response.status_code != 202:
                raise RuntimeError(f"POST /vms answered {response.status_code}: {response.get_json()}")

        return call

    def decision(strategy: str) -> Callable[[], object]:
        return lambda: decide(requests[strategy], arch, settings, need=need)

    def page() -> None:
        response = client.get("/api/v1/hosts?limit=100")
        if response.status_code != 200:
            raise RuntimeError(f"GET /hosts answered {response.status_code}: {response.get_json()}")

    contenders: dict[str, Callable[[int], Samples]] = {
        "decide": lambda _n: {"us": batches(decision("queue"), warm=True)},
        "route_create": lambda _n: {"us": batches(lambda: route_create(arch, emulation, fleet))},
        "refresh": lambda _n: timed(singles, refresh(cache, settings)),
        "hosts page": lambda _n: timed(singles, page),
        "full beat": lambda _n: timed(singles, full_beat(settings, count)),
        "liveness": lambda _n: timed(singles, liveness(count)),
    }
    for strategy in STRATEGIES:
        contenders[f"decide {strategy}"] = lambda _n, s=strategy: timed(singles, decision(s))
        contenders[f"POST {strategy}"] = lambda n, s=strategy: timed(singles, post(s, n))
    return alternate(rounds, contenders, fmt="{:.3f}")


def refresh(cache: FleetCache, settings: Settings) -> Callable[[], None]:
    """The fleet summary rebuilt from the database, as the first decision after its time to live does."""

    def call() -> None:
        cache.clear()
        cache.get(settings)

    return call


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="a PostgreSQL server to run on instead of SQLite, e.g. postgresql+psycopg://postgres@127.0.0.1:5432/ "
        "(a database per host count is created there and dropped)",
    )
    args = parser.parse_args()
    rounds = args.rounds or (2 if args.quick else 7)
    calls, singles = (50, 3) if args.quick else (200, 10)
    started = begin("routing: decision time by number of registered hosts", args, probe_kvm=not args.quick)
    print(f"database: {'PostgreSQL' if args.postgres else 'SQLite'}")
    print(
        f"{rounds} rounds per count, {singles} samples per round: decide and route_create a mean of {calls} calls "
        "each (the fleet cache warm), the others one call each"
    )
    table: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="archq-bench-") as tmp:
        redis_server = RedisServer(Path(tmp))
        redis_server.start()
        try:
            for count in COUNTS:
                with database(args.postgres, f"{tmp}/routing-{count}.db") as database_url:
                    # Hosts stay live for the whole run: the liveness window is hours.
                    settings = Settings(
                        broker_url=redis_server.url,
                        redis_url=redis_server.url,
                        data_dir=Path(tmp) / f"data-{count}",
                        database_url=database_url,
                        heartbeat_interval_s=3600,
                    )
                    upgrade(settings.database_url)
                    app = create_app(settings)
                    with app.app_context():
                        register_tiny(IMAGES_DIR)
                        inserted = time.perf_counter()
                        register_hosts(count)
                        if args.postgres:
                            # What autovacuum does within a minute of a bulk insert: the planner's statistics.
                            db.session.execute(text("ANALYZE hosts"))
                            db.session.commit()
                        print(f"-- {count} hosts (registered in {time.perf_counter() - inserted:.1f} s)")
                        results = measure(app, settings, rounds, calls, singles, count)
                        wait_published()
                        db.engine.dispose()
                table[count] = {name: median(next(iter(r.values()))) for name, r in results.items()}
                for name, samples in results.items():
                    if "cpu ms" in samples:
                        table[count][f"{name} cpu"] = median(samples["cpu ms"])
                for strategy in STRATEGIES:
                    table[count][f"POST {strategy} p99"] = percentile(results[f"POST {strategy}"]["ms"], 99)
        finally:
            redis_server.stop()
    report(table)
    end(started)


def wait_published(timeout_s: float = 30) -> None:
    """Until the API's publisher thread has sent every job: it must not find its database dropped."""
    deadline = time.monotonic() + timeout_s
    while db.session.scalar(select(func.count()).select_from(Job).where(Job.state == JobState.PENDING)):
        db.session.rollback()
        if time.monotonic() > deadline:
            raise RuntimeError(f"jobs still pending after {timeout_s} s")
        time.sleep(0.05)


@contextmanager
def database(postgres: str | None, sqlite_file: str) -> Iterator[str]:
    """A fresh database: a SQLite file, or a database created on the PostgreSQL server and dropped after."""
    if postgres is None:
        yield f"sqlite:///{sqlite_file}"
        return
    name = f"archq_bench_routing_{uuid.uuid4().hex[:12]}"
    server = create_engine(f"{postgres.rstrip('/')}/postgres", isolation_level="AUTOCOMMIT")
    with server.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{postgres.rstrip('/')}/{name}"
    finally:
        with server.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        server.dispose()


def report(table: dict[int, dict[str, float]]) -> None:
    first, last = table[COUNTS[0]], table[COUNTS[-1]]
    print("-- medians")
    print(
        f"   {'hosts':>6} {'decide us':>10} {'route_create us':>16} {'ratio':>7} {'cache refresh ms':>17} "
        f"{'GET /hosts page ms':>19}"
    )
    for count, row in table.items():
        print(
            f"   {count:>6} {row['decide']:>10.2f} {row['route_create']:>16.2f} "
            f"{row['decide'] / row['route_create']:>6.1f}x {row['refresh']:>17.2f} {row['hosts page']:>19.2f}"
        )
    for clock, suffix in (("wall clock", ""), ("CPU time of the process", " cpu")):
        print(f"-- per strategy, {clock}: decision ms and POST /api/v1/vms ms (median, p99 wall), by number of hosts")
        header = "".join(f" {f'{c:,} decide':>13} {f'{c:,} POST':>11} {'p99':>7}" for c in COUNTS)
        print(f"   {'strategy':<13}{header} {'decide growth':>14} {'POST growth':>12}")
        for strategy in STRATEGIES:
            decide, post = f"decide {strategy}{suffix}", f"POST {strategy}{suffix}"
            cells = "".join(
                f" {table[c][decide]:>13.3f} {table[c][post]:>11.2f} {table[c][f'POST {strategy} p99']:>7.2f}"
                for c in COUNTS
            )
            print(f"   {strategy:<13}{cells} {last[decide] / first[decide]:>13.2f}x {last[post] / first[post]:>11.2f}x")
    print("-- heartbeat ingest in the conductor's code (in process): a full beat, and every host's liveness mark")
    print(f"   {'hosts':>6} {'full beat ms':>13} {'CPU ms':>7} {'full beats/s':>13} {'marks ms':>9} {'CPU ms':>7} "
          f"{'marks/s':>10} {'marks/CPU s':>12}")  # fmt: skip
    for count, row in table.items():
        print(
            f"   {count:>6} {row['full beat']:>13.2f} {row['full beat cpu']:>7.2f} {1000 / row['full beat']:>13,.0f} "
            f"{row['liveness']:>9.2f} {row['liveness cpu']:>7.2f} {count * 1000 / row['liveness']:>10,.0f} "
            f"{count * 1000 / row['liveness cpu']:>12,.0f}"
        )
    names = ("decide", "refresh", "hosts page", "full beat")
    growth = ", ".join(f"{name} {last[name] / first[name]:.2f}x" for name in names)
    print(f"   growth {COUNTS[-1]:,} vs {COUNTS[0]:,} hosts: {growth} (target: POST <= 1.2x, decision <= 5 ms)")


if __name__ == "__main__":
    main()
