"""A worker that survives Redis going away while it reads, with remote control (pidbox) on.

kombu 5.7's Redis transport, after a lost connection: Celery's consumer collects the connection, which
detaches its transport (`transport.client = None`) while channels of it are still in use; the next use of
such a channel (closing it again and restoring its unacknowledged messages, or acknowledging a task that
finished meanwhile) builds a Redis client from the detached transport and raises AttributeError ('NoneType'
object has no attribute 'hostname'). Celery expects connection errors there and stops the worker on any
other ("Unrecoverable error"); its supervisor restarts it. A pub/sub read (pidbox) is where a Redis restart
surfaces mid-burst, so remote control made it happen.

Here a detached transport raises a connection error instead, which Celery handles as it does while Redis is
down: the acknowledgement or restore is logged as failed, the message stays in Redis's unacked index
(restored after the visibility timeout; its job recovered by lease before that, as when a worker is killed),
and the consumer reconnects. tests/faults/test_remote_control.py restarts Redis under a busy worker and
checks that it never exits."""

from __future__ import annotations

from collections.abc import Callable

import redis
from kombu.transport import redis as kombu_redis

_connparams: Callable[..., dict] = kombu_redis.Channel._connparams


def _connparams_of_attached(channel: kombu_redis.Channel, asynchronous: bool = False) -> dict:
    if channel.connection.client is None:
        raise redis.exceptions.ConnectionError("the broker connection was closed after a connection loss")
    return _connparams(channel, asynchronous=asynchronous)


def install() -> None:
    """Idempotent; make_celery calls it, so every archq process has it."""
    kombu_redis.Channel._connparams = _connparams_of_attached  # type: ignore[method-assign]  # the patch itself
