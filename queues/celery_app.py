"""The Celery app factory and the configuration every archq process shares."""

from __future__ import annotations

from celery import Celery
from kombu import Exchange, Queue

from queues import redis_reconnect
from queues.config import Settings
from queues.names import STATIC_QUEUES


def make_queue(name: str) -> Queue:
    # One direct exchange per queue, as Celery itself declares them; explicit so that publishers and
    # consumers bind identically on Redis and RabbitMQ.
    return Queue(name, Exchange(name, type="direct"), routing_key=name)


def make_celery(settings: Settings, main: str = "archq", *, send_sent_events: bool = False) -> Celery:
    """`send_sent_events` only where one thread publishes (the API's publisher): the event dispatcher's
    connection is shared, and threads publishing through it at once hang it."""
    redis_reconnect.install()
    app = Celery(main, broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        # Results travel to the conductor as `control` messages; Celery's result backend is not used.
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # Redis re-delivers an unacknowledged message after this long (celery#5935); it must exceed the
        # longest job, and claim checks make the re-delivery harmless anyway.
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout_s,
            # Without socket timeouts a client can wait forever on a connection that died with a Redis restart.
            "socket_timeout": 10,
            "socket_connect_timeout": 5,
            "socket_keepalive": True,
            "retry_on_timeout": True,
            "health_check_interval": 10,
        },
        broker_connection_retry_on_startup=True,
        task_create_missing_queues=False,
        task_queues=[make_queue(name) for name in STATIC_QUEUES],
        task_default_queue="control",
        worker_send_task_events=True,
        # Remote control (pidbox) answers Flower's inspections (its worker pages, the queues each worker
        # consumes). archq itself never broadcasts to workers: liveness is the heartbeat registry.
        worker_enable_remote_control=settings.remote_control,
        task_send_sent_event=send_sent_events,
        worker_hijack_root_logger=False,
        broker_heartbeat=0,
    )
    return app


def declare_queue(app: Celery, name: str) -> Queue:
    """Make a dynamic queue (`host.<name>`) known to this app so it can publish to or consume it."""
    queues = app.amqp.queues
    if name not in queues:
        queues.add(make_queue(name))
    return queues[name]
