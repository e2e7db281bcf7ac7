"""Heartbeat ingest: how many host heartbeats per second `archq conductor` records.

A private Redis and database (SQLite, or PostgreSQL with `--postgres URL`), real `archq conductor` processes
and synthetic heartbeats from many fake hosts, sent as the workers send them (queues/liveness.py): a beat that
changed nothing is a liveness mark in Redis, which the leading conductor writes to the database in batches; a
beat that changed something (and one every 5 minutes regardless) is also a full beat, a Celery task on
`control` with a few running domains, which every conductor consumes. The hosts are registered first
(in this process). Each round, the conductors are paused (SIGSTOP), one mark per host (or one full beat from
each of the first `--full-beats` hosts) is sent, the conductors resumed, and the time until the database shows
every one of those hosts seen since the round began is the ingest time (for marks it includes the wait for
the next sweep, so their rate is a lower bound). A warm-up round of each kind is not counted. What the fleet needs:
N hosts at the default interval send N / interval marks per second, and full beats as often as hosts change
plus N / 300 s."""

from __future__ import annotations

import argparse
import os
import signal
import time
import uuid
from datetime import UTC, datetime

import redis
from sqlalchemy import create_engine, func, select

from bench.common import Stack, begin, bench_parser, end, fresh_postgres, median
from queues import messages
from queues.arch import ALL, Arch
from queues.celery_app import make_celery
from queues.config import Settings
from queues.liveness import FULL_BEAT_EVERY_S, MARK_SCRIPT, RECORDED_KEY, RUNNING_KEY, SEEN_KEY, digest
from queues.names import CONTROL, Task, host_queue, native_queue, tcg_queue
from tests.support.services import wait_for
from web import create_app
from web.extensions import db
from web.models import Host
from web.services.hosts import record_heartbeat

DOMAINS_PER_HOST = 4


def fake_beat(n: int, at: float, domains: int = DOMAINS_PER_HOST) -> dict:
    """Host n's full heartbeat: half amd64 and half arm64, each emulating the other, running `domains`."""
    arch = ALL[n % len(ALL)]
    other = [a.value for a in ALL if a != arch]
    name = f"host-{n:05d}"
    beat = messages.heartbeat.dump(
        {
            "host": name,
            "arch": arch.value,
            "accel": "kvm",
            "emulators": other,
            "queues": [native_queue(arch), host_queue(name), *(tcg_queue(Arch(a)) for a in other)],
            "capacity": {"vcpus": 64, "memory_mib": 262144, "disk_mib": 100_000},
            "allocated": {"domains": domains},
            "domains": [
                {
                    "uuid": str(uuid.UUID(int=n * 1000 + d)),
                    "name": f"archq-{n}-{d}",
                    "state": "running",
                    "reason": "booted",
                    "addresses": [{"address": f"192.168.150.{d + 2}", "source": "dhcp"}],
                }
                for d in range(domains)
            ],
            "started_at": at - 60,
            "networks": {"libvirt": ["archq"], "bridges": []},
            "migration": {"address": f"10.1.{n // 250}.{n % 250}", "ssh_port": 22},
            "at": at,
        }
    )
    beat["digest"] = digest({key: value for key, value in beat.items() if key != "at"})
    return beat


class Ingest:
    """`conductors` conductor processes on one stack; `round(count, full)` times one beat from each of `count` hosts."""

    def __init__(self, stack: Stack, conductors: int, interval_s: float) -> None:
        self.stack = stack
        self.interval_s = interval_s
        self.app = make_celery(stack.settings(), main="bench-heartbeats")
        self.redis = redis.Redis.from_url(stack.settings().redis_url)
        self.children = [stack.archq("conductor", name=f"conductor-{i}") for i in range(conductors)]
        for child in self.children:
            wait_for(lambda c=child: c.check_alive() or "ready" in c.log.read_text(errors="replace"),
                     timeout=60, interval=0.1, what=f"{child.log.name} to consume")  # fmt: skip
        self.engine = create_engine(stack.env["ARCHQ_DATABASE_URL"])

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def _signal(self, sig: signal.Signals) -> None:
        for child in self.children:
            os.killpg(child.pid, sig)

    def seen_since(self, moment: datetime) -> int:
        with self.engine.connect() as conn:
            return conn.scalar(select(func.count()).select_from(Host).where(Host.last_seen >= moment))

    def round(self, hosts: int, full: bool) -> float:
        """Seconds from resuming the conductors until every host's beat (full, or a mark) is recorded."""
        self._signal(signal.SIGSTOP)
        marker = datetime.now(UTC)
        try:
            if full:
                self._send_full(hosts)
            else:
                self._mark(hosts)
        finally:
            resumed = time.perf_counter()
            self._signal(signal.SIGCONT)
        wait_for(lambda: self.seen_since(marker) >= hosts, timeout=600, interval=0.02, what=f"{hosts} beats recorded")
        return time.perf_counter() - resumed

    def _send_full(self, hosts: int) -> None:
        now = time.time()
        with self.app.producer_or_acquire() as producer:
            for n in range(hosts):
                self.app.send_task(
                    Task.HEARTBEAT, kwargs={"beat": fake_beat(n, now)}, queue=CONTROL,
                    expires=self.interval_s * 3 + 600, producer=producer,
                )  # fmt: skip

    def _mark(self, hosts: int) -> None:
        """What `mark_alive` does for each host, pipelined: the bench stands for thousands of workers."""
        pipe = self.redis.pipeline(transaction=False)
        for n in range(hosts):
            pipe.eval(MARK_SCRIPT, 3, SEEN_KEY, RECORDED_KEY, RUNNING_KEY, f"host-{n:05d}", "[]")
        pipe.execute()

    def close(self) -> None:
        self.engine.dispose()


def register_hosts(count: int, domains: int = 0) -> None:
    """`count` live hosts, as the conductor's heartbeat path records them (in this process: faster than
    through a conductor, and not what is measured)."""
    now = time.time()
    for n in range(count):
        record_heartbeat(messages.heartbeat.load(fake_beat(n, now, domains=domains)))
        if n % 1000 == 999:
            db.session.commit()
    db.session.commit()


def measure(stack: Stack, hosts: int, full_beats: int, conductors: int, rounds: int) -> dict[str, list[float]]:
    """Full beats (from the first `full_beats` hosts) and marks (from every host) per second, one figure per
    round after a warm-up round of each."""
    with create_app(stack.settings(), sent_events=False).app_context():
        register_hosts(hosts, DOMAINS_PER_HOST)
        db.engine.dispose()
    ingest = Ingest(stack, conductors, Settings.heartbeat_interval_s)
    try:
        counts = {"full": full_beats, "marks": hosts}
        rates: dict[str, list[float]] = {"full": [], "marks": []}
        for number in range(rounds + 1):
            for kind, count in counts.items():
                rate = count / ingest.round(count, full=kind == "full")
                if number:
                    rates[kind].append(rate)
        return rates
    finally:
        ingest.close()
        # A round stopped midway (Ctrl-C) may leave them paused: a paused process would not act on SIGTERM.
        ingest.resume()
        for child in ingest.children:
            child.stop()


def run(args: argparse.Namespace) -> dict[int, dict[str, float]]:
    """Prints and returns, per conductor count, the median rates of full beats and of marks."""
    interval = Settings.heartbeat_interval_s
    hosts = args.hosts or (500 if args.quick else 10_000)
    full_beats = args.full_beats or (20 if args.quick else 1_000)
    conductor_counts = args.conductors or ([1] if args.quick else [1, 2])
    rounds = args.rounds or (2 if args.quick else 3)
    marks_needed, full_needed = hosts / interval, hosts / FULL_BEAT_EVERY_S
    print(f"database: {'PostgreSQL' if args.postgres else 'SQLite'}; {hosts} hosts, {DOMAINS_PER_HOST} domains each")
    print(
        f"at the default interval ({interval:g} s) the fleet sends {marks_needed:,.0f} marks/s, and full beats at "
        f"{full_needed:,.0f}/s plus one per change"
    )
    table = {}
    for conductors in conductor_counts:
        env = {"ARCHQ_DISPATCH_RETRY_S": "0.4"}  # a sweep every 0.2 s: marks wait less for the next one
        drop = None
        if args.postgres:
            env["ARCHQ_DATABASE_URL"], drop = fresh_postgres(args.postgres)
        try:
            with Stack(**env) as stack:
                rates = measure(stack, hosts, full_beats, conductors, rounds)
        finally:
            if drop:
                drop()
        full, marks = median(rates["full"]), median(rates["marks"])
        table[conductors] = {"full": full, "marks": marks}
        print(
            f"-- {conductors} conductor(s): marks {marks:,.0f}/s ({', '.join(f'{r:,.0f}' for r in rates['marks'])}), "
            f"room {marks / marks_needed:.1f}x; full beats {full:,.0f}/s "
            f"({', '.join(f'{r:,.0f}' for r in rates['full'])}), room {full / full_needed:.1f}x over the refresh"
        )
    if len(table) > 1:
        first, last = min(table), max(table)
        print(f"-- full beats, {last} conductors / {first}: {table[last]['full'] / table[first]['full']:.2f}x")
    return table


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--postgres", metavar="URL", help="e.g. postgresql+psycopg://postgres@127.0.0.1:5432/")
    parser.add_argument("--hosts", type=int, help="fake hosts (default 10,000; 500 quick)")
    parser.add_argument("--full-beats", type=int, help="full beats per round (default 1,000; 20 quick)")
    parser.add_argument("--conductors", type=int, nargs="+", help="conductor counts to try (default 1 2; 1 quick)")
    args = parser.parse_args()
    started = begin("heartbeats: beats per second one conductor records", args, probe_kvm=False)
    run(args)
    end(started)


if __name__ == "__main__":
    main()
