"""The worker's console threads: one answers the API's requests for the tail of a VM's serial log, the other
opens interactive sessions, each a thread between Redis and libvirt's console stream (`queues/console.py`
says why both go through Redis)."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from pathlib import Path

import redis

from queues.console import (
    CLOSE,
    DATA,
    ENDED,
    MAX_BYTES,
    OPENED,
    ConsoleChannel,
    ConsoleRequest,
    ConsoleSessions,
    ConsoleTail,
    SessionOpen,
)
from workers.boot import CONSOLE_NAME
from workers.errors import WorkerError
from workers.hypervisor import Hypervisor, LibvirtHypervisor

log = logging.getLogger(__name__)


def read_tail(data_dir: Path, host: str, request: ConsoleRequest) -> ConsoleTail:
    try:
        vm_id = str(uuid.UUID(request.vm_id))
    except ValueError:
        return ConsoleTail("", 0, 0, host, time.time(), error=f"{request.vm_id!r} is not a VM id")
    path = data_dir / "vms" / vm_id / CONSOLE_NAME
    wanted = max(1, min(request.bytes, MAX_BYTES))
    try:
        with path.open("rb") as fh:
            size = fh.seek(0, 2)
            offset = max(0, size - wanted)
            fh.seek(offset)
            data = fh.read(wanted)
    except FileNotFoundError:
        return ConsoleTail("", 0, 0, host, time.time(), error=f"host {host} has no console log for VM {vm_id}")
    return ConsoleTail(data.decode(errors="replace"), size, offset, host, time.time())


class ConsoleThread(threading.Thread):
    def __init__(self, redis_url: str, host: str, data_dir: Path) -> None:
        super().__init__(name="archq-console", daemon=True)
        self._channel = ConsoleChannel.from_url(redis_url)
        self._host = host
        self._data_dir = Path(data_dir)
        self._stopping = threading.Event()

    def serve_one(self) -> bool:
        request = self._channel.next_request(self._host)
        if request is None:
            return False
        self._channel.answer(request, read_tail(self._data_dir, self._host, request))
        return True

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.serve_one()
            except redis.RedisError:
                log.warning("console requests for %s unreachable; retrying", self._host, exc_info=True)
                self._stopping.wait(1.0)

    def stop(self) -> None:
        self._stopping.set()


def run_session(
    sessions: ConsoleSessions, hypervisor: Hypervisor, request: SessionOpen, stopping: threading.Event
) -> None:
    """Pump one session until the API closes it, the stream breaks or the worker stops."""
    sid = request.session
    ended = threading.Event()
    reason: list[str] = []

    def on_data(data: bytes) -> None:
        try:
            sessions.output(sid, DATA + data)
        except redis.RedisError:
            log.warning("console session %s: output lost, Redis unreachable", sid, exc_info=True)

    def on_end(why: str) -> None:
        reason.append(why)
        ended.set()

    sessions.beat(sid)
    try:
        stream = hypervisor.open_console(request.vm_id, on_data, on_end)
    except WorkerError as exc:
        sessions.output(sid, ENDED + str(exc).encode())
        return
    log.info("console session %s on VM %s opened for %s", sid, request.vm_id, request.actor)
    sessions.output(sid, OPENED)
    beaten = time.monotonic()
    try:
        while not ended.is_set():
            if stopping.is_set():
                on_end("the worker is stopping (restart or shutdown); open the console again once it is back")
                break
            # Once a second, not per keystroke: each is a Redis round trip on the echo's path.
            if time.monotonic() - beaten >= 1:
                sessions.beat(sid)
                beaten = time.monotonic()
            frame = sessions.next_input(sid, timeout_s=1)
            if frame is None:
                continue
            if frame.startswith(DATA):
                stream.send(frame[1:])
            elif frame.startswith(CLOSE):
                on_end(frame[1:].decode(errors="replace") or "closed")
    except redis.RedisError:
        log.warning("console session %s: Redis unreachable; closing it", sid, exc_info=True)
        reason.append("the broker became unreachable")
    finally:
        stream.close()
    why = reason[0] if reason else "closed"
    log.info("console session %s on VM %s ended: %s", sid, request.vm_id, why)
    # Unreachable Redis: the API side notices the missing heartbeat instead.
    with contextlib.suppress(redis.RedisError):
        sessions.output(sid, ENDED + why.encode())


class ConsoleSessionsThread(threading.Thread):
    """Opens the sessions the API asks this host for, each in its own thread. They share a libvirt connection
    of their own (streams are read by libvirt's event loop thread): on the worker's, every RPC of the jobs and
    heartbeats would delay keystrokes and echoes behind it."""

    def __init__(self, redis_url: str, host: str, libvirt_uri: str) -> None:
        super().__init__(name="archq-console-sessions", daemon=True)
        self._sessions = ConsoleSessions.from_url(redis_url)
        self._host = host
        self._libvirt_uri = libvirt_uri
        self._hypervisor: Hypervisor | None = None
        self._stopping = threading.Event()
        self._running: list[threading.Thread] = []

    def serve_one(self) -> bool:
        request = self._sessions.next_open(self._host)
        if request is None:
            return False
        try:
            if self._hypervisor is None:
                self._hypervisor = LibvirtHypervisor(self._libvirt_uri)
        except WorkerError as exc:
            self._sessions.output(request.session, ENDED + str(exc).encode())
            return True
        thread = threading.Thread(
            target=run_session,
            args=(self._sessions, self._hypervisor, request, self._stopping),
            name=f"archq-console-{request.session[:8]}",
            daemon=True,
        )
        thread.start()
        self._running = [t for t in self._running if t.is_alive()] + [thread]
        return True

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.serve_one()
            except redis.RedisError:
                log.warning("console sessions for %s unreachable; retrying", self._host, exc_info=True)
                self._stopping.wait(1.0)

    def stop(self) -> None:
        """Ends every open session with a message saying why, so users are not left at a silent prompt."""
        self._stopping.set()
        for thread in self._running:
            thread.join(timeout=3)
        if self._hypervisor is not None:
            self._hypervisor.close()
