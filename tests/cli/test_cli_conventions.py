"""The `archq` command behaves like its peers (kubectl, openstack, virsh): options before the subcommand, a
config file with named contexts, -o table|json|yaml|name and -c on every list and show, --version, a hint on
401, help that imports no subcommand, and old command names that still work and say what replaced them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import yaml
from click.testing import CliRunner

from client.cli import main
from tests.support.recording_api import JOB, Recorder


def archq(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env=env)
    return result.exit_code, result.output


def test_client_options_may_come_before_the_subcommand(server):
    code, out = archq("--url", server, "--token", "archq_t", "-o", "json", "images", "show", "debian-12")
    assert code == 0 and json.loads(out)["image"]["name"] == "debian-12"
    assert Recorder.requests[-1][3] == "Bearer archq_t"


def test_yaml_name_and_chosen_columns(server):
    code, out = archq("--url", server, "--token", "t", "-o", "yaml", "job", "list")
    assert code == 0 and yaml.safe_load(out)["jobs"][0]["id"] == JOB["id"]
    assert archq("--url", server, "--token", "t", "-o", "name", "job", "list") == (0, "j1\n")
    code, out = archq("--url", server, "--token", "t", "job", "list", "-c", "id", "-c", "state")
    assert out.splitlines() == ["ID  STATE", "j1  pending"]
    code, out = archq("--url", server, "--token", "t", "-c", "name", "images", "show", "debian-12")
    assert out.splitlines() == ["name  debian-12"]


def test_a_context_of_the_config_file_gives_url_and_token(server, tmp_path):
    config = tmp_path / "config.yaml"
    token_file = tmp_path / "lab.token"
    token_file.write_text("archq_from_file\n")
    token_file.chmod(0o600)
    config.write_text(
        yaml.safe_dump(
            {
                "current-context": "other",
                "contexts": {"lab": {"url": server, "token-file": str(token_file)}, "other": {"url": "http://x:1"}},
            }
        )
    )
    env = {"ARCHQ_CONFIG": str(config), "ARCHQ_URL": "", "ARCHQ_TOKEN": ""}
    code, out = archq("--context", "lab", "images", "show", "debian-12", env=env)
    assert code == 0, out
    assert Recorder.requests[-1][3] == "Bearer archq_from_file"
    code, out = archq("--context", "nope", "images", "list", env=env)
    assert code == 1 and "no context 'nope'" in out and "lab, other" in out


def test_a_token_readable_by_others_is_refused(server, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"contexts": {"lab": {"url": server, "token": "archq_secret"}}}))
    config.chmod(0o644)
    code, out = archq("--context", "lab", "images", "list", env={"ARCHQ_CONFIG": str(config), "ARCHQ_TOKEN": ""})
    assert code == 1 and f"chmod 600 {config}" in out
    assert Recorder.requests == []


def test_a_refused_token_gets_a_hint_naming_where_it_came_from(server):
    code, out = archq("--url", server, "--token", "bad", "images", "list")
    assert code == 1 and "HTTP 401" in out and "hint: the API refused the token from --token or ARCHQ_TOKEN" in out


def test_version_and_help_list_both_sides_without_importing_them():
    code, out = archq("--version")
    assert code == 0 and out.startswith("archq ")
    probe = (
        "import sys\nfrom client.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('IMPORTED', sorted({m.split('.')[0] for m in sys.modules} & {'web', 'workers', 'celery', 'flask',"
        " 'libvirt', 'sqlalchemy', 'paramiko'}))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert "Services on this machine:" in out and "Client of the HTTP API:" in out
    assert "IMPORTED []" in out


def test_old_names_still_work_and_say_what_replaced_them(settings):
    env = {**os.environ, "ARCHQ_DATABASE_URL": settings.database_url, "ARCHQ_DATA_DIR": str(settings.data_dir)}
    run = subprocess.run(
        [sys.executable, "-m", "client.cli", "migrate"], env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    assert "`migrate` is deprecated; use `archq db upgrade`" in run.stderr
    assert "database is at the latest revision" in run.stdout
    code, out = archq("image", "--help")
    assert code == 0 and "build" in out and "show" in out


def test_the_shell_completes_vm_and_host_names_from_the_api(server):
    env = {**os.environ, "_ARCHQ_COMPLETE": "bash_complete", "COMP_WORDS": "archq host show h", "COMP_CWORD": "3"}
    env |= {"ARCHQ_URL": server, "ARCHQ_TOKEN": "t", "PYTHONPATH": os.getcwd()}
    run = subprocess.run(
        [sys.executable, "-c", "from client.cli import main; main(prog_name='archq')"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "plain,h1" in run.stdout.replace("\n", ",")
    assert Recorder.requests[-1][1] == "/api/v1/hosts"
