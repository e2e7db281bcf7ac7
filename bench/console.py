"""Interactive console keystroke-to-echo round trip on loopback through the whole path: one key sent on the
API's WebSocket (as `archq vm console` does), Redis, the VM's worker, libvirt's console stream, the guest's
shell echoing it, and back; vs the same key on libvirt's console stream opened directly by this process (what
`virsh console` does, the floor under any remote console). The tiny guest on qemu:///system, native
architecture; archq and the direct stream alternate rounds (never both attached: a stream is taken over by the
next). Prints p50 and p99 of each and their ratio; archq's target is p50 <= 50 ms."""

from __future__ import annotations

import platform
import queue
import shutil
import threading
import time
import uuid

from simple_websocket import ConnectionClosed

from bench.common import (
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
    percentile,
    wait_host,
    wait_job,
)
from bench.vm import URI, remove_domains
from client.console import ConsoleRefused, connect
from queues.arch import parse_arch
from tests.support.services import wait_for
from workers.guest.tiny import marker_line
from workers.hypervisor import LibvirtHypervisor

# Keys the guest never prints on its own (its ticks are `archq-tiny tick N`, its prompt `/ # `).
KEYS = b"XZJWKYVQ"
KILL_LINE = b"\x15"  # Ctrl-U: the typed keys never pile up into a long line
TARGET_P50_MS = 50.0
ECHO_TIMEOUT_S = 5.0


def measure(send, received: queue.Queue[bytes], keys: int) -> list[float]:
    """Round trips in ms of `keys` single keystrokes, each waited for before the next is sent."""
    samples = []
    for n in range(keys):
        key = KEYS[n % len(KEYS) : n % len(KEYS) + 1]
        sent = time.perf_counter()
        send(key)
        deadline = sent + ECHO_TIMEOUT_S
        seen = b""
        while key not in seen:
            seen += received.get(timeout=max(0.001, deadline - time.perf_counter()))
        samples.append((time.perf_counter() - sent) * 1000)
        if n % 16 == 15:
            send(KILL_LINE)
            time.sleep(0.05)
            _drain(received)
    send(KILL_LINE)
    return samples


def _drain(received: queue.Queue[bytes]) -> None:
    while not received.empty():
        received.get_nowait()


def _connect(base: str, token: str, vm_id: str):
    try:
        return connect(base, token, vm_id)[0]
    except ConsoleRefused as exc:
        if "held by" in str(exc):
            return None
        raise


def main() -> None:
    args = bench_parser(__doc__).parse_args()
    rounds = args.rounds or (1 if args.quick else 5)
    keys = 20 if args.quick else 50
    started = begin("console: keystroke-to-echo round trip", args, probe_kvm=True)
    if shutil.which("virsh") is None:
        raise SystemExit("virsh is not installed (apt-get install libvirt-clients)")
    native = parse_arch(platform.machine())
    tag = uuid.uuid4().hex[:6]
    stack_env = {
        "ARCHQ_LIBVIRT_URI": URI,
        "ARCHQ_CAPABILITIES_FILE": "",
        "ARCHQ_ACCEL": "auto",
        "ARCHQ_HOSTNAME": QEMU_HOST,
    }
    try:
        with Stack(**stack_env) as stack:
            if (PROBE_CACHE_DIR / PROBE_FILE).exists():
                shutil.copy(PROBE_CACHE_DIR / PROBE_FILE, stack.data_dir / PROBE_FILE)
            _api, base = stack.api()
            stack.archq("conductor")
            worker = stack.archq("worker")
            http = Http(base, stack.token)
            host = wait_host(http, QEMU_HOST, timeout=120, child=worker)
            status, body = http.call("POST", "/vms", {**TINY, "arch": native.value, "name": f"console-{tag}"})
            if status != 202:
                raise RuntimeError(f"POST /vms answered {status}: {body}")
            wait_job(http, body["job"]["id"], timeout=120)
            vm_id = body["vm"]["id"]
            log = stack.data_dir / "vms" / vm_id / "console.log"
            wait_for(
                lambda: log.exists() and marker_line(native) in log.read_text(errors="replace"),
                timeout=120,
                what="the guest's boot marker",
            )
            print(f"{rounds} rounds of {keys} keys; tiny {native} guest under {host['accel']} on {URI}")
            direct = LibvirtHypervisor(URI)

            def archq_round(_round: int) -> Samples:
                # The previous round's session is released by the API a moment after its WebSocket closed.
                ws = wait_for(lambda: _connect(base, stack.token, vm_id), timeout=5, interval=0.05, what="the console")
                received: queue.Queue[bytes] = queue.Queue()
                reader_done = False

                def pump() -> None:
                    while not reader_done:
                        try:
                            message = ws.receive(timeout=0.5)
                        except ConnectionClosed:
                            return
                        if isinstance(message, bytes | bytearray):
                            received.put(bytes(message))

                reader = threading.Thread(target=pump, daemon=True)
                reader.start()
                try:
                    return {"echo ms": measure(ws.send, received, keys)}
                finally:
                    reader_done = True
                    ws.close()
                    reader.join(timeout=2)

            def direct_round(_round: int) -> Samples:
                received: queue.Queue[bytes] = queue.Queue()
                stream = direct.open_console(vm_id, received.put, lambda _why: None)
                try:
                    return {"echo ms": measure(stream.send, received, keys)}
                finally:
                    stream.close()

            results = alternate(rounds, {"archq": archq_round, "libvirt stream": direct_round}, fmt="{:.1f}")
            direct.close()
    finally:
        remove_domains(f"console-{tag}")
    ours, floor = results["archq"]["echo ms"], results["libvirt stream"]["echo ms"]
    compare("keystroke-to-echo round trip", "ms", ours, floor, "libvirt stream", rate=False)
    p50 = percentile(ours, 50)
    verdict = "meets" if p50 <= TARGET_P50_MS else "MISSES"
    p99 = percentile(ours, 99)
    print(f"   archq p50 {p50:.1f} ms, p99 {p99:.1f} ms: {verdict} the p50 <= {TARGET_P50_MS:.0f} ms target")
    end(started)


if __name__ == "__main__":
    main()
