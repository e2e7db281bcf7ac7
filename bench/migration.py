"""Live migration between the two lab hosts (tests/support/twohosts.py: two libvirtds in network namespaces
on this machine). archq: POST /api/v1/vms/<id>/migrate until its job's success is committed, through the API
(in-process), Redis, the conductor and the source host's real `archq worker` (pre-checks over SSH, libvirt
peer to peer, progress reports), vs `virsh migrate --live --p2p --persistent --undefinesource --auto-converge
--copy-storage-inc` of a second guest, a twin of archq's domain (same kernel, initrd, memory, workload, NIC,
seed, CPU, same kind of disk), between the same hosts (they share no storage). Each round moves each guest to
the other host (A -> B, then B -> A). Also archq's split: submit -> the worker's `running`, its run, its last
report -> committed, and the worker's own phases. Two scenarios, amd64 under TCG, 1 vCPU:

- idle: the tiny guest, 128 MiB, printing a tick a second;
- dirty: 1 GiB (512 MiB with --quick), its /init (appended to the tiny guest's initramfs) rewriting 25/32 of
  it in a tmpfs file over and over, so the copy dominates and auto-converge has to throttle it.

Both guests of a scenario run throughout (each contender's migration sees the other's guest busy). Needs
root (namespaces), libvirtd, sshd and the tiny guest."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import libvirt

from bench.common import Samples, alternate, begin, bench_parser, compare, end, median
from bench.emulation import INIT_PRELUDE, newc
from queues.arch import Arch
from queues.config import Settings
from queues.images import KERNEL_INITRD
from tests.support.migration_lab import TINY_CACHE, Cluster, cluster
from tests.support.services import wait_for
from tests.support.twohosts import LabHost, lab_available
from workers.domain_xml import domain_name
from workers.guest.tiny import marker_line

# The dirtying guest's /init. Kernel parameters the kernel does not know reach it as environment variables
# (dirty_mib). The 4 MiB seed is random, so QEMU's zero-page detection sends none of the file's pages cheaply;
# each pass rewrites every page of the file (conv=notrunc keeps the same tmpfs pages, which stay resident).
DIRTY_INIT = (
    INIT_PRELUDE
    + """say ""
say "{marker}"
mkdir -p /dirty
mount -t tmpfs -o size=$((dirty_mib + 8))m dirty /dirty
head -c 4194304 /dev/urandom > /dirty/seed
pass=0
while true; do
    i=0
    while [ $i -lt $dirty_mib ]; do
        dd if=/dirty/seed of=/dirty/x bs=4M seek=$((i / 4)) conv=notrunc 2>/dev/null
        i=$((i + 4))
    done
    pass=$((pass + 1))
    say "ARCHQ-DIRTY pass $pass $dirty_mib MiB"
done
"""
)
TINY_CMDLINE = "console=ttyS0 loglevel=1 panic=-1 edd=off"


@dataclass(frozen=True)
class Scenario:
    label: str
    image: str
    memory_mib: int
    # The console line once the guest runs its workload.
    ready: str
    timeout_s: float


def idle_scenario() -> Scenario:
    return Scenario(
        label="idle tiny guest, 128 MiB",
        image="tiny",
        memory_mib=128,
        ready=marker_line(Arch.AMD64),
        timeout_s=120,
    )


def dirty_scenario(lab: Cluster, memory_mib: int) -> Scenario:
    """The tiny guest's kernel with DIRTY_INIT appended to its initramfs, registered as an archq image (its
    files under the lab's image directory, where the workers may take them from)."""
    base = (TINY_CACHE / "amd64" / "initrd.img").read_bytes()
    init = DIRTY_INIT.replace("{marker}", marker_line(Arch.AMD64)).encode()
    initrd_bytes = base + b"\0" * (-len(base) % 512) + newc({"init": (0o100755, init)})
    digest = hashlib.sha256(initrd_bytes).hexdigest()
    directory = TINY_CACHE.parent / "bench-migration"
    directory.mkdir(mode=0o755, exist_ok=True)
    initrd = directory / f"dirty-initrd-{digest[:16]}.img"
    if not initrd.exists():
        partial = directory / f".{initrd.name}.{os.getpid()}"
        partial.write_bytes(initrd_bytes)
        partial.chmod(0o644)
        partial.replace(initrd)
    kernel = TINY_CACHE / "amd64" / "vmlinuz"
    kernel_sha256 = json.loads((TINY_CACHE / "amd64" / "manifest.json").read_text())["kernel_sha256"]
    dirty_mib = memory_mib * 25 // 32
    cmdline = f"{TINY_CMDLINE} dirty_mib={dirty_mib}"
    name = f"bench-dirty-{memory_mib}"
    artifact = {
        "format": KERNEL_INITRD,
        "kernel": {"source": str(kernel), "sha256": kernel_sha256},
        "initrd": {"source": str(initrd), "sha256": digest},
        "cmdline": cmdline,
    }
    response = lab.client.post("/api/v1/images", json={"name": name, "artifacts": {"amd64": artifact}})
    if response.status_code != 201:
        raise RuntimeError(f"registering {name} answered {response.status_code}: {response.get_json()}")
    return Scenario(
        label=f"{memory_mib} MiB guest, {dirty_mib} MiB rewritten continuously",
        image=name,
        memory_mib=memory_mib,
        ready=f"ARCHQ-DIRTY pass 1 {dirty_mib} MiB",
        timeout_s=600,
    )


def run_scenario(lab: Cluster, tmp: Path, sc: Scenario, rounds: int) -> tuple[Samples, Samples]:
    """The archq guest and the raw one made, booted and running their workload, then `rounds` alternating
    migrations of each (after the warm-up); both guests are removed afterwards. (archq's samples, virsh's)"""
    client = lab.client
    h1, h2 = lab.hosts["h1"], lab.hosts["h2"]
    assert isinstance(h1, LabHost) and isinstance(h2, LabHost)
    tag = uuid.uuid4().hex[:6]
    response = client.post(
        "/api/v1/vms",
        json={"name": f"mig-bench-{tag}", "arch": "amd64", "vcpus": 1, "memory_mib": sc.memory_mib,
              "image": sc.image, "host": "h1"},
    )  # fmt: skip
    if response.status_code != 202:
        raise RuntimeError(f"create answered {response.status_code}: {response.get_json()}")
    vm_id = response.get_json()["vm"]["id"]
    wait_for(lambda: lab.vm(vm_id)["state"] == "running", timeout=120, what="the archq guest running")
    wait_for(lambda: sc.ready in lab.console("h1", vm_id).read_text(errors="replace"),
             timeout=sc.timeout_s, what="the archq guest's workload running")  # fmt: skip

    raw_name = f"mig-raw-{tag}"
    raw_id = str(uuid.uuid4())
    vm_dir = h1.host_data_dir / "vms" / vm_id
    raw_dir = h1.host_data_dir / "vms" / raw_id
    conn = libvirt.open(h1.uri)
    try:
        archq_xml = conn.lookupByUUIDString(vm_id).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    finally:
        conn.close()
    # The raw guest is a twin of archq's (its devices, CPU, TCG settings, NIC, seed), with its own files at
    # the same path on both hosts: copies of archq's kernel, initrd and seed, and the same kind of empty 64 MiB
    # qcow2 state disk, which libvirt copies into the target's (as archq does when hosts share no storage).
    root = ET.fromstring(archq_xml)
    sources = {"vmlinuz": root.findtext("os/kernel", ""), "initrd.img": root.findtext("os/initrd", "")}
    for host in (h1, h2):
        (host.data_dir / "vms" / raw_id).mkdir(mode=0o755)
        for name, path in sources.items():
            shutil.copyfile(
                h1.data_dir / Path(path).relative_to(h1.host_data_dir), host.data_dir / "vms" / raw_id / name
            )
        shutil.copyfile(h1.data_dir / "vms" / vm_id / "seed.iso", host.data_dir / "vms" / raw_id / "seed.iso")
        disk = host.data_dir / "vms" / raw_id / "disk.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "64M"], check=True)
    xml = tmp / f"raw-{tag}.xml"
    xml.write_text(twin_xml(root, domain_name(raw_name), raw_id, vm_dir, raw_dir))
    # The archq guest's first migration copies the kernel and initrd to h2; the raw guest needs them there.
    first = client.post(f"/api/v1/vms/{vm_id}/migrate", json={"target_host": "h2"}).get_json()["job"]["id"]
    wait_for(lambda: lab.job(first)["state"] == "succeeded", timeout=sc.timeout_s, what="the first archq migration")
    lab.wait_idle(vm_id)
    subprocess.run(["virsh", "-c", h1.uri, "define", str(xml)], check=True, capture_output=True)
    subprocess.run(["virsh", "-c", h1.uri, "start", domain_name(raw_name)], check=True, capture_output=True)
    raw_console = lab.console("h1", raw_id)
    wait_for(lambda: raw_console.exists() and sc.ready in raw_console.read_text(errors="replace"),
             timeout=sc.timeout_s, what="the raw guest's workload running")  # fmt: skip
    print(f"-- {sc.label}: {rounds} rounds; h1 <-> h2 over qemu+tcp, peer to peer, auto-converge; amd64, TCG")

    archq_at = itertools.cycle(["h1", "h2"])
    raw_at = itertools.cycle([(h1, h2), (h2, h1)])
    raw_host = h1

    def archq_round(_round: int) -> Samples:
        target = next(archq_at)
        submitted, submitted_at = time.perf_counter(), time.time()
        response = client.post(f"/api/v1/vms/{vm_id}/migrate", json={"target_host": target})
        if response.status_code != 202:
            raise RuntimeError(f"migrate answered {response.status_code}: {response.get_json()}")
        job_id = response.get_json()["job"]["id"]
        # Done when the job's end is committed, i.e. when the API would first answer it: its row is polled
        # every 5 ms with a plain SQLite read (a fraction of a millisecond). A GET through the in-process API
        # costs several ms of CPU, which this 2-core machine's migration needs, so polling that often would tax
        # archq alone (virsh's wait costs nothing), and polling it less often would add to archq's time.
        wait_for(lambda: job_state(lab, job_id) in ("succeeded", "failed", "cancelled"), timeout=sc.timeout_s,
                 interval=0.005, what="the migration job")  # fmt: skip
        took, noticed_at = time.perf_counter() - submitted, time.time()
        job = lab.job(job_id)
        if job["state"] != "succeeded":
            raise RuntimeError(f"migration failed: {job['error']}")
        # Untimed: the target signs the arrival (a job of its own) before the VM takes the next migration.
        lab.wait_idle(vm_id)
        # The worker's `running` and final reports carry its clock (the same machine's): submit -> running,
        # running -> done, done -> seen here; then the worker's own phases within the operation.
        started, finished = (datetime.fromisoformat(job[key]).timestamp() for key in ("started_at", "finished_at"))
        split = {"dispatch": started - submitted_at, "run": finished - started, "report": noticed_at - finished}
        split |= {f"op {name}": value for name, value in (job["result"].get("phases") or {}).items()}
        return {"migrate s": [took], **{f"{name} s": [value] for name, value in split.items()}}

    def raw_round(_round: int) -> Samples:
        nonlocal raw_host
        source, target = next(raw_at)
        submitted = time.perf_counter()
        subprocess.run(
            ["virsh", "-c", source.uri, "migrate", "--live", "--p2p", "--persistent", "--undefinesource",
             "--auto-converge", "--abort-on-error", "--copy-storage-inc", domain_name(raw_name),
             target.migration_uri],
            check=True, capture_output=True, timeout=sc.timeout_s,
        )  # fmt: skip
        took = time.perf_counter() - submitted
        raw_host = target
        return {"migrate s": [took]}

    try:
        results = alternate(rounds, {"archq": archq_round, "virsh": raw_round}, fmt="{:.3f}", show=["migrate s"])
    finally:
        remove(lab, vm_id, raw_host, raw_name)
    return results["archq"], results["virsh"]


def job_state(lab: Cluster, job_id: str) -> str | None:
    """The job's state as the lab's database has it (read-only: the API and the conductor write it)."""
    path = lab.settings.database_url.removeprefix("sqlite:///")
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as conn:
        row = conn.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return row[0] if row else None


def twin_xml(root: ET.Element, name: str, uuid_: str, vm_dir: Path, raw_dir: Path) -> str:
    """archq's domain definition as another domain's: its name, UUID and files (those in the VM's directory,
    and the kernel and initrd) replaced, its MAC left to libvirt to choose."""
    for path, value in (
        ("name", name),
        ("uuid", uuid_),
        ("os/kernel", raw_dir / "vmlinuz"),
        ("os/initrd", raw_dir / "initrd.img"),
    ):
        element = root.find(path)
        if element is None:
            raise RuntimeError(f"archq's domain has no <{path}>")
        element.text = str(value)
    for interface in root.iterfind("devices/interface"):
        for mac in interface.findall("mac"):
            interface.remove(mac)
    prefix = f"{vm_dir}/"
    for element in root.iter():
        for key, value in element.attrib.items():
            if value.startswith(prefix):
                element.set(key, str(raw_dir / value[len(prefix) :]))
    return ET.tostring(root, encoding="unicode")


def remove(lab: Cluster, vm_id: str, raw_host: LabHost, raw_name: str) -> None:
    """Both guests of a scenario gone, so the next one's guests have the machine to themselves."""
    lab.wait_idle(vm_id)
    job = lab.client.delete(f"/api/v1/vms/{vm_id}").get_json()["job"]["id"]
    wait_for(lambda: lab.job(job)["state"] == "succeeded", timeout=120, what="the archq guest deleted")
    for command in ("destroy", "undefine"):
        subprocess.run(["virsh", "-c", raw_host.uri, command, domain_name(raw_name)], capture_output=True)


def report(sc: Scenario, archq: Samples, raw: Samples) -> None:
    compare(f"live migration, submit -> done: {sc.label}", "s", archq["migrate s"], raw["migrate s"],
            "virsh migrate --live --p2p", rate=False)  # fmt: skip
    split = ", ".join(
        f"{metric[:-2]} {median(values):.3f}" for metric, values in archq.items() if metric != "migrate s"
    )
    print(f"   archq's split, median s: {split}")


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--dirty-mib", type=int, default=None,
                        help="the dirtying guest's memory (1024; 512 with --quick)")  # fmt: skip
    args = parser.parse_args()
    rounds = args.rounds or (1 if args.quick else 10)
    dirty_memory = args.dirty_mib or (512 if args.quick else 1024)
    started = begin("migration: live migration between two hosts", args, probe_kvm=False)
    reason = lab_available()
    if reason:
        raise SystemExit(f"the two-host lab is unavailable: {reason}")
    # The workers beat at archq's default interval, as deployed, not the lab's test setting (10x as often, for
    # quick detection in tests): every beat reads each guest's facts and every changed one is a conductor task,
    # load on the same 2 cores as the migrations (docs/performance.md has both figures).
    heartbeat = Settings().heartbeat_interval_s
    with (
        tempfile.TemporaryDirectory(prefix="archq-bench-mig-", dir="/tmp") as tmp,
        cluster(Path(tmp), heartbeat_interval_s=heartbeat) as lab,
    ):
        print(f"workers beat every {heartbeat:.0f} s (archq's default)")
        scenarios = [idle_scenario(), dirty_scenario(lab, dirty_memory)]
        measured = [(sc, *run_scenario(lab, Path(tmp), sc, rounds)) for sc in scenarios]
    for sc, archq, raw in measured:
        report(sc, archq, raw)
    end(started)


if __name__ == "__main__":
    main()
