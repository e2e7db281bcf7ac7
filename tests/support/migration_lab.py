"""An archq cluster on the two-host lab (tests/support/twohosts.py): the API (in-process Flask app) and the
conductor in the root namespace, one `archq worker` inside each lab host's namespaces, all on one Redis
reached through a unix socket (a file, so every namespace sees it).

Workers run unsupervised (ARCHQ_SUPERVISED_CHILD=1) so a test can kill one exactly like a crash and start
another. Each worker has its own copy of the lab's known_hosts, which a test may corrupt.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import libvirt

from migrations import upgrade
from queues.arch import Arch
from queues.config import Settings
from tests.support.armhost import ArmHost, join_lab
from tests.support.auth import authed_client, make_token
from tests.support.services import ROOT, ArchqProcess, RedisServer, wait_for
from tests.support.twohosts import LAB_NET, LabHost, two_hosts
from web import create_app
from web.extensions import db
from web.services.images import register_tiny
from workers.guest.tiny import ensure_tiny_guest

TINY_CACHE = Path(os.environ.get("ARCHQ_TEST_CACHE", "/var/tmp/archq-test-cache")) / "tiny"


@dataclass
class Cluster:
    # The x86-64 lab hosts h1 and h2, and any arm64 host (tests/support/armhost.py) started beside them.
    hosts: dict[str, LabHost | ArmHost]
    settings: Settings
    app: object
    workdir: Path
    # An admin token for the lab's API client.
    token: str
    workers: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def client(self):
        return authed_client(self.app, self.token)

    def known_hosts(self, name: str) -> Path:
        return self.workdir / f"known_hosts-{name}"

    def worker_env(self, host: LabHost | ArmHost) -> dict[str, str]:
        s = self.settings
        return {
            **os.environ,
            "ARCHQ_SUPERVISED_CHILD": "1",
            "ARCHQ_BROKER_URL": s.broker_url,
            "ARCHQ_REDIS_URL": s.redis_url,
            "ARCHQ_DATA_DIR": str(host.host_data_dir),
            "ARCHQ_IMAGES_DIR": str(host.host_data_dir / "images"),
            "ARCHQ_IMAGE_DIRS": str(TINY_CACHE.parent),
            "ARCHQ_LIBVIRT_URI": "qemu:///system",
            "ARCHQ_HOSTNAME": host.name,
            "ARCHQ_CAPABILITIES_FILE": "",
            "ARCHQ_ACCEL": "tcg",
            "ARCHQ_HEARTBEAT_INTERVAL_S": str(s.heartbeat_interval_s),
            "ARCHQ_HEARTBEAT_MISSES": str(s.heartbeat_misses),
            "ARCHQ_LEASE_S": str(s.lease_s),
            "ARCHQ_STOP_TIMEOUT_S": "1",
            "ARCHQ_MIGRATION_ADDRESS": host.address,
            **(self._migration_env(host) if isinstance(host, LabHost) else {}),
        }

    def _migration_env(self, host: LabHost) -> dict[str, str]:
        return {
            "ARCHQ_MIGRATION_TRANSPORT": "tcp",
            "ARCHQ_SSH_USER": "root",
            "ARCHQ_SSH_KEY": str(host.ssh_key_path),
            "ARCHQ_KNOWN_HOSTS": str(self.known_hosts(host.name)),
        }

    def start_worker(self, name: str, **env: str) -> subprocess.Popen:
        host = self.hosts[name]
        log = (self.workdir / f"worker-{name}-{time.monotonic_ns()}.log").open("wb")
        proc = host.popen(
            [host.python, "-m", "client.cli", "worker"],
            env={**self.worker_env(host), **env},
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.workers[name] = proc
        started = time.time()

        def beating() -> bool:
            response = self.client.get(f"/api/v1/hosts/{name}")
            if response.status_code != 200:
                return False
            host_json = response.get_json()["host"]
            return (
                host_json["state"] == "up"
                and host_json["last_seen"]
                and proc.poll() is None
                and (time.time() - started > 0.5)
            )

        # An arm64 worker is aarch64 Python under qemu-user: importing Celery and libvirt takes tens of seconds.
        wait_for(beating, timeout=180, what=f"worker {name} heartbeating")
        return proc

    def kill_worker(self, name: str) -> None:
        """SIGKILL, as a crash: no warm shutdown, no report."""
        proc = self.workers.pop(name)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def stop_worker(self, name: str) -> None:
        proc = self.workers[name]
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill_worker(name)
        self.workers.pop(name, None)

    def stop_workers(self) -> None:
        for name in list(self.workers):
            self.stop_worker(name)

    def where(self, vm_id: str) -> dict[str, str | None]:
        """What each host's libvirt says of the domain: running, stopped, or None (absent)."""
        found: dict[str, str | None] = {}
        for name, host in self.hosts.items():
            conn = libvirt.open(host.uri)
            try:
                doms = [d for d in conn.listAllDomains() if d.UUIDString() == vm_id]
                found[name] = ("running" if doms[0].isActive() else "stopped") if doms else None
            finally:
                conn.close()
        return found

    def console(self, name: str, vm_id: str) -> Path:
        return self.hosts[name].data_dir / "vms" / vm_id / "console.log"

    def vm(self, vm_id: str) -> dict:
        return self.client.get(f"/api/v1/vms/{vm_id}").get_json()["vm"]

    def job(self, job_id: str) -> dict:
        return self.client.get(f"/api/v1/jobs/{job_id}").get_json()["job"]

    def wait_idle(self, vm_id: str, timeout: float = 120) -> None:
        """Until no job of the VM is pending, queued or running: after a migration, the target signing the
        arrival (a `migrate_in` job) keeps the VM busy."""

        def idle() -> bool:
            for state in ("pending", "queued", "running"):
                query = {"vm_id": vm_id, "state": state, "limit": 1}
                if self.client.get("/api/v1/jobs", query_string=query).get_json()["jobs"]:
                    return False
            return True

        wait_for(idle, timeout=timeout, what=f"VM {vm_id}'s jobs to end")

    def remove_domains(self) -> None:
        for host in self.hosts.values():
            conn = libvirt.open(host.uri)
            try:
                for dom in conn.listAllDomains():
                    if dom.isActive():
                        dom.destroy()
                    if dom.isPersistent():
                        dom.undefine()
            finally:
                conn.close()


@contextmanager
def cluster(workdir: Path, *, extra_hosts: Sequence[ArmHost] = (), **settings_overrides: Any) -> Iterator[Cluster]:
    """The two x86-64 lab hosts with a worker each, and a worker on each of `extra_hosts` (started by the
    caller with `workdir`, ROOT and the test cache bound in). `settings_overrides` replace the lab's timings."""
    workdir.mkdir(parents=True, exist_ok=True)
    for directory in (workdir, *workdir.parents):
        if str(directory).startswith("/tmp/pytest-of"):
            directory.chmod(0o755)
    # Both guests built (or taken from the cache) before the hosts exist: the lab hosts have no network.
    for arch in (Arch.AMD64, Arch.ARM64):
        ensure_tiny_guest(arch, TINY_CACHE)
    redis_server = RedisServer(workdir, unix_socket=workdir / "redis.sock")
    redis_server.start()
    settings = Settings(
        broker_url=f"redis+socket://{workdir / 'redis.sock'}",
        redis_url=f"unix://{workdir / 'redis.sock'}",
        data_dir=workdir / "control",
        images_dir=TINY_CACHE.parent,
        database_url=f"sqlite:///{workdir / 'archq.db'}",
        heartbeat_interval_s=0.5,
        heartbeat_misses=6,
        dispatch_retry_s=0.5,
        lease_s=5,
        worker_lost_after_s=60,
        stop_timeout_s=1,
    )
    settings = dataclasses.replace(settings, **settings_overrides)
    conductor = None
    try:
        with two_hosts(workdir / "lab", prefix="miglab") as (h1, h2):
            for host in (h1, h2):
                shutil.copyfile(h1.known_hosts_path, workdir / f"known_hosts-{host.name}")
            for index, extra in enumerate(extra_hosts, start=10):
                # On the lab's network too: the x86-64 hosts' workers migrate (re-home) VMs to it.
                known = [workdir / f"known_hosts-{host.name}" for host in (h1, h2)]
                join_lab(extra, (h1, h2), f"{LAB_NET}.{index}", known)
            upgrade(settings.database_url)
            app = create_app(settings)
            with app.app_context():
                # Its sources are in the test cache, which every lab host sees; each host copies what it runs
                # into its own store, so only the host a VM was created on has its files until it migrates.
                register_tiny(TINY_CACHE.parent)
            from tests.conftest import settings_env

            conductor = ArchqProcess(["conductor"], settings_env(settings), workdir / "conductor.log")
            hosts: dict[str, LabHost | ArmHost] = {"h1": h1, "h2": h2, **{h.name: h for h in extra_hosts}}
            lab = Cluster(hosts, settings, app, workdir, make_token(app, "admin"))
            try:
                for name in hosts:
                    lab.start_worker(name)
                yield lab
            finally:
                lab.stop_workers()
                lab.remove_domains()
                with app.app_context():
                    db.engine.dispose()
    finally:
        if conductor is not None:
            conductor.stop()
        redis_server.stop()
