"""What the benchmark scripts share: a private archq stack (its own redis-server, data directory and SQLite
database, with `archq` subcommands as child processes), keep-alive HTTP, alternating rounds, statistics and
the machine report."""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

from celery import Celery
from sqlalchemy import create_engine, text

from queues.celery_app import make_celery
from queues.config import Settings
from tests.support.services import RedisServer, free_port, wait_for

ROOT = Path(__file__).resolve().parents[1]
IMAGES_DIR = Path(os.environ.get("ARCHQ_TEST_CACHE", "/var/tmp/archq-test-cache"))
CAPABILITIES_FILE = ROOT / "tests" / "data" / "capabilities" / "x86_64-kvm-aarch64-emu.xml"
# Where the benchmarks keep the worker's KVM probe answer (per host name and kernel, as the worker does).
PROBE_CACHE_DIR = Path(os.environ.get("ARCHQ_BENCH_CACHE", "/var/tmp/archq-bench"))
PROBE_FILE = "accel-probe.json"
# The host name of a worker on qemu:///system; it keys the cached probe answer.
QEMU_HOST = "bench-qemu"
# The host name of a worker on the libvirt test driver.
TEST_HOST = "bench-host"
TINY = {"arch": "amd64", "vcpus": 1, "memory_mib": 128, "image": "tiny"}

Samples = dict[str, list[float]]


# --- command line and run report ---------------------------------------------------------------------------


def bench_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="CI short mode: tiny counts, finishes in under 30 s")
    parser.add_argument("--rounds", type=int, help="measured rounds per contender (default: by mode)")
    return parser


def begin(title: str, args: argparse.Namespace, probe_kvm: bool) -> float:
    """Print the title, mode and machine; returns the start time for `end`."""
    started = time.monotonic()
    print(f"== {title} ({'quick' if args.quick else 'full'} mode) ==")
    print(f"machine: {machine_summary(probe_kvm)}")
    return started


def end(started: float) -> None:
    print(f"took {time.monotonic() - started:.1f} s")


def machine_summary(probe_kvm: bool) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    kvm = "present" if Path("/dev/kvm").exists() else "absent"
    load = ", ".join(f"{n:.2f}" for n in os.getloadavg())
    return (
        f"{os.cpu_count()} cores ({cpu}), Linux {platform.release()}, Python {platform.python_version()}, "
        f"/dev/kvm {kvm}, worker KVM probe: {kvm_probe(run=probe_kvm)}; load average at start {load}"
    )


def kvm_probe(run: bool) -> str:
    """What the worker's KVM probe says here: it boots the tiny guest under KVM on qemu:///system once and
    caches the answer per host and kernel (as `archq worker` does). Without `run`, only the cache answers."""
    key = f"{QEMU_HOST}/{platform.release()}/kvm"
    answer = _read_json(PROBE_CACHE_DIR / PROBE_FILE).get(key)
    if answer is None and run:
        from workers.hypervisor import HypervisorError, LibvirtHypervisor
        from workers.main import discover_host

        settings = Settings(
            data_dir=PROBE_CACHE_DIR, images_dir=IMAGES_DIR, libvirt_uri="qemu:///system", hostname=QEMU_HOST
        )
        try:
            hypervisor = LibvirtHypervisor(settings.libvirt_uri)
        except HypervisorError as exc:
            return f"not probed ({exc})"
        try:
            profile = discover_host(settings, hypervisor)
        finally:
            hypervisor.close()
        answer = _read_json(PROBE_CACHE_DIR / PROBE_FILE).get(key)
        if answer is None:
            return f"not probed: libvirt offers no accelerator here, workers use {profile.accel}"
    if answer is None:
        return "not probed yet (--quick reads the cache that a full run fills)"
    return "KVM boots the tiny guest (workers use kvm)" if answer else "KVM does not boot a guest (workers use tcg)"


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


# --- statistics and printing -------------------------------------------------------------------------------


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def alternate(
    rounds: int,
    contenders: dict[str, Callable[[int], Samples]],
    fmt: str = "{:.1f}",
    show: Sequence[str] | None = None,
) -> dict[str, Samples]:
    """Run the contenders once per round, the order reversed every other round so neither always goes first,
    after one untimed warm-up round (round 0). Prints each round's medians (of the metrics in `show`, or of
    all); returns every metric's samples."""
    results: dict[str, Samples] = {name: {} for name in contenders}
    names = list(contenders)
    for number in range(rounds + 1):
        line = []
        for name in names if number % 2 else reversed(names):
            samples = contenders[name](number)
            if number == 0:
                continue
            for metric, values in samples.items():
                results[name].setdefault(metric, []).extend(values)
                if show is None or metric in show:
                    line.append(f"{name} {metric} {fmt.format(median(values))}")
        print(f"round {number}/{rounds}: " + ("warm-up" if number == 0 else ", ".join(sorted(line))), flush=True)
    return results


def compare(label: str, unit: str, archq: Sequence[float], raw: Sequence[float], raw_name: str, *, rate: bool) -> None:
    """Print archq's and the baseline's medians (and p99 for latencies) and their ratio."""
    rows = [("archq", archq), (raw_name, raw)]
    print(f"-- {label}")
    for name, values in rows:
        spread = f"min {min(values):.2f}, max {max(values):.2f}"
        extra = "" if rate else f", p99 {percentile(values, 99):.2f}"
        print(f"   {name:<22} median {median(values):10.2f} {unit}{extra}  (n={len(values)}, {spread})")
    ratio = median(archq) / median(raw)
    if rate:
        print(f"   ratio archq/{raw_name}: {ratio:.3f} (archq reaches {ratio * 100:.1f}% of the baseline's rate)")
    else:
        print(f"   ratio archq/{raw_name}: {ratio:.2f}x (median)")
        if len(archq) >= 2 and len(raw) >= 2:
            print(f"   ratio archq/{raw_name} at p99: {percentile(archq, 99) / percentile(raw, 99):.2f}x")


# --- processes and the private stack -----------------------------------------------------------------------


class Child:
    """A child process in its own session, its output in a log file."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._file = log.open("wb")
        self.proc = subprocess.Popen(
            argv,
            env={**os.environ, **env},
            stdout=self._file,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.log.name} exited with {self.proc.returncode}:\n{self.tail()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._file.close()

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


class Stack:
    """A private archq deployment in a temporary directory: its own redis-server, data directory and SQLite
    database; child processes get its settings in their environment. The directory is removed on a clean
    exit and kept (with every log) when the benchmark fails."""

    def __init__(self, **env: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="archq-bench-"))
        # libvirt's QEMU runs as an unprivileged user that must reach VM console logs under the data dir.
        self.dir.chmod(0o755)
        self.data_dir = self.dir / "data"
        self.data_dir.mkdir(mode=0o755)
        self.redis = RedisServer(self.dir)
        self.env = {
            "ARCHQ_BROKER_URL": self.redis_url(0),
            "ARCHQ_REDIS_URL": self.redis_url(0),
            "ARCHQ_DATA_DIR": str(self.data_dir),
            "ARCHQ_DATABASE_URL": f"sqlite:///{self.data_dir / 'archq.db'}",
            "ARCHQ_IMAGES_DIR": str(IMAGES_DIR),
            "ARCHQ_LIBVIRT_URI": "test:///default",
            "ARCHQ_CAPABILITIES_FILE": str(CAPABILITIES_FILE),
            "ARCHQ_ACCEL": "tcg",
            "ARCHQ_HOSTNAME": TEST_HOST,
            # The benchmarks pause and ping workers through Celery's remote control.
            "ARCHQ_REMOTE_CONTROL": "1",
            **env,
        }
        self.children: list[Child] = []
        # An admin token for the benchmark's HTTP clients, made once the database exists.
        self.token = ""

    def __enter__(self) -> Stack:
        from migrations import upgrade
        from web import create_app
        from web.services.tokens import create_token

        self.redis.start()
        upgrade(self.env["ARCHQ_DATABASE_URL"])
        # Every benchmark creates `tiny` VMs: put the built guest in this stack's image catalog.
        subprocess.run(
            [sys.executable, "-m", "client.cli", "images", "register-tiny"],
            env={**os.environ, **self.env},
            check=True,
            capture_output=True,
        )
        with create_app(self.settings(), sent_events=False).app_context():
            self.token = create_token("bench", "admin")[1]
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        for child in reversed(self.children):
            child.stop()
        self.redis.stop()
        if kind is None:
            shutil.rmtree(self.dir, ignore_errors=True)
        else:
            print(f"benchmark failed; logs kept in {self.dir}", file=sys.stderr)

    def redis_url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.redis.port}/{db}"

    def settings(self, db: int = 0) -> Settings:
        """The settings of this stack's processes; `db` picks another Redis database (a raw baseline's)."""
        return Settings(
            broker_url=self.redis_url(db),
            redis_url=self.redis_url(db),
            data_dir=self.data_dir,
            images_dir=IMAGES_DIR,
            database_url=self.env["ARCHQ_DATABASE_URL"],
            libvirt_uri=self.env["ARCHQ_LIBVIRT_URI"],
            hostname=self.env["ARCHQ_HOSTNAME"],
            capabilities_file=self.env["ARCHQ_CAPABILITIES_FILE"],
            accel=self.env["ARCHQ_ACCEL"],
            remote_control=True,
        )

    def spawn(self, name: str, argv: list[str], **env: str) -> Child:
        child = Child(argv, {**self.env, **env}, self.dir / f"{name}.log")
        self.children.append(child)
        return child

    def archq(self, *args: str, name: str | None = None, **env: str) -> Child:
        return self.spawn(name or args[0], [sys.executable, "-m", "client.cli", *args], **env)

    def api(self, workers: int = 2, threads: int = 8) -> tuple[Child, str]:
        """`archq api` (gunicorn) on a free port; returns it and its base URL once it answers."""
        port = free_port()
        child = self.archq("api", "--bind", f"127.0.0.1:{port}", "--workers", str(workers), "--threads", str(threads))
        base = f"http://127.0.0.1:{port}/api/v1"

        def healthy() -> bool:
            child.check_alive()
            try:
                return Http(base, self.token).call("GET", "/health")[0] == 200
            except OSError:
                return False

        wait_for(healthy, timeout=30, interval=0.1, what="the API to answer")
        return child, base


def fresh_postgres(server: str) -> tuple[str, Callable[[], None]]:
    """A new database on the PostgreSQL server `server` (a URL ending in /); returns its URL and its dropper."""
    name = f"archq_bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(f"{server.rstrip('/')}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()

    return f"{server.rstrip('/')}/{name}", drop


# --- HTTP ----------------------------------------------------------------------------------------------------


class Http:
    """One keep-alive HTTP/1.1 connection to the API, JSON in and out, with the stack's bearer token."""

    def __init__(self, base_url: str, token: str) -> None:
        parts = urlsplit(base_url)
        self.prefix = parts.path
        self.auth = {"Authorization": f"Bearer {token}"}
        self._conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=60)

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        headers.update(self.auth)
        for attempt in (1, 2):
            try:
                self._conn.request(method, self.prefix + path, body=payload, headers=headers)
                response = self._conn.getresponse()
                data = response.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # The server closed an idle keep-alive connection; the request never reached it.
                self._conn.close()
                if attempt == 2:
                    raise
        return response.status, json.loads(data) if data else {}

    def close(self) -> None:
        self._conn.close()


def wait_worker(app: Celery, hostname: str, child: Child, timeout: float = 60) -> None:
    """Until the Celery worker `hostname` answers a ping, i.e. consumes."""

    def answers() -> bool:
        child.check_alive()
        return bool(app.control.ping(destination=[hostname], timeout=0.5))

    wait_for(answers, timeout=timeout, interval=0.1, what=f"worker {hostname} to answer a ping")


def start_raw_worker(stack: Stack) -> tuple[Child, Celery]:
    """The baseline's Celery worker (bench/raw_worker.py) on Redis database 1, and a client app for it."""
    from bench.raw_worker import HOSTNAME

    settings = stack.settings(db=1)
    child = stack.spawn(
        "raw-worker",
        [sys.executable, "-m", "bench.raw_worker"],
        ARCHQ_BROKER_URL=settings.broker_url,
        ARCHQ_REDIS_URL=settings.redis_url,
    )
    app = make_celery(settings, main="bench-client")
    wait_worker(app, HOSTNAME, child)
    return child, app


def wait_job(http: Http, job_id: str, timeout: float = 60, interval: float = 0.01) -> dict:
    """The job once it has ended; raises if it failed or did not end in time."""
    last: dict = {}

    def ended() -> dict | None:
        last.update(http.call("GET", f"/jobs/{job_id}")[1]["job"])
        return last if last["state"] in ("succeeded", "failed", "cancelled") else None

    job = wait_for(ended, timeout=timeout, interval=interval, what=lambda: f"job {job_id} to end; it is {last}")
    if job["state"] != "succeeded":
        raise RuntimeError(f"job {job_id} ended {job['state']}: {job.get('error')}")
    return job


def wait_host(http: Http, name: str, timeout: float = 60, child: Child | None = None) -> dict:
    def up() -> dict | None:
        if child is not None:
            child.check_alive()
        status, body = http.call("GET", f"/hosts/{name}")
        return body["host"] if status == 200 and body["host"]["state"] == "up" else None

    return wait_for(up, timeout=timeout, interval=0.1, what=f"host {name} to be up")


def none_in_state(http: Http, state: str) -> bool:
    return not http.call("GET", f"/jobs?state={state}&limit=1")[1]["jobs"]


def timestamp(value: str) -> float:
    """Seconds since the epoch of one of the API's ISO 8601 datetimes."""
    return datetime.fromisoformat(value).timestamp()


def start_archq_and_raw(stack: Stack) -> tuple[str, Http, Child, Celery]:
    """The API, the conductor and an archq worker on the test driver beside the raw baseline's worker;
    returns (API base URL, a client, the archq worker, the raw app) once the archq host heartbeats."""
    _api, base = stack.api()
    stack.archq("conductor")
    worker = stack.archq("worker")
    _raw, raw_app = start_raw_worker(stack)
    http = Http(base, stack.token)
    wait_host(http, TEST_HOST, child=worker)
    return base, http, worker, raw_app
