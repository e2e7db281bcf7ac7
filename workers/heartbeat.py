"""The heartbeat: every few seconds a worker tells the conductor what its host is, can do and runs."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import redis
from celery import Celery

from queues import messages
from queues.liveness import FULL_BEAT_EVERY_S, digest, mark_alive
from queues.names import CONTROL, Task
from workers.guest_facts import GuestWatch
from workers.host import HostProfile, free_disk_mib
from workers.hypervisor import Hypervisor
from workers.snapshots import snapshot_support

log = logging.getLogger(__name__)


STARTED_AT = time.time()


def heartbeat_message(
    profile: HostProfile,
    hypervisor: Hypervisor,
    data_dir_free_mib: int,
    migration: dict | None = None,
    networks: dict | None = None,
    facts: dict[str, dict] | None = None,
    signing_key: str | None = None,
) -> dict:
    """`facts`: addresses and host keys by domain UUID, as workers/guest_facts.py last read them."""
    domains = hypervisor.list_domains()
    facts = facts or {}
    return messages.heartbeat.dump(
        {
            "host": profile.name,
            "arch": profile.arch.value,
            "accel": profile.accel,
            "emulators": [a.value for a in profile.emulators],
            "queues": profile.queues,
            "cpu_modes": {arch.value: list(modes) for arch, modes in profile.cpu_modes.items()},
            "capacity": {
                "vcpus": profile.vcpus,
                "memory_mib": profile.memory_mib,
                # In whole GiB (VMs ask for disk in GiB): the free space moves by a few MiB with every write on
                # the file system, which would turn every beat into a changed, full one.
                "disk_mib": data_dir_free_mib // 1024 * 1024,
            },
            "allocated": {"domains": sum(1 for d in domains if d.state == "running")},
            "domains": [
                {"uuid": d.uuid, "name": d.name, "state": d.state, "reason": d.reason, **facts.get(d.uuid, {})}
                for d in domains
            ],
            "started_at": STARTED_AT,
            "libvirt_version": profile.libvirt_version,
            "snapshot_support": snapshot_support(profile.libvirt_version),
            "migration": migration or {},
            "networks": networks or {},
            "signing_key": signing_key,
            "at": time.time(),
        }
    )


class HeartbeatThread(threading.Thread):
    def __init__(
        self,
        app: Celery,
        profile: HostProfile,
        hypervisor: Hypervisor,
        data_dir: Path,
        interval_s: float,
        liveness: redis.Redis,
        migration: dict | None = None,
        networks: Callable[[], dict] | None = None,
        running_jobs: Callable[[], list[str]] | None = None,
        signing_key: str | None = None,
    ) -> None:
        super().__init__(name="archq-heartbeat", daemon=True)
        self._app = app
        self._profile = profile
        self._hypervisor = hypervisor
        self._data_dir = data_dir
        self._interval_s = interval_s
        self._stopping = threading.Event()
        self._migration = migration
        self._networks = networks or dict
        self._running_jobs = running_jobs or list
        self._signing_key = signing_key
        self._guests = GuestWatch(hypervisor, Path(data_dir), interval_s)
        self._liveness = liveness
        # The digest of the last full beat sent and when it went (monotonic; None: never).
        self._sent = ""
        self._sent_at: float | None = None
        # The digest a conductor last recorded for this host, as the last mark answered.
        self._recorded: str | None = None

    def start(self) -> None:
        self._guests.start()
        super().start()

    def beat(self) -> None:
        message = heartbeat_message(
            self._profile,
            self._hypervisor,
            free_disk_mib(self._data_dir),
            self._migration,
            self._networks(),
            self._guests.latest(),
            self._signing_key,
        )
        facts = {key: value for key, value in message.items() if key != "at"}
        message["digest"] = facts_digest = digest(facts)
        if self._full_beat_due(facts_digest):
            # A beat that waited in the queue longer than a few intervals says nothing about now.
            self._app.send_task(Task.HEARTBEAT, kwargs={"beat": message}, queue=CONTROL, expires=self._interval_s * 3)
            self._sent, self._sent_at = facts_digest, time.monotonic()
        # Every beat, changed or not: the conductor reads these marks in batches (queues/liveness.py). The jobs
        # are listed as late as possible, so the mark says what the runs hold at its time.
        self._recorded = mark_alive(self._liveness, self._profile.name, self._running_jobs())

    def _full_beat_due(self, facts_digest: str) -> bool:
        """When what the host says changed, when the last full beat was not recorded by the time it expired
        (lost), and at least every FULL_BEAT_EVERY_S."""
        if facts_digest != self._sent or self._sent_at is None:
            return True
        since = time.monotonic() - self._sent_at
        lost = self._recorded != self._sent and since >= self._interval_s * 3
        return lost or since >= FULL_BEAT_EVERY_S

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.beat()
            except Exception:
                log.warning("heartbeat from %s failed; retrying", self._profile.name, exc_info=True)
            self._stopping.wait(self._interval_s)

    def stop(self) -> None:
        self._stopping.set()
        self._guests.stop()

    def join(self, timeout: float | None = None) -> None:
        super().join(timeout)
        self._guests.join(timeout)
