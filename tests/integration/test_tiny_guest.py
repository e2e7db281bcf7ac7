"""Build the tiny guest of each architecture from Debian packages and boot it under plain QEMU (TCG, no
libvirt) until its marker line appears on the serial console.

Needs root, apt with reachable Debian mirrors, busybox-static, qemu-system-x86 and qemu-system-arm. The cache
survives between runs (ARCHQ_TEST_CACHE, else /var/tmp/archq-test-cache), so only the first run downloads."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from queues.arch import Arch
from workers.guest.tiny import MARKER, TinyGuest, ensure_tiny_guest, marker_line

pytestmark = pytest.mark.guest

BOOT_TIMEOUT_S = 60.0
TICK_TIMEOUT_S = 10.0

QEMU: dict[Arch, list[str]] = {
    Arch.AMD64: ["qemu-system-x86_64", "-machine", "q35", "-accel", "tcg"],
    Arch.ARM64: ["qemu-system-aarch64", "-machine", "virt", "-cpu", "cortex-a57", "-accel", "tcg"],
}


@pytest.fixture(scope="session")
def tiny_cache() -> Path:
    return Path(os.environ.get("ARCHQ_TEST_CACHE") or "/var/tmp/archq-test-cache") / "tiny"


@pytest.fixture(scope="session", params=list(Arch), ids=lambda a: a.value)
def tiny_guest(request: pytest.FixtureRequest, tiny_cache: Path) -> TinyGuest:
    started = time.monotonic()
    guest = ensure_tiny_guest(request.param, tiny_cache)
    print(f"\n{request.param.value}: tiny guest ready in {time.monotonic() - started:.1f} s")
    return guest


def _console_lines(log: Path) -> list[str]:
    try:
        text = log.read_bytes().decode(errors="replace")
    except FileNotFoundError:
        return []
    return [line.rstrip("\r") for line in text.split("\n")]


@pytest.fixture
def booted(tiny_guest: TinyGuest, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    console = tmp_path / "console.log"
    argv = [
        *QEMU[tiny_guest.arch],
        "-m",
        "128",
        "-nographic",
        "-no-reboot",
        "-kernel",
        str(tiny_guest.kernel),
        "-initrd",
        str(tiny_guest.initrd),
        "-append",
        tiny_guest.cmdline,
        "-serial",
        f"file:{console}",
        "-display",
        "none",
        "-monitor",
        "none",
    ]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        yield proc, console
    finally:
        proc.kill()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def _wait_for_line(
    proc: subprocess.Popen[bytes], console: Path, wanted: Callable[[str], bool], timeout: float
) -> float:
    """Seconds until a console line satisfies `wanted`; fails on QEMU exiting or the timeout."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if any(wanted(line) for line in _console_lines(console)):
            return time.monotonic() - started
        if proc.poll() is not None:
            qemu_out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            pytest.fail(
                f"QEMU exited with {proc.returncode} before the line appeared\nqemu: {qemu_out}\n"
                f"console:\n" + "\n".join(_console_lines(console)[-30:])
            )
        time.sleep(0.05)
    pytest.fail(
        f"no matching console line within {timeout:.0f} s; console:\n" + "\n".join(_console_lines(console)[-30:])
    )


def test_marker_line_names_the_uname_machine() -> None:
    assert marker_line(Arch.AMD64) == f"{MARKER} arch=x86_64"
    assert marker_line(Arch.ARM64) == f"{MARKER} arch=aarch64"


def test_cached_guest_is_reused(tiny_guest: TinyGuest, tiny_cache: Path) -> None:
    started = time.monotonic()
    again = ensure_tiny_guest(tiny_guest.arch, tiny_cache)
    assert again == tiny_guest
    assert time.monotonic() - started < 5.0
    assert again.kernel.parent == tiny_cache / tiny_guest.arch.value
    assert (again.kernel.parent / "manifest.json").is_file()


def test_cmdline_names_the_serial_console(tiny_guest: TinyGuest) -> None:
    console = {Arch.AMD64: "console=ttyS0", Arch.ARM64: "console=ttyAMA0"}[tiny_guest.arch]
    assert tiny_guest.cmdline.split()[0] == console
    assert any(opt.startswith("loglevel=") for opt in tiny_guest.cmdline.split())


def test_guest_boots_to_marker(tiny_guest: TinyGuest, booted: tuple[subprocess.Popen[bytes], Path]) -> None:
    proc, console = booted
    expected = marker_line(tiny_guest.arch)
    elapsed = _wait_for_line(proc, console, lambda line: line == expected, BOOT_TIMEOUT_S)
    print(f"\n{tiny_guest.arch.value}: boot to marker {elapsed:.1f} s")
    markers = [line for line in _console_lines(console) if MARKER in line]
    assert markers == [expected]
    # The guest keeps running: its init ticks once a second after the marker.
    _wait_for_line(proc, console, lambda line: line.startswith("archq-tiny tick "), TICK_TIMEOUT_S)
    assert proc.poll() is None
