"""Browser tests: Playwright drives Debian's chromium (`apt-get install chromium`, no browser download)
against a real `archq api` process, conductor and worker."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from queues.config import Settings
from tests.support.auth import make_token
from tests.support.live_api import live_api  # noqa: F401  (a fixture)

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # A host stays `up` for 30 s without heartbeats, so a test can stop the conductor (which records them)
    # for a while and still create VMs on it.
    return dataclasses.replace(settings, heartbeat_misses=60)


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        yield browser
        browser.close()


@pytest.fixture
def logged_in(app, live_api, browser: Browser) -> Iterator[Callable[[str], Page]]:  # noqa: F811 (the fixture)
    """A new browser context per role, logged in through the login form with a fresh token of that role."""
    contexts = []

    def log_in(role: str) -> Page:
        context = browser.new_context(base_url=live_api.url, viewport={"width": 1280, "height": 800})
        contexts.append(context)
        page = context.new_page()
        page.goto("/ui/login")
        page.get_by_label("API token").fill(make_token(app, role, f"browser-{role}"))
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_test_id("who")).to_have_text(f"browser-{role} ({role})")
        return page

    yield log_in
    for context in contexts:
        context.close()
