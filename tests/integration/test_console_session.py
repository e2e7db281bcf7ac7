"""Interactive console sessions on real guests: the API's WebSocket, Redis, the VM's worker and libvirt's
console stream, typed into like `archq vm console` does (client/console.py), on the tiny guest's shell."""

from __future__ import annotations

import os
import platform
import pty
import select
import subprocess
import sys
import time

import pytest

from client.console import ConsoleRefused, connect
from queues.arch import Arch, parse_arch
from queues.console import ConsoleSessions
from tests.support.api import create_vm, wait_host, wait_job
from tests.support.console import Transcript, run
from tests.support.live_api import live_api  # noqa: F401  (a fixture)
from tests.support.services import wait_for
from workers.guest.tiny import marker_line, ticks_in

pytestmark = pytest.mark.libvirtd

NATIVE = parse_arch(platform.machine())
FOREIGN = Arch.ARM64 if NATIVE is Arch.AMD64 else Arch.AMD64


def booted_vm(client, settings, arch: Arch, name: str) -> str:
    accepted = create_vm(client, name=name, arch=arch.value)
    job = wait_job(client, accepted["job"]["id"], timeout=120)
    assert job["state"] == "succeeded", job.get("error")
    vm_id = accepted["vm"]["id"]
    log = settings.data_dir / "vms" / vm_id / "console.log"
    # The marker through libvirt's <log>: the console tail still has the whole serial output.
    wait_for(
        lambda: log.exists() and marker_line(arch) in log.read_text(errors="replace"),
        timeout=90,
        what=f"the {arch} guest's boot marker",
    )
    return vm_id


def session(api, token: str, vm_id: str, force: bool = False) -> Transcript:
    ws, opened = connect(f"{api.url}/api/v1", token, vm_id, force)
    assert opened["type"] == "opened" and opened["host"] == "qemu-host"
    return Transcript(ws)


@pytest.fixture
def qemu_worker(client, start_qemu_worker):
    worker = start_qemu_worker()
    wait_host(client, "qemu-host", timeout=90)
    return worker


def test_typing_a_command_on_both_architectures(client, settings, qemu_worker, live_api):  # noqa: F811
    vms = {arch: booted_vm(client, settings, arch, f"console-{arch.value}") for arch in (NATIVE, FOREIGN)}
    assert client.get(f"/api/v1/vms/{vms[FOREIGN]}").get_json()["vm"]["emulated"] is True
    for arch, vm_id in vms.items():
        console = session(live_api, live_api.operator_token, vm_id)
        # The output line, not the echo of the typed command (which has `$((6*7))`).
        run(console, f"echo {arch.value}-$((6*7))-done", f"{arch.value}-42-done")
        console.ws.close()
    # The CLI in raw mode on a terminal, by the VM's name (its previous session was released as it closed).
    wait_for(lambda: not ConsoleSessions.from_url(settings.redis_url).holder(vms[NATIVE]), what="the release")
    cli_console(live_api, live_api.operator_token, f"console-{NATIVE.value}", "echo cli-$((5*5))-done", "cli-25-done")


def cli_console(api, token: str, vm_ref: str, command: str, expect: str) -> str:
    """`archq vm console` on a pseudo-terminal, as a person runs it: types `command`, waits for `expect`,
    leaves with Ctrl-]; everything the terminal showed."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "client.cli", "vm", "console", vm_ref],
        stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
        env={**os.environ, "ARCHQ_URL": api.url, "ARCHQ_TOKEN": token},
    )  # fmt: skip
    os.close(slave)
    shown = b""

    def read_until(needle: bytes, timeout: float) -> None:
        nonlocal shown
        deadline = time.monotonic() + timeout
        while needle not in shown:
            assert time.monotonic() < deadline, f"no {needle!r} from `archq vm console`; it showed {shown[-500:]!r}"
            if select.select([master], [], [], 0.5)[0]:
                shown += os.read(master, 4096)

    try:
        read_until(b"Escape character is ^]", 30)
        os.write(master, command.encode() + b"\r")
        read_until(expect.encode(), 30)
        os.write(master, b"\x1d")
        read_until(b"Console session ended: escape (Ctrl-])", 10)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return shown.decode(errors="replace")


def test_one_writer_and_a_worker_restart(client, settings, start_qemu_worker, qemu_worker, live_api):  # noqa: F811
    vm_id = booted_vm(client, settings, NATIVE, "console-writer")
    first = session(live_api, live_api.operator_token, vm_id)
    run(first, "echo first-$((1+1))", "first-2")

    with pytest.raises(ConsoleRefused, match="held by token:live-operator"):
        connect(f"{live_api.url}/api/v1", live_api.admin_token, vm_id)
    second = session(live_api, live_api.admin_token, vm_id, force=True)
    assert first.until_ended() == "the console was taken over by token:live-admin"
    run(second, "echo second-$((2+2))", "second-4")

    # The worker dies without a goodbye (SIGKILL); the session says so, and once a worker is back on the host
    # a new session works on the same, still running, guest.
    qemu_worker.kill()
    assert "stopped answering" in second.until_ended(timeout=20)
    start_qemu_worker()
    wait_host(client, "qemu-host", timeout=90)
    third = session(live_api, live_api.operator_token, vm_id)
    run(third, "echo third-$((3+3))", "third-6")
    third.ws.close()

    def events() -> list[tuple[str, str]]:
        rows = client.get(f"/api/v1/vms/{vm_id}/events").get_json()["events"]
        return [(e["kind"], e["actor"]) for e in rows]

    wait_for(lambda: len(events()) == 6, timeout=10, what="the third session's end recorded")
    # The first session's end and the second's start race (each is recorded by its own API thread).
    assert sorted(events()) == sorted(
        [("console_opened", "token:live-operator"), ("console_ended", "token:live-operator")] * 2
        + [("console_opened", "token:live-admin"), ("console_ended", "token:live-admin")]
    )


def test_the_console_log_misses_no_line_as_sessions_open_and_close(client, settings, qemu_worker, live_api):  # noqa: F811
    """The serial port is a pty whose libvirt <log> is the console tail: sessions opening and closing its slave
    side (libvirt's console stream) lose no line of the guest's, and neither does what the console's shell
    leaves on a line without ending it (its prompt, keys typed one by one), which the next tick then ends
    (test_migration's gapless check once read that as tick 2 missing)."""
    vm_id = booted_vm(client, settings, NATIVE, "console-log")

    def tail() -> str:
        console = client.get(f"/api/v1/vms/{vm_id}/console?bytes=65536").get_json()["console"]
        assert not console["truncated"], "the log outgrew the tail: the count below would start past 1"
        return console["text"]

    # Sessions held for different parts of the guest's one-second tick; in every other one a command typed
    # key by key over more than a second, so that a tick lands in the middle of its echo.
    for n in range(6):
        console = session(live_api, live_api.operator_token, vm_id)
        if n % 2:
            for key in f"echo session-$(({n}*11))":
                console.ws.send(key.encode())
                time.sleep(0.06)
            run(console, "", f"session-{n * 11}")
        time.sleep(0.15 * n)
        console.ws.close()
        wait_for(lambda: not ConsoleSessions.from_url(settings.redis_url).holder(vm_id), what="the release")
        time.sleep(0.4)
    last = ticks_in(tail())[-1]
    wait_for(lambda: ticks_in(tail())[-1] >= last + 3, timeout=30, what="three more ticks")
    seen = ticks_in(tail())
    assert seen == list(range(1, seen[-1] + 1)), repr(tail())
