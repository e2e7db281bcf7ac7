"""Speed of emulated guests once they run, per TCG CPU configuration, in two guests. One guest at a time; the
candidates alternate within each round (the order reverses every round). Throughput ratios are against
KubeVirt's choice (`max`). Nova's default (`cpu_mode=host-model` for `virt_type=qemu`) names the host's CPU,
which a guest of another architecture cannot get: no candidate.

The tiny guest (the tiny guest's Debian cloud kernel and busybox, workers/guest/tiny.py, with a benchmark /init
appended to its initramfs) booted on qemu:///system under TCG (domain type `qemu`) with each candidate
configuration, built by archq's own workers.domain_xml.build_domain_xml. Inside the guest, timed with
/proc/uptime: a CPU-bound part (`dd` of N MiB of zeros piped through `sha256sum`), a syscall-heavy part
(spawning /bin/true M times) and, with 2 vCPUs, the CPU part on each vCPU at once. From the host: start to the
guest's first userspace line (boot), and the QEMU process's RSS when booted and after the workload.
Candidates: archq's default, `max` (KubeVirt's choice for emulated guests), `max,pauth-impdef=on` (arm64),
named models, MTTCG on (QEMU's default here) vs off (`-accel tcg,thread=single`, through an emulator wrapper
since libvirt has no element for it) with 2 vCPUs, and translation-block cache sizes (libvirt
`<features><tcg><tb-cache>`) vs QEMU's default (1 GiB).

The debian-12 image (workers/guest/debian.py; 2 vCPUs, 1 GiB; full mode only: an emulated Debian boot takes
minutes) started by hand on libvirt's NAT network (bench/debian_guest.py), its own userland driven over a
verified SSH login: `sha256sum` of N MiB (CPU), `gzip -6` of 16 MiB of the guest's own programs
(compression), M spawns of /bin/true from bash (syscalls), the CPU part on both vCPUs at once (parallel);
boot to the SSH login; QEMU's RSS after the login and after the workload. Candidates: archq's default as archq
runs it (its tb-cache), `max`, archq's CPU with QEMU's 1 GiB tb-cache and with single-threaded TCG, and the
other configurations archq knows for the arch (named models, `max,pauth-impdef=on`)."""

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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import libvirt
import paramiko

from bench.common import IMAGES_DIR, begin, bench_parser, end, median
from bench.debian_guest import raw_debian, run
from bench.vm import URI, remove_domains
from queues.arch import Arch
from queues.emulation import TB_CACHE_MIB, TCG_CPUS, TcgCpu, default_tcg_cpu
from tests.support.raw_guest import ensure_network
from workers.domain_xml import DomainSpec, build_domain_xml, domain_name
from workers.guest.debian import ensure_debian_image
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

# The debian-12 part, one bash script over SSH: cloud-init's first boot finishes first (it competes for the
# vCPUs), the compression input is made untimed, then each part prints `BENCH <part> <start> <end>`.
DEBIAN_WORKLOAD = """cloud-init status --wait > /dev/null || true
now() {{ date +%s.%N; }}
cpu() {{ dd if=/dev/zero bs=1M count={mib} 2>/dev/null | sha256sum > /dev/null; }}
cat /usr/bin/* 2>/dev/null | head -c 16M > /dev/shm/programs
t=$(now); cpu; echo "BENCH cpu $t $(now)"
t=$(now); gzip -6 -c /dev/shm/programs > /dev/null; echo "BENCH gzip $t $(now)"
t=$(now); for i in $(seq {spawns}); do /bin/true; done; echo "BENCH spawn $t $(now)"
t=$(now); for c in $(seq $(nproc)); do cpu & done; wait; echo "BENCH parallel $t $(now)"
"""
DEBIAN_GZIP_MIB = 16
# Debian's coreutils hash several times as fast as busybox: more work, so each part takes seconds.
DEBIAN_MIB, DEBIAN_SPAWNS = 256, 200

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


def debian_candidates(arch: Arch) -> list[Candidate]:
    """2 vCPUs each, as a Debian guest usually has: what archq runs, KubeVirt's `max`, archq's CPU with QEMU's
    translation cache and with single-threaded TCG, and the other configurations archq knows for the arch."""
    default = default_tcg_cpu(arch)
    found = [
        Candidate(f"archq default ({default.name}, tb-cache {TB_CACHE_MIB} MiB)", arch, default, 2, TB_CACHE_MIB),
        Candidate("max (KubeVirt)", arch, TCG_CPUS[arch]["maximum"], 2),
        Candidate(f"{default.name}, QEMU's tb-cache (1 GiB)", arch, default, 2),
        Candidate(f"{default.name}, single-thread TCG", arch, default, 2, TB_CACHE_MIB, single_thread=True),
    ]
    others = [c for c in TCG_CPUS[arch].values() if c not in (default, TCG_CPUS[arch]["maximum"])]
    return found + [Candidate(c.name, arch, c, 2) for c in others]


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


def run_debian_once(conn: libvirt.virConnect, work: Path, guests: dict, tag: str, c: Candidate, load: dict) -> dict:
    image = guests[(c.arch, "debian")]
    name = f"emu-{tag}-{uuid.uuid4().hex[:8]}"
    emulator = guests[(c.arch, "wrapper")] if c.single_thread else None
    with raw_debian(conn, image, work, name, guests["key"], network=guests["network"], domain_type="qemu",
                    vcpus=c.vcpus, tcg_cpu=c.cpu, tb_cache_mib=c.tb_cache_mib, emulator=emulator) as guest:  # fmt: skip
        figures = {"boot s": guest.milestones["ssh"], "RSS booted MiB": qemu_rss_mib(guest.domain)}
        if c.vcpus > 1:
            print(f"      ({c.label}: TCG threads {tcg_threads(guest.domain)})")
        output = run(guest.client, DEBIAN_WORKLOAD.format(**load), timeout=TIMEOUT_S)
        for part, begun, ended in LINE.findall(output):
            figures[f"{part} s"] = float(ended) - float(begun)
        figures["RSS after MiB"] = qemu_rss_mib(guest.domain)
    return figures


Results = dict[Candidate, dict[str, list[float]]]
# A throughput column: its heading, the figure (seconds) it divides, and the amount of work per candidate.
Rate = tuple[str, str, Callable[[Candidate], float]]


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--arch", choices=[a.value for a in Arch], action="append", help="guest arch(es); default both")
    parser.add_argument("--image", choices=["tiny", "debian-12", "both"], help="guest(s); tiny quick, both full")
    parser.add_argument("--mib", type=int, help="MiB hashed by the CPU part (8 quick, 32 full; debian-12: 256)")
    parser.add_argument("--only", action="append", help="only the candidates whose label contains this")
    parser.add_argument("--tb-cache-only", action="store_true", help="only archq's default vs the tb-cache sizes")
    parser.add_argument("--spawns", type=int, help="spawns by the syscall part (40 quick, 100 full; debian-12: 200)")
    args = parser.parse_args()
    rounds = args.rounds or (1 if args.quick else 2)
    mib, spawns = args.mib or (8 if args.quick else 32), args.spawns or (40 if args.quick else 100)
    arches = [Arch(a) for a in args.arch] if args.arch else list(Arch)
    image = args.image or ("tiny" if args.quick else "both")
    started = begin("emulation: in-guest speed per TCG CPU configuration", args, probe_kvm=False)
    tag = uuid.uuid4().hex[:6]
    work = Path(tempfile.mkdtemp(prefix="archq-emu-", dir="/var/tmp"))
    work.chmod(0o755)
    guests = prepare_guests(work, arches, image)
    conn = libvirt.open(URI)
    tiny: Results = {}
    debian: Results = {}
    failed = False
    try:
        if image != "debian-12":
            load = f"bench_mib={mib} bench_spawns={spawns}"
            print(f"tiny: {rounds} round(s); tiny guest kernel + benchmark /init, 256 MiB; {load}; one at a time")
            for arch in arches:
                contenders = chosen(candidates(arch, args.quick, args.tb_cache_only), args.only)
                alternate_rounds(tiny, rounds, contenders, lambda c: run_once(conn, work, guests, tag, c, load))
        if image != "tiny":
            guests["network"] = ensure_network(conn)
            # paramiko cannot generate Ed25519 keys; an ECDSA key is as good for a login.
            guests["key"] = paramiko.ECDSAKey.generate()
            work_load = {"mib": args.mib or DEBIAN_MIB, "spawns": args.spawns or DEBIAN_SPAWNS}
            print(f"debian-12: {rounds} round(s); 2 vCPUs, 1 GiB, over SSH; {work_load}; one guest at a time")
            for arch in arches:
                contenders = chosen(debian_candidates(arch), args.only)
                alternate_rounds(
                    debian, rounds, contenders, lambda c: run_debian_once(conn, work, guests, tag, c, work_load)
                )
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
    if tiny:
        rates: list[Rate] = [
            ("CPU MiB/s", "cpu s", lambda c: mib),
            ("spawns/s", "spawn s", lambda c: spawns),
            ("parallel MiB/s", "parallel s", lambda c: mib * c.vcpus),
        ]
        report("tiny guest", tiny, rates, compared=2)
    if debian:
        d_mib, d_spawns = args.mib or DEBIAN_MIB, args.spawns or DEBIAN_SPAWNS
        rates = [
            ("CPU MiB/s", "cpu s", lambda c: d_mib),
            ("gzip MiB/s", "gzip s", lambda c: DEBIAN_GZIP_MIB),
            ("spawns/s", "spawn s", lambda c: d_spawns),
            ("parallel MiB/s", "parallel s", lambda c: d_mib * c.vcpus),
        ]
        report("debian-12 over SSH (boot: to the SSH login)", debian, rates, compared=3)
    end(started)


def chosen(contenders: list[Candidate], only: list[str] | None) -> list[Candidate]:
    return [c for c in contenders if not only or any(part in c.label for part in only)]


def prepare_guests(work: Path, arches: list[Arch], image: str) -> dict:
    """Per arch: the tiny guest and its initramfs with the benchmark /init, the Debian image, and the
    single-threaded TCG emulator wrapper."""
    guests: dict = {}
    for arch in arches:
        wrapper = work / f"qemu-{arch}-single"
        wrapper.write_text(SINGLE_THREAD_WRAPPER.format(emulator=EMULATORS[arch]))
        wrapper.chmod(0o755)
        guests[(arch, "wrapper")] = wrapper
        if image != "tiny":
            guests[(arch, "debian")] = ensure_debian_image(arch, IMAGES_DIR)
        if image == "debian-12":
            continue
        guest = ensure_tiny_guest(arch, IMAGES_DIR / "tiny")
        initrd = work / f"initrd-{arch}.img"
        base = guest.initrd.read_bytes()
        # The kernel looks for a following archive only at a 4-byte aligned offset after the compressed one.
        initrd.write_bytes(base + b"\0" * (-len(base) % 512) + newc({"init": (0o100755, INIT.encode())}))
        initrd.chmod(0o644)
        guests[arch], guests[(arch, "initrd")] = guest, initrd
    return guests


def alternate_rounds(results: Results, rounds: int, contenders: list[Candidate], measure: Callable) -> None:
    """Every candidate once per round, the order reversed every other round; figures appended to `results`."""
    for number in range(1, rounds + 1):
        for c in contenders if number % 2 else reversed(contenders):
            figures = measure(c)
            for key, value in figures.items():
                results.setdefault(c, {}).setdefault(key, []).append(value)
            shown = ", ".join(f"{k} {v:.1f}" for k, v in figures.items())
            print(f"   round {number} {c.arch} {c.label}: {shown}", flush=True)


def report(title: str, results: Results, rates: list[Rate], compared: int) -> None:
    """A markdown table of medians; the first `compared` rates also relative to `max` of the same arch."""
    print(f"\n{title}: medians (throughput relative to max: >1 is faster):")
    versus = [f"{heading.split()[0].removesuffix('/s')} vs max" for heading, _, _ in rates[:compared]]
    columns = ["arch", "configuration", "boot s", *(r[0] for r in rates), "RSS booted MiB", "RSS after MiB", *versus]
    print("| " + " | ".join(columns) + " |")
    print("|---" * len(columns) + "|")

    def rate(figures: dict[str, list[float]], c: Candidate, r: Rate) -> float:
        return r[2](c) / median(figures[r[1]]) if figures.get(r[1]) else math.nan

    for c, figures in results.items():
        # Without `max` in the run (--tb-cache-only) there is nothing to compare with.
        kubevirt = next(((k, f) for k, f in results.items() if k.arch is c.arch and k.label.startswith("max (")), None)
        shown = ["-" if math.isnan(value := rate(figures, c, r)) else f"{value:.1f}" for r in rates]
        ratios = [f"{rate(figures, c, r) / rate(kubevirt[1], kubevirt[0], r):.2f}x" if kubevirt else "-"
                  for r in rates[:compared]]  # fmt: skip
        rss = [f"{median(figures['RSS booted MiB']):.0f}", f"{median(figures['RSS after MiB']):.0f}"]
        cells = [str(c.arch), c.label, f"{median(figures['boot s']):.1f}", *shown, *rss, *ratios]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    os.umask(0o022)
    # A CI timeout's SIGTERM still runs the cleanup (no domain left running).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    main()
