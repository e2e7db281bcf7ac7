"""The web UI in a real browser: the emulation warning before a create and the badge after, the CPU-mode
cards and the live-migration refusal they lead to, a job's progress reaching its end without a reload, and a
viewer who sees no button that would fail."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Page, expect

from queues.arch import Arch
from queues.routing import emulation_warning
from tests.support.api import create_vm, wait_host

DOCS = Path(__file__).parents[2] / "docs"  # the README shows these screenshots
TIMEOUT_MS = 30_000


def fill_create_form(page: Page, name: str, arch: str) -> None:
    page.goto("/ui/vms/new")
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Architecture").select_option(arch)
    page.get_by_label("Memory (MiB)").fill("128")


def test_an_arm64_vm_on_an_amd64_fleet_is_warned_before_and_badged_after(
    client, conductor, processes, hypervisor_worker, logged_in
):
    warning = emulation_warning(Arch.ARM64)
    with hypervisor_worker("amd64-host", "amd64"):
        wait_host(client, "amd64-host")
        page = logged_in("operator")
        fill_create_form(page, "arm-on-amd", "arm64")
        expect(page.get_by_test_id("preview-route")).to_contain_text("tcg.arm64")
        expect(page.get_by_test_id("preview-warning")).to_have_text(warning)
        # Under TCG neither CPU card's mode applies, and both say so.
        expect(page.locator(".card-note").first).to_contain_text("named model cortex-a57")
        assert client.get("/api/v1/vms").get_json()["vms"] == []  # the preview created nothing
        page.screenshot(path=DOCS / "ui-create.png", full_page=True)

        # Without the conductor the job's reports wait on `control`: the page shows it unfinished, then
        # follows it to the end once the conductor is back, without a reload.
        conductor.stop()
        page.get_by_role("button", name="Create").click()
        expect(page.get_by_role("heading", name="arm-on-amd")).to_be_visible()
        expect(page.get_by_test_id("emulated-badge").first).to_contain_text(warning)
        job_row = page.locator("tr[data-job]").first
        expect(job_row).not_to_have_attribute("data-state", "succeeded")
        processes("conductor", log_name="conductor-again")
        expect(job_row).to_have_attribute("data-state", "succeeded", timeout=TIMEOUT_MS)
        expect(job_row.locator("progress")).to_have_attribute("value", "100")
        expect(page.get_by_test_id("vm-state")).to_have_text("running")

        page.goto("/ui/vms")
        row = page.locator('tr[data-vm="arm-on-amd"]')
        expect(row).to_contain_text("amd64-host")
        expect(row.get_by_test_id("emulated-badge")).to_contain_text(warning)
        page.screenshot(path=DOCS / "ui-vms.png", full_page=True)


def test_the_performance_card_leads_to_a_vm_that_explains_why_it_cannot_live_migrate(
    client, conductor, hypervisor_worker, logged_in
):
    with hypervisor_worker("kvm-host", "amd64", accel="kvm"):
        wait_host(client, "kvm-host")
        page = logged_in("operator")
        fill_create_form(page, "fast", "amd64")
        page.get_by_text("Performance", exact=True).click()
        expect(page.get_by_test_id("preview-route")).to_contain_text("native (kvm)")
        expect(page.locator(".card-note").first).to_have_text("")
        page.get_by_role("button", name="Create").click()
        expect(page.locator("tr[data-job]").first).to_have_attribute("data-state", "succeeded", timeout=TIMEOUT_MS)
        expect(page.get_by_test_id("vm-state")).to_have_text("running")
        page.reload()  # the flags and forms are rendered with the page; the facts and jobs are the live parts
        refusal = page.get_by_test_id("live-refusal")
        expect(refusal).to_contain_text("cpu_mode host-passthrough")
        expect(refusal).to_contain_text("cannot be live-migrated")
        expect(page.get_by_label("Live (the VM keeps running)")).to_be_disabled()


def test_a_viewer_sees_no_mutating_buttons(client, logged_in):
    vm = create_vm(client, name="look-only")["vm"]
    page = logged_in("viewer")
    page.goto(f"/ui/vms/{vm['id']}")
    expect(page.get_by_role("heading", name="look-only")).to_be_visible()
    # The only form that posts is the logout.
    expect(page.locator("form[method=post]")).to_have_count(1)
    expect(page.get_by_role("button")).to_have_text(["Log out"])
    expect(page.get_by_role("link", name="New VM")).to_have_count(0)
    response = page.goto("/ui/vms/new")
    assert response is not None and response.status == 403
    expect(page.locator("#create-form")).to_have_count(0)
