"""The archq control plane: the Flask API and the conductor, both owning the database."""

from __future__ import annotations

from dataclasses import dataclass

from celery import Celery
from flask import Flask
from sqlalchemy import event

from queues.celery_app import make_celery
from queues.claims import ClaimStore
from queues.config import Settings
from queues.console import ConsoleChannel, ConsoleSessions
from queues.vocabulary import JobState
from web.auth import init_auth
from web.errors import register_error_handlers
from web.extensions import db
from web.group_commit import GroupCommit
from web.local_secrets import private_database_file
from web.models import Job
from web.publisher import Publisher
from web.services.dispatch import outgoing
from web.services.hosts import FleetCache
from web.services.vms import write_creates

# A create may carry 64 KiB of user data, which JSON escaping can make up to six times longer (\u0001).
MAX_BODY_BYTES = 512 * 1024


@dataclass
class Archq:
    """What views and conductor tasks need besides the database, at `app.extensions["archq"]`."""

    settings: Settings
    celery: Celery
    claims: ClaimStore
    publisher: Publisher
    fleet_cache: FleetCache
    # Concurrent create requests of this process commit together.
    creates: GroupCommit
    # Console tails from workers (request/reply over Redis: the API cannot read hosts' files).
    console: ConsoleChannel
    # Interactive console sessions (WebSocket <-> Redis <-> the VM's worker <-> libvirt's console stream).
    console_sessions: ConsoleSessions

    def announce(self, *jobs: Job) -> None:
        """Hand newly committed jobs to this process's publisher (the conductor re-sends them otherwise)."""
        pending = [outgoing(job) for job in jobs if job.state == JobState.PENDING]
        if pending:
            self.publisher.notify(*pending)


def create_app(settings: Settings | None = None, *, sent_events: bool = True) -> Flask:
    settings = settings or Settings.from_env()
    app = Flask(__name__)
    app.config.update(
        SQLALCHEMY_DATABASE_URI=settings.database_url,
        SQLALCHEMY_ENGINE_OPTIONS=_engine_options(settings.database_url),
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES,
    )
    if settings.database_url.startswith("sqlite:///"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    private_database_file(settings.database_url)
    db.init_app(app)
    if settings.database_url.startswith("sqlite"):
        with app.app_context():
            event.listen(db.engine, "connect", _sqlite_pragmas)
    app.extensions["archq"] = Archq(
        settings=settings,
        # Task-sent events let Flower show a job from its submission; only the API's publisher thread sends
        # them (the conductor's app, built by the same factory, publishes from two threads).
        celery=make_celery(settings, main="archq-web", send_sent_events=sent_events),
        claims=ClaimStore.from_url(settings.redis_url),
        publisher=Publisher(app),
        fleet_cache=FleetCache(),
        creates=GroupCommit(write_creates),
        console=ConsoleChannel.from_url(settings.redis_url),
        console_sessions=ConsoleSessions.from_url(settings.redis_url),
    )
    register_error_handlers(app)
    init_auth(app)

    from web.api import register_blueprints
    from web.ui import init_ui

    register_blueprints(app)
    init_ui(app, settings)
    return app


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # WAL lets readers run beside the one writer, and NORMAL syncs at checkpoints instead of every commit:
    # the API, the conductor and the publisher share the file (commits went from ~1.1 ms to ~0.02 ms).
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _engine_options(url: str) -> dict:
    if url.startswith("sqlite"):
        # Several processes (API workers, conductor) share the file: wait for locks instead of failing.
        return {"connect_args": {"timeout": 30}}
    return {"pool_pre_ping": True}
