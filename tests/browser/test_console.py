"""The VM page's console in a real browser on a real guest: xterm.js on the console WebSocket, through Redis
and the worker to libvirt's console stream, typed into and read like a person would."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.integration.test_console_session import NATIVE, booted_vm
from tests.support.api import wait_host

pytestmark = pytest.mark.libvirtd

DOCS = Path(__file__).parents[2] / "docs"


def test_typing_a_command_in_the_vm_pages_console(client, settings, start_qemu_worker, logged_in):
    start_qemu_worker()
    wait_host(client, "qemu-host", timeout=90)
    vm_id = booted_vm(client, settings, NATIVE, "console-page")

    page = logged_in("operator")
    page.goto(f"/ui/vms/{vm_id}")
    console = page.get_by_test_id("console")
    console.get_by_role("button", name="Open console").click()
    expect(console.get_by_role("status")).to_have_text("Connected to host qemu-host.", timeout=15_000)
    keys = console.locator(".xterm-helper-textarea")
    keys.press_sequentially("echo page-$((6*7))-done")
    keys.press("Enter")
    # The output line, not the echo of the typed command.
    expect(console.locator(".xterm-rows")).to_contain_text("page-42-done", timeout=15_000)
    page.screenshot(path=DOCS / "ui-console.png", full_page=True)

    # A viewer's page has no console (the WebSocket would refuse them too).
    viewer = logged_in("viewer")
    viewer.goto(f"/ui/vms/{vm_id}")
    expect(viewer.get_by_role("heading", name="console-page")).to_be_visible()
    expect(viewer.get_by_test_id("console")).to_have_count(0)
