"""`archq project ...`, `archq token create --project` and `--project` for an admin acting for a project,
against a real API process."""

from __future__ import annotations

import json
import subprocess
import sys

from click.testing import CliRunner

from client.cli import main
from tests.support.api import TINY
from tests.support.services import ROOT


def run(live_api, *args: str, token: str | None = None, expect: int = 0) -> str:
    result = CliRunner().invoke(main, ["--url", live_api.url, "--token", token or live_api.admin_token, *args])
    assert result.exit_code == expect, (result.exit_code, result.output, result.exception)
    return result.output


def test_projects_quotas_and_project_tokens_from_the_command_line(live_api, settings):
    from tests.conftest import settings_env

    created = run(live_api, "project", "create", "blue", "--vms", "1", "--memory-mib", "1024")
    assert "vms" in created and "1024" in created
    shown = json.loads(run(live_api, "-o", "json", "project", "show", "blue"))["usage"]
    assert shown["limits"] == {"vms": 1, "vcpus": None, "memory_mib": 1024, "emulated": None}
    run(live_api, "project", "set-quota", "blue", "--vcpus", "4", "--memory-mib", "none")
    limits = json.loads(run(live_api, "-o", "json", "project", "show", "blue"))["usage"]["limits"]
    assert limits == {"vms": 1, "vcpus": 4, "memory_mib": None, "emulated": None}
    assert "give at least one" in run(live_api, "project", "set-quota", "blue", expect=2)
    assert "neither a number" in run(live_api, "project", "set-quota", "blue", "--vms", "lots", expect=2)
    listed = run(live_api, "project", "list")
    assert "blue" in listed and "default" in listed and "0/1" in listed

    env = {**settings_env(settings), "PATH": "/usr/bin:/bin"}
    token = subprocess.run(
        [sys.executable, "-m", "client.cli", "token", "create", "--role", "operator", "--name", "blue-ci",
         "--project", "blue"],
        env=env, cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    secret = token.stdout.strip().splitlines()[-1]
    assert "project 'blue'" in token.stderr
    refused = subprocess.run(
        [sys.executable, "-m", "client.cli", "token", "create", "--role", "viewer", "--name", "x", "--project", "no"],
        env=env, cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert refused.returncode == 1 and "no project named 'no'" in refused.stderr
    assert "blue" in subprocess.run([sys.executable, "-m", "client.cli", "token", "list"], env=env, cwd=ROOT,
                                    capture_output=True, text=True, check=True).stdout  # fmt: skip

    # An admin creates for blue; blue's token sees that VM, and the second is over blue's quota.
    made = json.loads(run(live_api, "--project", "blue", "-o", "json", "vm", "create", TINY["name"],
                          "--arch", "amd64", "--image", "tiny", "--memory-mib", "128"))  # fmt: skip
    assert made["vm"]["project"] == "blue"
    assert [vm["name"] for vm in json.loads(run(live_api, "-o", "json", "vm", "list", token=secret))["vms"]] == [
        TINY["name"]
    ]
    assert json.loads(run(live_api, "-o", "json", "vm", "list", "--project", "default"))["vms"] == []
    over = run(live_api, "vm", "create", "second", "--arch", "amd64", "--image", "tiny", token=secret, expect=1)
    assert "quota_exceeded" in over and "vms" in over
    assert "no project named 'red'" in run(live_api, "project", "show", "red", token=secret, expect=1)
