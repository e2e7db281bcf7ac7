"""The web UI through Flask's test client: login with a token into an HttpOnly, SameSite=Strict session,
CSRF on every form, the API's roles, and pages that show what the API's services say."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import event

from tests.support.api import TINY
from tests.support.auth import make_token
from tests.support.fleet import add_vm, beat
from web.extensions import db
from web.paging import DEFAULT_LIMIT
from web.services.tokens import revoke_token


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def login(client, token: str) -> str:
    """Logs in; returns a CSRF token for later forms."""
    page = client.get("/ui/login").get_data(as_text=True)
    response = client.post("/ui/login", data={"token": token, "csrf_token": csrf_of(page)})
    assert response.status_code == 302, response.get_data(as_text=True)
    return csrf_of(client.get("/ui/").get_data(as_text=True))


@pytest.fixture
def ui(app):
    """A browser-like client logged in with the given role."""

    def open_as(role: str):
        client = app.test_client()
        client.csrf = login(client, make_token(app, role, f"ui-{role}"))
        return client

    return open_as


def test_pages_need_a_login_and_send_back_to_the_page_asked_for(anonymous_client):
    response = anonymous_client.get("/ui/vms?arch=arm64")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/ui/login?next=/ui/vms")


def test_login_sets_an_httponly_samesite_strict_cookie_without_the_secret(app, anonymous_client):
    secret = make_token(app, "viewer", "eyes")
    page = anonymous_client.get("/ui/login").get_data(as_text=True)
    response = anonymous_client.post("/ui/login?next=/ui/jobs", data={"token": secret, "csrf_token": csrf_of(page)})
    assert response.headers["Location"] == "/ui/jobs"
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/ui" in cookie
    assert "Secure" not in cookie  # plain HTTP here; over TLS it is Secure (next test)
    assert secret not in cookie


def test_the_cookie_is_secure_over_tls(app):
    client = app.test_client()
    page = client.get("/ui/login", base_url="https://archq.example").get_data(as_text=True)
    response = client.post(
        "/ui/login",
        data={"token": make_token(app, "viewer", "eyes"), "csrf_token": csrf_of(page)},
        base_url="https://archq.example",
        headers={"Referer": "https://archq.example/ui/login"},
    )
    assert response.status_code == 302
    assert "Secure" in response.headers["Set-Cookie"]


def test_a_wrong_token_is_refused_and_next_cannot_leave_the_ui(app, anonymous_client):
    page = anonymous_client.get("/ui/login").get_data(as_text=True)
    refused = anonymous_client.post("/ui/login", data={"token": "archq_nope", "csrf_token": csrf_of(page)})
    assert refused.status_code == 401 and "unknown or revoked" in refused.get_data(as_text=True)
    response = anonymous_client.post(
        "/ui/login?next=//evil.example/", data={"token": make_token(app, "viewer"), "csrf_token": csrf_of(page)}
    )
    assert response.headers["Location"] == "/ui/"


def test_a_form_without_its_csrf_token_is_refused(ui, app):
    client = ui("operator")
    with app.app_context():
        vm_id = add_vm(host="a", state="running")
    response = client.post(f"/ui/vms/{vm_id}/stop")
    assert response.status_code == 400
    assert "CSRF" in response.get_data(as_text=True)
    page = client.get("/ui/login").get_data(as_text=True)
    assert client.post("/ui/login", data={"token": "x"}).status_code == 400, page


def test_revoking_the_token_ends_the_session(ui, app):
    client = ui("viewer")
    assert client.get("/ui/vms").status_code == 200
    with app.app_context():
        revoke_token("ui-viewer")
    assert client.get("/ui/vms").status_code == 302


def test_logout_ends_the_session(ui):
    client = ui("viewer")
    assert client.post("/ui/logout", data={"csrf_token": client.csrf}).status_code == 302
    assert client.get("/ui/").status_code == 302


def test_a_viewer_sees_no_mutating_buttons_and_cannot_post(ui, app):
    with app.app_context():
        beat("a")
        vm_id = add_vm(host="a", state="running")
    client = ui("viewer")
    page = client.get(f"/ui/vms/{vm_id}").get_data(as_text=True)
    for word in (">Stop<", ">Delete<", "Take snapshot", ">Migrate<", "New VM"):
        assert word not in page
    response = client.post(f"/ui/vms/{vm_id}/stop", data={"csrf_token": client.csrf})
    assert response.status_code == 403
    assert "operator role" in response.get_data(as_text=True)
    assert client.get("/ui/vms/new").status_code == 403
    assert client.post("/ui/vms/preview", data={"csrf_token": client.csrf}).status_code == 403
    operator_page = ui("operator").get(f"/ui/vms/{vm_id}").get_data(as_text=True)
    assert ">Stop<" in operator_page and "New VM" in operator_page


def test_the_fleet_page_shows_hosts_and_arches(ui, app):
    with app.app_context():
        beat("amd1", arch="amd64", accel="kvm", emulators=("arm64",))
        add_vm(host="amd1", arch="arm64", emulated=True, emulation_warning="arm64 runs emulated")
    page = ui("viewer").get("/ui/").get_data(as_text=True)
    arm = re.search(r'<tr data-arch="arm64">(.*?)</tr>', page, re.S).group(1)
    assert re.findall(r"<td>(.*?)</td>", arm) == ["none", "amd1", "0", "0", "1"]
    host = re.search(r'<tr data-host="amd1">(.*?)</tr>', page, re.S).group(1)
    assert "kvm" in host and "1 vCPU · 128 MiB" in host and "up" in host


def test_the_vm_list_filters_and_badges_emulated_vms_with_their_warning(ui, app):
    with app.app_context():
        beat("amd1")
        add_vm(host="amd1", arch="arm64", emulated=True, emulation_warning="arm64 guests run under TCG here")
        add_vm(host="amd1", arch="amd64", state="stopped")
    client = ui("viewer")
    page = client.get("/ui/vms").get_data(as_text=True)
    assert page.count("<tr data-vm=") == 2
    assert "arm64 guests run under TCG here" in page
    stopped = client.get("/ui/vms?state=stopped").get_data(as_text=True)
    assert stopped.count("<tr data-vm=") == 1 and "Emulated" not in stopped


def test_the_vm_list_pages_a_large_fleet_in_the_same_few_queries(ui, app):
    with app.app_context():
        beat("amd1")
        for _ in range(DEFAULT_LIMIT + 1):
            add_vm(host="amd1", state="stopped")
    client = ui("viewer")
    statements: list[str] = []
    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    first = client.get("/ui/vms?state=stopped").get_data(as_text=True)
    # The session's token, the page's VMs with their jobs, the hosts for the filter: not a query per VM.
    assert first.count("<tr data-vm=") == DEFAULT_LIMIT and len(statements) < 15, statements
    next_page = re.search(r'<a href="([^"]+)" rel="next">', first).group(1).replace("&amp;", "&")
    assert "state=stopped" in next_page
    second = client.get(next_page).get_data(as_text=True)
    assert second.count("<tr data-vm=") == 1 and 'rel="next"' not in second
    assert client.get("/ui/vms?next=nonsense").status_code == 422


def test_the_create_form_previews_and_creates_through_the_api_services(ui, app):
    with app.app_context():
        beat("amd1", arch="amd64", accel="kvm", emulators=("arm64",))
    client = ui("operator")
    form = {"csrf_token": client.csrf, **{k: str(v) for k, v in TINY.items()}, "arch": "arm64", "name": "ui-vm"}
    preview = client.post("/ui/vms/preview", data=form).get_data(as_text=True)
    assert "tcg.arm64" in preview and 'data-testid="preview-warning"' in preview and "cortex-a57" in preview
    incomplete = client.post("/ui/vms/preview", data={**form, "vcpus": "lots"}).get_data(as_text=True)
    assert "vcpus" in incomplete and "Not a valid integer" in incomplete
    response = client.post("/ui/vms", data=form)
    assert response.status_code == 302
    vm_page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "ui-vm" in vm_page and 'data-testid="emulated-badge"' in vm_page
    again = client.post("/ui/vms/preview", data=form).get_data(as_text=True)
    assert "name_taken" in again


def test_the_create_form_makes_several_vms_at_once_or_none(ui, app):
    with app.app_context():
        beat("amd1", arch="amd64", accel="kvm")
    client = ui("operator")
    form = {"csrf_token": client.csrf, **{k: str(v) for k, v in TINY.items()}, "name": "farm", "count": "3"}
    response = client.post("/ui/vms", data=form)
    assert response.status_code == 302 and response.headers["Location"].endswith("/ui/vms")
    listing = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "3 VMs accepted: farm-1 to farm-3" in listing
    assert all(f"farm-{i}" in listing for i in (1, 2, 3))
    # farm-1 to farm-3 exist: the whole request is refused, said on the form, and no farm-4 is made.
    refused = client.post("/ui/vms", data={**form, "count": "4"}).get_data(as_text=True)
    assert "3 of the 4 names are taken" in refused and "none was created" in refused
    assert "farm-4" not in client.get("/ui/vms").get_data(as_text=True)


def test_a_refused_action_is_shown_with_the_api_message(ui, app):
    with app.app_context():
        beat("a")
        vm_id = add_vm(host="a", state="stopped")
    client = ui("operator")
    client.post(f"/ui/vms/{vm_id}/reboot", data={"csrf_token": client.csrf})
    page = client.get(f"/ui/vms/{vm_id}").get_data(as_text=True)
    assert f"cannot reboot VM {vm_id} while it is stopped" in page


def test_a_host_passthrough_vm_explains_why_it_cannot_live_migrate(ui, app):
    with app.app_context():
        beat("a", accel="kvm")
        beat("b", accel="kvm")
        vm_id = add_vm(host="a", accel="kvm", cpu_mode="host-passthrough")
    page = ui("operator").get(f"/ui/vms/{vm_id}").get_data(as_text=True)
    assert 'data-testid="live-refusal"' in page and "cpu_mode host-passthrough" in page
    assert re.search(r'<option value="b" >b \(amd64, kvm\)</option>', page)


def test_unknown_pages_are_html_errors(ui):
    response = ui("viewer").get("/ui/vms/nope")
    assert response.status_code == 404 and "no VM with id nope" in response.get_data(as_text=True)


def test_snapshot_and_migrate_forms_submit_through_the_services(ui, app):
    with app.app_context():
        beat("a")
        vm_id = add_vm(host="a", state="running", disk_format="qcow2")
    client = ui("operator")
    client.post(f"/ui/vms/{vm_id}/snapshots", data={"csrf_token": client.csrf, "name": "before", "memory": "on"})
    page = client.get(f"/ui/vms/{vm_id}").get_data(as_text=True)
    assert re.search(r"snapshot job [0-9a-f-]{36} accepted for queue host\.a", page)
    assert '<tr data-snapshot="before">' in page
    client.post(f"/ui/vms/{vm_id}/migrate", data={"csrf_token": client.csrf, "mode": "live"})
    page = client.get(f"/ui/vms/{vm_id}").get_data(as_text=True)
    assert f"VM {vm_id} has a snapshot job in state" in page  # the API's refusal, word for word


def test_only_an_admin_drains_hosts_from_the_fleet_page(ui, app):
    with app.app_context():
        beat("amd1")
    operator = ui("operator")
    assert ">Drain<" not in operator.get("/ui/").get_data(as_text=True)
    assert operator.post("/ui/hosts/amd1/drain", data={"csrf_token": operator.csrf}).status_code == 403
    admin = ui("admin")
    admin.post("/ui/hosts/amd1/drain", data={"csrf_token": admin.csrf})
    host = re.search(r'<tr data-host="amd1">(.*?)</tr>', admin.get("/ui/").get_data(as_text=True), re.S).group(1)
    assert "drained" in host and ">Undrain<" in host
