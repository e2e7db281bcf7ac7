"""Boot to SSH of a real guest: the debian-12 image (workers/guest/debian.py) of each architecture, through
archq (POST /api/v1/vms with an SSH key, then the address and host keys the VM's JSON shows, then an SSH login
running `uname -m` with the host key verified) vs the same image started by hand: a qcow2 overlay made with
`qemu-img`, a NoCloud seed made with `genisoimage`, the same domain XML (workers.domain_xml) defined and
started with `virsh` on the same libvirt network, the address from libvirt's DHCP leases, the host keys from
the serial console, and the same SSH login. 2 vCPUs, 1 GiB, on qemu:///system; the arm64 guest runs under TCG
on an x86-64 host (emulated, as archq routes it). archq and virsh alternate, one guest at a time; every domain
made here is removed at the end, whatever happens."""

from __future__ import annotations

import itertools
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import libvirt
import paramiko

from bench.common import (
    IMAGES_DIR,
    PROBE_CACHE_DIR,
    PROBE_FILE,
    QEMU_HOST,
    Http,
    Samples,
    Stack,
    begin,
    bench_parser,
    compare,
    end,
    median,
    wait_host,
    wait_job,
)
from bench.debian_guest import BOOT_TIMEOUT_S, login, poll, raw_debian, run
from bench.vm import URI, remove_domains
from queues.arch import Arch, parse_arch
from workers.guest.debian import ensure_debian_image

NETWORK = "archq"
UNAME = {Arch.AMD64: "x86_64", Arch.ARM64: "aarch64"}
GUEST = {"vcpus": 2, "memory_mib": 1024, "image": "debian-12"}


def ssh_uname(address: str, host_keys: list[str], key: paramiko.PKey) -> str | None:
    """`uname -m` over SSH as `debian`, accepting only `host_keys`; None while the guest does not answer."""
    client = login(address, host_keys, key)
    if client is None:
        return None
    try:
        return run(client, "uname -m", timeout=30).strip() or None
    except (OSError, paramiko.SSHException, RuntimeError):
        return None
    finally:
        client.close()


def main() -> None:
    args = bench_parser(__doc__).parse_args()
    rounds = args.rounds or (1 if args.quick else 3)
    started = begin("guest_boot: debian-12 boot to SSH, archq vs virsh", args, probe_kvm=True)
    for tool in ("virsh", "genisoimage", "qemu-img"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (.ci/setup installs it)")
    native = parse_arch(platform.machine())
    # The short mode boots only the host's own architecture: an emulated Debian boot takes minutes under TCG,
    # and CI's short mode is proof that the script runs, not figures to read.
    arches = [native] if args.quick else list(Arch)
    images = {arch: ensure_debian_image(arch, IMAGES_DIR) for arch in arches}
    # paramiko cannot generate Ed25519 keys; an ECDSA key is as good for a login.
    key = paramiko.ECDSAKey.generate()
    public_key = f"{key.get_name()} {key.get_base64()} bench"
    tag = uuid.uuid4().hex[:6]
    numbers = itertools.count()
    stack_env = {"ARCHQ_LIBVIRT_URI": URI, "ARCHQ_CAPABILITIES_FILE": "", "ARCHQ_ACCEL": "auto",
                 "ARCHQ_HOSTNAME": QEMU_HOST, "ARCHQ_HEARTBEAT_INTERVAL_S": "1"}  # fmt: skip
    results: dict[Arch, dict[str, Samples]] = {arch: {"archq": {}, "virsh": {}} for arch in Arch}
    conn = libvirt.open(URI)
    try:
        with Stack(**stack_env) as stack:
            if (PROBE_CACHE_DIR / PROBE_FILE).exists():
                shutil.copy(PROBE_CACHE_DIR / PROBE_FILE, stack.data_dir / PROBE_FILE)
            register = [sys.executable, "-m", "client.cli", "images", "register", "debian-12"]
            subprocess.run(register, env={**os.environ, **stack.env}, check=True, capture_output=True)
            _api, base = stack.api()
            stack.archq("conductor")
            worker = stack.archq("worker")
            http = Http(base, stack.token)
            host = wait_host(http, QEMU_HOST, timeout=120, child=worker)
            raw_dir = Path(tempfile.mkdtemp(prefix="raw-", dir=stack.dir))
            raw_dir.chmod(0o755)
            print(f"{rounds} round(s) per arch ({', '.join(arches)}); worker on {URI}, native {native} under "
                  f"{host['accel']}; debian-12, 2 vCPUs, 1 GiB; heartbeat every 1 s")  # fmt: skip

            def archq_boot(arch: Arch) -> float:
                submitted = time.perf_counter()
                request = {"name": f"boot-{tag}-{next(numbers)}", "arch": arch.value, **GUEST}
                status, body = http.call("POST", "/vms", {**request, "ssh_authorized_keys": [public_key]})
                if status != 202:
                    raise RuntimeError(f"POST /vms answered {status}: {body}")
                vm_id = body["vm"]["id"]
                wait_job(http, body["job"]["id"], timeout=300)
                running = time.perf_counter() - submitted

                def known() -> dict | None:
                    vm = http.call("GET", f"/vms/{vm_id}")[1]["vm"]
                    return vm if vm["addresses"] and vm["ssh_host_keys"] else None

                vm = poll(known, BOOT_TIMEOUT_S, "address and host keys in the VM's JSON")
                known_at = time.perf_counter() - submitted
                uname = poll(lambda: ssh_uname(vm["addresses"][0]["ipv4"], vm["ssh_host_keys"], key),
                             BOOT_TIMEOUT_S, "SSH login")  # fmt: skip
                took = time.perf_counter() - submitted
                print(f"   archq {arch}: running {running:.1f} s, address and keys {known_at:.1f} s, SSH {took:.1f} s")
                assert uname == UNAME[arch], uname
                wait_job(http, http.call("DELETE", f"/vms/{vm_id}")[1]["job"]["id"], timeout=120)
                return took

            def virsh_boot(arch: Arch) -> float:
                domain_type = "qemu" if arch != native or host["accel"] == "tcg" else host["accel"]
                with raw_debian(conn, images[arch], raw_dir, f"raw-{tag}-{next(numbers)}", key, network=NETWORK,
                                domain_type=domain_type) as guest:  # fmt: skip
                    uname = run(guest.client, "uname -m").strip()
                took = guest.milestones["ssh"]
                print("   virsh " + arch + ": " + ", ".join(f"{k} {v:.1f} s" for k, v in guest.milestones.items()))
                assert uname == UNAME[arch], uname
                return took

            for number in range(1, rounds + 1):
                for arch in arches:
                    order = ("archq", "virsh") if number % 2 else ("virsh", "archq")
                    line = []
                    for contender in order:
                        boot = archq_boot if contender == "archq" else virsh_boot
                        seconds = boot(arch)
                        results[arch][contender].setdefault("boot s", []).append(seconds)
                        line.append(f"{contender} {seconds:.1f} s")
                    print(f"round {number}/{rounds} {arch}: " + ", ".join(line), flush=True)
    finally:
        conn.close()
        left = remove_domains(tag)
        if left:
            print(f"removed {left} domain(s) left behind by this run")
    for arch in Arch:
        archq, raw = results[arch]["archq"].get("boot s", []), results[arch]["virsh"].get("boot s", [])
        if archq and raw:
            compare(f"{arch} debian-12 boot -> SSH `uname -m`", "s", archq, raw, "virsh", rate=False)
    every = [s for arch in Arch for s in results[arch]["archq"].get("boot s", [])]
    if every:
        print(f"(archq boot-to-SSH over both architectures: median {median(every):.1f} s)")
    end(started)


if __name__ == "__main__":
    main()
