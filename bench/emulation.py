"""Speed of emulated guests once they run, per TCG CPU configuration: the same guest (the tiny guest's Debian
cloud kernel and busybox, workers/guest/tiny.py, with a benchmark /init appended to its initramfs) booted on
qemu:///system under TCG (domain type `qemu`) with each candidate configuration, built by archq's own
workers.domain_xml.build_domain_xml. Inside the guest, timed with /proc/uptime: a CPU-bound part (`dd` of N MiB
of zeros piped through `sha256sum`), a syscall-heavy part (spawning /bin/true M times) and, with 2 vCPUs, the
CPU part on each vCPU at once. From the host: start to the guest's first userspace line (boot), and the QEMU
process's RSS when booted and after the workload. One guest at a time; the candidates alternate within each
round (the order reverses every round). Throughput ratios are against KubeVirt's choice (`max`).

Candidates: archq's default, `max` (KubeVirt's choice for emulated guests), `max,pauth-impdef=on` (arm64), named
models, MTTCG on (QEMU's default here) vs off (`-accel tcg,thread=single`, through an emulator wrapper since
libvirt has no element for it) with 2 vCPUs, and translation-block cache sizes (libvirt
`<features><tcg><tb-cache>`) vs QEMU's default (1 GiB). Nova's default (`cpu_mode=host-model` for
`virt_type=qemu`) names the host's CPU, which a guest of another architecture cannot get: no candidate."""

from __future__ import annotations

import io
import math
import os
import re
import shutil
import signal
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import libvirt

from bench.common import IMAGES_DIR, begin, bench_parser, end, median
from bench.vm import URI, remove_domains
from queues.arch import Arch
from queues.emulation import TCG_CPUS, TcgCpu, default_tcg_cpu
from workers.domain_xml import DomainSpec, build_domain_xml, domain_name
from workers.guest.tiny import ensure_tiny_guest

# The start of a benchmark /init (also bench/migration.py's): the kernel filesystems, busybox's applets on the
# PATH, and `say` for a console line.
INIT_PRELUDE = """#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox --install -s /bin
export PATH=/bin
say() { printf '%s\\n' "$*" > /dev/console; }
"""
# Kernel parameters the kernel does not know reach /init as environment variables.
INIT = (
    INIT_PRELUDE
    + """up() { read u _ < /proc/uptime; echo $u; }
cpu() { dd if=/dev/zero bs=1M count=$bench_mib 2>/dev/null | sha256sum > /dev/null; }
say ""
say "BENCH-READY cpus=$(nproc)"
sleep 2
t=$(up); cpu; say "BENCH cpu $t $(up)"
t=$(up); i=0; while [ $i -lt $bench_spawns ]; do /bin/true; i=$((i + 1)); done; say "BENCH spawn $t $(up)"
if [ "$(nproc)" -gt 1 ]; then
    t=$(up); for c in $(seq $(nproc)); do cpu & done; wait; say "BENCH parallel $t $(up)"
fi
say "BENCH-DONE"
while true; do sleep 60; done
"""
)

# Rewrites libvirt's `-accel tcg...` into single-threaded TCG, then runs the real emulator.
SINGLE_THREAD_WRAPPER = """#!/bin/sh
n=$#; prev=
for a in "$@"; do
    if [ "$prev" = "-accel" ]; then a="$a,thread=single"; fi
    set -- "$@" "$a"; prev=$a
done
shift "$n"
exec {emulator} "$@"
"""

EMULATORS = {Arch.AMD64: "/usr/bin/qemu-system-x86_64", Arch.ARM64: "/usr/bin/qemu-system-aarch64"}
LINE = re.compile(r"BENCH (\w+) ([\d.]+) ([\d.]+)")
TIMEOUT_S = 600
# Translation-cache sizes measured against QEMU's default (1 GiB).
TB_CACHES = (256, 128, 64, 32)


@dataclass(frozen=True)
class Candidate:
    label: str
    arch: Arch
    cpu: TcgCpu
    vcpus: int = 1
    tb_cache_mib: int | None = None
    single_thread: bool = False


def candidates(arch: Arch, quick: bool, tb_cache_only: bool) -> list[Candidate]:
    default = default_tcg_cpu(arch)
    kubevirt = TCG_CPUS[arch]["maximum"]
    found = [Candidate(f"archq default ({default.name})", arch, default), Candidate("max (KubeVirt)", arch, kubevirt)]
    tb_caches = [Candidate(f"{default.name} tb-cache {mib} MiB", arch, default, tb_cache_mib=mib) for mib in TB_CACHES]
    if tb_cache_only:
        return [found[0], *tb_caches]
    if quick:
        return found
    others = [c for c in TCG_CPUS[arch].values() if c not in (default, kubevirt)]
    found += [Candidate(c.name, arch, c) for c in others]
    found += [
        Candidate(f"{default.name} 2 vCPUs MTTCG", arch, default, vcpus=2),
        Candidate(f"{default.name} 2 vCPUs single-thread", arch, default, vcpus=2, single_thread=True),
    ]
    return found + tb_caches


def newc(files: dict[str, tuple[int, bytes]]) -> bytes:
    """An uncompressed cpio (newc) archive; the kernel unpacks it over the initramfs before it."""
    out = io.BytesIO()
    for number, (name, (mode, data)) in enumerate([*files.items(), ("TRAILER!!!", (0, b""))], start=1):
        encoded = name.encode() + b"\0"
        fields = [number, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0]
        out.write(b"070701" + b"".join(f"{f:08x}".encode() for f in fields) + encoded)
        out.write(b"\0" * (-out.tell() % 4) + data + b"\0" * (-(out.tell() + len(data)) % 4))
    out.write(b"\0" * (-out.tell() % 512))
    return out.getvalue()


def qemu_rss_mib(name: str) -> float:
    pid = Path(f"/run/libvirt/qemu/{name}.pid").read_text().strip()
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def tcg_threads(name: str) -> list[str]:
    pid = Path(f"/run/libvirt/qemu/{name}.pid").read_text().strip()
    comms = (Path(task, "comm").read_text().strip() for task in Path(f"/proc/{pid}/task").iterdir())
    return sorted(c for c in comms if c.endswith("/TCG"))


def run_once(conn: libvirt.virConnect, work: Path, guests: dict, tag: str, c: Candidate, load: str) -> dict:
    guest = guests[c.arch]
    vm_id = str(uuid.uuid4())
    name = f"emu-{tag}-{vm_id[:8]}"
    log = work / f"{name}.log"
    spec = DomainSpec(
        uuid=vm_id, name=name, arch=c.arch, vcpus=c.vcpus, memory_mib=256, kernel=guest.kernel,
        initrd=guests[(c.arch, "initrd")], cmdline=f"{guest.cmdline} {load}", serial_log=log,
        domain_type="qemu", tcg_cpu=c.cpu, tb_cache_mib=c.tb_cache_mib,
    )  # fmt: skip
    xml = build_domain_xml(spec)
    if c.single_thread:
        xml = xml.replace("<devices>", f"<devices><emulator>{guests[(c.arch, 'wrapper')]}</emulator>", 1)
    dom = conn.defineXML(xml)
    try:
        started = time.monotonic()
        dom.create()
        full = domain_name(name)
        figures: dict[str, float] = {}
        deadline = started + TIMEOUT_S
        while "done" not in figures:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{c.label}: no BENCH-DONE within {TIMEOUT_S} s; console: {log.read_text()[-500:]}")
            text = log.read_text(errors="replace") if log.exists() else ""
            if "boot s" not in figures and "BENCH-READY" in text:
                figures["boot s"] = time.monotonic() - started
                figures["RSS booted MiB"] = qemu_rss_mib(full)
                threads = tcg_threads(full)
            for part, begun, ended in LINE.findall(text):
                figures[f"{part} s"] = float(ended) - float(begun)
            if "BENCH-DONE" in text:
                figures["RSS after MiB"] = qemu_rss_mib(full)
                figures["done"] = 1
            time.sleep(0.1)
        del figures["done"]
        if c.vcpus > 1:
            print(f"      ({c.label}: TCG threads {threads})")
        return figures
    finally:
        if dom.isActive():
            dom.destroy()
        dom.undefine()


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--arch", choices=[a.value for a in Arch], action="append", help="guest arch(es); default both")
    parser.add_argument("--mib", type=int, help="MiB hashed by the CPU part (8 quick, 32 full)")
    parser.add_argument("--tb-cache-only", action="store_true", help="only archq's default vs the tb-cache sizes")
    parser.add_argument("--spawns", type=int, help="processes spawned by the syscall part (40 quick, 100 full)")
    args = parser.parse_args()
    rounds = args.rounds or (1 if args.quick else 2)
    mib, spawns = args.mib or (8 if args.quick else 32), args.spawns or (40 if args.quick else 100)
    arches = [Arch(a) for a in args.arch] if args.arch else list(Arch)
    started = begin("emulation: in-guest speed per TCG CPU configuration", args, probe_kvm=False)
    tag = uuid.uuid4().hex[:6]
    work = Path(tempfile.mkdtemp(prefix="archq-emu-", dir="/var/tmp"))
    work.chmod(0o755)
    guests: dict = {}
    for arch in arches:
        guest = ensure_tiny_guest(arch, IMAGES_DIR / "tiny")
        initrd = work / f"initrd-{arch}.img"
        base = guest.initrd.read_bytes()
        # The kernel looks for a following archive only at a 4-byte aligned offset after the compressed one.
        initrd.write_bytes(base + b"\0" * (-len(base) % 512) + newc({"init": (0o100755, INIT.encode())}))
        wrapper = work / f"qemu-{arch}-single"
        wrapper.write_text(SINGLE_THREAD_WRAPPER.format(emulator=EMULATORS[arch]))
        for path, mode in ((initrd, 0o644), (wrapper, 0o755)):
            path.chmod(mode)
        guests[arch], guests[(arch, "initrd")], guests[(arch, "wrapper")] = guest, initrd, wrapper
    load = f"bench_mib={mib} bench_spawns={spawns}"
    print(f"{rounds} round(s); tiny guest kernel + benchmark /init, 256 MiB; {load}; one guest at a time")
    conn = libvirt.open(URI)
    results: dict[Candidate, dict[str, list[float]]] = {}
    failed = False
    try:
        for arch in arches:
            contenders = candidates(arch, args.quick, args.tb_cache_only)
            for number in range(1, rounds + 1):
                for c in contenders if number % 2 else reversed(contenders):
                    figures = run_once(conn, work, guests, tag, c, load)
                    for key, value in figures.items():
                        results.setdefault(c, {}).setdefault(key, []).append(value)
                    shown = ", ".join(f"{k} {v:.1f}" for k, v in figures.items())
                    print(f"   round {number} {arch} {c.label}: {shown}", flush=True)
    except BaseException:
        failed = True
        raise
    finally:
        conn.close()
        left = remove_domains(tag)
        if left:
            print(f"removed {left} domain(s) left behind by this run")
        if not failed:
            shutil.rmtree(work, ignore_errors=True)
    report(results, mib, spawns)
    end(started)


def report(results: dict[Candidate, dict[str, list[float]]], mib: int, spawns: int) -> None:
    print("\nmedians (throughput relative to max: >1 is faster):")
    columns = ["arch", "configuration", "boot s", "CPU MiB/s", "spawns/s", "parallel MiB/s", "RSS booted MiB",
               "RSS after MiB", "CPU vs max", "spawns vs max"]  # fmt: skip
    print("| " + " | ".join(columns) + " |")
    print("|---" * len(columns) + "|")
    for c, figures in results.items():
        kubevirt = next((f for k, f in results.items() if k.arch is c.arch and k.label.startswith("max (")), None)

        def rate(fig: dict[str, list[float]], key: str, amount: float) -> float:
            return amount / median(fig[key]) if fig.get(key) else math.nan

        cpu, spawn = rate(figures, "cpu s", mib), rate(figures, "spawn s", spawns)
        parallel = rate(figures, "parallel s", mib * c.vcpus)
        # Without `max` in the run (--tb-cache-only) there is nothing to compare with.
        versus = (
            (f"{cpu / rate(kubevirt, 'cpu s', mib):.2f}x", f"{spawn / rate(kubevirt, 'spawn s', spawns):.2f}x")
            if kubevirt
            else ("-", "-")
        )
        shown_parallel = "-" if math.isnan(parallel) else f"{parallel:.1f}"
        rss = f"{median(figures['RSS booted MiB']):.0f} | {median(figures['RSS after MiB']):.0f}"
        print(
            f"| {c.arch} | {c.label} | {median(figures['boot s']):.1f} | {cpu:.1f} | {spawn:.0f} | "
            f"{shown_parallel} | {rss} | {versus[0]} | {versus[1]} |"
        )


if __name__ == "__main__":
    os.umask(0o022)
    # A CI timeout's SIGTERM still runs the cleanup (no domain left running).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    main()
