"""A module's worth of archq on the real libvirtd: the API in-process (its test client sends an admin
token), `archq conductor` and one `archq worker` on qemu:///system as child processes, with `tiny` in the
catalog. Booting guests under TCG costs seconds, so modules share one stack and boot each guest once."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from flask import Flask
from flask.testing import FlaskClient

from migrations import upgrade
from queues.config import Settings
from tests.support.api import wait_host
from tests.support.auth import authed_client, make_token
from tests.support.services import ArchqProcess
from web import create_app
from web.extensions import db
from web.services.images import register_tiny


@dataclass
class QemuStack:
    settings: Settings
    app: Flask
    client: FlaskClient
    # The worker's accelerator for its native arch (`kvm` where the boot probe passed, else `tcg`).
    accel: str


@contextmanager
def qemu_stack(tmp: Path, redis_url: str, hostname: str, images_dir: Path, **overrides) -> Iterator[QemuStack]:
    from tests.conftest import settings_env

    # libvirt's QEMU runs as an unprivileged user that must reach the VM directories (disk, console log).
    for directory in (tmp, *tmp.parents):
        if directory in (Path("/tmp"), Path("/")):
            break
        directory.chmod(0o755)
    settings = Settings(
        broker_url=redis_url, redis_url=redis_url, data_dir=tmp / "data", images_dir=images_dir,
        database_url=f"sqlite:///{tmp / 'archq.db'}", libvirt_uri="qemu:///system", hostname=hostname,
        accel="auto", heartbeat_interval_s=0.5,
        # A wide liveness window: two cores shared with guests booting under TCG delay heartbeats by seconds.
        heartbeat_misses=30, dispatch_retry_s=0.5, lease_s=5, worker_lost_after_s=8, stop_timeout_s=3,
    )  # fmt: skip
    settings = dataclasses.replace(settings, **overrides)
    settings.data_dir.mkdir(parents=True)
    settings.data_dir.chmod(0o755)
    upgrade(settings.database_url)
    app = create_app(settings)
    with app.app_context():
        register_tiny(settings.images_dir)
    env = {**settings_env(settings), "ARCHQ_CAPABILITIES_FILE": ""}
    processes = [
        ArchqProcess(["conductor"], env, tmp / "conductor.log"),
        ArchqProcess(["worker"], env, tmp / "worker.log"),
    ]
    client = authed_client(app, make_token(app, "admin"))
    try:
        host = wait_host(client, hostname, timeout=120)
        yield QemuStack(settings, app, client, host["accel"])
    finally:
        for process in reversed(processes):
            process.stop()
        with app.app_context():
            db.engine.dispose()
