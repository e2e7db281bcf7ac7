"""The one module that talks to libvirt: a connection per worker process and the calls archq makes."""

from __future__ import annotations

import logging
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import libvirt

from workers.errors import WorkerError

log = logging.getLogger(__name__)

_event_loop_started = False
_event_loop_lock = threading.Lock()

# libvirt's virDomainState values, named the way archq's API names VM states.
_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: "unknown",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "running",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "stopping",
    libvirt.VIR_DOMAIN_SHUTOFF: "stopped",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "suspended",
}


# How `migrate` treats the disks: none to copy, on storage both hosts share, or top images to copy.
Storage = Literal["none", "shared", "copy"]

_LIVE_FLAGS = (
    libvirt.VIR_MIGRATE_LIVE
    | libvirt.VIR_MIGRATE_PEER2PEER
    | libvirt.VIR_MIGRATE_PERSIST_DEST
    | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
    | libvirt.VIR_MIGRATE_ABORT_ON_ERROR
    | libvirt.VIR_MIGRATE_AUTO_CONVERGE
)
_COLD_FLAGS = (
    libvirt.VIR_MIGRATE_OFFLINE
    | libvirt.VIR_MIGRATE_PEER2PEER
    | libvirt.VIR_MIGRATE_PERSIST_DEST
    | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
)


class HypervisorError(WorkerError):
    """A libvirt call failed; `code` is archq's error code for the job."""


@dataclass(frozen=True)
class DomainInfo:
    uuid: str
    name: str
    state: str
    # Why it is in that state, as libvirt says: "crashed", "destroyed", "shutdown", "booted", ...
    reason: str = ""


@dataclass(frozen=True)
class SnapshotInfo:
    name: str
    # archq puts the id of the job that took the snapshot here: a re-run of that job recognises its snapshot.
    description: str
    memory: bool
    # The domain's state when it was taken: "running" or "shutoff".
    state: str
    created_at: float


def _start_event_loop() -> None:
    # Keepalives and domain events need libvirt's event loop running; one per process, in a thread.
    global _event_loop_started
    with _event_loop_lock:
        if _event_loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _event_loop_started = True


def _quiet(_ctx: object, _err: object) -> None:
    # libvirt prints every error to stderr by default, even the ones archq expects (no such domain).
    pass


libvirt.registerErrorHandler(_quiet, None)


class Hypervisor(Protocol):
    """What the worker asks of a hypervisor host. `LibvirtHypervisor` is the real one; tests/support/
    fake_hypervisor.py keeps the same promises in memory, for logic tests that need no libvirt (the contract
    tests in tests/unit/test_hypervisor_contract.py hold both to them)."""

    uri: str

    def close(self) -> None: ...
    def capabilities_xml(self) -> str: ...
    def domain_capabilities_xml(self, arch: str, virttype: str) -> str: ...
    def domain(self, uuid: str) -> DomainInfo | None: ...
    def is_active(self, uuid: str) -> bool | None: ...
    def list_domains(self) -> list[DomainInfo]: ...
    def xml_desc(self, uuid: str, inactive: bool = False) -> str: ...
    def ensure_running(self, uuid: str, xml: str) -> DomainInfo: ...
    def redefine(self, xml: str) -> str: ...
    def start(self, uuid: str) -> DomainInfo: ...
    def stop(self, uuid: str, timeout_s: float) -> tuple[DomainInfo, bool]: ...
    def reboot(self, uuid: str) -> DomainInfo: ...
    def remove(self, uuid: str) -> bool: ...
    def lib_version(self) -> int: ...
    def hypervisor_version(self) -> int: ...
    def open_console(
        self, uuid: str, on_data: Callable[[bytes], None], on_end: Callable[[str], None]
    ) -> ConsoleStream: ...
    def snapshot(self, uuid: str, name: str) -> SnapshotInfo | None: ...
    def snapshots(self, uuid: str) -> list[SnapshotInfo]: ...
    def create_internal_snapshot(self, uuid: str, name: str, description: str, memory: bool) -> SnapshotInfo: ...
    def revert_snapshot(self, uuid: str, name: str) -> DomainInfo: ...
    def delete_snapshot(self, uuid: str, name: str) -> bool: ...
    def job_stats(self, uuid: str) -> dict | None: ...
    def disk_capacity(self, uuid: str, path: Path) -> int | None: ...
    def job_running(self, uuid: str) -> bool: ...
    def abort_job(self, uuid: str) -> None: ...
    def job_progress(self, uuid: str) -> dict | None: ...
    def migrate(
        self, uuid: str, uri: str, *, live: bool, storage: Storage = "none", bandwidth_mib_s: int | None = None
    ) -> None: ...
    def ensure_network(self, name: str, xml: str) -> bool: ...
    def active_networks(self) -> list[str]: ...
    def dhcp_leases(self, network: str, mac: str) -> list[dict]: ...
    def interface_addresses(self, uuid: str, source: str) -> list[dict]: ...
    def transient(self, xml: str) -> AbstractContextManager[bool]: ...


class LibvirtHypervisor:
    """A libvirt connection. Open it in the process that uses it: connections must not cross a fork."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        if not uri.startswith("test:"):
            _start_event_loop()
        try:
            self._conn = libvirt.open(uri)
        except libvirt.libvirtError as exc:
            raise HypervisorError(
                "libvirt_unreachable", f"cannot open libvirt at {uri}: {exc}; is libvirtd running?"
            ) from exc

    def close(self) -> None:
        try:
            self._conn.close()
        except libvirt.libvirtError:
            log.warning("closing libvirt connection to %s failed", self.uri, exc_info=True)

    def capabilities_xml(self) -> str:
        return self._conn.getCapabilities()

    def domain_capabilities_xml(self, arch: str, virttype: str) -> str:
        try:
            return self._conn.getDomainCapabilities(None, arch, None, virttype, 0)
        except libvirt.libvirtError as exc:
            raise HypervisorError("libvirt_error", f"no domain capabilities for {arch}/{virttype}: {exc}") from exc

    def _lookup(self, uuid: str) -> libvirt.virDomain | None:
        try:
            return self._conn.lookupByUUIDString(uuid)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise

    def domain(self, uuid: str) -> DomainInfo | None:
        dom = self._lookup(uuid)
        return _info(dom) if dom is not None else None

    def xml_desc(self, uuid: str, inactive: bool = False) -> str:
        """The domain's XML: as it runs (live), or its persistent definition (`inactive`). A running
        host-model CPU appears expanded to a named model in the live XML, as host-model in the other."""
        try:
            return self._existing(uuid).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0)
        except libvirt.libvirtError as exc:
            raise HypervisorError("libvirt_error", f"cannot read the domain XML: {exc}") from exc

    def ensure_running(self, uuid: str, xml: str) -> DomainInfo:
        """Define and start the domain unless a domain with this UUID already exists; then make sure it
        runs. Calling it twice never makes a second VM: the UUID is the VM's identity."""
        try:
            dom = self._lookup(uuid)
            if dom is None:
                dom = self._conn.defineXML(xml)
            if not dom.isActive():
                dom.create()
            return _info(dom)
        except libvirt.libvirtError as exc:
            raise HypervisorError("domain_start_failed", f"libvirt could not start the domain: {exc}") from exc

    def redefine(self, xml: str) -> str:
        """Replace a domain's persistent definition (same UUID) with `xml`; returns the definition libvirt kept."""
        try:
            return self._conn.defineXML(xml).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        except libvirt.libvirtError as exc:
            raise HypervisorError("libvirt_error", f"cannot redefine the domain: {exc}") from exc

    def _existing(self, uuid: str) -> libvirt.virDomain:
        dom = self._lookup(uuid)
        if dom is None:
            raise HypervisorError("domain_missing", f"no domain with UUID {uuid} on this host")
        return dom

    def open_console(self, uuid: str, on_data: Callable[[bytes], None], on_end: Callable[[str], None]) -> ConsoleStream:
        """Attach to the domain's serial console. libvirt's event loop thread calls `on_data` with what the
        guest writes and `on_end` once when the stream breaks. FORCE: a stream that another connection left
        behind (a worker killed mid-session) must not lock the console; archq's one-writer rule is the API's."""
        dom = self._existing(uuid)
        if not dom.isActive():
            raise HypervisorError("domain_not_running", f"the VM {uuid} is not running; its console is closed")
        try:
            stream = self._conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
            dom.openConsole(None, stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
        except libvirt.libvirtError as exc:
            raise HypervisorError("libvirt_error", f"cannot open the console of {uuid}: {exc}") from exc
        return ConsoleStream(stream, on_data, on_end)

    def is_active(self, uuid: str) -> bool | None:
        """Whether the domain runs (paused counts: it has a QEMU process); None when there is no such domain."""
        try:
            dom = self._lookup(uuid)
            return None if dom is None else bool(dom.isActive())
        except libvirt.libvirtError as exc:
            raise HypervisorError("libvirt_error", f"cannot read the state of domain {uuid}: {exc}") from exc

    def start(self, uuid: str) -> DomainInfo:
        dom = self._existing(uuid)
        try:
            if not dom.isActive():
                dom.create()
        except libvirt.libvirtError as exc:
            raise HypervisorError("domain_start_failed", f"libvirt could not start the domain: {exc}") from exc
        return _info(dom)

    def stop(self, uuid: str, timeout_s: float) -> tuple[DomainInfo, bool]:
        """ACPI shutdown, then a forced power-off after `timeout_s`. Returns (info, forced)."""
        dom = self._existing(uuid)
        try:
            if not dom.isActive():
                return _info(dom), False
            try:
                dom.shutdown()
            except libvirt.libvirtError:
                log.info("graceful shutdown of %s refused; forcing", uuid)
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                if not dom.isActive():
                    return _info(dom), False
                time.sleep(0.2)
            if dom.isActive():
                dom.destroy()
            return _info(dom), True
        except libvirt.libvirtError as exc:
            raise HypervisorError("domain_stop_failed", f"libvirt could not stop the domain: {exc}") from exc

    def reboot(self, uuid: str) -> DomainInfo:
        dom = self._existing(uuid)
        try:
            if not dom.isActive():
                dom.create()
            else:
                # A reset, not an ACPI reboot: the tiny guests (and hung ones) do not handle ACPI.
                dom.reset(0)
        except libvirt.libvirtError as exc:
            raise HypervisorError("domain_reboot_failed", f"libvirt could not reboot the domain: {exc}") from exc
        return _info(dom)

    def remove(self, uuid: str) -> bool:
        """Destroy and undefine the domain with its snapshot metadata and NVRAM. False if it did not exist."""
        try:
            dom = self._lookup(uuid)
            if dom is None:
                return False
            if dom.isActive():
                dom.destroy()
            snapshots = libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
            try:
                dom.undefineFlags(
                    snapshots | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
                )
            except libvirt.libvirtError:
                # The test driver and some older daemons reject flags they do not support (the test driver:
                # NVRAM); snapshot metadata must still go, or the undefine is refused.
                dom.undefineFlags(snapshots)
            return True
        except libvirt.libvirtError as exc:
            raise HypervisorError("domain_remove_failed", f"libvirt could not remove the domain: {exc}") from exc

    def lib_version(self) -> int:
        """libvirt's version as major * 1_000_000 + minor * 1000 + release (9.0.0 is 9000000)."""
        return self._conn.getLibVersion()

    def hypervisor_version(self) -> int:
        """The hypervisor's version (QEMU's under the qemu driver), encoded as `lib_version` is."""
        return self._conn.getVersion()

    def snapshot(self, uuid: str, name: str) -> SnapshotInfo | None:
        dom = self._existing(uuid)
        try:
            return _snapshot_info(dom.snapshotLookupByName(name))
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
                return None
            raise HypervisorError("snapshot_failed", f"libvirt could not read snapshot {name!r}: {exc}") from exc

    def snapshots(self, uuid: str) -> list[SnapshotInfo]:
        dom = self._existing(uuid)
        try:
            return [_snapshot_info(snap) for snap in dom.listAllSnapshots()]
        except libvirt.libvirtError as exc:
            raise HypervisorError("snapshot_failed", f"libvirt could not list snapshots: {exc}") from exc

    def create_internal_snapshot(self, uuid: str, name: str, description: str, memory: bool) -> SnapshotInfo:
        """An internal snapshot in the VM's qcow2 disk: with `memory` of a running domain (RAM and device
        state), without of a shut-off one. Atomic: on failure libvirt leaves no snapshot behind."""
        dom = self._existing(uuid)
        root = ET.Element("domainsnapshot")
        ET.SubElement(root, "name").text = name
        ET.SubElement(root, "description").text = description
        ET.SubElement(root, "memory", snapshot="internal" if memory else "no")
        disks = ET.SubElement(root, "disks")
        ET.SubElement(disks, "disk", name="vda", snapshot="internal")
        try:
            snap = dom.snapshotCreateXML(
                ET.tostring(root, encoding="unicode"), libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC
            )
            return _snapshot_info(snap)
        except libvirt.libvirtError as exc:
            raise HypervisorError("snapshot_failed", f"libvirt could not take snapshot {name!r}: {exc}") from exc

    def revert_snapshot(self, uuid: str, name: str) -> DomainInfo:
        """The domain as it was at the snapshot: a memory snapshot resumes running, a disk-only one is shut off."""
        dom = self._existing(uuid)
        try:
            dom.revertToSnapshot(dom.snapshotLookupByName(name), 0)
        except libvirt.libvirtError as exc:
            code = "snapshot_missing" if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT else "revert_failed"
            raise HypervisorError(code, f"libvirt could not revert to snapshot {name!r}: {exc}") from exc
        return _info(dom)

    def delete_snapshot(self, uuid: str, name: str) -> bool:
        """False when there was no such snapshot (or no domain): deleting twice succeeds."""
        dom = self._lookup(uuid)
        if dom is None:
            return False
        try:
            dom.snapshotLookupByName(name).delete(0)
            return True
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
                return False
            raise HypervisorError(
                "snapshot_delete_failed", f"libvirt could not delete snapshot {name!r}: {exc}"
            ) from exc

    def job_stats(self, uuid: str) -> dict | None:
        """libvirt's statistics of the domain's running job (a snapshot, a migration): `data_total`,
        `data_remaining`, `disk_remaining`, ... None when it says nothing (no job, no domain, or a driver
        without job statistics)."""
        try:
            dom = self._lookup(uuid)
            stats = dom.jobStats() if dom is not None else {}
        except libvirt.libvirtError:
            return None
        if stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) == libvirt.VIR_DOMAIN_JOB_NONE:
            return None
        return stats

    def job_running(self, uuid: str) -> bool:
        """Whether libvirtd runs a job on the domain (a migration an earlier, dead worker asked for carries on).
        False when there is no such domain or libvirt cannot say."""
        try:
            dom = self._lookup(uuid)
            return dom is not None and dom.jobInfo()[0] != libvirt.VIR_DOMAIN_JOB_NONE
        except libvirt.libvirtError:
            return False

    def abort_job(self, uuid: str) -> None:
        """Abort the domain's running job (a migration: the guest keeps running here)."""
        try:
            self._existing(uuid).abortJob()
        except libvirt.libvirtError as exc:
            raise HypervisorError("libvirt_error", f"libvirt could not abort the job of {uuid}: {exc}") from exc

    def migrate(
        self, uuid: str, uri: str, *, live: bool, storage: Storage = "none", bandwidth_mib_s: int | None = None
    ) -> None:
        """Migrate the domain peer to peer to the libvirtd at `uri`, its definition with it (persisted there,
        undefined here). Live: the guest runs on while its memory (and with `storage="copy"` its disks' top
        images, whose empty twins the caller made on the target) is copied; libvirt aborts on an error and
        the guest keeps running here. Cold (`live=False`): the definition of a stopped domain only; the caller
        copies its disks. Blocks until done; `abort_job` from another thread ends it early."""
        dom = self._existing(uuid)
        flags = _LIVE_FLAGS if live else _COLD_FLAGS
        if live and storage != "none":
            # Copy-storage migrates only the top image (the base is on the target, checked by SHA256).
            flags |= libvirt.VIR_MIGRATE_UNSAFE if storage == "shared" else libvirt.VIR_MIGRATE_NON_SHARED_INC
        params = {libvirt.VIR_MIGRATE_PARAM_BANDWIDTH: int(bandwidth_mib_s)} if bandwidth_mib_s else {}
        try:
            dom.migrateToURI3(uri, params, flags)
        except libvirt.libvirtError as exc:
            raise HypervisorError("migration_failed", str(exc)) from exc

    def disk_capacity(self, uuid: str, path: Path) -> int | None:
        """The virtual size in bytes of the domain's disk at `path` (libvirt reads it from the image, or from
        QEMU for a running guest); None when libvirt cannot say."""
        try:
            return int(self._existing(uuid).blockInfo(str(path))[0])
        except (libvirt.libvirtError, HypervisorError):
            return None

    def job_progress(self, uuid: str) -> dict | None:
        """What libvirt says about the domain's running job (a snapshot, a migration), or None when it says
        nothing (no job, or a driver without job statistics)."""
        stats = self.job_stats(uuid)
        return None if stats is None else job_figures(stats)

    def list_domains(self) -> list[DomainInfo]:
        infos = []
        for dom in self._conn.listAllDomains():
            try:
                infos.append(_info(dom))
            except libvirt.libvirtError as exc:
                # Undefined between the listing and the question (a VM being deleted): it is gone.
                if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                    raise
        return infos

    # --- networks -------------------------------------------------------------------------------------------

    def ensure_network(self, name: str, xml: str) -> bool:
        """Define `xml` as network `name` unless one of that name exists (an operator's is left as it is), then
        make sure it is active and autostarted. True when this call defined it."""
        try:
            try:
                net = self._conn.networkLookupByName(name)
                created = False
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_NETWORK:
                    raise
                try:
                    net = self._conn.networkDefineXML(xml)
                    created = True
                except libvirt.libvirtError:
                    # Another worker on this host defined it in the meantime.
                    net = self._conn.networkLookupByName(name)
                    created = False
            if not net.isActive():
                try:
                    net.create()
                except libvirt.libvirtError:
                    if not net.isActive():
                        raise
            if not net.autostart():
                net.setAutostart(1)
            return created
        except libvirt.libvirtError as exc:
            raise HypervisorError("network_unavailable", f"libvirt could not set up network {name!r}: {exc}") from exc

    def active_networks(self) -> list[str]:
        try:
            return [net.name() for net in self._conn.listAllNetworks(libvirt.VIR_CONNECT_LIST_NETWORKS_ACTIVE)]
        except libvirt.libvirtError as exc:
            raise HypervisorError("libvirt_error", f"cannot list networks: {exc}") from exc

    def dhcp_leases(self, network: str, mac: str) -> list[dict]:
        """The leases libvirt's dnsmasq holds for `mac` on `network` (`iface`, `ipaddr`, `prefix`, ...)."""
        try:
            return self._conn.networkLookupByName(network).DHCPLeases(mac)
        except libvirt.libvirtError:
            return []

    def interface_addresses(self, uuid: str, source: str) -> list[dict]:
        """The domain's addresses as one source knows them, [{"mac", "ipv4", "ipv6", "source"}]: `lease` (the
        DHCP leases of libvirt's networks) or `agent` (the QEMU guest agent, which also knows bridged NICs and
        IPv6). [] when that source knows nothing (no lease yet, no agent in the guest, or it does not answer)."""
        flag = {
            "lease": libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE,
            "agent": libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT,
        }[source]
        try:
            dom = self._lookup(uuid)
            interfaces = dom.interfaceAddresses(flag, 0) if dom is not None else {}
        except libvirt.libvirtError:
            return []
        found: dict[str, dict] = {}
        for iface in interfaces.values():
            mac = (iface.get("hwaddr") or "").lower()
            if not mac or mac == "00:00:00:00:00:00":
                continue  # the guest's loopback, as the agent reports it
            for addr in iface.get("addrs") or []:
                family = "ipv4" if addr["type"] == libvirt.VIR_IP_ADDR_TYPE_IPV4 else "ipv6"
                if family == "ipv6" and addr["addr"].lower().startswith("fe80"):
                    continue  # link-local: not reachable as an address to log in to
                entry = found.setdefault(mac, {"mac": mac, "ipv4": None, "ipv6": None, "source": source})
                entry[family] = entry[family] or addr["addr"]
        return sorted(found.values(), key=lambda e: e["mac"])

    @contextmanager
    def transient(self, xml: str) -> Iterator[bool]:
        """Run a transient domain for the body's duration; yields whether it started."""
        try:
            dom = self._conn.createXML(xml, 0)
        except libvirt.libvirtError as exc:
            log.warning("transient domain did not start: %s", exc)
            yield False
            return
        try:
            yield True
        finally:
            try:
                dom.destroy()
            except libvirt.libvirtError:
                log.warning("could not destroy a transient domain", exc_info=True)


def job_figures(stats: dict) -> dict:
    """A job's progress from its libvirt statistics: bytes in all, bytes left and (when known) a percentage."""
    total, remaining = stats.get("data_total", 0), stats.get("data_remaining", 0)
    progress = {"bytes_total": total, "bytes_remaining": remaining}
    if total:
        progress["percent"] = round(100 * (total - remaining) / total)
    return progress


_SHUTOFF_REASONS = {
    libvirt.VIR_DOMAIN_SHUTOFF_UNKNOWN: "unknown",
    libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_SHUTOFF_DESTROYED: "destroyed",
    libvirt.VIR_DOMAIN_SHUTOFF_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_SHUTOFF_MIGRATED: "migrated",
    libvirt.VIR_DOMAIN_SHUTOFF_SAVED: "saved",
    libvirt.VIR_DOMAIN_SHUTOFF_FAILED: "failed",
    libvirt.VIR_DOMAIN_SHUTOFF_FROM_SNAPSHOT: "from_snapshot",
}


def _info(dom: libvirt.virDomain) -> DomainInfo:
    state, reason = dom.state()
    why = _SHUTOFF_REASONS.get(reason, "") if state == libvirt.VIR_DOMAIN_SHUTOFF else ""
    return DomainInfo(uuid=dom.UUIDString(), name=dom.name(), state=_STATES.get(state, "unknown"), reason=why)


def _snapshot_info(snap: libvirt.virDomainSnapshot) -> SnapshotInfo:
    root = ET.fromstring(snap.getXMLDesc(0))
    memory = root.find("memory")
    return SnapshotInfo(
        name=root.findtext("name", ""),
        description=root.findtext("description", ""),
        memory=memory is not None and memory.get("snapshot") not in (None, "no"),
        state=root.findtext("state", ""),
        created_at=float(root.findtext("creationTime", "0")),
    )


class ConsoleStream:
    """A domain's serial console as a non-blocking libvirt stream, read from libvirt's event loop."""

    _EVENTS = libvirt.VIR_STREAM_EVENT_READABLE | libvirt.VIR_STREAM_EVENT_ERROR | libvirt.VIR_STREAM_EVENT_HANGUP

    def __init__(
        self, stream: libvirt.virStream, on_data: Callable[[bytes], None], on_end: Callable[[str], None]
    ) -> None:
        self._stream = stream
        self._on_data = on_data
        self._on_end = on_end
        self._lock = threading.Lock()
        self._closed = False
        stream.eventAddCallback(self._EVENTS, self._event, None)

    def _event(self, stream: libvirt.virStream, events: int, _opaque: object) -> None:
        if events & libvirt.VIR_STREAM_EVENT_READABLE:
            while True:
                with self._lock:
                    if self._closed:
                        return
                    try:
                        data = stream.recv(64 * 1024)
                    except libvirt.libvirtError as exc:
                        self._end(f"the console stream failed: {exc}")
                        return
                if data == -2:  # nothing more for now
                    break
                if not data:
                    with self._lock:
                        self._end("the guest's console closed (the VM stopped or was moved)")
                    return
                self._on_data(data)
        if events & (libvirt.VIR_STREAM_EVENT_ERROR | libvirt.VIR_STREAM_EVENT_HANGUP):
            with self._lock:
                self._end("the guest's console closed (the VM stopped or was moved)")

    def _end(self, why: str) -> None:
        # Under self._lock.
        if self._closed:
            return
        self._teardown()
        self._on_end(why)

    def _teardown(self) -> None:
        self._closed = True
        try:
            self._stream.eventRemoveCallback()
            self._stream.abort()
        except libvirt.libvirtError:
            log.debug("closing a console stream failed", exc_info=True)

    def send(self, data: bytes) -> None:
        """Write keystrokes; a full pipe (the guest reads slowly) waits a little rather than dropping them."""
        while data:
            with self._lock:
                if self._closed:
                    return
                try:
                    sent = self._stream.send(data)
                except libvirt.libvirtError as exc:
                    self._end(f"the console stream failed: {exc}")
                    return
            if sent == -2:
                time.sleep(0.01)
                continue
            data = data[sent:]

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._teardown()
