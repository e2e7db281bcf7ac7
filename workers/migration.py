"""Migrating a VM to another host: libvirt peer to peer from this (the source) host's libvirtd.

Live: `migrateToURI3` with LIVE | PEER2PEER | PERSIST_DEST | UNDEFINE_SOURCE | ABORT_ON_ERROR | AUTO_CONVERGE,
plus NON_SHARED_INC (the destination disks pre-created on their backing image) when the two hosts do not
share storage. While it runs a watcher thread sends libvirt's job stats as the job's progress and aborts the
migration (`abortJob`) when the job's cancel is requested: the guest keeps running here.
Cold (`live: false` or a stopped VM): the guest is shut down if it runs, its disks are copied over SSH, its
definition moves with an OFFLINE migration, and it is started there if it was running.

Whatever happens, the result says where the domain is: on failure both libvirt connections are asked, so
the database records the truth. A re-run (the worker died mid-migration) waits for a migration libvirtd may
still be running, then converges: a VM already on the target is a success.

Once the conductor has recorded a migration as succeeded, the target runs a `migrate_in` job (`migrate_in_vm`):
it only checks that the domain is here, so that this host signs the VM's arrival with its own key.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote, urlencode

import paramiko

from queues.config import Settings
from queues.vocabulary import Accel, VmState
from workers import target_checks
from workers.domain_xml import as_native, cpu_mode_in
from workers.errors import JobCancelled, WorkerError
from workers.hypervisor import Hypervisor, HypervisorError, LibvirtHypervisor, Storage
from workers.job_run import JobRun, needs_job
from workers.operations import WorkerContext
from workers.ssh import SshError, drop_pooled, pooled

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 0.5


def migration_endpoint(settings: Settings) -> dict:
    """What this host's heartbeat tells sources about reaching it; empty when it takes no migrations."""
    if not settings.migration_address:
        return {}
    return {
        "address": settings.migration_address,
        "ssh_port": settings.ssh_port,
        "shared_storage": settings.shared_storage,
    }


def destination_uri(settings: Settings, address: str, ssh_port: int = 22) -> str:
    """The target libvirtd as the source libvirtd (peer to peer) and this worker reach it; `ssh_port`: the
    target's sshd, as its heartbeat says."""
    host = f"[{address}]" if ":" in address else address
    transport = settings.migration_transport
    if transport == "tcp":
        return f"qemu+tcp://{host}/system"
    if transport == "tls":
        return f"qemu+tls://{host}/system"
    if transport == "ssh":
        # libvirt's ssh transport runs the ssh binary as the libvirtd user: it takes the key from the URI, and
        # verifies host keys against that user's ~/.ssh/known_hosts (it has no known_hosts parameter).
        query = {"no_verify": "0", "keyfile": str(settings.ssh_key_file)}
        return f"qemu+ssh://{quote(settings.ssh_user)}@{host}:{ssh_port}/system?{urlencode(query)}"
    raise WorkerError("migration_misconfigured", f"ARCHQ_MIGRATION_TRANSPORT={transport!r}: use tcp, ssh or tls")


def read_plan(xml: str, capacity: Callable[[Path], int | None] = lambda _path: None) -> target_checks.Plan:
    """What the domain of this XML needs on the target. `capacity`: a disk's virtual size as libvirt knows it
    (None: unknown)."""
    root = ET.fromstring(xml)
    artifacts: list[Path] = [Path(p) for tag in ("os/kernel", "os/initrd") if (p := root.findtext(tag))]
    directories: set[Path] = set()
    # The serial log's directory (the guest agent's socket path is libvirt's own to make on the target): a
    # pty's <log file>, or the <source path> of a file serial (domains defined before the console was a pty).
    for source in [*root.iterfind("devices/serial/source"), *root.iterfind("devices/console/source")]:
        if source.get("path"):
            directories.add(Path(source.get("path", "")).parent)
    for serial_log in root.iterfind("devices/serial/log"):
        if serial_log.get("file"):
            directories.add(Path(serial_log.get("file", "")).parent)
    disks: list[target_checks.Disk] = []
    for disk in root.iterfind("devices/disk"):
        path = found.get("file", "") if (found := disk.find("source")) is not None else ""
        if disk.get("type") != "file" or not path:
            continue
        if disk.get("device") == "cdrom":
            # The cloud-init seed: read-only, so libvirt copies nothing; it must be on the target (a guest that
            # loses its seed makes new SSH host keys).
            artifacts.append(Path(path))
            continue
        if disk.get("device") != "disk":
            continue
        if disk.find("readonly") is not None or disk.find("shareable") is not None:
            artifacts.append(Path(path))
            continue
        found_disk = _disk_from_libvirt(disk, Path(path), capacity) or _disk_from_qemu_img(disk, Path(path))
        disks.append(found_disk[0])
        artifacts.extend(found_disk[1])
        directories.add(Path(path).parent)
    memory_kib = int(root.findtext("memory") or 0)
    unit = (memory.get("unit") if (memory := root.find("memory")) is not None else None) or "KiB"
    memory_mib = memory_kib // 1024 if unit == "KiB" else memory_kib
    return target_checks.Plan(
        uuid=root.findtext("uuid", ""),
        name=root.findtext("name", ""),
        domain_type=root.get("type", "qemu"),
        memory_mib=memory_mib,
        emulator=root.findtext("devices/emulator"),
        artifacts=tuple(dict.fromkeys(artifacts)),
        directories=tuple(sorted(directories)),
        disks=tuple(disks),
    )


def _disk_from_libvirt(
    disk: ET.Element, path: Path, capacity: Callable[[Path], int | None]
) -> tuple[target_checks.Disk, list[Path]] | None:
    """A running domain's disk from what libvirt already knows: the backing chain it shows in the live XML
    (`<backingStore>`, an empty one ending the chain) and the virtual size it reports. Saves a `qemu-img info`
    process (about 8 ms) on every live migration. None when the XML shows no chain (an inactive domain)."""
    backing_store = disk.find("backingStore")
    size = capacity(path) if backing_store is not None else None
    if backing_store is None or size is None:
        return None
    chain: list[tuple[Path, str | None]] = []
    layer: ET.Element | None = backing_store
    while layer is not None and (source := layer.find("source")) is not None and source.get("file"):
        chain.append(
            (Path(source.get("file", "")), fmt.get("type") if (fmt := layer.find("format")) is not None else None)
        )
        layer = layer.find("backingStore")
    driver = disk.find("driver")
    found = target_checks.Disk(
        target=target.get("dev", "") if (target := disk.find("target")) is not None else "",
        path=path,
        format=(driver.get("type") if driver is not None else None) or "qcow2",
        virtual_size=size,
        # What the file takes on disk, as `qemu-img info` reports it (the target needs room for the copy).
        actual_size=path.stat().st_blocks * 512,
        backing=chain[0][0] if chain else None,
        backing_format=chain[0][1] if chain else None,
    )
    return found, [layer_path for layer_path, _ in chain]


def _disk_from_qemu_img(disk: ET.Element, path: Path) -> tuple[target_checks.Disk, list[Path]]:
    chain = target_checks.disk_info(path)
    top = chain[0]
    backing = top.get("full-backing-filename") or top.get("backing-filename")
    found = target_checks.Disk(
        target=target.get("dev", "") if (target := disk.find("target")) is not None else "",
        path=path,
        format=top.get("format", "qcow2"),
        virtual_size=int(top["virtual-size"]),
        actual_size=int(top.get("actual-size", top["virtual-size"])),
        backing=Path(backing) if backing else None,
        backing_format=top.get("backing-filename-format"),
    )
    return found, [Path(layer["filename"]) for layer in chain[1:]]


def open_destination(uri: str, target: str, connect: Callable[[str], Hypervisor] = LibvirtHypervisor) -> Hypervisor:
    try:
        return connect(uri)
    except HypervisorError as exc:
        raise WorkerError(
            "target_libvirt_unreachable",
            f"cannot reach libvirt on {target} at {uri}: {exc}; is libvirtd listening there "
            "(ARCHQ_MIGRATION_TRANSPORT)? The VM was not touched",
        ) from exc


def _state(hypervisor: Hypervisor, uuid: str) -> VmState | None:
    active = hypervisor.is_active(uuid)
    if active is None:
        return None
    return VmState.RUNNING if active else VmState.STOPPED


class _Migration:
    """One migrate job on the source host."""

    def __init__(
        self, ctx: WorkerContext, vm: dict, job: JobRun, connect: Callable[[str], Hypervisor] = LibvirtHypervisor
    ) -> None:
        self.ctx = ctx
        self.connect = connect
        self.settings = ctx.settings or Settings()
        self.vm = vm
        self.job = job
        self.uuid = str(vm["id"])
        self.source = ctx.host.name
        target = job.params.get("target") or {}
        if not target.get("name") or not target.get("address"):
            raise WorkerError("migration_misconfigured", "the migrate job names no target host address")
        self.target = target["name"]
        self.address = target["address"]
        self.ssh_port = int(target.get("ssh_port") or self.settings.ssh_port)
        self.live = bool(job.params.get("live", True))
        # A re-home (web/services/rehome.py): cold, and the domain is redefined on the target as a native guest.
        self.rehome = job.params.get("rehome")
        self.rehomed_cpu: str | None = None
        self.bandwidth = job.params.get("max_bandwidth_mib_s")
        self.shared = bool(self.settings.shared_storage) and self.settings.shared_storage == target.get(
            "shared_storage"
        )
        self.dest_uri = destination_uri(self.settings, self.address, self.ssh_port)
        # The target's libvirtd, opened on first use.
        self.dest: Hypervisor | None = None
        self.started = time.monotonic()
        # Seconds per phase of this run (settle, plan, checks, disks, libvirt, finish), in the result and the
        # log: where a migration's time goes beside libvirt's own call.
        self.phases: dict[str, float] = {}

    # --- where the domain is ------------------------------------------------------------------------

    def located(self) -> dict:
        """Where the domain is, asking both hosts' libvirt; the result the conductor records."""
        here = _state(self.ctx.hypervisor, self.uuid)
        there: str | None
        try:
            there = _state(self._target(), self.uuid)
        except WorkerError:
            there = "unreachable"
        if there == VmState.RUNNING and here != VmState.RUNNING:
            host, state = self.target, VmState.RUNNING
        elif here is not None:
            host, state = self.source, here
        elif there == VmState.STOPPED:
            host, state = self.target, VmState.STOPPED
        else:
            host, state = self.source, VmState.UNKNOWN
        return {"host": host, "state": state, "located": {self.source: here, self.target: there}}

    def _target(self) -> Hypervisor:
        if self.dest is None:
            self.dest = open_destination(self.dest_uri, self.target, self.connect)
        return self.dest

    @contextlib.contextmanager
    def _timed(self, phase: str) -> Iterator[None]:
        began = time.monotonic()
        try:
            yield
        finally:
            self.phases[phase] = round(self.phases.get(phase, 0.0) + time.monotonic() - began, 3)

    def _succeeded(self, how: str) -> dict:
        with self._timed("finish"):
            where = self.located()
        self.job.close_progress({"percent": 100, "bytes_remaining": 0, "bytes_total": None, "phase": "completed"})
        return {
            **where,
            "domain": f"archq-{self.vm['name']}",
            "migrated_from": self.source,
            "live": how == "live",
            "how": how,
            "storage": "shared" if self.shared else "copied",
            "seconds": round(time.monotonic() - self.started, 3),
            "phases": dict(self.phases),
            **({"cpu_mode_effective": self.rehomed_cpu} if self.rehomed_cpu else {}),
        }

    # --- the job ------------------------------------------------------------------------------------

    def run(self) -> dict:
        try:
            return self._run()
        except WorkerError as exc:
            if not exc.result:
                # Even a refused pre-check says where the VM is, so the conductor never has to guess.
                with contextlib.suppress(WorkerError):
                    exc.result = self.located()
            raise
        finally:
            if self.dest is not None:
                self.dest.close()

    def _run(self) -> dict:
        with self._timed("settle"):
            settled = self._settled()
        if not settled:
            where = self.located()
            if where["host"] == self.target:
                return self._succeeded("already")  # a re-run after the worker died: the move had finished
            raise WorkerError("domain_missing", f"VM {self.uuid} is on neither {self.source} nor {self.target}", where)
        self._phase("checking target")
        with self._timed("plan"):
            plan = read_plan(
                self.ctx.hypervisor.xml_desc(self.uuid), lambda path: self.ctx.hypervisor.disk_capacity(self.uuid, path)
            )
        with self._timed("checks"):
            self._check_target(plan)
        if self.job.cancel_requested():
            raise JobCancelled(f"cancelled before the migration to {self.target} started; nothing moved")
        try:
            if self.ctx.hypervisor.is_active(self.uuid) and self.live:
                return self._live(plan)
            return self._cold(plan)
        finally:
            log.info("migration of %s to %s: %.3f s, phases %s", self.uuid, self.target,
                     time.monotonic() - self.started, self.phases)  # fmt: skip

    def _settled(self) -> bool:
        """Whether the source domain exists, once no migration of an earlier attempt runs on it any more
        (libvirtd carries a peer-to-peer migration to its end even when the worker that asked for it died)."""
        deadline = time.monotonic() + 3600
        while time.monotonic() < deadline:
            if not self.ctx.hypervisor.job_running(self.uuid):
                return self.ctx.hypervisor.domain(self.uuid) is not None
            self._phase("waiting for an earlier migration")
            time.sleep(1)
        raise WorkerError("migration_stuck", f"an earlier migration of {self.uuid} never ended on {self.source}")

    def _phase(self, phase: str) -> None:
        self.job.progress({"percent": 0, "bytes_remaining": None, "bytes_total": None, "phase": phase})

    @contextlib.contextmanager
    def _ssh(self) -> Iterator[tuple[paramiko.SSHClient, paramiko.SFTPClient]]:
        try:
            s = self.settings
            yield pooled(self.address, self.ssh_port, s.ssh_user, s.ssh_key_file, s.known_hosts_file)
        except SshError as exc:
            raise exc.saying(f"{exc}; the VM was not touched", code=f"target_{exc.code}") from exc
        except (paramiko.SSHException, EOFError, OSError) as exc:
            drop_pooled(self.address, self.ssh_port, self.settings.ssh_user)
            raise WorkerError("target_ssh_unreachable", f"SSH to {self.target} broke: {exc}; retry the job") from exc

    def _check_target(self, plan: target_checks.Plan) -> None:
        with self._ssh() as (client, sftp):
            target_checks.check_memory(sftp, self.target, plan.memory_mib)
            missing = target_checks.missing_artifacts(client, sftp, self.target, plan.artifacts)
            needed = sum(p.stat().st_size for p, _ in missing)
            if not self.shared:
                needed += sum(d.actual_size for d in plan.disks)
            target_checks.check_disk(client, sftp, self.target, self.ctx.data_dir, needed)
            existing = _state(self._target(), self.uuid)
            if existing is not None:
                raise WorkerError(
                    "target_has_domain",
                    f"{self.target} already has a domain with this VM's UUID ({existing}); archq records "
                    f"the VM on {self.source}. Remove the stale one there; the VM was not touched",
                    self.located(),
                )
            target_checks.check_emulator(sftp, self.target, plan.emulator)
            if missing:
                self._phase("copying artifacts")
                target_checks.copy_artifacts(client, sftp, self.target, missing)
            for directory in plan.directories:
                target_checks.makedirs(sftp, self.target, directory)

    def _prepare_disks(self, plan: target_checks.Plan, live: bool) -> None:
        """Live: empty disks for libvirt's storage copy to fill. Cold: the disks themselves (the VM is off)."""
        if not plan.disks or self.shared:
            return
        with self._ssh() as (client, sftp):
            if live:
                target_checks.precreate_disks(client, sftp, self.target, plan.disks)
            else:
                self._phase("copying disks")
                target_checks.copy_disks(sftp, self.target, plan.disks)

    def _live(self, plan: target_checks.Plan) -> dict:
        with self._timed("disks"):
            self._prepare_disks(plan, live=True)
        storage: Storage = "none" if not plan.disks else "shared" if self.shared else "copy"
        watcher = _Watcher(self.ctx.hypervisor, self.uuid, self.job)
        watcher.start()
        try:
            with self._timed("libvirt"):
                self.ctx.hypervisor.migrate(
                    self.uuid, self.dest_uri, live=True, storage=storage, bandwidth_mib_s=self.bandwidth
                )
        except HypervisorError as exc:
            watcher.stop()
            self._failed(exc, watcher.aborted)
        finally:
            watcher.stop()
        if not self.shared:
            with self._timed("finish"):
                self._remove_source_disks(plan)
        return self._succeeded("live")

    def _cold(self, plan: target_checks.Plan) -> dict:
        was_running = bool(self.ctx.hypervisor.is_active(self.uuid))
        try:
            if was_running:
                self._phase("shutting down")
                self.ctx.hypervisor.stop(self.uuid, timeout_s=self.ctx.stop_timeout_s)
            self._prepare_disks(plan, live=False)
            self._phase("moving definition")
            self.ctx.hypervisor.migrate(self.uuid, self.dest_uri, live=False)
            if self.rehome:
                self._redefine_native(self.rehome)
        except HypervisorError as exc:
            # libvirt failed midway: where the domain ended up says what the job did.
            self._restart_here(was_running)
            self._failed(exc, aborted=False)
        except WorkerError:
            # A check or copy on the target refused: the domain never left.
            self._restart_here(was_running)
            raise
        if was_running:
            self._phase("starting on target")
            try:
                self._target().start(self.uuid)
            except HypervisorError as exc:
                raise WorkerError(
                    "target_start_failed",
                    f"the VM moved to {self.target} but did not start there: {exc}; start it with the API",
                    self.located(),
                ) from exc
        if not self.shared:
            self._remove_source_disks(plan)
        return self._succeeded("cold")

    def _redefine_native(self, rehome: dict) -> None:
        """libvirt cannot change a domain's type by migrating it: the moved definition is rewritten on the
        target with the native domain type and CPU before it starts there."""
        self._phase("redefining as native")
        target = self._target()
        moved = target.xml_desc(self.uuid, inactive=True)
        native = as_native(moved, rehome["domain_type"], rehome["cpu_mode"])
        self.rehomed_cpu = cpu_mode_in(target.redefine(native))

    def _restart_here(self, was_running: bool) -> None:
        if was_running and self.ctx.hypervisor.domain(self.uuid) is not None:
            # Still defined here: it runs again where it was.
            with contextlib.suppress(HypervisorError):
                self.ctx.hypervisor.start(self.uuid)

    def _failed(self, exc: Exception, aborted: bool) -> None:
        where = self.located()
        if where["host"] == self.target and where["state"] == VmState.RUNNING:
            return  # libvirt reported an error after the guest had switched over: it did move
        if aborted:
            raise JobCancelled(
                f"migration to {self.target} aborted on request; the VM runs on {where['host']} ({where['state']})",
                where,
            ) from exc
        raise WorkerError(
            "migration_failed",
            f"libvirt could not migrate the VM from {self.source} to {self.target}: {exc}. The VM is on "
            f"{where['host']} ({where['state']}); fix the cause and retry",
            where,
        ) from exc

    def _remove_source_disks(self, plan: target_checks.Plan) -> None:
        # The disks moved; the source copy would only be a stale twin. The console log stays: the history.
        for disk in plan.disks:
            disk.path.unlink(missing_ok=True)


class _Watcher(threading.Thread):
    """Sends the migration's progress from libvirt's job stats; aborts it when the job's cancel is asked."""

    def __init__(self, hypervisor: Hypervisor, uuid: str, job: JobRun) -> None:
        super().__init__(name=f"migration-watch-{job.job_id[:8]}", daemon=True)
        self._hypervisor = hypervisor
        self._uuid = uuid
        self._job = job
        self._stopping = threading.Event()
        self.aborted = False

    def run(self) -> None:
        while not self._stopping.wait(PROGRESS_INTERVAL_S):
            try:
                if not self.aborted and self._job.cancel_requested():
                    log.warning("job %s: cancel requested, aborting the migration", self._job.job_id)
                    self._hypervisor.abort_job(self._uuid)
                    self.aborted = True
                stats = self._hypervisor.job_stats(self._uuid)
            except Exception:
                # The job ended between two polls, or Redis blinked: the next poll, or the migration's
                # own outcome, says more.
                continue
            if stats is None:
                continue
            self._job.progress(progress_of(stats))

    def stop(self) -> None:
        self._stopping.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=5)


def progress_of(stats: dict) -> dict:
    total = int(stats.get("data_total") or 0)
    remaining = int(stats.get("data_remaining") or 0)
    disk_remaining = int(stats.get("disk_remaining") or 0)
    percent = round(100.0 * (total - remaining) / total, 1) if total else 0.0
    return {
        "percent": percent,
        "bytes_remaining": remaining,
        "bytes_total": total,
        "phase": "copying storage" if disk_remaining else "copying memory",
    }


@needs_job
def migrate_vm(ctx: WorkerContext, vm: dict, run: JobRun) -> dict:
    return _Migration(ctx, vm, run).run()


def migrate_in_vm(ctx: WorkerContext, vm: dict) -> dict:
    """The VM arrived on this host: its domain must be defined here, or there is no arrival to vouch for (the
    job fails and nothing is signed). Changes nothing; the record the runner signs then hashes the domain's
    XML as it stands here."""
    uuid = str(vm["id"])
    info = ctx.hypervisor.domain(uuid)
    if info is None:
        raise WorkerError(
            "domain_missing", f"VM {uuid} has no domain on host {ctx.host.name}: it did not arrive here; nothing signed"
        )
    try:
        domain_type = ET.fromstring(ctx.hypervisor.xml_desc(uuid, inactive=True)).get("type")
    except HypervisorError as exc:
        raise exc.saying(f"host {ctx.host.name} cannot read VM {uuid}'s definition: {exc}") from exc
    return {
        "host": ctx.host.name,
        "state": info.state,
        "domain": info.name,
        # As the domain now runs here: a re-homed VM arrived with another type than it left with.
        "accel": Accel.TCG if domain_type == "qemu" else domain_type,
    }
