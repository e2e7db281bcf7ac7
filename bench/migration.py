"""Live migration between the two lab hosts (tests/support/twohosts.py: two libvirtds in network namespaces
on this machine). archq: POST /api/v1/vms/<id>/migrate until its job succeeded, through the API (in-process),
Redis, the conductor and the source host's real `archq worker` (pre-checks over SSH, libvirt peer to peer,
progress reports), vs `virsh migrate --live --p2p --persistent --undefinesource --copy-storage-inc` of a
second tiny guest with the same kind of disk between the same hosts (they share no storage). Each round
moves each guest to the other host (A -> B, then B -> A). The tiny amd64 guest, 1 vCPU, 128 MiB, running
under TCG. Needs root (namespaces), libvirtd, sshd and the tiny guest."""

from __future__ import annotations

import itertools
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from bench.common import Samples, alternate, begin, bench_parser, compare, end
from queues.arch import Arch
from tests.support.migration_lab import TINY_CACHE, cluster
from tests.support.services import wait_for
from tests.support.twohosts import lab_available
from workers.domain_xml import DomainSpec, build_domain_xml, domain_name
from workers.guest.tiny import marker_line


def main() -> None:
    args = bench_parser(__doc__).parse_args()
    rounds = args.rounds or (1 if args.quick else 10)
    started = begin("migration: live migration between two hosts", args, probe_kvm=False)
    reason = lab_available()
    if reason:
        raise SystemExit(f"the two-host lab is unavailable: {reason}")
    with tempfile.TemporaryDirectory(prefix="archq-bench-mig-", dir="/tmp") as tmp, cluster(Path(tmp)) as lab:
        client = lab.client
        h1, h2 = lab.hosts["h1"], lab.hosts["h2"]
        tag = uuid.uuid4().hex[:6]
        response = client.post(
            "/api/v1/vms",
            json={"name": f"mig-bench-{tag}", "arch": "amd64", "vcpus": 1, "memory_mib": 128, "image": "tiny",
                  "host": "h1"},
        )  # fmt: skip
        vm_id = response.get_json()["vm"]["id"]
        wait_for(lambda: lab.vm(vm_id)["state"] == "running", timeout=120, what="the archq guest running")
        wait_for(lambda: marker_line(Arch.AMD64) in lab.console("h1", vm_id).read_text(errors="replace"),
                 timeout=90, what="the archq guest booted")  # fmt: skip

        raw_name = f"mig-raw-{tag}"
        raw_id = str(uuid.uuid4())
        # The raw guest boots the same kernel and initrd from its own directory, at the same path on both hosts
        # (copies without the xattrs the root libvirtd leaves on the cache's files).
        for host in (h1, h2):
            (host.data_dir / "vms" / raw_id).mkdir(mode=0o755)
            for name in ("vmlinuz", "initrd.img"):
                shutil.copyfile(TINY_CACHE / "amd64" / name, host.data_dir / "vms" / raw_id / name)
            # The same 64 MiB qcow2 state disk an archq VM has, on both hosts: libvirt copies it into the
            # target's (as archq does when hosts do not share storage).
            disk = host.data_dir / "vms" / raw_id / "disk.qcow2"
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "64M"], check=True)
        raw_dir = h1.host_data_dir / "vms" / raw_id
        spec = DomainSpec(
            uuid=raw_id, name=raw_name, arch=Arch.AMD64, vcpus=1, memory_mib=128, kernel=raw_dir / "vmlinuz",
            initrd=raw_dir / "initrd.img", cmdline="console=ttyS0 loglevel=1 panic=-1 edd=off",
            serial_log=raw_dir / "console.log", domain_type="qemu", disk=raw_dir / "disk.qcow2",
        )  # fmt: skip
        xml = Path(tmp) / "raw.xml"
        xml.write_text(build_domain_xml(spec))
        # The archq guest's first migration copies the kernel and initrd to h2; the raw guest needs them there.
        first = client.post(f"/api/v1/vms/{vm_id}/migrate", json={"target_host": "h2"}).get_json()["job"]["id"]
        wait_for(lambda: lab.job(first)["state"] == "succeeded", timeout=120, what="the first archq migration")
        lab.wait_idle(vm_id)
        subprocess.run(["virsh", "-c", h1.uri, "define", str(xml)], check=True, capture_output=True)
        subprocess.run(["virsh", "-c", h1.uri, "start", domain_name(raw_name)], check=True, capture_output=True)
        wait_for(lambda: marker_line(Arch.AMD64) in lab.console("h1", raw_id).read_text(errors="replace")
                 if lab.console("h1", raw_id).exists() else False, timeout=90, what="the raw guest booted")  # fmt: skip
        print(f"{rounds} rounds; h1 <-> h2 over qemu+tcp, peer to peer; tiny amd64 guest under TCG, 128 MiB")

        archq_at = itertools.cycle(["h1", "h2"])
        raw_at = itertools.cycle([(h1, h2), (h2, h1)])

        def archq_round(_round: int) -> Samples:
            target = next(archq_at)
            submitted = time.perf_counter()
            response = client.post(f"/api/v1/vms/{vm_id}/migrate", json={"target_host": target})
            if response.status_code != 202:
                raise RuntimeError(f"migrate answered {response.status_code}: {response.get_json()}")
            job_id = response.get_json()["job"]["id"]
            job = wait_for(lambda: (j := lab.job(job_id))["state"] in ("succeeded", "failed", "cancelled") and j,
                           timeout=120, interval=0.01, what="the migration job")  # fmt: skip
            if job["state"] != "succeeded":
                raise RuntimeError(f"migration failed: {job['error']}")
            took = time.perf_counter() - submitted
            # Untimed: the target signs the arrival (a job of its own) before the VM takes the next migration.
            lab.wait_idle(vm_id)
            return {"migrate s": [took]}

        def raw_round(_round: int) -> Samples:
            source, target = next(raw_at)
            submitted = time.perf_counter()
            subprocess.run(
                ["virsh", "-c", source.uri, "migrate", "--live", "--p2p", "--persistent", "--undefinesource",
                 "--auto-converge", "--abort-on-error", "--copy-storage-inc", domain_name(raw_name),
                 target.migration_uri],
                check=True, capture_output=True, timeout=120,
            )  # fmt: skip
            return {"migrate s": [time.perf_counter() - submitted]}

        results = alternate(rounds, {"archq": archq_round, "virsh": raw_round}, fmt="{:.3f}")
    compare("live migration, submit -> done", "s", results["archq"]["migrate s"], results["virsh"]["migrate s"],
            "virsh migrate --live --p2p", rate=False)  # fmt: skip
    end(started)


if __name__ == "__main__":
    main()
