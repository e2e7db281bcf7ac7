"""Real services for tests: a private redis-server, processes of the archq command, and waiting helpers."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from tests.support import accel_probe

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(
    check: Callable[[], T], timeout: float = 30.0, interval: float = 0.05, what: str | Callable[[], str] = "condition"
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what() if callable(what) else what}")
        time.sleep(interval)


class RedisServer:
    """A redis-server of the test's own on a free port; stop() and start() keep the port."""

    def __init__(self, workdir: Path, *, persistent: bool = False, unix_socket: Path | None = None) -> None:
        self.port = free_port()
        self.workdir = workdir
        # Also a unix socket: reachable from every network namespace (the two-host lab's workers).
        self.unix_socket = unix_socket
        # Persistent as production should run it (compose.yaml): an append-only file, synced every write.
        self.persistent = persistent
        self._proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed (apt-get install redis-server)"
        self._proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes" if self.persistent else "no", "--appendfsync", "always",
             "--dir", str(self.workdir), "--logfile", str(self.workdir / "redis.log"),
             *(["--unixsocket", str(self.unix_socket), "--unixsocketperm", "777"] if self.unix_socket else [])],
        )  # fmt: skip
        wait_for(self._answers, timeout=10, what="redis-server to answer")

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
            self._proc = None


class ArchqProcess:
    """An `archq <subcommand>` child process with its own environment and a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._file = log.open("wb")
        self._args, self._env = args, {**os.environ, **env}
        accel_probe.seed(self._args, self._env)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "client.cli", *args],
            env=self._env,
            stdout=self._file,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )

    def kill(self) -> None:
        """SIGKILL, as when a host dies: no warm shutdown, no goodbye."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        accel_probe.harvest(self._args, self._env)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        accel_probe.harvest(self._args, self._env)
        self._file.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace")
