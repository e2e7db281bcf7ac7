"""GET /vms/<id>/console asks the VM's host's worker through Redis and answers the tail it reads, in the
documented shape."""

from __future__ import annotations

import threading
import time

from queues.console import ConsoleChannel, ConsoleTail
from tests.support.fleet import add_vm, beat


def answer_once(channel: ConsoleChannel, host: str, text: str, size: int) -> threading.Thread:
    def serve() -> None:
        request = None
        deadline = time.monotonic() + 10
        while request is None and time.monotonic() < deadline:
            request = channel.next_request(host)
        assert request is not None
        tail = text.encode()[-request.bytes :].decode()
        channel.answer(request, ConsoleTail(tail, size, size - len(tail), host, time.time()))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def test_the_tail_is_answered_in_the_documented_shape(app, client, settings):
    with app.app_context():
        beat("a")
        vm_id = add_vm()
    worker = answer_once(ConsoleChannel.from_url(settings.redis_url), "a", "boot ok\nlogin: ", size=1000)
    response = client.get(f"/api/v1/vms/{vm_id}/console?bytes=7")
    worker.join(timeout=10)
    assert response.status_code == 200, response.get_json()
    console = response.get_json()["console"]
    assert console.pop("read_at") > 0
    assert console == {"vm_id": vm_id, "host": "a", "text": "login: ", "offset": 993, "size": 1000, "truncated": True}
