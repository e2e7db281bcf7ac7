"""The web UI under /ui: server-rendered pages (Jinja2) on the API process, calling the same services as the
API. Authentication is a session cookie made from an API token at /ui/login (web/ui/session.py); every form
carries a CSRF token (Flask-WTF)."""

from __future__ import annotations

from datetime import timedelta

from flask import Blueprint, Flask, request
from flask.sessions import SecureCookieSessionInterface
from flask_wtf.csrf import CSRFProtect

from queues.config import Settings
from web.local_secrets import ui_secret_key

bp = Blueprint("ui", __name__, url_prefix="/ui", template_folder="templates", static_folder="static")
csrf = CSRFProtect()
# How long a login lasts; the token behind it is checked on every request, so revoking it ends the session.
SESSION_LIFETIME = timedelta(hours=12)


class SessionCookies(SecureCookieSessionInterface):
    """Flask's signed cookie, `Secure` whenever the request came over TLS (gunicorn with a certificate, or a
    trusted proxy's X-Forwarded-Proto), so it also works on plain HTTP on loopback."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return request.is_secure


def init_ui(app: Flask, settings: Settings) -> None:
    app.config.update(
        SECRET_KEY=ui_secret_key(settings),
        SESSION_COOKIE_NAME="archq_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_PATH="/ui",
        PERMANENT_SESSION_LIFETIME=SESSION_LIFETIME,
        # The API's POSTs carry a bearer token, not a cookie: only the UI's forms are checked (web/ui/session.py).
        WTF_CSRF_CHECK_DEFAULT=False,
        # A form stays valid as long as the session that rendered it.
        WTF_CSRF_TIME_LIMIT=None,
    )
    app.session_interface = SessionCookies()
    csrf.init_app(app)
    from web.ui import actions, console, pages, session  # noqa: F401  (they add their routes to bp)

    app.register_blueprint(bp)
