"""compose.yaml exposes nothing beyond the machine by default: Flower behind basic auth on loopback, Redis
with a password and no published port, the API on loopback."""

from __future__ import annotations

from pathlib import Path

import yaml

COMPOSE = yaml.safe_load((Path(__file__).resolve().parents[2] / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]


def test_flower_asks_for_a_password_and_is_published_on_loopback_only():
    flower = SERVICES["flower"]
    # `archq flower` hands the password to Flower through its environment (a generated one when unset).
    assert flower["command"] == ["flower"]
    assert flower["environment"]["ARCHQ_FLOWER_BASIC_AUTH"].startswith("${ARCHQ_FLOWER_BASIC_AUTH")
    assert not any("basic-auth" in arg for arg in flower["command"]), "a password on a command line shows in ps"
    assert flower["ports"] and all(port.startswith("127.0.0.1:") for port in flower["ports"])


def test_redis_needs_a_password_and_is_not_published():
    redis = SERVICES["redis"]
    assert "--requirepass" in redis["command"]
    assert "ports" not in redis
    assert "redis://:${ARCHQ_REDIS_PASSWORD" in COMPOSE["x-archq-env"]["ARCHQ_BROKER_URL"]
    assert "redis://:${ARCHQ_REDIS_PASSWORD" in SERVICES["worker"]["environment"]["ARCHQ_BROKER_URL"]


def test_the_api_is_published_on_loopback_only():
    assert all(port.startswith("127.0.0.1:") for port in SERVICES["api"]["ports"])
