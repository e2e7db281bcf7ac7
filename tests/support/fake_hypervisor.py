"""A hypervisor in memory that keeps `workers.hypervisor.Hypervisor`'s promises, for tests of the worker's
logic (operations, snapshots, migration) that run in milliseconds with no libvirt connection at all.

It lives with the tests, not in workers/: no production path may ever pick it, and the worker package stays
free of test doubles. tests/unit/test_hypervisor_contract.py runs the same checks against it and against the
real `LibvirtHypervisor` on libvirt's test driver, so the two cannot drift apart silently.

What libvirt decides on its own is scripted: `jobs[uuid]` is the job libvirt reports as running (its job
statistics), `failures[method]` makes the next call of that method fail, `hosts` is the set of fakes a
migration can reach by URI (`FakeHosts.connect` opens one as `LibvirtHypervisor(uri)` would).
"""

from __future__ import annotations

import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from queues.vocabulary import VmState
from workers.hypervisor import DomainInfo, HypervisorError, SnapshotInfo, Storage, job_figures


@dataclass
class FakeDomain:
    uuid: str
    name: str
    xml: str
    state: str = VmState.STOPPED
    reason: str = ""
    snapshots: dict[str, SnapshotInfo] = field(default_factory=dict)
    # The state each snapshot captured, to revert to.
    snapshot_states: dict[str, str] = field(default_factory=dict)

    def info(self) -> DomainInfo:
        return DomainInfo(uuid=self.uuid, name=self.name, state=self.state, reason=self.reason)


class FakeHosts:
    """The hosts a migration can reach: each fake by its libvirt URI."""

    def __init__(self) -> None:
        self.by_uri: dict[str, FakeHypervisor] = {}

    def add(self, uri: str) -> FakeHypervisor:
        self.by_uri[uri] = FakeHypervisor(uri, self)
        return self.by_uri[uri]

    def connect(self, uri: str) -> FakeHypervisor:
        if uri not in self.by_uri:
            raise HypervisorError("libvirt_unreachable", f"cannot open libvirt at {uri}: no such fake host")
        return self.by_uri[uri]


class FakeHypervisor:
    def __init__(self, uri: str = "fake:///", hosts: FakeHosts | None = None) -> None:
        self.uri = uri
        self.hosts = hosts or FakeHosts()
        self.domains: dict[str, FakeDomain] = {}
        self.networks: dict[str, bool] = {}
        self.leases: dict[tuple[str, str], list[dict]] = {}
        self.jobs: dict[str, dict] = {}
        self.failures: dict[str, HypervisorError] = {}
        # A guest that ignores ACPI: `stop` has to force it off.
        self.ignores_acpi: set[str] = set()
        # Set while a migration blocks (`block_migrations`); `abort_job` ends it.
        self.block_migrations = False
        self.migrations: list[dict] = []
        self._aborted = threading.Event()

    def _fail(self, method: str) -> None:
        error = self.failures.pop(method, None)
        if error is not None:
            raise error

    def _existing(self, uuid: str) -> FakeDomain:
        dom = self.domains.get(uuid)
        if dom is None:
            raise HypervisorError("domain_missing", f"no domain with UUID {uuid} on this host")
        return dom

    def close(self) -> None:
        pass

    def capabilities_xml(self) -> str:
        return "<capabilities/>"

    def domain_capabilities_xml(self, arch: str, virttype: str) -> str:
        return "<domainCapabilities/>"

    def domain(self, uuid: str) -> DomainInfo | None:
        dom = self.domains.get(uuid)
        return dom.info() if dom else None

    def is_active(self, uuid: str) -> bool | None:
        dom = self.domains.get(uuid)
        return None if dom is None else dom.state != VmState.STOPPED

    def list_domains(self) -> list[DomainInfo]:
        return [dom.info() for dom in self.domains.values()]

    def xml_desc(self, uuid: str, inactive: bool = False) -> str:
        return self._existing(uuid).xml

    def define(self, xml: str) -> FakeDomain:
        root = ET.fromstring(xml)
        dom = FakeDomain(uuid=root.findtext("uuid", ""), name=root.findtext("name", ""), xml=xml)
        self.domains[dom.uuid] = dom
        return dom

    def redefine(self, xml: str) -> str:
        return self.define(xml).xml

    def ensure_running(self, uuid: str, xml: str) -> DomainInfo:
        self._fail("ensure_running")
        dom = self.domains.get(uuid) or self.define(xml)
        dom.state, dom.reason = VmState.RUNNING, ""
        return dom.info()

    def start(self, uuid: str) -> DomainInfo:
        dom = self._existing(uuid)
        self._fail("start")
        dom.state, dom.reason = VmState.RUNNING, ""
        return dom.info()

    def stop(self, uuid: str, timeout_s: float) -> tuple[DomainInfo, bool]:
        dom = self._existing(uuid)
        if dom.state == VmState.STOPPED:
            return dom.info(), False
        forced = uuid in self.ignores_acpi
        dom.state, dom.reason = VmState.STOPPED, "destroyed" if forced else "shutdown"
        return dom.info(), forced

    def reboot(self, uuid: str) -> DomainInfo:
        dom = self._existing(uuid)
        dom.state, dom.reason = VmState.RUNNING, ""
        return dom.info()

    def remove(self, uuid: str) -> bool:
        return self.domains.pop(uuid, None) is not None

    def lib_version(self) -> int:
        return 9_000_000

    def hypervisor_version(self) -> int:
        return 7_002_000

    def snapshot(self, uuid: str, name: str) -> SnapshotInfo | None:
        return self._existing(uuid).snapshots.get(name)

    def snapshots(self, uuid: str) -> list[SnapshotInfo]:
        return list(self._existing(uuid).snapshots.values())

    def create_internal_snapshot(self, uuid: str, name: str, description: str, memory: bool) -> SnapshotInfo:
        dom = self._existing(uuid)
        self._fail("create_internal_snapshot")
        if name in dom.snapshots:
            raise HypervisorError("snapshot_failed", f"libvirt could not take snapshot {name!r}: it exists")
        state = "running" if dom.state != VmState.STOPPED else "shutoff"
        info = SnapshotInfo(name=name, description=description, memory=memory, state=state, created_at=time.time())
        dom.snapshots[name] = info
        dom.snapshot_states[name] = VmState.RUNNING if memory else VmState.STOPPED
        return info

    def revert_snapshot(self, uuid: str, name: str) -> DomainInfo:
        dom = self._existing(uuid)
        if name not in dom.snapshots:
            raise HypervisorError("snapshot_missing", f"libvirt could not revert to snapshot {name!r}: no such one")
        dom.state, dom.reason = dom.snapshot_states[name], ""
        return dom.info()

    def delete_snapshot(self, uuid: str, name: str) -> bool:
        dom = self.domains.get(uuid)
        if dom is None or name not in dom.snapshots:
            return False
        del dom.snapshots[name], dom.snapshot_states[name]
        return True

    def job_stats(self, uuid: str) -> dict | None:
        return self.jobs.get(uuid) if uuid in self.domains else None

    def disk_capacity(self, uuid: str, path: Path) -> int | None:
        self._existing(uuid)
        return None  # as libvirt for a disk it cannot read: the caller asks qemu-img

    def job_running(self, uuid: str) -> bool:
        return uuid in self.domains and uuid in self.jobs

    def abort_job(self, uuid: str) -> None:
        self._existing(uuid)
        self._aborted.set()

    def job_progress(self, uuid: str) -> dict | None:
        stats = self.job_stats(uuid)
        return None if stats is None else job_figures(stats)

    def migrate(
        self, uuid: str, uri: str, *, live: bool, storage: Storage = "none", bandwidth_mib_s: int | None = None
    ) -> None:
        dom = self._existing(uuid)
        self.migrations.append({"uuid": uuid, "uri": uri, "live": live, "storage": storage,
                                "bandwidth_mib_s": bandwidth_mib_s})  # fmt: skip
        self._fail("migrate")
        if self.block_migrations:
            self._aborted.wait(timeout=10)
        if self._aborted.is_set():
            self._aborted.clear()
            raise HypervisorError("migration_failed", "operation aborted: migration out job: canceled by client")
        try:
            target = self.hosts.connect(uri)
        except HypervisorError as exc:
            raise HypervisorError("migration_failed", str(exc)) from exc
        if live and dom.state == VmState.STOPPED:
            raise HypervisorError("migration_failed", "Requested operation is not valid: domain is not running")
        del self.domains[uuid]
        target.domains[uuid] = FakeDomain(uuid, dom.name, dom.xml, dom.state if live else VmState.STOPPED)

    def ensure_network(self, name: str, xml: str) -> bool:
        created = name not in self.networks
        self.networks[name] = True
        return created

    def active_networks(self) -> list[str]:
        return [name for name, active in self.networks.items() if active]

    def dhcp_leases(self, network: str, mac: str) -> list[dict]:
        return self.leases.get((network, mac), [])

    def interface_addresses(self, uuid: str, source: str) -> list[dict]:
        return []

    @contextmanager
    def transient(self, xml: str) -> Iterator[bool]:
        yield True
