"""A real `archq api` process (gunicorn) on a free port, with tokens made through the token service, for
tests of HTTP clients (the CLI, schemathesis)."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from flask import Flask

from tests.support.auth import make_token
from tests.support.services import ArchqProcess, free_port, wait_for


@dataclass
class LiveApi:
    url: str
    admin_token: str
    operator_token: str
    process: ArchqProcess


def _healthy(url: str, process: ArchqProcess) -> bool:
    assert process.proc.poll() is None, process.output()
    try:
        with urllib.request.urlopen(f"{url}/api/v1/health", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def start_api(
    start: Callable[..., ArchqProcess], workers: int = 1, threads: int = 4, timeout: float = 30
) -> tuple[str, ArchqProcess]:
    """`archq api` started by `start` (the `processes` fixture) on a free port, once it answers (several workers
    booting on a loaded 2-core machine can take longer than one: `timeout`)."""
    port = free_port()
    process = start("api", "--bind", f"127.0.0.1:{port}", "--workers", str(workers), "--threads", str(threads))
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: _healthy(url, process), timeout=timeout, interval=0.1, what="the API to answer")
    return url, process


@pytest.fixture
def live_api(app, processes) -> LiveApi:
    url, process = start_api(processes)
    return LiveApi(url, make_token(app, "admin", "live-admin"), make_token(app, "operator", "live-operator"), process)


@contextmanager
def serve_api(app: Flask, env: dict[str, str], log: Path) -> Iterator[tuple[str, str]]:
    """`archq api` on the database of `app` (with `env` from tests.conftest.settings_env) for a module's
    worth of tests; yields its URL and an admin token."""
    url, process = start_api(lambda *args: ArchqProcess(list(args), env, log))
    try:
        yield url, make_token(app, "admin", "live-admin")
    finally:
        process.stop()
