"""Migration through archq on two real libvirt hosts (the two-host lab): the HTTP API, the conductor and
one real worker per host. Live A -> B -> A without a reboot, non-shared storage with the disk's content
checked on the target, cold migration, abort on cancel, a wrong SSH host key, and a source worker killed
mid-migration."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from queues import attestation
from queues.arch import Arch
from tests.support.migration_lab import Cluster, cluster
from tests.support.services import wait_for
from tests.support.twohosts import lab_available
from workers.guest.tiny import marker_line, parse_net_line, ticks_in

pytestmark = pytest.mark.libvirtd


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    reason = lab_available()
    if reason:
        pytest.fail(f"two-host lab unavailable: {reason}")
    started = time.monotonic()
    with cluster(Path(tmp_path_factory.mktemp("mig"))) as c:
        print(f"\nmigration lab up in {time.monotonic() - started:.1f} s")
        yield c


def text(path: Path) -> str:
    return path.read_text(errors="replace").replace("\r", "") if path.exists() else ""


def ticks(path: Path) -> list[int]:
    return ticks_in(text(path))


def wait_job(lab: Cluster, job_id: str, timeout: float = 120) -> dict:
    last: dict = {}

    def done():
        last.update(lab.job(job_id))
        return last if last["state"] in ("succeeded", "failed", "cancelled") else None

    job = wait_for(done, timeout=timeout, interval=0.2, what=lambda: f"job {job_id} to end; it is {last}")
    if job["kind"] == "migrate" and job["state"] == "succeeded":
        # The target signs the arrival in a job of its own; the VM takes new jobs once it ended.
        arrival = arrival_of(lab, job)
        assert wait_job(lab, arrival["id"], timeout)["state"] == "succeeded", arrival
    return job


def arrival_of(lab: Cluster, migration: dict) -> dict:
    """The `migrate_in` job the conductor queued for the target when `migration` succeeded."""
    response = lab.client.get("/api/v1/jobs", query_string={"vm_id": migration["vm_id"], "kind": "migrate_in"})
    arrivals = [j for j in response.get_json()["jobs"] if f"job {j['id']}" in str(migration["events"])]
    assert len(arrivals) == 1, (migration["events"], response.get_json())
    return arrivals[0]


def running_vm(lab: Cluster, name: str, arch: str = "amd64") -> str:
    response = lab.client.post(
        "/api/v1/vms", json={"name": name, "arch": arch, "vcpus": 1, "memory_mib": 128, "image": "tiny", "host": "h1"}
    )
    assert response.status_code == 202, response.get_json()
    vm_id = response.get_json()["vm"]["id"]
    job = wait_job(lab, response.get_json()["job"]["id"])
    assert job["state"] == "succeeded", job["error"]
    marker = marker_line(Arch(arch))
    wait_for(lambda: marker in text(lab.console("h1", vm_id)), timeout=90, what=f"{name}'s boot marker on h1")
    wait_for(lambda: len(ticks(lab.console("h1", vm_id))) >= 2, timeout=30, what=f"{name} ticking")
    return vm_id


def migrate(lab: Cluster, vm_id: str, **body) -> dict:
    response = lab.client.post(f"/api/v1/vms/{vm_id}/migrate", json=body)
    assert response.status_code == 202, response.get_json()
    return response.get_json()["job"]


def delete(lab: Cluster, vm_id: str) -> None:
    response = lab.client.delete(f"/api/v1/vms/{vm_id}")
    if response.status_code == 202:
        wait_job(lab, response.get_json()["job"]["id"])


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_a_guest_live_migrates_a_to_b_to_a_without_rebooting(lab: Cluster, arch: str):
    vm_id = running_vm(lab, f"mig-live-{arch}", arch)
    try:
        started = time.monotonic()
        job = migrate(lab, vm_id, target_host="h2")
        assert job["queue"] == "host.h1"
        done = wait_job(lab, job["id"])
        to_b = time.monotonic() - started
        assert done["state"] == "succeeded", done
        assert done["progress"]["phase"] == "completed" and done["progress"]["percent"] == 100
        assert (lab.vm(vm_id)["host"], lab.vm(vm_id)["state"]) == ("h2", "running")
        assert lab.where(vm_id) == {"h1": None, "h2": "running"}
        last_on_a = ticks(lab.console("h1", vm_id))[-1]
        wait_for(lambda: ticks(lab.console("h2", vm_id)), timeout=30, what="ticks on h2")
        # The guest's counter carries on where it was: its RAM moved, it did not boot again.
        assert ticks(lab.console("h2", vm_id))[0] >= last_on_a
        assert marker_line(Arch(arch)) not in text(lab.console("h2", vm_id))

        # Back, without naming a target: h1 is the only other host. Jobs on the VM now go to h2's queue.
        job = migrate(lab, vm_id)
        assert job["queue"] == "host.h2"
        done = wait_job(lab, job["id"])
        assert done["state"] == "succeeded", done
        assert (lab.vm(vm_id)["host"], lab.vm(vm_id)["state"]) == ("h1", "running")
        assert lab.where(vm_id) == {"h1": "running", "h2": None}
        last_on_b = ticks(lab.console("h2", vm_id))[-1]
        wait_for(lambda: ticks(lab.console("h1", vm_id))[-1] > last_on_b, timeout=30, what="ticks back on h1")
        both = text(lab.console("h1", vm_id)) + text(lab.console("h2", vm_id))
        assert both.count(marker_line(Arch(arch))) == 1
        # Every tick from 1, across both moves: the serial logs miss no line of the guest's.
        seen = sorted(set(ticks(lab.console("h1", vm_id)) + ticks(lab.console("h2", vm_id))))
        assert seen[0] == 1 and seen == list(range(1, seen[-1] + 1))[-len(seen) :]
        print(f"\n{arch}: h1 -> h2 through archq in {to_b:.2f} s (job {done['result'].get('seconds')} s on the worker)")
    finally:
        delete(lab, vm_id)


def qemu_io(lab: Cluster, host: str, disk: str, *commands: str, share: bool = True) -> str:
    argv = ["qemu-io", "-r", *(["-U"] if share else []), "-f", "qcow2"]
    for command in commands:
        argv += ["-c", command]
    proc = lab.hosts[host].run([*argv, disk])
    assert proc.returncode == 0, proc.stderr
    return proc.stdout + proc.stderr


def assert_patterns(lab: Cluster, host: str, disk: str, share: bool = True) -> None:
    out = qemu_io(lab, host, disk, "read -P 0x5a 0 1M", "read -P 0xa5 2M 1M", share=share)
    assert "Pattern verification failed" not in out and out.count("read 1048576/1048576 bytes") == 2, out


def give_disk(lab: Cluster, vm_id: str) -> tuple[str, str]:
    """A qcow2 overlay (pattern 0xa5 at 2 MiB) on a content-addressed base image (0x5a at 0) that only h1
    has, attached to the stopped VM's definition. Returns (overlay, base) as host paths."""
    h1 = lab.hosts["h1"]
    base_dir = h1.host_data_dir / "images" / "base"
    scratch = f"{base_dir}/new.qcow2"
    for argv in (
        ["mkdir", "-p", str(base_dir)],
        ["qemu-img", "create", "-q", "-f", "qcow2", scratch, "16M"],
        ["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 1M", scratch],
    ):
        assert h1.run(argv).returncode == 0, argv
    digest = h1.run(["sha256sum", scratch]).stdout.split()[0]
    base = f"{base_dir}/{digest}.qcow2"
    overlay = f"{h1.host_data_dir}/vms/{vm_id}/data.qcow2"
    for argv in (
        ["mv", scratch, base],
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", base, overlay],
        ["qemu-io", "-f", "qcow2", "-c", "write -P 0xa5 2M 1M", overlay],
    ):
        assert h1.run(argv).returncode == 0, argv
    disk = ET.Element("disk", type="file", device="disk")
    ET.SubElement(disk, "driver", name="qemu", type="qcow2")
    ET.SubElement(disk, "source", file=overlay)
    ET.SubElement(disk, "target", dev="vdb", bus="virtio")
    conn = libvirt.open(h1.uri)
    try:
        conn.lookupByUUIDString(vm_id).attachDeviceFlags(ET.tostring(disk, encoding="unicode"),
                                                         libvirt.VIR_DOMAIN_AFFECT_CONFIG)  # fmt: skip
    finally:
        conn.close()
    return overlay, base


def act(lab: Cluster, vm_id: str, action: str) -> None:
    response = lab.client.post(f"/api/v1/vms/{vm_id}/{action}")
    assert response.status_code == 202, response.get_json()
    assert wait_job(lab, response.get_json()["job"]["id"])["state"] == "succeeded"


def test_non_shared_storage_copies_the_disk_and_its_base_then_cold_migration_moves_it_back(lab: Cluster):
    vm_id = running_vm(lab, "mig-disk")
    try:
        act(lab, vm_id, "stop")
        overlay, base = give_disk(lab, vm_id)
        act(lab, vm_id, "start")

        done = wait_job(lab, migrate(lab, vm_id, target_host="h2")["id"])
        assert done["state"] == "succeeded", done["error"]
        assert (done["result"]["storage"], done["result"]["how"]) == ("copied", "live")
        assert lab.where(vm_id) == {"h1": None, "h2": "running"}
        # The disk's content is on h2 (read beside the running guest), the base image was copied by SHA256.
        assert_patterns(lab, "h2", overlay)
        base_sha = base.rsplit("/", 1)[1].removesuffix(".qcow2")
        assert lab.hosts["h2"].run(["sha256sum", base]).stdout.split()[0] == base_sha
        assert lab.hosts["h1"].run(["test", "-e", overlay]).returncode != 0  # no stale twin left on h1

        act(lab, vm_id, "stop")
        done = wait_job(lab, migrate(lab, vm_id, target_host="h1", live=False)["id"])
        assert done["state"] == "succeeded", done["error"]
        assert done["result"]["how"] == "cold"
        assert (lab.vm(vm_id)["host"], lab.vm(vm_id)["state"]) == ("h1", "stopped")
        assert lab.where(vm_id) == {"h1": "stopped", "h2": None}
        assert_patterns(lab, "h1", overlay, share=False)
    finally:
        delete(lab, vm_id)


def test_cancel_aborts_a_running_migration_and_the_vm_stays_on_a(lab: Cluster):
    vm_id = running_vm(lab, "mig-abort")
    try:
        job = migrate(lab, vm_id, target_host="h2", max_bandwidth_mib_s=1)

        def copying() -> dict | None:
            progress = lab.job(job["id"])["progress"] or {}
            return progress if progress.get("phase") == "copying memory" and progress["bytes_total"] else None

        progress = wait_for(copying, timeout=60, interval=0.2, what="progress from libvirt's job stats")
        assert 0 <= progress["percent"] < 100 and 0 < progress["bytes_remaining"] <= progress["bytes_total"]
        assert lab.vm(vm_id)["state"] == "migrating"
        assert lab.client.post(f"/api/v1/jobs/{job['id']}/cancel").status_code == 202
        done = wait_job(lab, job["id"])
        assert (done["state"], done["error"]["code"]) == ("cancelled", "cancelled"), done
        assert (lab.vm(vm_id)["host"], lab.vm(vm_id)["state"]) == ("h1", "running")
        assert lab.where(vm_id) == {"h1": "running", "h2": None}
        last = ticks(lab.console("h1", vm_id))[-1]
        wait_for(lambda: ticks(lab.console("h1", vm_id))[-1] > last, timeout=30, what="the guest ticking on h1")
    finally:
        delete(lab, vm_id)


def test_a_target_with_a_changed_ssh_host_key_fails_the_job_and_leaves_the_vm_untouched(lab: Cluster):
    vm_id = running_vm(lab, "mig-hostkey")
    known_hosts = lab.known_hosts("h1")
    genuine = known_hosts.read_text()
    h1_key = next(line for line in genuine.splitlines() if line.startswith("10.250.0.1,"))
    # h1's key recorded for h2's address: what a man in the middle (or a reinstalled h2) looks like.
    known_hosts.write_text(f"{lab.hosts['h2'].address} {' '.join(h1_key.split()[1:3])}\n")
    try:
        done = wait_job(lab, migrate(lab, vm_id, target_host="h2")["id"])
        assert (done["state"], done["error"]["code"]) == ("failed", "target_ssh_host_key_changed"), done
        assert "not touched" in done["error"]["message"]
        assert (lab.vm(vm_id)["host"], lab.vm(vm_id)["state"]) == ("h1", "running")
        assert lab.where(vm_id) == {"h1": "running", "h2": None}
    finally:
        known_hosts.write_text(genuine)
        delete(lab, vm_id)


def test_a_source_worker_killed_mid_migration_leaves_the_vm_recorded_where_it_runs(lab: Cluster):
    vm_id = running_vm(lab, "mig-crash")
    try:
        job = migrate(lab, vm_id, target_host="h2", max_bandwidth_mib_s=2)
        wait_for(lambda: (lab.job(job["id"])["progress"] or {}).get("phase") == "copying memory", timeout=60,
                 interval=0.2, what="the migration copying memory")  # fmt: skip
        lab.kill_worker("h1")
        lab.start_worker("h1")
        done = wait_job(lab, job["id"], timeout=240)
        where = lab.where(vm_id)
        running = [host for host, state in where.items() if state == "running"]
        assert len(running) == 1, where
        wait_for(lambda: (lab.vm(vm_id)["host"], lab.vm(vm_id)["state"]) == (running[0], "running"), timeout=30,
                 what=lambda: f"the VM recorded on {running[0]}: {lab.vm(vm_id)} (job {done['state']})")  # fmt: skip
        print(f"\nworker killed mid-migration: job {done['state']}, VM on {running[0]}; events: "
              + "; ".join(e["message"] for e in done["events"] if e["message"]))  # fmt: skip
    finally:
        delete(lab, vm_id)


def test_the_ssh_transport_migrates_with_the_workers_key_and_known_hosts(lab: Cluster):
    """qemu+ssh between the libvirtds (what production runs instead of the lab's plain tcp)."""
    lab.stop_worker("h1")
    lab.start_worker("h1", ARCHQ_MIGRATION_TRANSPORT="ssh")
    vm_id = running_vm(lab, "mig-ssh")
    try:
        done = wait_job(lab, migrate(lab, vm_id, target_host="h2")["id"])
        assert done["state"] == "succeeded", done["error"]
        assert lab.where(vm_id) == {"h1": None, "h2": "running"}
    finally:
        delete(lab, vm_id)
        lab.stop_worker("h1")
        lab.start_worker("h1")


def test_a_cold_migration_of_a_running_vm_shuts_it_down_moves_it_and_boots_it_on_b(lab: Cluster):
    vm_id = running_vm(lab, "mig-cold")
    try:
        done = wait_job(lab, migrate(lab, vm_id, target_host="h2", live=False)["id"])
        assert done["state"] == "succeeded", done["error"]
        assert done["result"]["how"] == "cold"
        assert (lab.vm(vm_id)["host"], lab.vm(vm_id)["state"]) == ("h2", "running")
        assert lab.where(vm_id) == {"h1": None, "h2": "running"}
        # Not live: the guest booted again on h2.
        wait_for(lambda: marker_line(Arch.AMD64) in text(lab.console("h2", vm_id)), timeout=90, what="a boot on h2")
    finally:
        delete(lab, vm_id)


def test_a_live_migration_keeps_the_mac_and_the_guest_answers_on_the_target(lab: Cluster):
    vm_id = running_vm(lab, "mig-nic")
    try:
        vm = lab.vm(vm_id)
        assert vm["network"]["mode"] == "nat"
        nets = wait_for(
            lambda: [n for line in text(lab.console("h1", vm_id)).splitlines() if (n := parse_net_line(line))],
            timeout=60, what="the tiny guest's DHCP line on h1",
        )  # fmt: skip
        address = str(nets[0].ipv4.ip)
        assert nets[0].mac == vm["mac"]
        before = lab.hosts["h1"].run(["ping", "-c", "2", "-W", "2", address])
        assert before.returncode == 0, before.stdout + before.stderr
        done = wait_job(lab, migrate(lab, vm_id, target_host="h2")["id"])
        assert done["state"] == "succeeded", done
        conn = libvirt.open(lab.hosts["h2"].uri)
        try:
            xml = ET.fromstring(conn.lookupByUUIDString(vm_id).XMLDesc(0))
        finally:
            conn.close()
        assert xml.find("devices/interface/mac").get("address") == vm["mac"] == lab.vm(vm_id)["mac"]
        # h2's archq network has the same subnet as h1's: the guest keeps its lease and answers there.
        # The guest's first answers may race QEMU's announce of its MAC on h2's bridge.
        wait_for(
            lambda: lab.hosts["h2"].run(["ping", "-c", "1", "-W", "1", address]).returncode == 0,
            timeout=30, what=f"the guest to answer ping at {address} on h2",
        )  # fmt: skip
    finally:
        delete(lab, vm_id)


def test_attestations_follow_a_vm_across_hosts(lab: Cluster):
    """Each host signs what it did with its own key: the create and the migration out on h1, the arrival and the
    migration back on h2, the arrival back and a stop on h1; the chain links across both and verifies with the
    keys the control plane pinned."""
    vm_id = running_vm(lab, "mig-attest")
    try:
        moves = []
        for target in ("h2", "h1"):
            done = wait_job(lab, migrate(lab, vm_id, target_host=target)["id"])
            assert done["state"] == "succeeded", done
            moves += [done["id"], arrival_of(lab, done)["id"]]
        stop = lab.client.post(f"/api/v1/vms/{vm_id}/stop")
        assert stop.status_code == 202, stop.get_json()
        assert wait_job(lab, stop.get_json()["job"]["id"])["state"] == "succeeded"
        chain = lab.client.get(f"/api/v1/vms/{vm_id}/attestations").get_json()
        records = chain["records"]
        signed = [(r["payload"]["operation"], r["payload"]["host"], r["payload"]["details"].get("target"))
                  for r in records]  # fmt: skip
        assert signed == [
            ("create", "h1", None),
            ("migrate_out", "h1", "h2"),
            ("migrate_in", "h2", None),
            ("migrate_out", "h2", "h1"),
            ("migrate_in", "h1", None),
            ("stop", "h1", None),
        ]
        assert [r["payload"]["job_id"] for r in records[1:5]] == moves
        assert set(chain["keys"]) == {"h1", "h2"} and chain["keys"]["h1"] != chain["keys"]["h2"]
        # Each side of a move is signed with its own host's key, the arrival after the departure it follows.
        assert [r["payload"]["key"] for r in records] == [chain["keys"][r["payload"]["host"]][-1] for r in records]
        assert records[2]["payload"]["details"] == {"from_host": "h1", "migrate_job": moves[0]}
        assert records[2]["payload"]["prev"] == records[1]["hash"]
        # The arrival hashes the domain as it stands on the target (the stop after it changed no definition); the
        # departure left none on the source.
        assert records[1]["payload"]["domain_xml_sha256"] is None and records[2]["payload"]["domain_xml_sha256"]
        conn = libvirt.open(lab.hosts["h1"].uri)
        try:
            defined = conn.lookupByUUIDString(vm_id).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        finally:
            conn.close()
        assert records[4]["payload"]["domain_xml_sha256"] == attestation.sha256_hex(defined)
        assert [r["payload"]["accel"] for r in records] == [lab.vm(vm_id)["accel"]] * 6
        assert chain["unattested_jobs"] == []
        assert attestation.verify_chain(vm_id, records, chain["keys"]) == []
        # h2's record claimed by h1 (its signature under h1's name) does not verify.
        forged = [*records[:3], {**records[3], "payload": {**records[3]["payload"], "host": "h1"}}, *records[4:]]
        problems = attestation.verify_chain(vm_id, forged, chain["keys"])
        assert {p.index for p in problems} == {3, 4} and "not trusted for host 'h1'" in problems[0].message
        # Nor does h2's arrival claimed by h1, although h1 signed the departure: each host signs its own side.
        forged = [*records[:2], {**records[2], "payload": {**records[2]["payload"], "host": "h1"}}]
        problems = attestation.verify_chain(vm_id, forged, chain["keys"])
        assert {p.index for p in problems} == {2}
        assert any("not trusted for host 'h1'" in p.message for p in problems)
        assert any("the VM left for 'h2'" in p.message for p in problems)
    finally:
        delete(lab, vm_id)
