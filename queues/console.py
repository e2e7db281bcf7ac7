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


# --- interactive sessions -------------------------------------------------------------------------------
#
# A session is a pair of Redis lists between one API thread (holding the user's WebSocket) and one worker
# thread (holding libvirt's console stream): keystrokes go into `in`, the guest's output comes back on `out`.
# Lists rather than pub/sub: a frame pushed before the other side listens is not lost, and BLPOP wakes the
# reader as soon as a frame arrives (the round trip stays in the milliseconds). Every frame starts with a
# one-byte tag (below); the lists expire when a side vanishes without cleaning up.
#
# Liveness: the worker's session refreshes `alive:<session>` every second; the API ends the session with a
# clear message when it expires (the worker was killed or restarted). One writer per VM: the API holds
# `holder:<vm>` (refreshed while the session lives) and a second session is refused unless it forces, in which
# case the first one is closed and told who took over.

DATA = b"d"  # both ways: terminal bytes
CLOSE = b"c"  # API -> worker: close the stream; the payload says why (utf-8)
OPENED = b"o"  # worker -> API: the stream is attached; the payload is the host's name
ENDED = b"e"  # worker -> API: the session is over; the payload says why (utf-8)

SESSION_TTL_S = 60  # idle lists expire after this
ALIVE_TTL_S = 4  # the worker refreshes `alive` every second; four missed refreshes mean it is gone
HOLDER_TTL_S = 15  # the API refreshes the holder every second
FRAME_MAX = 64 * 1024


def sessions_key(host: str) -> str:
    return f"archq:console:sessions:{host}"


def input_key(session: str) -> str:
    return f"archq:console:in:{session}"


def output_key(session: str) -> str:
    return f"archq:console:out:{session}"


def alive_key(session: str) -> str:
    return f"archq:console:alive:{session}"


def holder_key(vm_id: str) -> str:
    return f"archq:console:holder:{vm_id}"


@dataclass(frozen=True)
class SessionOpen:
    session: str
    vm_id: str
    actor: str
    at: float


@dataclass(frozen=True)
class Holder:
    session: str
    actor: str
    since: float


class ConsoleSessions:
    """Both ends' view of interactive console sessions over Redis (bytes in, bytes out)."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    @classmethod
    def from_url(cls, url: str) -> ConsoleSessions:
        return cls(redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=2))

    def _push(self, key: str, frame: bytes) -> None:
        with self._redis.pipeline() as pipe:
            pipe.rpush(key, frame)
            pipe.expire(key, SESSION_TTL_S)
            pipe.execute()

    def _pop(self, key: str, timeout_s: float) -> bytes | None:
        popped = self._redis.blpop([key], timeout=timeout_s)
        if popped is None:
            return None
        frame = popped[1]
        # The client is made without decode_responses: frames are bytes.
        return frame if isinstance(frame, bytes) else frame.encode()

    # --- the API's side ---

    def claim(self, vm_id: str, holder: Holder, force: bool) -> Holder | None:
        """Make `holder` the VM's one writer. Returns the holder it displaced (forced), or raises Busy."""
        key, value = holder_key(vm_id), json.dumps(asdict(holder))
        if self._redis.set(key, value, nx=True, ex=HOLDER_TTL_S):
            return None
        previous = self.holder(vm_id)
        if not force and previous is not None:
            raise Busy(previous)
        self._redis.set(key, value, ex=HOLDER_TTL_S)
        return previous

    def holder(self, vm_id: str) -> Holder | None:
        raw = self._redis.get(holder_key(vm_id))
        return None if raw is None else Holder(**json.loads(raw))

    def still_holds(self, vm_id: str, session: str) -> bool:
        """True while `session` is the VM's writer; refreshes its claim."""
        current = self.holder(vm_id)
        if current is None or current.session != session:
            return False
        self._redis.expire(holder_key(vm_id), HOLDER_TTL_S)
        return True

    def release(self, vm_id: str, session: str) -> None:
        current = self.holder(vm_id)
        if current is not None and current.session == session:
            self._redis.delete(holder_key(vm_id))

    def request(self, host: str, request: SessionOpen) -> None:
        key = sessions_key(host)
        with self._redis.pipeline() as pipe:
            pipe.rpush(key, json.dumps(asdict(request)))
            pipe.expire(key, REQUEST_TTL_S * 3)
            pipe.execute()

    def send(self, session: str, data: bytes) -> None:
        self._push(input_key(session), DATA + data)

    def close(self, session: str, why: str) -> None:
        self._push(input_key(session), CLOSE + why.encode())

    def receive(self, session: str, timeout_s: float) -> bytes | None:
        return self._pop(output_key(session), timeout_s)

    def worker_alive(self, session: str) -> bool:
        return bool(self._redis.exists(alive_key(session)))

    def forget(self, session: str) -> None:
        self._redis.delete(input_key(session), output_key(session), alive_key(session))

    # --- the worker's side ---

    def next_open(self, host: str, timeout_s: float = 1) -> SessionOpen | None:
        popped = self._pop(sessions_key(host), timeout_s)
        if popped is None:
            return None
        try:
            data = json.loads(popped)
            request = SessionOpen(
                session=str(data["session"]), vm_id=str(data["vm_id"]), actor=str(data["actor"]), at=float(data["at"])
            )
        except (ValueError, KeyError, TypeError):
            return None
        return request if time.time() - request.at < REQUEST_TTL_S else None

    def output(self, session: str, frame: bytes) -> None:
        self._push(output_key(session), frame)

    def next_input(self, session: str, timeout_s: float) -> bytes | None:
        return self._pop(input_key(session), timeout_s)

    def beat(self, session: str) -> None:
        self._redis.set(alive_key(session), b"1", ex=ALIVE_TTL_S)


class Busy(Exception):
    """The VM's console already has a writer."""

    def __init__(self, holder: Holder) -> None:
        super().__init__(f"held by {holder.actor}")
        self.holder = holder
