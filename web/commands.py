"""The control-plane subcommands of `archq`: api, conductor, migrate, up (tokens: web/token_commands.py)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

import click

from queues import logs
from queues.config import Settings
from queues.images import built_artifacts
from web.local_secrets import FLOWER_CREDENTIALS_FILE, flower_basic_auth, private_database_file
from web.token_commands import bootstrap_admin_token


def _logging() -> None:
    logs.configure(Settings.from_env().log_format)


@click.command()
def migrate() -> None:
    """Apply the database migrations (alembic upgrade head)."""
    from migrations import upgrade

    settings = Settings.from_env()
    private_database_file(settings.database_url)
    upgrade(settings.database_url)
    click.echo("database is at the latest revision")


@click.group()
def images() -> None:
    """The image catalog."""


@images.command("register-tiny")
def register_tiny() -> None:
    """Register (or update) the `tiny` image from the guests `archq images build tiny` built in the images directory."""
    from web import create_app
    from web.services.images import register_tiny as register

    settings = Settings.from_env()
    app = create_app(settings, sent_events=False)
    with app.app_context():
        image = register(settings.images_dir)
        if image is None:
            built = settings.images_dir / "tiny"
            raise click.ClickException(f"no tiny guest built in {built}; run `archq images build tiny`")
        click.echo(f"image tiny registered for {', '.join(sorted(image.artifacts))}")


@images.command("register")
@click.argument("name")
def register(name: str) -> None:
    """Register (or update) image NAME from what `archq images build NAME` built in the images directory."""
    from web import create_app
    from web.services.images import register_built

    settings = Settings.from_env()
    app = create_app(settings, sent_events=False)
    with app.app_context():
        image = register_built(settings.images_dir, name)
        if image is None:
            raise click.ClickException(
                f"no {name} image built in {settings.images_dir / name}; run `archq images build {name} --arch ...`"
            )
        click.echo(f"image {name} registered for {', '.join(sorted(image.artifacts))}")


@click.command()
@click.option("--bind", default="127.0.0.1:8080", show_default=True, help="HOST:PORT to listen on")
@click.option("--workers", default=2, show_default=True, help="gunicorn worker processes")
@click.option("--threads", default=8, show_default=True, help="threads per gunicorn worker")
def api(bind: str, workers: int, threads: int) -> None:
    """Serve the HTTP API under gunicorn."""
    # Read (and so validated) here, before gunicorn starts; web/gunicorn_conf.py reads the same environment.
    Settings.from_env()
    os.execv(
        sys.executable,
        [
            sys.executable, "-m", "gunicorn",
            # Its error and access logs in archq's format (ARCHQ_LOG_FORMAT).
            "--config", "python:web.gunicorn_conf",
            "--bind", bind,
            "--workers", str(workers),
            "--threads", str(threads),
            "web:create_app()",
        ],
    )  # fmt: skip


@click.command()
def conductor() -> None:
    """Run the conductor: records job reports and heartbeats, re-publishes pending jobs."""
    _logging()
    from web import create_app
    from web.conductor.service import run_conductor

    run_conductor(create_app(sent_events=False))


@click.command()
def flower() -> None:
    """Run Flower on archq's Celery app (its queues, workers and jobs), always behind basic auth."""
    settings = Settings.from_env()
    # In Flower's environment rather than its command line, where `ps` would show the password.
    os.environ["FLOWER_BASIC_AUTH"] = flower_basic_auth(settings)
    os.execv(
        sys.executable,
        [
            sys.executable, "-m", "celery", "-A", "queues.flower", "flower",
            f"--address={settings.flower_address}", f"--port={settings.flower_port}",
            # Flower would broadcast `enable_events` every 5 s, turning on the task events that the conductor
            # keeps off (its heartbeats would fill the task list); archq's workers send theirs unasked.
            "--enable_events=False",
            # A worker's page waits for its answer to each inspection and returns once it answered; within
            # Flower's 1 s default a worker busy on a loaded host can miss it, and its page says "Unknown worker".
            "--inspect_timeout=5000",
            # Look, do not touch: Flower's buttons and its task API (send a task, revoke, shut a worker down,
            # cancel a queue's consumer) would bypass the API's roles and its jobs, which the database owns.
            "--read_only=True",
        ],
    )  # fmt: skip


@click.command()
@click.option("--bind", default="127.0.0.1:8080", show_default=True, help="where the API listens")
@click.option("--no-worker", is_flag=True, help="do not run a hypervisor worker on this machine")
def up(bind: str, no_worker: bool) -> None:
    """Run the whole stack in the foreground: API, conductor, a worker and Flower. Ctrl-C stops it."""
    _logging()
    log = logging.getLogger("archq.up")
    settings = Settings.from_env()
    subprocess.run([sys.executable, "-m", "client.cli", "db", "upgrade"], check=True)
    token_file, secret = bootstrap_admin_token(settings)
    if secret:
        # Standard output often ends in a log anyone can read (.ci/demo's): it names the file, never the secret.
        click.echo(f"created the first admin token: it is in {token_file} (mode 0600), and nowhere else")
    else:
        log.info("tokens exist; the first admin token is in %s (if it was not removed)", token_file)
    # The tiny guest is in the catalog whenever it is built here (not fatal: it may be built later).
    subprocess.run([sys.executable, "-m", "client.cli", "images", "register-tiny"], check=False)
    # So is a Debian image built by `archq images build debian-12` (only tried when one was built, so the log
    # says nothing about an image nobody asked for).
    if built_artifacts(settings.images_dir, "debian-12"):
        subprocess.run([sys.executable, "-m", "client.cli", "images", "register", "debian-12"], check=False)
    archq = [sys.executable, "-m", "client.cli"]
    commands = {
        "api": [*archq, "api", "--bind", bind],
        "conductor": [*archq, "conductor"],
        "flower": [*archq, "flower"],
    }
    if not no_worker:
        commands["worker"] = [*archq, "worker"]
    children = {name: subprocess.Popen(cmd) for name, cmd in commands.items()}
    log.info(
        "archq is up: API http://%s/api/v1, web UI http://%s/ui/ (log in with an API token), "
        "Flower http://%s:%s (basic auth: ARCHQ_FLOWER_BASIC_AUTH or %s)",
        bind,
        bind,
        settings.flower_address,
        settings.flower_port,
        settings.data_dir / FLOWER_CREDENTIALS_FILE,
    )
    stopping = False

    def stop(*_args: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    exit_code = 0
    while not stopping:
        for name, child in children.items():
            if child.poll() is not None:
                log.error("%s exited with %s; stopping everything", name, child.returncode)
                stopping, exit_code = True, 1
        time.sleep(0.5)
    for child in children.values():
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 20
    for child in children.values():
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
    sys.exit(exit_code)
