"""Idempotency-Key: a retried POST gets the original response; a reused key with another body is refused."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

from tests.support.api import TINY
from web.extensions import db
from web.idempotency import INTERRUPTED_AFTER
from web.models import IdempotencyKey, utcnow


def post(client, body: dict, key: str | None):
    headers = {"Idempotency-Key": key} if key else {}
    return client.post("/api/v1/vms", json=body, headers=headers)


def test_the_same_key_and_body_return_the_original_job(client):
    first = post(client, TINY, "retry-1")
    second = post(client, TINY, "retry-1")
    assert first.status_code == second.status_code == 202
    assert second.get_json()["job"]["id"] == first.get_json()["job"]["id"]
    assert second.headers["Location"] == first.headers["Location"]
    assert second.headers["Idempotent-Replayed"] == "true"
    assert len(client.get("/api/v1/vms").get_json()["vms"]) == 1


def test_the_same_key_with_another_body_is_422(client):
    post(client, TINY, "retry-2")
    response = post(client, {**TINY, "vcpus": 2}, "retry-2")
    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "idempotency_key_reused"


def test_without_a_key_each_post_is_a_new_request(client):
    assert post(client, TINY, None).status_code == 202
    assert post(client, TINY, None).status_code == 409  # the name is taken by the first one


def test_a_replayed_refusal_is_the_same_refusal(client):
    first = post(client, {**TINY, "vcpus": 0}, "bad-1")
    second = post(client, {**TINY, "vcpus": 0}, "bad-1")
    assert first.status_code == second.status_code == 422
    assert first.get_json() == second.get_json()


def test_a_key_whose_first_request_died_unanswered_is_not_run_again(client):
    # An API process died while it handled the first request: its reservation stayed without an answer.
    body = json.dumps(TINY).encode()
    with client.application.app_context():
        db.session.add(
            IdempotencyKey(
                key="died-1",
                fingerprint=hashlib.sha256(b"POST /api/v1/vms\n" + body).hexdigest(),
                created_at=utcnow() - INTERRUPTED_AFTER - timedelta(seconds=1),
            )
        )
        db.session.commit()
    response = client.post(
        "/api/v1/vms", data=body, content_type="application/json", headers={"Idempotency-Key": "died-1"}
    )
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "idempotency_key_interrupted"
    assert client.get("/api/v1/vms").get_json()["vms"] == []
