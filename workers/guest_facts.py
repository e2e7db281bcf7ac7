"""What a host can tell about its running guests for their heartbeat entries: the addresses of their NICs
(libvirt's DHCP leases and the guest agent) and the SSH host keys cloud-init printed on their serial console."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from workers.boot import CONSOLE_NAME
from workers.cloud_init import parse_host_keys
from workers.domain_xml import DOMAIN_PREFIX
from workers.hypervisor import DomainInfo, Hypervisor

log = logging.getLogger(__name__)

# A key block is a few KiB; re-reading this much before the new bytes catches one split across two reads.
_OVERLAP = 16 * 1024
# A console that grew by more than this since the last look is read from its last part only.
_MAX_READ = 1024 * 1024


class HostKeyReader:
    """Finds the SSH host key block on each VM's console log, reading only what was appended since the last
    look. Keys once found are kept for the life of the worker (a guest prints them at first boot only)."""

    def __init__(self, data_dir: Path) -> None:
        self._data_dir = data_dir
        self._offsets: dict[str, int] = {}
        self._found: dict[str, list[str]] = {}

    def keys(self, vm_id: str) -> list[str]:
        if vm_id in self._found:
            return self._found[vm_id]
        path = self._data_dir / "vms" / vm_id / CONSOLE_NAME
        try:
            with path.open("rb") as fh:
                size = fh.seek(0, 2)
                start = self._offsets.get(vm_id, 0)
                if size < start:
                    start = 0  # the log was truncated
                start = max(0, start - _OVERLAP, size - _MAX_READ)
                fh.seek(start)
                text = fh.read(size - start).decode(errors="replace")
        except FileNotFoundError:
            return []
        self._offsets[vm_id] = size
        keys = parse_host_keys(text)
        if keys:
            self._found[vm_id] = keys
            self._offsets.pop(vm_id, None)
        return keys

    def forget(self, live: set[str]) -> None:
        """Drop what belongs to VMs no longer on this host."""
        for table in (self._offsets, self._found):
            for vm_id in set(table) - live:
                del table[vm_id]


# The guest agent answers from inside the guest, on its CPU time (emulated, under TCG): asked this often, not
# every heartbeat. Leases are the host's own and cost the guest nothing.
AGENT_EVERY_S = 10.0


def merged(lease: list[dict], agent: list[dict]) -> list[dict]:
    """One entry per NIC: the agent's view where it knows the NIC (it is the guest's own), else the lease's."""
    by_mac = {entry["mac"]: entry for entry in lease}
    for entry in agent:
        known = by_mac.get(entry["mac"])
        by_mac[entry["mac"]] = {**entry, "ipv4": entry["ipv4"] or (known or {}).get("ipv4")}
    return sorted(by_mac.values(), key=lambda e: e["mac"])


class AgentCache:
    """The last addresses each guest's agent gave, asked again only every AGENT_EVERY_S."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._asked: dict[str, tuple[float, list[dict]]] = {}

    def addresses(self, hypervisor: Hypervisor, vm_id: str) -> list[dict]:
        now = self._clock()
        asked = self._asked.get(vm_id)
        if asked is None or now - asked[0] >= AGENT_EVERY_S:
            asked = self._asked[vm_id] = (now, hypervisor.interface_addresses(vm_id, "agent"))
        return asked[1]

    def forget(self, live: set[str]) -> None:
        for vm_id in set(self._asked) - live:
            del self._asked[vm_id]


def guest_facts(
    hypervisor: Hypervisor, reader: HostKeyReader, domains: list[DomainInfo], agents: AgentCache
) -> dict[str, dict]:
    """{uuid: {"addresses": [...], "ssh_host_keys": [...]}} for the running archq domains."""
    facts: dict[str, dict] = {}
    for dom in domains:
        if dom.state != "running" or not dom.name.startswith(DOMAIN_PREFIX):
            continue
        try:
            vm_id = str(uuid.UUID(dom.uuid))
        except ValueError:
            continue
        addresses = merged(hypervisor.interface_addresses(vm_id, "lease"), agents.addresses(hypervisor, vm_id))
        facts[vm_id] = {"addresses": addresses, "ssh_host_keys": reader.keys(vm_id)}
    live = {d.uuid for d in domains}
    reader.forget(live)
    agents.forget(live)
    return facts


class GuestWatch(threading.Thread):
    """Reads the running guests' facts every interval, apart from the heartbeat: a guest agent that does not
    answer, or a domain busy with a snapshot or a migration, can hold a libvirt call for seconds, and a host's
    liveness must not wait for its guests."""

    def __init__(self, hypervisor: Hypervisor, data_dir: Path, interval_s: float) -> None:
        super().__init__(name="archq-guest-watch", daemon=True)
        self._hypervisor = hypervisor
        self._reader = HostKeyReader(data_dir)
        self._agents = AgentCache()
        self._interval_s = interval_s
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._facts: dict[str, dict] = {}

    def latest(self) -> dict[str, dict]:
        with self._lock:
            return self._facts

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                facts = guest_facts(self._hypervisor, self._reader, self._hypervisor.list_domains(), self._agents)
                with self._lock:
                    self._facts = facts
            except Exception:
                log.warning("reading the guests' addresses and host keys failed; retrying", exc_info=True)
            self._stopping.wait(self._interval_s)

    def stop(self) -> None:
        self._stopping.set()
