"""The API tests' own settings."""

from __future__ import annotations

import dataclasses

import pytest

from queues.config import Settings
from tests.conftest import SLOW_FIXTURES


@pytest.fixture
def settings(settings: Settings, request: pytest.FixtureRequest) -> Settings:
    """Hosts in these tests beat once, by hand (tests/support/fleet.py): with the suite's window of 3 s they went
    down midway through a test on a loaded machine (409 target_down, 503 no_capacity). Tests with live workers,
    which beat every 0.5 s, keep the short window."""
    if SLOW_FIXTURES & set(request.fixturenames):
        return settings
    return dataclasses.replace(settings, heartbeat_interval_s=60)
