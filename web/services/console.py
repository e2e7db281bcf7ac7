"""A VM's serial console tail, fetched from its host's worker through Redis (`queues/console.py`)."""

from __future__ import annotations

from queues.config import Settings
from queues.console import ConsoleChannel, ConsoleTail
from web.errors import Conflict, NotFound, Unavailable
from web.extensions import db
from web.models import Host
from web.services.hosts import host_state
from web.services.vms import get_vm

ASK_TIMEOUT_S = 5.0


def console_tail(vm_id: str, nbytes: int, channel: ConsoleChannel, settings: Settings) -> ConsoleTail:
    vm = get_vm(vm_id)
    if vm.host is None:
        raise Conflict(
            f"VM {vm.id} has not reached a host yet (state {vm.state}); it has no console",
            code="wrong_state",
            fields={"state": [vm.state]},
        )
    host = db.session.get(Host, vm.host)
    if host is None or host_state(host, settings) == "down":
        raise Conflict(f"the VM's host {vm.host!r} is down; its console is unreachable", code="host_down")
    tail = channel.ask(vm.host, vm.id, nbytes, timeout_s=ASK_TIMEOUT_S)
    if tail is None:
        raise Unavailable(
            f"host {vm.host!r} did not answer for the console within {ASK_TIMEOUT_S:.0f}s",
            retry_after_s=2,
            code="console_unavailable",
        )
    if tail.error:
        raise NotFound(tail.error)
    return tail
