"""`archq up` on its first start: an admin token shown once and kept in a 0600 file, and a Flower password,
so neither the API nor Flower ever runs open."""

from __future__ import annotations

import dataclasses

from tests.support.auth import authed_client
from web.local_secrets import FLOWER_CREDENTIALS_FILE, flower_basic_auth
from web.token_commands import ADMIN_TOKEN_FILE, bootstrap_admin_token


def test_the_first_start_creates_an_admin_token_in_an_owner_only_file(app, settings):
    path, secret = bootstrap_admin_token(settings)
    assert path == settings.data_dir / ADMIN_TOKEN_FILE
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.read_text().strip() == secret
    admin = authed_client(app, secret)
    assert admin.get("/api/v1/tokens").get_json()["tokens"][0]["name"] == "admin"

    again_path, again = bootstrap_admin_token(settings)
    assert (again_path, again) == (path, None)
    assert path.read_text().strip() == secret


def test_no_bootstrap_token_when_tokens_exist(app, settings, admin_token):
    path, secret = bootstrap_admin_token(settings)
    assert secret is None and not path.exists()


def test_flower_gets_a_generated_password_unless_one_is_configured(settings):
    generated = flower_basic_auth(settings)
    user, _, password = generated.partition(":")
    assert user == "admin" and len(password) >= 20
    stored = settings.data_dir / FLOWER_CREDENTIALS_FILE
    assert stored.stat().st_mode & 0o777 == 0o600
    assert flower_basic_auth(settings) == generated
    assert flower_basic_auth(dataclasses.replace(settings, flower_basic_auth="ops:secret")) == "ops:secret"
