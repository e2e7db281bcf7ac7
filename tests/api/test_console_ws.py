"""The console WebSocket's refusals, fast (the libvirt test driver, no guest): the role rule at the handshake,
the one-writer rule, and a host whose libvirt cannot open the console, each with the API's reason. Typing
into a real guest is tests/integration/test_console_session.py."""

from __future__ import annotations

import time

import pytest

from client.console import ConsoleRefused, connect
from queues.console import ConsoleSessions, Holder
from tests.support.api import create_vm, wait_host, wait_job
from tests.support.auth import make_token
from tests.support.live_api import live_api  # noqa: F401  (a fixture)


@pytest.fixture
def vm_id(client, conductor, hypervisor_worker):
    with hypervisor_worker():
        wait_host(client, "amd64-host")
        accepted = create_vm(client, name="console-ws")
        job = wait_job(client, accepted["job"]["id"])
        assert job["state"] == "succeeded", job.get("error")
        yield accepted["vm"]["id"]


def test_refusals_say_why(app, settings, vm_id, live_api):  # noqa: F811
    api = f"{live_api.url}/api/v1"
    with pytest.raises(ConsoleRefused, match="403"):
        connect(api, make_token(app, "viewer", "watcher"), vm_id)

    # The test driver has no console streams: the worker's libvirt says so, through Redis, to the user.
    with pytest.raises(ConsoleRefused, match="not supported"):
        connect(api, live_api.operator_token, vm_id)

    sessions = ConsoleSessions.from_url(settings.redis_url)
    sessions.claim(vm_id, Holder(session="elsewhere", actor="token:alice", since=time.time()), force=False)
    with pytest.raises(ConsoleRefused, match=r"held by token:alice since .* force to take it over"):
        connect(api, live_api.operator_token, vm_id)
    # Forcing passes the one-writer rule (and then meets the driver's refusal), and leaves no claim behind.
    with pytest.raises(ConsoleRefused, match="not supported"):
        connect(api, live_api.operator_token, vm_id, force=True)
    assert sessions.holder(vm_id) is None
