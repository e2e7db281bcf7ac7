"""Serial console tails through Redis: the API cannot read hosts' files, so it asks the VM's worker.

Why a request/reply over Redis lists rather than a Celery task or a key the worker refreshes every second:
a Celery task's answer needs a result backend archq does not run; refreshing every VM's tail every second
writes up to 64 KiB per VM per second whether anyone looks or not. Here the API pushes a small request onto
the host's list and blocks (BLPOP, a few seconds at most) on a reply key of its own; the worker's console
thread pops requests, reads the tail of the log and pushes the answer with a short TTL. Nothing is written
while nobody reads a console, and every answer is as fresh as the request.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass

import redis

DEFAULT_BYTES = 16 * 1024
MAX_BYTES = 64 * 1024
# A request older than this is dropped unread: its asker has already given up.
REQUEST_TTL_S = 10
_REPLY_TTL_S = 30


def requests_key(host: str) -> str:
    return f"archq:console:requests:{host}"


def reply_key(request_id: str) -> str:
    return f"archq:console:reply:{request_id}"


@dataclass(frozen=True)
class ConsoleRequest:
    id: str
    vm_id: str
    bytes: int
    at: float


@dataclass(frozen=True)
class ConsoleTail:
    text: str
    size: int  # the whole log's size in bytes
    offset: int  # where the returned tail starts in the log
    host: str
    read_at: float
    error: str = ""  # set when the host has no console for this VM


class ConsoleChannel:
    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    @classmethod
    def from_url(cls, url: str) -> ConsoleChannel:
        return cls(redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=2))

    def ask(self, host: str, vm_id: str, nbytes: int, timeout_s: float = 5.0) -> ConsoleTail | None:
        """The tail of a VM's console log from its host's worker; None when the worker did not answer."""
        request_id = uuid.uuid4().hex
        request = {"id": request_id, "vm_id": vm_id, "bytes": nbytes, "at": time.time()}
        key = requests_key(host)
        with self._redis.pipeline() as pipe:
            pipe.rpush(key, json.dumps(request))
            # A host that is gone must not collect requests forever.
            pipe.expire(key, REQUEST_TTL_S * 3)
            pipe.execute()
        answer = self._redis.blpop([reply_key(request_id)], timeout=max(1, int(timeout_s)))
        if answer is None:
            return None
        return ConsoleTail(**json.loads(answer[1]))

    def next_request(self, host: str, timeout_s: int = 1) -> ConsoleRequest | None:
        """The next request for this host that is still worth answering (waits up to `timeout_s`)."""
        popped = self._redis.blpop([requests_key(host)], timeout=timeout_s)
        if popped is None:
            return None
        try:
            data = json.loads(popped[1])
            request = ConsoleRequest(
                id=str(data["id"]), vm_id=str(data["vm_id"]), bytes=int(data["bytes"]), at=float(data["at"])
            )
        except (ValueError, KeyError, TypeError):
            return None
        return request if time.time() - request.at < REQUEST_TTL_S else None

    def answer(self, request: ConsoleRequest, tail: ConsoleTail) -> None:
        key = reply_key(request.id)
        with self._redis.pipeline() as pipe:
            pipe.rpush(key, json.dumps(asdict(tail)))
            pipe.expire(key, _REPLY_TTL_S)
            pipe.execute()
