"""What `GET /api/v1/system/info` reports (this API host, the broker, and the live fleet per queue), and whether
the API can take jobs now (`GET /api/v1/ready`)."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

from celery import Celery
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from queues.arch import ALL, UnknownArch, parse_arch
from queues.config import Settings
from queues.names import STATIC_QUEUES, native_queue, tcg_queue
from web.extensions import db
from web.services.hosts import live_hosts

# A readiness probe answers within a load balancer's timeout even when a dependency hangs.
READY_TIMEOUT_S = 2.0


def _version() -> str:
    try:
        return version("archq")
    except PackageNotFoundError:
        return "unknown"


def unready(celery: Celery) -> dict[str, str]:
    """What keeps this API from accepting jobs, per dependency (empty: ready). A job is written to the database
    and published to the broker: both must answer."""
    problems = {}
    try:
        db.session.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        db.session.rollback()
        # The class, not the message: a driver's message may carry the URL.
        problems["database"] = f"the database does not answer ({type(exc).__name__})"
    try:
        with celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=READY_TIMEOUT_S)
    except Exception as exc:  # kombu raises the transport's own errors: any failure means "down"
        problems["broker"] = f"the broker does not answer ({type(exc).__name__})"
    return problems


def broker_status(celery: Celery) -> tuple[bool, dict[str, int] | None]:
    """Whether the broker answers, and (on Redis) how many messages wait in each static queue."""
    try:
        with celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=1)
            client = getattr(conn.default_channel, "client", None)
            if client is None:
                return True, None
            pipe = client.pipeline(transaction=False)
            for name in STATIC_QUEUES:
                pipe.llen(name)
            return True, dict(zip(STATIC_QUEUES, pipe.execute(), strict=True))
    except Exception:
        return False, None


def system_info(settings: Settings, celery: Celery) -> dict:
    machine = platform.machine()
    try:
        host_arch = parse_arch(machine).value
    except UnknownArch:
        host_arch = None
    reachable, depths = broker_status(celery)
    hosts = live_hosts(settings)
    workers: dict[str, list[str]] = {}
    for host in hosts:
        for queue in (native_queue(host.arch), *(tcg_queue(a) for a in host.emulators), f"host.{host.name}"):
            workers.setdefault(queue, []).append(host.name)
    architectures = {
        arch.value: {
            "native_workers": sorted(h.name for h in hosts if h.arch == arch),
            "emulating_workers": sorted(h.name for h in hosts if arch in h.emulators),
            "queue_depth": (depths or {}).get(native_queue(arch)),
            "tcg_queue_depth": (depths or {}).get(tcg_queue(arch)),
        }
        for arch in ALL
    }
    return {
        "host_arch": host_arch,
        "is_arm": host_arch == "arm64",
        "is_x86": host_arch == "amd64",
        "machine": machine,
        "platform": platform.platform(),
        "version": _version(),
        "broker": {"reachable": reachable, "queue_depths": depths},
        "workers": {queue: sorted(names) for queue, names in sorted(workers.items())},
        "architectures": architectures,
    }
