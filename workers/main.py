"""`archq worker`: find out what this host is, then consume the queues it can serve."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click
import redis
from celery import Celery

from queues import logs
from queues.arch import Arch, to_libvirt
from queues.attestation import public_key_text
from queues.celery_app import declare_queue, make_celery
from queues.claims import ClaimStore
from queues.config import ACCEL_CHOICES, EX_CONFIG, Settings
from queues.vocabulary import Accel
from workers.attest import load_or_create_key, signing_key_path
from workers.capabilities import (
    CapabilitiesError,
    HostCapabilities,
    parse_capabilities,
    parse_cpu_modes,
    read_capabilities_file,
)
from workers.console import ConsoleSessionsThread, ConsoleThread
from workers.heartbeat import HeartbeatThread
from workers.host import HostProfile, build_profile, decide_accel
from workers.host_check import check_host
from workers.hypervisor import Hypervisor, HypervisorError, LibvirtHypervisor
from workers.migration import migration_endpoint
from workers.networks import ensure_nat_network, offered
from workers.operations import WorkerContext
from workers.probe import accelerator_boots
from workers.runner import Runner
from workers.snapshots import snapshot_support
from workers.tasks import ROLLBACKS, register_tasks
from workers.watchdog import ConsumerWatchdog

log = logging.getLogger(__name__)


def host_capabilities(settings: Settings, hypervisor: Hypervisor) -> HostCapabilities:
    if settings.capabilities_file:
        return read_capabilities_file(Path(settings.capabilities_file))
    return parse_capabilities(hypervisor.capabilities_xml())


def discover_host(settings: Settings, hypervisor: Hypervisor) -> HostProfile:
    caps = host_capabilities(settings, hypervisor)

    def probe() -> bool:
        if settings.libvirt_uri.startswith("test:"):
            # The test driver runs nothing; it accelerates whatever its captured capabilities claim.
            return True
        return accelerator_boots(
            hypervisor,
            caps.native_arch,
            caps.accelerators[0],
            settings.images_dir / "tiny",
            settings.kvm_probe_timeout_s,
        )

    accel = decide_accel(settings, caps, probe)
    profile = build_profile(settings, caps, accel, cpu_modes(settings, hypervisor, caps, accel))
    return dataclasses.replace(profile, libvirt_version=hypervisor.lib_version())


def cpu_modes(
    settings: Settings, hypervisor: Hypervisor, caps: HostCapabilities, accel: str
) -> dict[Arch, tuple[str, ...]]:
    if settings.capabilities_file:
        # A captured host has no live libvirt to ask; the test driver has no domain capabilities.
        return {}
    modes = {}
    for arch in (caps.native_arch, *caps.emulators):
        virttype = accel if arch == caps.native_arch and accel != Accel.TCG else "qemu"
        try:
            modes[arch] = parse_cpu_modes(hypervisor.domain_capabilities_xml(to_libvirt(arch), virttype))
        except (HypervisorError, CapabilitiesError):
            log.warning("no domain capabilities for %s/%s", arch, virttype, exc_info=True)
    return modes


@dataclasses.dataclass
class WorkerService:
    """Everything a running hypervisor worker holds; `start_worker` in tests builds the same thing."""

    settings: Settings
    app: Celery
    profile: HostProfile
    hypervisor: Hypervisor
    runner: Runner
    heartbeat: HeartbeatThread
    console: ConsoleThread
    console_sessions: ConsoleSessionsThread

    @classmethod
    def build(cls, settings: Settings) -> WorkerService:
        hypervisor = LibvirtHypervisor(settings.libvirt_uri)
        profile = discover_host(settings, hypervisor)
        app = make_celery(settings, main=f"archq-worker-{profile.name}")
        for queue in profile.queues:
            declare_queue(app, queue)
        signing_key = load_or_create_key(signing_key_path(settings.data_dir, profile.name))
        ctx = WorkerContext(
            host=profile,
            hypervisor=hypervisor,
            data_dir=settings.data_dir,
            images_dir=settings.images_dir,
            stop_timeout_s=settings.stop_timeout_s,
            image_dirs=settings.allowed_image_dirs,
            max_image_bytes=settings.max_image_bytes,
            settings=settings,
            signing_key=signing_key,
        )
        runner = Runner(
            app=app,
            ctx=ctx,
            claims=ClaimStore.from_url(settings.redis_url),
            lease_s=settings.lease_s,
            time_limits=settings.time_limits,
            rollbacks=ROLLBACKS,
        )
        register_tasks(app, runner)
        ensure_nat_network(hypervisor, settings)
        heartbeat = HeartbeatThread(
            app,
            profile,
            hypervisor,
            settings.data_dir,
            settings.heartbeat_interval_s,
            redis.Redis.from_url(settings.redis_url, socket_timeout=5),
            migration_endpoint(settings),
            networks=lambda: offered(hypervisor, settings),
            running_jobs=runner.running_jobs,
            signing_key=public_key_text(signing_key.public_key()),
        )
        console = ConsoleThread(settings.redis_url, profile.name, settings.data_dir)
        return cls(
            settings=settings,
            app=app,
            profile=profile,
            hypervisor=hypervisor,
            runner=runner,
            heartbeat=heartbeat,
            console=console,
            console_sessions=ConsoleSessionsThread(settings.redis_url, profile.name, settings.libvirt_uri),
        )

    def run(self) -> None:
        log.info(
            "host %s: arch %s, accel %s, emulates %s, libvirt %s, snapshots %s; consuming %s",
            self.profile.name,
            self.profile.arch,
            self.profile.accel,
            ", ".join(self.profile.emulators) or "nothing",
            self.profile.libvirt_version,
            snapshot_support(self.profile.libvirt_version),
            ", ".join(self.profile.queues),
        )
        self.heartbeat.start()
        self.console.start()
        self.console_sessions.start()
        ConsumerWatchdog(
            redis.Redis.from_url(self.settings.redis_url, socket_timeout=5), self.profile.queues, self.runner.activity
        ).start()
        try:
            self.app.Worker(
                hostname=f"archq@{self.profile.name}",
                queues=self.profile.queues,
                pool="threads",
                concurrency=self.settings.worker_concurrency,
                loglevel="INFO",
                # Mingle and gossip cost a second at start and nothing here uses them (Flower reads events).
                without_mingle=True,
                without_gossip=True,
            ).start()
        finally:
            self.heartbeat.stop()
            self.console.stop()
            self.console_sessions.stop()
            self.hypervisor.close()


@click.command("worker")
@click.option("--libvirt-uri", help="libvirt URI [env ARCHQ_LIBVIRT_URI, default qemu:///system]")
@click.option("--hostname", help="this host's name in archq [env ARCHQ_HOSTNAME, default the machine's]")
@click.option("--capabilities-file", type=click.Path(exists=True, dir_okay=False), help="captured capabilities XML")
@click.option("--accel", type=click.Choice(ACCEL_CHOICES), help="[env ARCHQ_ACCEL, default auto]")
@click.option("--concurrency", type=int, help="jobs at once [env ARCHQ_WORKER_CONCURRENCY, default 4]")
@click.option("--check", is_flag=True, help="print what the worker would do here and exit (non-zero on a problem)")
def worker(
    libvirt_uri: str | None,
    hostname: str | None,
    capabilities_file: str | None,
    accel: str | None,
    concurrency: int | None,
    check: bool,
) -> None:
    """Run a hypervisor worker on this host (supervised: a crashed or wedged worker is restarted)."""
    overrides: dict[str, Any] = {
        "libvirt_uri": libvirt_uri,
        "hostname": hostname,
        "capabilities_file": capabilities_file,
        "accel": accel,
        "worker_concurrency": concurrency,
    }
    # Read (and so validated) before anything starts: a bad setting stops here, named, and is never restarted.
    settings = dataclasses.replace(Settings.from_env(), **{k: v for k, v in overrides.items() if v is not None})
    if check:
        findings = check_host(settings, discover_host)
        click.echo("\n".join(finding.line() for finding in findings))
        sys.exit(0 if all(finding.ok for finding in findings) else 1)
    logs.configure(settings.log_format)
    if os.environ.get(_CHILD) != "1":
        sys.exit(supervise([sys.executable, "-m", "client.cli", *sys.argv[1:]]))
    try:
        service = WorkerService.build(settings)
    except CapabilitiesError as exc:
        click.echo(f"archq worker: this host cannot run a worker: {exc}", err=True)
        sys.exit(EX_CONFIG)
    service.run()


_CHILD = "ARCHQ_SUPERVISED_CHILD"


def supervise(command: list[str]) -> int:
    """Run the worker in a child process and start it again whenever it dies on its own."""
    stopping = False
    child: subprocess.Popen | None = None

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    backoff = 1.0
    while True:
        started = time.monotonic()
        child = subprocess.Popen(command, env={**os.environ, _CHILD: "1"})
        code = child.wait()
        if stopping or code == EX_CONFIG:
            # A configuration error comes back the same on every start: stop, the message is already out.
            return code
        log.error("worker exited with %s; starting it again in %.0fs", code, backoff)
        time.sleep(backoff)
        backoff = 1.0 if time.monotonic() - started > 60 else min(backoff * 2, 30.0)
