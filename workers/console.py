"""The worker's console thread: answers the API's requests for the tail of a VM's serial log (see
`queues/console.py` for why it is a request/reply over Redis)."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from pathlib import Path

import redis

from queues.console import MAX_BYTES, ConsoleChannel, ConsoleRequest, ConsoleTail
from workers.boot import CONSOLE_NAME

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
