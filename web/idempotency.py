"""`Idempotency-Key` on POST: the same key with the same request within 24 h returns the original response
(the same job); the same key with a different request is refused with 422."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from datetime import UTC, timedelta

from flask import Response, jsonify, make_response, request
from sqlalchemy.exc import IntegrityError

from web.errors import Unprocessable
from web.extensions import db
from web.models import IdempotencyKey, utcnow

HEADER = "Idempotency-Key"
KEEP = timedelta(hours=24)


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


def _fresh(record: IdempotencyKey | None) -> IdempotencyKey | None:
    if record is None:
        return None
    created = record.created_at if record.created_at.tzinfo else record.created_at.replace(tzinfo=UTC)
    return record if utcnow() - created < KEEP else None


def idempotent(view: Callable) -> Callable:
    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        key = request.headers.get(HEADER)
        if key is None:
            return view(*args, **kwargs)
        if not 1 <= len(key) <= 255:
            raise Unprocessable(f"{HEADER} must be 1-255 characters", fields={HEADER: ["1-255 characters"]})
        fingerprint = _fingerprint()
        existing = db.session.get(IdempotencyKey, key)
        if _fresh(existing) is not None:
            return _replay(existing, fingerprint)
        response = make_response(view(*args, **kwargs))
        if response.status_code >= 500 or not response.is_json:
            return response
        record = existing or IdempotencyKey(key=key)
        record.fingerprint, record.status, record.body = fingerprint, response.status_code, response.get_json()
        record.location, record.created_at = response.headers.get("Location"), utcnow()
        db.session.add(record)
        try:
            db.session.commit()
        except IntegrityError:
            # A concurrent request with the same key won the race: answer what it answered.
            db.session.rollback()
            return _replay(db.session.get(IdempotencyKey, key), fingerprint)
        return response

    # The OpenAPI document lists the Idempotency-Key header on the views that honour it.
    wrapper.idempotent = True
    return wrapper
