"""compose.yaml is valid and wires every service the way the README says."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def compose(*args: str) -> str:
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is not installed (apt-get install docker-compose; .ci/setup does)"
    result = subprocess.run([binary, "-f", str(ROOT / "compose.yaml"), *args], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_compose_config_is_valid_and_has_every_service():
    assert {"redis", "postgres", "api", "conductor", "worker", "flower", "migrate"} <= set(
        compose("config", "--services").split()
    )


def test_secrets_and_auth_are_wired():
    config = compose("config")
    assert "--requirepass" in config and "ARCHQ_FLOWER_BASIC_AUTH" in config and "noeviction" in config
    worker = re.split(r"\n  [a-z]+:\n", config.split("\n  worker:\n")[1])[0]
    assert "ARCHQ_BROKER_URL" in worker
    assert "ARCHQ_DATABASE_URL" not in worker, "hypervisor workers hold no database credentials"


def test_api_and_conductor_scale_out():
    """`--scale api=N --scale conductor=M`: no fixed container name, and each API replica finds a host port."""
    config = compose("config")
    for service in ("api", "conductor"):
        block = re.split(r"\n  [a-z]+:\n", config.split(f"\n  {service}:\n")[1])[0]
        assert "container_name" not in block
    api = re.split(r"\n  [a-z]+:\n", config.split("\n  api:\n")[1])[0]
    assert "127.0.0.1:8080-8089:8080" in api
