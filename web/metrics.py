"""`GET /metrics`: Prometheus text format, computed from the database and Redis at scrape time (a custom
collector, so every API process answers the same whatever requests it served itself). Needs a viewer token
like every other read (see web/auth.py)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

from flask import Blueprint, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from sqlalchemy import func, select

from queues.arch import ALL
from queues.names import STATIC_QUEUES, host_queue
from queues.vocabulary import VmState
from web.api import archq
from web.extensions import db
from web.models import Host, Job, Vm
from web.services.hosts import live_hosts

# Job durations from seconds (a test-driver job) to an hour (a migration).
DURATION_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)

bp = Blueprint("metrics", __name__)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class ArchqCollector:
    """Reads the state at collection time; call within an app context."""

    def collect(self) -> Iterator[Metric]:
        yield self._jobs()
        yield self._durations()
        yield self._queue_depths()
        yield from self._workers()
        yield from self._vms()

    @staticmethod
    def _jobs() -> Metric:
        family = GaugeMetricFamily("archq_jobs", "Jobs by kind and state", labels=["kind", "state"])
        rows = db.session.execute(select(Job.kind, Job.state, func.count()).group_by(Job.kind, Job.state))
        for kind, state, count in rows:
            family.add_metric([kind, state], count)
        return family

    @staticmethod
    def _durations() -> Metric:
        family = HistogramMetricFamily(
            "archq_job_duration_seconds",
            "Run time (started to finished) of finished jobs, by kind and the VM's accelerator",
            labels=["kind", "accel"],
        )
        rows = db.session.execute(
            select(Job.kind, Vm.accel, Job.started_at, Job.finished_at)
            .outerjoin(Vm, Job.vm_id == Vm.id)
            .where(Job.started_at.is_not(None), Job.finished_at.is_not(None))
        )
        series: dict[tuple[str, str], list[float]] = {}
        for kind, accel, started, finished in rows:
            seconds = max(0.0, (_aware(finished) - _aware(started)).total_seconds())
            series.setdefault((kind, accel or "none"), []).append(seconds)
        for labels, values in sorted(series.items()):
            buckets = [(str(bound), sum(v <= bound for v in values)) for bound in DURATION_BUCKETS]
            buckets.append(("+Inf", len(values)))
            family.add_metric(list(labels), buckets, sum(values))
        return family

    @staticmethod
    def _queue_depths() -> Metric:
        family = GaugeMetricFamily("archq_queue_depth", "Messages waiting in each queue (Redis LLEN)", labels=["queue"])
        hosts = db.session.scalars(select(Host.name)).all()
        queues = [*STATIC_QUEUES, *(host_queue(name) for name in hosts)]
        try:
            with archq().celery.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, timeout=1)
                client = conn.default_channel.client
                pipe = client.pipeline(transaction=False)
                for name in queues:
                    pipe.llen(name)
                depths = pipe.execute()
        except Exception:
            # The broker is down: the other metrics still answer; this one is absent until it is back.
            return family
        for name, depth in zip(queues, depths, strict=True):
            family.add_metric([name], depth)
        return family

    @staticmethod
    def _workers() -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "archq_live_workers", "Live workers per guest architecture, native or emulating", labels=["arch", "mode"]
        )
        hosts = live_hosts(archq().settings)
        for arch in ALL:
            family.add_metric([arch.value, "native"], sum(h.arch == arch for h in hosts))
            family.add_metric([arch.value, "emulating"], sum(arch in h.emulators for h in hosts))
        yield family

    @staticmethod
    def _vms() -> Iterator[Metric]:
        running = GaugeMetricFamily("archq_running_vms", "Running VMs by architecture and emulation",
                                    labels=["arch", "emulated"])  # fmt: skip
        rows = db.session.execute(
            select(Vm.arch, Vm.emulated, func.count()).where(Vm.state == VmState.RUNNING).group_by(Vm.arch, Vm.emulated)
        ).all()
        for arch, emulated, count in rows:
            running.add_metric([arch, str(bool(emulated)).lower()], count)
        yield running
        total = sum(count for _a, _e, count in rows)
        emulated_count = sum(count for _a, emulated, count in rows if emulated)
        yield GaugeMetricFamily(
            "archq_running_vms_emulated_ratio",
            "Share of running VMs that run under emulation (0 when none run)",
            value=emulated_count / total if total else 0.0,
        )


@bp.get("/metrics")
def metrics():
    """Prometheus metrics (text exposition format)
    ---
    get:
      operationId: getMetrics
      responses:
        200: {description: the metrics, content: {text/plain: {schema: {type: string}}}}
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ArchqCollector())
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
