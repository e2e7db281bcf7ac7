"""`Idempotency-Key` on POST: the same key with the same request within 24 h returns the original response
(the same job); the same key with a different request is refused with 422; the same request while the first
is still being handled is refused with 409 and `Retry-After`. A key is the project's the request acts for
(web/services/projects.py): another project's request with the same key is another request."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from datetime import UTC, timedelta

from flask import Response, jsonify, make_response, request
from sqlalchemy import ColumnElement, and_, delete, update
from sqlalchemy.exc import IntegrityError

from web.errors import Conflict, Unprocessable
from web.extensions import db
from web.models import IdempotencyKey, utcnow
from web.services.projects import current_scope

HEADER = "Idempotency-Key"
KEEP = timedelta(hours=24)
# A create answers in well under a second: a client told to retry does so soon.
RETRY_AFTER_S = 1
# No request runs this long: a reservation still without an answer was left by an API process that died.
INTERRUPTED_AFTER = timedelta(minutes=10)


def _fingerprint() -> str:
    digest = hashlib.sha256(f"{request.method} {request.path}\n".encode())
    digest.update(request.get_data(cache=True))
    return digest.hexdigest()


def _replay(record: IdempotencyKey, fingerprint: str) -> Response:
    if record.fingerprint != fingerprint:
        raise Unprocessable(
            f"{HEADER} {record.key!r} was used for a different request; use a new key for a new request",
            code="idempotency_key_reused",
            fields={HEADER: ["already used with another body or path"]},
        )
    response = jsonify(record.body)
    response.status_code = record.status
    if record.location:
        response.headers["Location"] = record.location
    response.headers["Idempotent-Replayed"] = "true"
    return response


def _age(record: IdempotencyKey) -> timedelta:
    created = record.created_at if record.created_at.tzinfo else record.created_at.replace(tzinfo=UTC)
    return utcnow() - created


def _fresh(record: IdempotencyKey) -> bool:
    return _age(record) < KEEP


def _reserve(project: str, key: str, fingerprint: str) -> IdempotencyKey | None:
    """Take the key for this request before it runs, in a committed row that the primary key makes unique:
    of concurrent requests with one key exactly one gets None and runs; the others get the holder's record
    (answered, or in flight while its `status` is None)."""
    while True:
        db.session.add(IdempotencyKey(project=project, key=key, fingerprint=fingerprint, created_at=utcnow()))
        try:
            db.session.commit()
            return None
        except IntegrityError:
            db.session.rollback()
        existing = db.session.get(IdempotencyKey, {"project": project, "key": key}, populate_existing=True)
        if existing is None:
            continue  # its holder failed and released it just now: try again
        if _fresh(existing):
            return existing
        # Expired: taken over by whoever replaces the row it read, so two takers cannot both win.
        taken = db.session.execute(
            update(IdempotencyKey)
            .where(_row(project, key), IdempotencyKey.created_at == existing.created_at)
            .values(fingerprint=fingerprint, status=None, body=None, location=None, created_at=utcnow())
        )
        db.session.commit()
        if taken.rowcount == 1:
            return None


def _answer(record: IdempotencyKey, fingerprint: str) -> Response:
    if record.status is None and record.fingerprint == fingerprint and _age(record) > INTERRUPTED_AFTER:
        # Its job may or may not have been committed: running the request again could make a second one.
        raise Conflict(
            f"the first request with {HEADER} {record.key!r} was interrupted before it answered; whether it took "
            "effect is unknown: look for its job (GET /api/v1/jobs), then retry with a new key if it is not there",
            code="idempotency_key_interrupted",
        )
    if record.status is None and record.fingerprint == fingerprint:
        conflict = Conflict(
            f"a request with {HEADER} {record.key!r} is still being handled; retry to get its answer",
            code="idempotency_key_in_flight",
        )
        conflict.headers["Retry-After"] = str(RETRY_AFTER_S)
        raise conflict
    return _replay(record, fingerprint)


def _row(project: str, key: str) -> ColumnElement[bool]:
    return and_(IdempotencyKey.project == project, IdempotencyKey.key == key)


def _release(project: str, key: str) -> None:
    """The request failed without an answer worth replaying: the key is free for its retry."""
    db.session.rollback()
    db.session.execute(delete(IdempotencyKey).where(_row(project, key), IdempotencyKey.status.is_(None)))
    db.session.commit()


def _store(project: str, key: str, response: Response) -> None:
    db.session.execute(
        update(IdempotencyKey)
        .where(_row(project, key))
        .values(status=response.status_code, body=response.get_json(), location=response.headers.get("Location"))
    )
    db.session.commit()


def idempotent(view: Callable) -> Callable:
    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        key = request.headers.get(HEADER)
        if key is None:
            return view(*args, **kwargs)
        if not 1 <= len(key) <= 255:
            raise Unprocessable(f"{HEADER} must be 1-255 characters", fields={HEADER: ["1-255 characters"]})
        fingerprint = _fingerprint()
        project = current_scope().acting
        holder = _reserve(project, key, fingerprint)
        if holder is not None:
            return _answer(holder, fingerprint)
        try:
            response = make_response(view(*args, **kwargs))
        except BaseException:
            # A refusal raised by the view (validation, conflict) is not kept: the same request may succeed later.
            _release(project, key)
            raise
        if response.status_code >= 500 or not response.is_json:
            _release(project, key)
        else:
            _store(project, key, response)
        return response

    # The OpenAPI document lists the Idempotency-Key header on the views that honour it.
    wrapper.idempotent = True
    return wrapper
