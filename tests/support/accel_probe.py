"""The worker's accelerator probe, once per machine and kernel for the whole suite. A worker on a real libvirt
with ARCHQ_ACCEL=auto boots the tiny guest under KVM to see whether it works (up to ARCHQ_KVM_PROBE_TIMEOUT_S,
20 s, where KVM hangs, as on the CI machine) and caches the answer in its data directory (workers/host.py
`decide_accel`). Each test's worker has a data directory of its own, so each would probe again: a dozen probes,
over 4 minutes of the slow tier. The first real answer is kept in the test cache and written into every later
worker's data directory before it starts; the probe itself still runs once per machine and kernel."""

from __future__ import annotations

import json
import os
import platform
import socket
import uuid
from pathlib import Path

# The worker's own cache file in its data directory: {"<hostname>/<kernel>/<accelerator>": bool}.
WORKER_FILE = "accel-probe.json"
# The suite's: {"<kernel>/<accelerator>": bool}.
SUITE_FILE = Path(os.environ.get("ARCHQ_TEST_CACHE", "/var/tmp/archq-test-cache")) / "accel-probe.json"


def _probing_worker(args: list[str], env: dict[str, str]) -> tuple[Path, str] | None:
    """(data directory, hostname) of an `archq worker` that would probe, else None."""
    if args[:1] != ["worker"] or not env.get("ARCHQ_LIBVIRT_URI", "").startswith("qemu:"):
        return None
    if env.get("ARCHQ_ACCEL", "auto") != "auto" or not env.get("ARCHQ_DATA_DIR"):
        return None
    return Path(env["ARCHQ_DATA_DIR"]), env.get("ARCHQ_HOSTNAME") or socket.gethostname()


def seed(args: list[str], env: dict[str, str]) -> None:
    """Before a worker starts: the suite's answers for this kernel, under the worker's hostname."""
    worker = _probing_worker(args, env)
    if worker is None:
        return
    data_dir, hostname = worker
    prefix = f"{platform.release()}/"
    known = {f"{hostname}/{key}": works for key, works in _read(SUITE_FILE).items() if key.startswith(prefix)}
    if known:
        _write(data_dir / WORKER_FILE, {**_read(data_dir / WORKER_FILE), **known})


def harvest(args: list[str], env: dict[str, str]) -> None:
    """After a worker ends: what it probed, kept for the workers after it."""
    worker = _probing_worker(args, env)
    if worker is None:
        return
    data_dir, hostname = worker
    prefix = f"{hostname}/"
    probed = _read(data_dir / WORKER_FILE)
    found = {key.removeprefix(prefix): works for key, works in probed.items() if key.startswith(prefix)}
    if found and not found.items() <= _read(SUITE_FILE).items():
        _write(SUITE_FILE, {**_read(SUITE_FILE), **found})


def _read(path: Path) -> dict[str, bool]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write(path: Path, data: dict[str, bool]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)
