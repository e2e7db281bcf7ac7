"""The systemd units in deploy/systemd/ are valid (systemd-analyze verify), read one environment file, start
after what they drive, restart on failure but not on a configuration error, and run commands archq has."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from client.cli import ROOT as COMMAND_TREE
from queues.config import EX_CONFIG

ROOT = Path(__file__).resolve().parents[2]
UNITS = sorted((ROOT / "deploy" / "systemd").glob("*.service"))
ENV_FILE = "/etc/archq/archq.env"
ARCHQ = "/usr/local/bin/archq"


def read_unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # systemd's keys are case-sensitive
    parser.read(path)
    return parser


def test_there_is_a_unit_for_the_api_the_conductor_the_worker_and_flower():
    assert {unit.name for unit in UNITS} == {
        "archq-api.service", "archq-conductor.service", "archq-worker.service", "archq-flower.service"
    }  # fmt: skip


def test_systemd_accepts_every_unit(tmp_path):
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is not installed (apt-get install systemd; .ci/setup does)"
    archq = Path(sys.executable).with_name("archq")
    for unit in UNITS:
        text = unit.read_text().replace(ARCHQ, str(archq))
        (tmp_path / unit.name).write_text(text.replace(ENV_FILE, str(ROOT / "deploy" / "systemd" / "archq.env")))
    result = subprocess.run(
        [analyze, "verify", *(str(tmp_path / unit.name) for unit in UNITS)], capture_output=True, text=True
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


@pytest.mark.parametrize("unit", UNITS, ids=lambda unit: unit.name)
def test_each_unit_reads_the_environment_file_and_stops_on_a_configuration_error(unit):
    service = read_unit(unit)["Service"]
    assert service["EnvironmentFile"] == ENV_FILE
    assert service["Restart"] == "on-failure"
    assert service["RestartPreventExitStatus"] == str(EX_CONFIG)
    command = service["ExecStart"].split()
    assert command[0] == ARCHQ and command[1] in COMMAND_TREE.table


def test_the_worker_starts_after_libvirtd_and_checks_the_host_first():
    unit = read_unit(ROOT / "deploy" / "systemd" / "archq-worker.service")
    assert "libvirtd.service" in unit["Unit"]["After"].split()
    assert unit["Service"]["ExecStartPre"] == f"{ARCHQ} worker --check"
