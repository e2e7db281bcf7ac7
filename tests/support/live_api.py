"""A real `archq api` process (gunicorn) on a free port, with tokens made through the token service, for
tests of HTTP clients (the CLI, schemathesis)."""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass

import pytest

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


@pytest.fixture
def live_api(app, processes) -> LiveApi:
    port = free_port()
    process = processes("api", "--bind", f"127.0.0.1:{port}", "--workers", "1", "--threads", "4")
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: _healthy(url, process), timeout=30, interval=0.1, what="the API to answer")
    return LiveApi(url, make_token(app, "admin", "live-admin"), make_token(app, "operator", "live-operator"), process)
