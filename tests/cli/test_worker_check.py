"""`archq worker --check` says what a worker would do here and fails on a problem; a bad setting stops any
command at once, named, with EX_CONFIG (so a supervisor does not start it again)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from queues.config import EX_CONFIG, Settings
from tests.conftest import settings_env as env_of

CAPTURES = Path(__file__).resolve().parents[1] / "data" / "capabilities"


@pytest.fixture
def settings_env(settings: Settings) -> dict[str, str]:
    return env_of(settings)


def archq(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "client.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_prints_arch_accel_queues_and_networks(settings_env):
    env = {**settings_env, "ARCHQ_CAPABILITIES_FILE": str(CAPTURES / "x86_64-kvm-aarch64-emu.xml")}
    result = archq(env, "worker", "--check")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = dict(line[4:].split(": ", 1) for line in result.stdout.splitlines())
    assert lines["arch"].startswith("amd64")
    assert lines["emulates"] == "arm64"
    assert lines["queues"].split(", ")[0] == "amd64" and "tcg.arm64" in lines["queues"]
    assert "nat network" in lines and "broker" in lines


def test_check_fails_on_an_unreachable_broker_and_hides_its_password(settings_env):
    env = {**settings_env, "ARCHQ_BROKER_URL": "redis://:s3cret@127.0.0.1:1/0", "ARCHQ_REDIS_URL": ""}
    env["ARCHQ_CAPABILITIES_FILE"] = str(CAPTURES / "x86_64-nokvm.xml")
    result = archq(env, "worker", "--check")
    assert result.returncode == 1
    assert "FAIL broker: redis://***@127.0.0.1:1/0" in result.stdout
    assert "s3cret" not in result.stdout + result.stderr


def test_check_fails_on_a_host_architecture_archq_does_not_run(settings_env, tmp_path):
    capture = tmp_path / "ppc64le.xml"
    capture.write_text(
        (CAPTURES / "x86_64-nokvm.xml").read_text().replace("<arch>x86_64</arch>", "<arch>ppc64le</arch>", 1)
    )
    result = archq({**settings_env, "ARCHQ_CAPABILITIES_FILE": str(capture)}, "worker", "--check")
    assert result.returncode == 1
    assert "FAIL host:" in result.stdout and "ppc64le" in result.stdout


def test_a_malformed_setting_stops_the_worker_at_once_naming_it(settings_env):
    # Without the check the supervisor would restart the worker forever; EX_CONFIG tells it not to.
    result = archq({**settings_env, "ARCHQ_HEARTBEAT_INTERVAL_S": "ten"}, "worker")
    assert result.returncode == EX_CONFIG
    assert "ARCHQ_HEARTBEAT_INTERVAL_S='ten': not a number" in result.stderr


def test_an_unknown_accel_or_job_kind_is_a_configuration_error(settings_env):
    assert "ARCHQ_ACCEL='fast'" in archq({**settings_env, "ARCHQ_ACCEL": "fast"}, "worker", "--check").stderr
    result = archq({**settings_env, "ARCHQ_TIME_LIMITS": "crate=10"}, "conductor")
    assert result.returncode == EX_CONFIG
    assert "ARCHQ_TIME_LIMITS: unknown job kind 'crate'" in result.stderr
