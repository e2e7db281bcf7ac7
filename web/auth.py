"""Bearer-token authentication and the role rule, applied to every request before its view.

Protected by default: every route needs a token except the `PUBLIC` allow-list, so a new blueprint needs
nothing to be protected. The role a request needs follows from its method and path alone (`required_role`):

- `GET /api/v1/health`, `GET /api/v1/ready`, `GET /api/v1/openapi.json` and the Swagger UI under
  `GET /api/v1/docs`: no token.
- anything under `/api/v1/tokens`: admin, reads too.
- a VM's console (`/api/v1/vms/<id>/console...`): operator, reads too (a console is control of the guest).
- any other `GET`/`HEAD`/`OPTIONS` (and `GET /metrics`): viewer.
- `POST`/`PUT`/`PATCH`/`DELETE` under `/api/v1/vms` and `/api/v1/jobs`: operator.
- every other mutation (`/api/v1/hosts`, `/api/v1/images`, anything new): admin.

The web UI under `/ui` authenticates with a session cookie instead and applies the same rule to the
API path it stands for (web/ui/session.py).

A request without a valid token is 401, one whose token's role is too weak 403, both as the standard JSON
error. The view's actor for job events is `token:<name>` (`current_actor()`).

Every token belongs to a project: a viewer or operator sees and acts only within it, an admin sees every
project or, with `?project=NAME` on any request, acts for that one (web/services/projects.py `scope_for`).
"""

from __future__ import annotations

import re

from flask import Flask, g, request

from web.errors import ApiError
from web.services.projects import scope_for
from web.services.tokens import Role, authenticate

API = "/api/v1"
UI = "/ui"
PUBLIC: frozenset[tuple[str, str]] = frozenset(
    {("GET", f"{API}/health"), ("GET", f"{API}/ready"), ("GET", f"{API}/openapi.json")}
)
# Swagger UI's page and files: what it shows is the public OpenAPI document.
DOCS = f"{API}/docs"
READS = frozenset({"GET", "HEAD", "OPTIONS"})
OPERATOR_PREFIXES = (f"{API}/vms", f"{API}/jobs")
ADMIN_PREFIXES = (f"{API}/tokens",)
# What belongs to projects: an admin's `?project=` matters (and is documented) here.
PROJECT_PREFIXES = (f"{API}/vms", f"{API}/jobs", f"{API}/projects")
CONSOLE = re.compile(rf"^{API}/vms/[^/]+/console(/|$)")


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.headers["WWW-Authenticate"] = 'Bearer realm="archq"'


class Forbidden(ApiError):
    status = 403
    code = "forbidden"


def under(path: str, prefixes: tuple[str, ...]) -> bool:
    return any(path == p or path.startswith(p + "/") for p in prefixes)


def required_role(method: str, path: str) -> Role | None:
    """The least role that may make this request; None for the public allow-list."""
    method = "GET" if method == "HEAD" else method
    if (method, path.rstrip("/") or "/") in PUBLIC or (method == "GET" and under(path, (DOCS,))):
        return None
    if under(path, ADMIN_PREFIXES):
        return Role.ADMIN
    if CONSOLE.match(path):
        return Role.OPERATOR
    if method in READS:
        return Role.VIEWER
    if under(path, OPERATOR_PREFIXES):
        return Role.OPERATOR
    return Role.ADMIN


def bearer_secret(header: str | None) -> str | None:
    scheme, _, secret = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        return None
    return secret.strip()


def current_actor() -> str:
    """Who makes this request, for job events: `token:<name>`."""
    return g.get("actor", "api")


def _check() -> None:
    if under(request.path, (UI,)):
        return  # the web UI's pages authenticate with a session cookie instead (web/ui/session.py)
    needed = required_role(request.method, request.path)
    if needed is None:
        return
    secret = bearer_secret(request.headers.get("Authorization"))
    if secret is None:
        raise Unauthorized("this endpoint needs a token: send `Authorization: Bearer <token>`")
    token = authenticate(secret)
    if token is None:
        raise Unauthorized("the token is unknown or revoked")
    role = Role.parse(token.role)
    if role < needed:
        raise Forbidden(f"{request.method} {request.path} needs the {needed.label} role; token "
                        f"{token.name!r} is {role.label}")  # fmt: skip
    g.actor, g.role = f"token:{token.name}", role
    g.scope = scope_for(token.project, role >= Role.ADMIN, request.args.get("project"))


def init_auth(app: Flask) -> None:
    app.before_request(_check)
