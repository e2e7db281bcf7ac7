"""`/health` says the API process answers (liveness); `/ready` says it can take a job now, because the database
and the broker both answer, and names the one that does not (readiness), as load balancers and compose expect."""

from __future__ import annotations

import dataclasses

from queues.config import Settings
from tests.support.api import error_of
from web import create_app
from web.extensions import db

CLOSED = "127.0.0.1:1"  # nothing listens on port 1: connections are refused at once


def answer_of(settings: Settings):
    app = create_app(settings)
    try:
        return app.test_client().get("/api/v1/ready")
    finally:
        with app.app_context():
            db.engine.dispose()


def test_ready_when_the_database_and_the_broker_answer(anonymous_client):
    response = anonymous_client.get("/api/v1/ready")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ready", "checks": {"database": "ok", "broker": "ok"}}


def test_a_down_broker_is_named_and_the_api_still_lives(app, settings):
    response = answer_of(
        dataclasses.replace(settings, broker_url=f"redis://:pw@{CLOSED}/0", redis_url=f"redis://:pw@{CLOSED}/0")
    )
    error = error_of(response, 503)
    assert error["code"] == "not_ready" and error["message"] == "not ready: the broker is down"
    assert set(error["fields"]) == {"broker"}
    assert "pw" not in response.get_data(as_text=True)
    assert app.test_client().get("/api/v1/health").status_code == 200


def test_a_down_database_is_named_without_its_credentials(settings):
    url = f"postgresql+psycopg://archq:s3cret@{CLOSED}/archq"
    error = error_of(answer_of(dataclasses.replace(settings, database_url=url)), 503)
    assert set(error["fields"]) == {"database"}
    assert "s3cret" not in str(error)


def test_both_down_are_both_named(settings):
    broken = dataclasses.replace(
        settings,
        database_url=f"postgresql+psycopg://a:b@{CLOSED}/a",
        broker_url=f"redis://{CLOSED}/0",
        redis_url=f"redis://{CLOSED}/0",
    )
    error = error_of(answer_of(broken), 503)
    assert error["message"] == "not ready: the broker and database are down"
    assert set(error["fields"]) == {"broker", "database"}
