"""The `archq` client commands against a real API process, conductor and test-driver worker: they speak
HTTP only, print tables or JSON, wait on jobs with progress and exit non-zero when a job or a request
fails."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from client.cli import main
from client.commands import progress_text
from tests.support.api import wait_host
from tests.support.services import ROOT


@pytest.fixture
def archq(live_api, monkeypatch):
    """Runs `archq ARGS...` in-process against the live API with the operator token (env, as a user would)."""
    monkeypatch.setenv("ARCHQ_URL", live_api.url)
    monkeypatch.setenv("ARCHQ_TOKEN", live_api.operator_token)

    def run(*args: str, token: str | None = None, expect: int = 0):
        extra = ["--token", token] if token is not None else []
        result = CliRunner().invoke(main, [*args, *extra])
        assert result.exit_code == expect, (result.exit_code, result.output, result.exception)
        return result

    return run


def test_vm_lifecycle_from_the_command_line(archq, client, conductor, hypervisor_worker):
    with hypervisor_worker("amd64-host"):
        wait_host(client, "amd64-host")
        created = archq("vm", "create", "sec-cli", "--arch", "x86_64", "--wait", "--timeout", "30")
        assert "succeeded" in created.output
        vm_id = created.output.split()[1]

        listed = json.loads(archq("vm", "list", "--output", "json").output)
        assert [vm["name"] for vm in listed["vms"]] == ["sec-cli"]
        table = archq("vm", "list").output.splitlines()
        assert table[0].split()[:4] == ["ID", "NAME", "ARCH", "STATE"]
        assert table[1].split()[:4] == [vm_id, "sec-cli", "amd64", "running"]

        shown = archq("vm", "show", "sec-cli").output
        assert "running" in shown and "amd64-host" in shown

        stopped = archq("vm", "stop", vm_id, "--wait", "--timeout", "30")
        assert "succeeded" in stopped.output
        archq("vm", "start", vm_id, "--wait", "--timeout", "30")

        deleted = json.loads(archq("vm", "delete", "sec-cli", "--output", "json").output)
        job_id = deleted["job"]["id"]
        waited = archq("job", "wait", job_id, "--timeout", "30")
        assert waited.output.strip().splitlines()[-1].endswith("succeeded")

        shown_job = archq("job", "show", job_id).output
        assert "token:live-operator" in shown_job
        jobs = json.loads(archq("job", "list", "--kind", "delete", "-o", "json").output)["jobs"]
        assert [j["id"] for j in jobs] == [job_id]

        hosts = archq("host", "list").output
        assert "amd64-host" in hosts and "up" in hosts
        assert json.loads(archq("host", "show", "amd64-host", "-o", "json").output)["host"]["arch"] == "amd64"


def test_job_wait_exits_non_zero_when_the_job_does_not_succeed(archq):
    # No worker: the create waits queued, is cancelled, and `job wait` reports it with exit status 1.
    answer = json.loads(archq("vm", "create", "sec-cancelled", "--arch", "amd64", "-o", "json").output)
    job_id = answer["job"]["id"]
    assert "cancelled" in archq("job", "cancel", job_id).output
    assert "cancelled" in archq("job", "wait", job_id, expect=1).output


def test_an_api_error_is_a_message_and_exit_status_1(archq, live_api):
    refused = archq("vm", "create", "Bad Name", "--arch", "amd64", expect=1)
    assert "validation_failed" in refused.output and "name:" in refused.output
    assert "unauthorized" in archq("vm", "list", token="archq_wrong", expect=1).output
    assert "not_found, HTTP 404" in archq("job", "show", "nope", expect=1).output
    assert "no VM named" in archq("vm", "show", "ghost", expect=1).output


def test_unreachable_api_is_a_clear_error(archq):
    from tests.support.services import free_port

    result = CliRunner().invoke(main, ["vm", "list", "--url", f"http://127.0.0.1:{free_port()}"])
    assert result.exit_code == 1
    assert "cannot reach the archq API" in result.output


def test_progress_is_shown_when_the_job_reports_it():
    job = {"id": "j1", "kind": "migrate", "state": "running", "progress": {"percent": 40, "bytes_remaining": 2**30}}
    assert progress_text(job) == "job j1 migrate: running 40%, 1024.0 MiB remaining"
    assert progress_text({**job, "progress": None}) == "job j1 migrate: running"


def test_token_create_prints_the_token_alone_on_its_last_line_and_it_works(live_api, settings):
    from tests.conftest import settings_env

    env = {**settings_env(settings), "PATH": "/usr/bin:/bin"}
    created = subprocess.run(
        [sys.executable, "-m", "client.cli", "token", "create", "--role", "viewer", "--name", "cli-viewer"],
        env=env, cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    secret = created.stdout.strip().splitlines()[-1]
    assert secret.startswith("archq_") and " " not in secret
    listed = CliRunner().invoke(main, ["vm", "list", "--url", live_api.url, "--token", secret, "-o", "json"])
    assert listed.exit_code == 0 and json.loads(listed.output) == {"vms": []}

    tokens = subprocess.run([sys.executable, "-m", "client.cli", "token", "list"], env=env, cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "cli-viewer" in tokens and secret not in tokens
    subprocess.run([sys.executable, "-m", "client.cli", "token", "revoke", "cli-viewer"], env=env, cwd=ROOT,
                   capture_output=True, check=True)  # fmt: skip
    refused = CliRunner().invoke(main, ["vm", "list", "--url", live_api.url, "--token", secret])
    assert refused.exit_code == 1 and "unknown or revoked" in refused.output


def test_an_admin_adds_an_image_and_everyone_lists_it(archq, live_api):
    added = archq(
        "images", "add", "sec-disk", "--arch", "arm64", "--source", "https://mirror.example/d.qcow2",
        "--sha256", "ab" * 32, token=live_api.admin_token,
    )  # fmt: skip
    assert "image sec-disk added for arm64" in added.output
    listed = json.loads(archq("images", "list", "--output", "json").output)
    image = next(image for image in listed["images"] if image["name"] == "sec-disk")
    assert image["native_arch"] == "arm64"
    archq("images", "add", "sec-disk2", "--arch", "amd64", "--source", "https://m/d", "--sha256", "ab" * 32, expect=1)


def test_vm_create_count_makes_and_waits_for_every_vm(archq, client, conductor, hypervisor_worker):
    with hypervisor_worker("amd64-host"):
        wait_host(client, "amd64-host")
        created = archq("vm", "create", "many", "--arch", "amd64", "--count", "3", "--wait", "--timeout", "60")
        lines = created.output.splitlines()
        assert [line.split()[2] for line in lines if line.startswith("vm ")] == ["many-1", "many-2", "many-3"]
        assert lines[-1] == "3 of 3 succeeded"
        listed = json.loads(archq("vm", "list", "--output", "json").output)
        assert sorted((vm["name"], vm["state"]) for vm in listed["vms"]) == [
            ("many-1", "running"), ("many-2", "running"), ("many-3", "running"),
        ]  # fmt: skip
        # All or nothing: one name of the next three is taken, so none is made and the command fails.
        refused = archq("vm", "create", "many", "--arch", "amd64", "--count", "4", expect=1)
        assert "name_taken" in refused.output or "taken" in refused.output
        assert len(json.loads(archq("vm", "list", "--output", "json").output)["vms"]) == 3
