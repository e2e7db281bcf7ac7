"""Fixtures that start real services: a private Redis, the Flask app on a real database, an in-process
conductor and hypervisor workers (Celery workers consuming real queues)."""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
from celery.contrib.testing.worker import start_worker

from migrations import upgrade
from queues.config import Settings
from tests.support.auth import authed_client, make_token
from tests.support.domains import remove_domains_under
from tests.support.services import ArchqProcess, RedisServer
from tests.support.stand_in_images import write_stand_in_tiny
from web import create_app
from web.extensions import db
from web.services.images import register_tiny

DATA = Path(__file__).parent / "data"
# Built guests are kept between runs: building them downloads ~30 MB of Debian packages.
IMAGES_CACHE = Path(os.environ.get("ARCHQ_TEST_CACHE", "/var/tmp/archq-test-cache"))
CAPABILITIES = {
    "amd64": DATA / "capabilities" / "x86_64-kvm-aarch64-emu.xml",
    "arm64": DATA / "capabilities" / "aarch64-kvm-x86_64-emu.xml",
    "amd64-nokvm": DATA / "capabilities" / "x86_64-nokvm.xml",
}


# The fast tier (marker `fast`, given here): no root, no libvirtd, no guest build, no archq child process, no
# sshd or browser; `.ci/test` runs it first and stops at its first failure, then everything else. A test is in
# it when it lives in one of these directories, has none of the slow markers and uses none of these fixtures.
FAST_DIRECTORIES = {"unit", "api"}
SLOW_MARKERS = ("libvirtd", "armhost", "guest", "slow")
SLOW_FIXTURES = {"processes", "conductor", "hypervisor_worker", "start_qemu_worker", "tiny_built", "live_api"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    tests = Path(__file__).parent
    for item in items:
        directory = item.path.relative_to(tests).parts[0]
        if (
            directory in FAST_DIRECTORIES
            and not any(item.get_closest_marker(marker) for marker in SLOW_MARKERS)
            and not SLOW_FIXTURES & set(getattr(item, "fixturenames", ()))
        ):
            item.add_marker(pytest.mark.fast)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def settings(tmp_path: Path, redis_server: RedisServer, images_dir: Path) -> Settings:
    redis.Redis.from_url(redis_server.url).flushall()
    return Settings(
        broker_url=redis_server.url,
        redis_url=redis_server.url,
        data_dir=tmp_path / "data",
        images_dir=images_dir,
        database_url=f"sqlite:///{tmp_path / 'archq.db'}",
        libvirt_uri="test:///default",
        hostname="amd64-host",
        capabilities_file=str(CAPABILITIES["amd64"]),
        accel="tcg",
        heartbeat_interval_s=0.5,
        heartbeat_misses=6,
        dispatch_retry_s=0.5,
        lease_s=5,
        worker_lost_after_s=8,
        stop_timeout_s=5,
    )


@pytest.fixture(scope="session")
def tiny_built() -> Path:
    """Both tiny guests built (once; cached in IMAGES_CACHE), so every test database can list `tiny`."""
    from queues.arch import ALL
    from workers.guest.tiny import ensure_tiny_guest

    for arch in ALL:
        ensure_tiny_guest(arch, IMAGES_CACHE / "tiny")
    return IMAGES_CACHE


@pytest.fixture(scope="session")
def stand_in_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An images directory whose `tiny` never boots (tests/support/stand_in_images.py)."""
    return write_stand_in_tiny(tmp_path_factory.mktemp("images"))


@pytest.fixture
def images_dir(request: pytest.FixtureRequest) -> Path:
    """The real built guests, the test cache, for a test that boots them under libvirtd or builds images into
    it (markers `libvirtd`, `guest`); a stand-in `tiny` for every other, so the fast tier builds no guest."""
    if any(request.node.get_closest_marker(marker) for marker in ("libvirtd", "guest")):
        return request.getfixturevalue("tiny_built")
    return request.getfixturevalue("stand_in_images")


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("migrated") / "archq.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def app(settings: Settings, migrated_sqlite: Path):
    database = Path(settings.database_url.removeprefix("sqlite:///"))
    if settings.database_url.startswith("sqlite:///") and not database.exists():
        # A copy of a database migrated once a session: running the migrations took seconds a test.
        shutil.copyfile(migrated_sqlite, database)
    else:
        upgrade(settings.database_url)
    app = create_app(settings)
    with app.app_context():
        assert register_tiny(settings.images_dir) is not None
    yield app
    # The publisher thread records what it published on its own connection: done before the engine goes.
    assert app.extensions["archq"].publisher.wait_idle(30), "the publisher did not finish within 30 s"
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def admin_token(app) -> str:
    return make_token(app, "admin", "tests")


@pytest.fixture
def client(app, admin_token):
    """The app's test client, authenticated as an admin (every role's requests work)."""
    return authed_client(app, admin_token)


@pytest.fixture
def anonymous_client(app):
    return app.test_client()


@pytest.fixture
def conductor(app, processes) -> ArchqProcess:
    """`archq conductor` as a child process. It is never run in-process: two Celery workers in one process
    share Celery's global worker state and cannot be shut down reliably."""
    return processes("conductor")


@pytest.fixture
def hypervisor_worker(settings: Settings) -> Callable:
    """Starts a hypervisor worker in this process on the libvirt test driver, with a captured host."""
    from workers.main import WorkerService

    @contextmanager
    def start(name: str = "amd64-host", capabilities: str = "amd64", **overrides) -> Iterator[WorkerService]:
        worker_settings = dataclasses.replace(
            settings, hostname=name, capabilities_file=str(CAPABILITIES[capabilities]), **overrides
        )
        service = WorkerService.build(worker_settings)
        with start_worker(
            service.app,
            pool="threads",
            concurrency=2,
            queues=service.profile.queues,
            hostname=f"archq@{name}",
            perform_ping_check=False,
            shutdown_timeout=20,
        ):
            service.heartbeat.start()
            service.console.start()
            service.console_sessions.start()
            try:
                yield service
            finally:
                service.heartbeat.stop()
                service.console.stop()
                service.console_sessions.stop()
                service.heartbeat.join(timeout=5)
                # A console thread still waiting on Redis would answer the next test's requests.
                service.console.join(timeout=5)
                service.console_sessions.join(timeout=5)
                # Every connection to test:///default in this process shares one state: leave it clean.
                for domain in service.hypervisor.list_domains():
                    if domain.name.startswith("archq-"):
                        service.hypervisor.remove(domain.uuid)

    return start


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes an `archq` child process use these settings."""
    return {
        "ARCHQ_BROKER_URL": settings.broker_url,
        "ARCHQ_REDIS_URL": settings.redis_url,
        "ARCHQ_DATA_DIR": str(settings.data_dir),
        "ARCHQ_IMAGES_DIR": str(settings.images_dir),
        "ARCHQ_DATABASE_URL": settings.database_url,
        "ARCHQ_LIBVIRT_URI": settings.libvirt_uri,
        "ARCHQ_HOSTNAME": settings.hostname,
        "ARCHQ_CAPABILITIES_FILE": settings.capabilities_file,
        "ARCHQ_ACCEL": settings.accel,
        "ARCHQ_HEARTBEAT_INTERVAL_S": str(settings.heartbeat_interval_s),
        "ARCHQ_HEARTBEAT_MISSES": str(settings.heartbeat_misses),
        "ARCHQ_DISPATCH_RETRY_S": str(settings.dispatch_retry_s),
        "ARCHQ_LEADER_LEASE_S": str(settings.leader_lease_s),
        "ARCHQ_LEASE_S": str(settings.lease_s),
        "ARCHQ_WORKER_LOST_AFTER_S": str(settings.worker_lost_after_s),
        "ARCHQ_NATIVE_WAIT_S": str(settings.native_wait_s),
        "ARCHQ_STOP_TIMEOUT_S": str(settings.stop_timeout_s),
        "ARCHQ_IMAGE_DIRS": ":".join(str(d) for d in settings.image_dirs),
        "ARCHQ_MAX_IMAGE_BYTES": str(settings.max_image_bytes),
        "ARCHQ_NAT_NETWORK": settings.nat_network,
        "ARCHQ_NAT_SUBNET": settings.nat_subnet,
        "ARCHQ_BRIDGES": ",".join(settings.bridges),
    }


@pytest.fixture
def processes(settings: Settings, tmp_path: Path) -> Iterator[Callable[..., ArchqProcess]]:
    """Starts `archq` subcommands as real child processes; all are stopped at the end of the test."""
    started: list[ArchqProcess] = []

    def start(*args: str, log_name: str | None = None, **env: str) -> ArchqProcess:
        name = log_name or "-".join(args)
        process = ArchqProcess(list(args), {**settings_env(settings), **env}, tmp_path / f"{name}.log")
        started.append(process)
        return process

    yield start
    for process in reversed(started):
        process.stop()


@pytest.fixture
def qemu_leftovers(settings: Settings) -> Iterator[None]:
    """After the test's processes are gone (this fixture is set up before them, so torn down after), no domain
    of the test stays on the shared libvirtd: one left running broke later tests that reuse its name."""
    yield
    remove_domains_under(str(settings.data_dir))


@pytest.fixture
def start_qemu_worker(settings: Settings, qemu_leftovers: None, conductor, processes) -> Callable[..., ArchqProcess]:
    """Starts `archq worker` processes on the real libvirtd (qemu:///system)."""
    # libvirt's QEMU runs as an unprivileged user that must reach the VM's disk (under any --basetemp).
    for directory in settings.data_dir.parents:
        if directory in (Path("/tmp"), Path("/")):
            break
        directory.chmod(0o755)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings.data_dir.chmod(0o755)

    def start(name: str = "qemu-host") -> ArchqProcess:
        return processes(
            "worker", log_name=name, ARCHQ_LIBVIRT_URI="qemu:///system", ARCHQ_CAPABILITIES_FILE="",
            ARCHQ_ACCEL="auto", ARCHQ_HOSTNAME=name,
        )  # fmt: skip

    return start
