"""Tokens for tests: made through the token service, as `archq token create` does, and a Flask test client
that sends one by default."""

from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient

from web.services import tokens


def make_token(app: Flask, role: str, name: str | None = None) -> str:
    """A new token's secret."""
    with app.app_context():
        return tokens.create_token(name or f"test-{role}", role)[1]


def authed_client(app: Flask, secret: str) -> FlaskClient:
    """A test client whose every request carries `Authorization: Bearer <secret>` unless it sets its own."""
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {secret}"
    return client
