"""API tokens: created with a random secret that is shown once, stored as the secret's SHA-256 only, carrying
a role, listed and revoked. A secret has 256 bits of entropy, so an unsalted fast hash is enough: there is
nothing to brute-force."""

from __future__ import annotations

import enum
import hashlib
import secrets
import uuid
from collections.abc import Sequence

from sqlalchemy import select

from web.errors import Conflict, NotFound
from web.extensions import db
from web.models import DEFAULT_PROJECT, ApiToken, utcnow
from web.services.projects import require_project

PREFIX = "archq_"


class Role(enum.IntEnum):
    """Each role can do what the roles below it can."""

    VIEWER = 1
    OPERATOR = 2
    ADMIN = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Role:
        try:
            return cls[text.upper()]
        except KeyError:
            raise ValueError(f"unknown role {text!r}; roles: {', '.join(ROLES)}") from None


ROLES: tuple[str, ...] = tuple(role.label for role in Role)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(name: str, role: str, project: str = DEFAULT_PROJECT) -> tuple[ApiToken, str]:
    """A new token of `project` and its secret (the only time the secret exists outside the caller's hands)."""
    Role.parse(role)
    require_project(project)
    if active_by_name(name) is not None:
        raise Conflict(f"an active token named {name!r} exists; revoke it first or pick another name",
                       code="token_exists")  # fmt: skip
    secret = PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(
        id=str(uuid.uuid4()), name=name, role=role, project=project, secret_sha256=digest(secret), created_at=utcnow()
    )
    db.session.add(token)
    db.session.commit()
    return token, secret


def authenticate(secret: str) -> ApiToken | None:
    """The active token whose secret this is, else None."""
    token = db.session.scalar(select(ApiToken).where(ApiToken.secret_sha256 == digest(secret)))
    if token is None or token.revoked_at is not None:
        return None
    return token


def active_by_name(name: str) -> ApiToken | None:
    return db.session.scalar(select(ApiToken).where(ApiToken.name == name, ApiToken.revoked_at.is_(None)))


def list_tokens(include_revoked: bool = False) -> Sequence[ApiToken]:
    query = select(ApiToken).order_by(ApiToken.created_at)
    if not include_revoked:
        query = query.where(ApiToken.revoked_at.is_(None))
    return db.session.scalars(query).all()


def find_token(id_or_name: str) -> ApiToken:
    """An active token by id or name."""
    token = db.session.get(ApiToken, id_or_name)
    if token is None or token.revoked_at is not None:
        token = active_by_name(id_or_name)
    if token is None:
        raise NotFound(f"no active token with id or name {id_or_name!r}", code="token_not_found")
    return token


def revoke_token(id_or_name: str) -> ApiToken:
    token = find_token(id_or_name)
    token.revoked_at = utcnow()
    db.session.commit()
    return token
