"""The heartbeat registry: which hosts exist, what they can do, and which are alive now."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from queues.arch import Arch
from queues.config import Settings
from queues.routing import LiveHost
from web.extensions import db
from web.models import Host, utcnow


def record_heartbeat(beat: dict) -> Host:
    host = db.session.get(Host, beat["host"]) or Host(name=beat["host"], drained=False)
    host.arch = beat["arch"]
    host.accel = beat["accel"]
    host.emulators = beat["emulators"]
    host.queues = beat["queues"]
    host.capacity = beat["capacity"]
    host.allocated = beat["allocated"]
    host.domains = beat["domains"]
    # The conductor's clock decides liveness; workers' clocks may drift.
    host.last_seen = utcnow()
    db.session.add(host)
    return host


def _aware(moment: datetime) -> datetime:
    # SQLite returns naive datetimes even for timezone-aware columns.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def host_state(host: Host, settings: Settings, now: datetime | None = None) -> str:
    if (now or utcnow()) - _aware(host.last_seen) > timedelta(seconds=settings.host_down_after_s):
        return "down"
    return "drained" if host.drained else "up"


def live_hosts(settings: Settings) -> list[LiveHost]:
    """Hosts that heartbeated within the liveness window: one indexed query, no broker round trip."""
    since = utcnow() - timedelta(seconds=settings.host_down_after_s)
    rows = db.session.scalars(select(Host).where(Host.last_seen >= since)).all()
    return [
        LiveHost(
            name=h.name,
            arch=Arch(h.arch),
            accel=h.accel,
            emulators=frozenset(Arch(a) for a in h.emulators),
            drained=h.drained,
        )
        for h in rows
    ]


def host_view(host: Host, settings: Settings) -> dict:
    return {
        "name": host.name,
        "arch": host.arch,
        "accel": host.accel,
        "emulators": host.emulators,
        "queues": host.queues,
        "capacity": host.capacity,
        "allocated": host.allocated,
        "state": host_state(host, settings),
        "last_seen": _aware(host.last_seen),
    }
