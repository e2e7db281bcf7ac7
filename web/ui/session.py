"""Login with an API token, the session it makes, and the same role rule as the API for every UI request.

The session cookie holds the token's id, never its secret; each request loads the token again, so a revoked
token logs its sessions out. A UI path needs the role its API counterpart needs (`/ui/vms/x/stop` as
`/api/v1/vms/x/stop`, see web/auth.py; the create form as the create); login, logout and the static files
need none. Every POST is checked for its CSRF token (Flask-WTF: a signed per-session token in the form or
the X-CSRFToken header, and the Referer under HTTPS), which SameSite=Strict backs up."""

from __future__ import annotations

from flask import abort, g, redirect, render_template, request, session, url_for
from werkzeug.wrappers import Response

from web.auth import API, UI, required_role
from web.extensions import db
from web.models import ApiToken
from web.services.projects import scope_for
from web.services.tokens import Role, authenticate
from web.ui import bp, csrf

OPEN_ENDPOINTS = frozenset({"ui.login", "ui.logout", "ui.static"})
# Pages that exist only to make a mutation need the role of the request they lead to.
FORM_PAGES = {"ui.create_page": ("POST", f"{API}/vms")}


def _session_token() -> ApiToken | None:
    token_id = session.get("token_id")
    token = db.session.get(ApiToken, token_id) if token_id else None
    return token if token is not None and token.revoked_at is None else None


@bp.before_request
def check() -> Response | None:
    if request.method == "POST":
        csrf.protect()
    if request.endpoint in OPEN_ENDPOINTS:
        return None
    token = _session_token()
    if token is None:
        session.clear()
        return redirect(url_for("ui.login", next=request.full_path if request.method == "GET" else None))
    role = Role.parse(token.role)
    method, path = FORM_PAGES.get(request.endpoint, (request.method, API + request.path.removeprefix(UI)))
    needed = required_role(method, path)
    if needed is not None and role < needed:
        abort(403, f"this needs the {needed.label} role; you are logged in as {token.name!r} ({role.label})")
    g.actor, g.role, g.token_name = f"token:{token.name}", role, token.name
    g.scope = scope_for(token.project, role >= Role.ADMIN, None)
    return None


@bp.app_context_processor
def who() -> dict:
    """What every template may ask: who is logged in and what their role allows."""
    role = g.get("role")
    return {
        "user": g.get("token_name"),
        "role": role.label if role else None,
        "can_operate": role is not None and role >= Role.OPERATOR,
        "can_administer": role is not None and role >= Role.ADMIN,
    }


@bp.route("/login", methods=["GET", "POST"])
def login():
    error = None
    if request.method == "POST":
        token = authenticate(request.form.get("token", "").strip())
        if token is not None:
            session.clear()
            session.permanent = True
            session["token_id"] = token.id
            return redirect(_safe_next(request.args.get("next")))
        error = "That token is unknown or revoked."
    return render_template("ui/login.html", error=error), 401 if error else 200


@bp.post("/logout")
def logout():
    session.clear()
    return redirect(url_for("ui.login"))


def _safe_next(target: str | None) -> str:
    """Only a path of the UI itself: never an open redirect to another site."""
    if target and target.startswith(UI + "/") and not target.startswith("//"):
        return target
    return url_for("ui.fleet")
