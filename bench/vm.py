"""VM lifecycle on real QEMU. Create-to-running: POST /api/v1/vms until its job succeeded (the domain runs),
through the API, its outbox, Redis and a real `archq worker` on qemu:///system with ARCHQ_ACCEL=auto, vs
`virsh define` + `virsh start` of the same domain XML (workers.domain_xml.build_domain_xml for the guest
from workers.guest.tiny.ensure_tiny_guest). Delete: DELETE /api/v1/vms/<id> until its job succeeded vs
`virsh destroy` + `virsh undefine`. The tiny guest of this host's architecture, 1 vCPU, 128 MiB, one VM at a
time, created and deleted in each round. Every domain made here is removed at the end, whatever happens."""

from __future__ import annotations

import itertools
import platform
import shutil
import subprocess
import time
import uuid

import libvirt

from bench.common import (
    IMAGES_DIR,
    PROBE_CACHE_DIR,
    PROBE_FILE,
    QEMU_HOST,
    TINY,
    Http,
    Samples,
    Stack,
    alternate,
    begin,
    bench_parser,
    compare,
    end,
    wait_host,
    wait_job,
)
from queues.arch import parse_arch
from workers.domain_xml import DomainSpec, build_domain_xml, domain_name
from workers.guest.tiny import ensure_tiny_guest

URI = "qemu:///system"


def virsh(*args: str) -> None:
    subprocess.run(["virsh", "-c", URI, *args], check=True, capture_output=True, timeout=120)


def remove_domains(tag: str) -> int:
    """Destroy and undefine every domain whose name carries this run's tag; returns how many there were."""
    conn = libvirt.open(URI)
    try:
        mine = [dom for dom in conn.listAllDomains() if tag in dom.name()]
        for dom in mine:
            if dom.isActive():
                dom.destroy()
            dom.undefine()
        return len(mine)
    finally:
        conn.close()


def main() -> None:
    args = bench_parser(__doc__).parse_args()
    rounds = args.rounds or (1 if args.quick else 10)
    started = begin("vm: create-to-running and delete on real QEMU", args, probe_kvm=True)
    if shutil.which("virsh") is None:
        raise SystemExit("virsh is not installed (apt-get install libvirt-clients)")
    native = parse_arch(platform.machine())
    guest = ensure_tiny_guest(native, IMAGES_DIR / "tiny")
    request = {**TINY, "arch": native.value}
    tag = uuid.uuid4().hex[:6]
    stack_env = {
        "ARCHQ_LIBVIRT_URI": URI,
        "ARCHQ_CAPABILITIES_FILE": "",
        "ARCHQ_ACCEL": "auto",
        "ARCHQ_HOSTNAME": QEMU_HOST,
    }
    try:
        with Stack(**stack_env) as stack:
            # The worker probes KVM once per host and kernel and caches the answer in its data dir: hand it
            # the answer the machine report above already got, as a restarted worker would have it.
            if (PROBE_CACHE_DIR / PROBE_FILE).exists():
                shutil.copy(PROBE_CACHE_DIR / PROBE_FILE, stack.data_dir / PROBE_FILE)
            _api, base = stack.api()
            stack.archq("conductor")
            worker = stack.archq("worker")
            http = Http(base, stack.token)
            host = wait_host(http, QEMU_HOST, timeout=120, child=worker)
            domain_type = "qemu" if host["accel"] == "tcg" else host["accel"]
            print(
                f"{rounds} rounds; worker on {URI} runs {native} guests under {host['accel']}; "
                f"tiny guest, 1 vCPU, 128 MiB"
            )
            raw_dir = stack.dir / "raw"
            raw_dir.mkdir(mode=0o755)
            numbers = itertools.count()

            def archq_round(_round: int) -> Samples:
                submitted = time.perf_counter()
                status, body = http.call("POST", "/vms", {"name": f"vm-{tag}-{next(numbers)}", **request})
                if status != 202:
                    raise RuntimeError(f"POST /vms answered {status}: {body}")
                wait_job(http, body["job"]["id"], timeout=120)
                created = time.perf_counter() - submitted
                submitted = time.perf_counter()
                status, deletion = http.call("DELETE", f"/vms/{body['vm']['id']}")
                if status != 202:
                    raise RuntimeError(f"DELETE /vms answered {status}: {deletion}")
                wait_job(http, deletion["job"]["id"], timeout=120)
                return {"create s": [created], "delete s": [time.perf_counter() - submitted]}

            def raw_round(_round: int) -> Samples:
                vm_id = str(uuid.uuid4())
                vm_dir = raw_dir / vm_id
                vm_dir.mkdir(mode=0o755)
                name = f"raw-{tag}-{next(numbers)}"
                spec = DomainSpec(
                    uuid=vm_id,
                    name=name,
                    arch=native,
                    vcpus=request["vcpus"],
                    memory_mib=request["memory_mib"],
                    kernel=guest.kernel,
                    initrd=guest.initrd,
                    cmdline=guest.cmdline,
                    serial_log=vm_dir / "console.log",
                    domain_type=domain_type,
                )
                xml = vm_dir / "domain.xml"
                xml.write_text(build_domain_xml(spec))
                submitted = time.perf_counter()
                virsh("define", str(xml))
                virsh("start", domain_name(name))
                created = time.perf_counter() - submitted
                submitted = time.perf_counter()
                virsh("destroy", domain_name(name))
                virsh("undefine", domain_name(name))
                return {"create s": [created], "delete s": [time.perf_counter() - submitted]}

            results = alternate(rounds, {"archq": archq_round, "virsh": raw_round}, fmt="{:.3f}")
    finally:
        left = remove_domains(tag)
        if left:
            print(f"removed {left} domain(s) left behind by this run")
    for metric, label in (("create s", "create -> running"), ("delete s", "delete -> gone")):
        compare(label, "s", results["archq"][metric], results["virsh"][metric], "virsh", rate=False)
    end(started)


if __name__ == "__main__":
    main()
