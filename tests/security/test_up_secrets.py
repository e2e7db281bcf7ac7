"""`archq up` on its first start, as `.ci/demo` runs it (its output in a log file anyone may read): the
secrets it makes are only in owner-only files; its output and every other file under the data dir name the
files, never the secrets."""

from __future__ import annotations

import stat
import urllib.request
from pathlib import Path

from tests.support.services import free_port, wait_for
from web.local_secrets import FLOWER_CREDENTIALS_FILE, UI_SECRET_KEY_FILE
from web.token_commands import ADMIN_TOKEN_FILE


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def _others_can_read(path: Path) -> bool:
    return bool(path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO))


def test_archq_up_keeps_its_secrets_in_owner_only_files(processes, settings):
    data, port = settings.data_dir, free_port()
    up = processes(
        "up", "--no-worker", "--bind", f"127.0.0.1:{port}",
        # The default place: the database file in the data dir.
        ARCHQ_DATABASE_URL=f"sqlite:///{data / 'archq.db'}", ARCHQ_FLOWER_PORT=str(free_port()),
    )  # fmt: skip
    wait_for(
        lambda: _answers(f"http://127.0.0.1:{port}/api/v1/health"),
        timeout=60,
        interval=0.2,
        what=lambda: f"the API of archq up; its output:\n{up.output()}",
    )
    up.stop()

    token = (data / ADMIN_TOKEN_FILE).read_text().strip()
    flower_password = (data / FLOWER_CREDENTIALS_FILE).read_text().strip().partition(":")[2]
    ui_key = (data / UI_SECRET_KEY_FILE).read_text().strip()
    secrets = {"the admin token": token, "the Flower password": flower_password, "the web UI's key": ui_key}
    output = up.output()
    assert str(data / ADMIN_TOKEN_FILE) in output  # the output says where the token is
    for what, secret in secrets.items():
        assert secret not in output, f"{what} is in archq up's output"

    holding = []
    for path in sorted(p for p in data.rglob("*") if p.is_file()):
        content = path.read_bytes()
        if any(secret.encode() in content for secret in secrets.values()):
            holding.append(path.name)
            assert not _others_can_read(path), f"{path} holds a secret and is {oct(path.stat().st_mode)}"
    assert holding == sorted([ADMIN_TOKEN_FILE, FLOWER_CREDENTIALS_FILE, UI_SECRET_KEY_FILE])
    # The database holds the VMs' user data and the tokens' hashes: the owner's only, with its WAL files.
    database = sorted(data.glob("archq.db*"))
    assert database, f"no SQLite database in {data}"
    for path in database:
        assert not _others_can_read(path), f"{path} is {oct(path.stat().st_mode)}"
