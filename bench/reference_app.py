"""bench/submit.py's reference: the create endpoint a user would write instead of running archq. A minimal Flask
app that validates the same body with marshmallow, inserts one row and calls `apply_async` (send_task) on
Celery's pooled producer, run under gunicorn with archq's settings. No routing, idempotency, outbox, auth or
names check: what it lacks is what archq's figure pays for.

Its database and broker come from REF_DATABASE_URL and REF_BROKER_URL."""

from __future__ import annotations

import os
import uuid

from celery import Celery
from flask import Flask, jsonify, request
from marshmallow import Schema, ValidationError, fields, validate
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, event, insert

QUEUE = "reference"
metadata = MetaData()
vms = Table(
    "vms",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(63), nullable=False),
    Column("arch", String(16), nullable=False),
    Column("vcpus", Integer, nullable=False),
    Column("memory_mib", Integer, nullable=False),
    Column("image", String(63), nullable=False),
    Column("state", String(16), nullable=False),
)


class CreateVm(Schema):
    name = fields.String(required=True, validate=validate.Regexp(r"^[a-z0-9][a-z0-9-]{0,62}$"))
    arch = fields.String(required=True, validate=validate.OneOf(["amd64", "arm64"]))
    vcpus = fields.Integer(required=True, strict=True, validate=validate.Range(1, 64))
    memory_mib = fields.Integer(required=True, strict=True, validate=validate.Range(64, 262144))
    image = fields.String(required=True, validate=validate.Length(1, 63))


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # What archq sets too: the same journal, so the figures compare the code and not the file's settings.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def create_app() -> Flask:
    url = os.environ["REF_DATABASE_URL"]
    sqlite = url.startswith("sqlite")
    engine = create_engine(url, **({"connect_args": {"timeout": 30}} if sqlite else {"pool_pre_ping": True}))
    if sqlite:
        event.listen(engine, "connect", _sqlite_pragmas)
    metadata.create_all(engine)
    celery = Celery("reference", broker=os.environ["REF_BROKER_URL"])
    schema = CreateVm()
    app = Flask(__name__)

    @app.post("/api/v1/vms")
    def create_vm():
        try:
            body = schema.load(request.get_json(force=True))
        except ValidationError as exc:
            return jsonify({"error": exc.messages}), 422
        vm_id = str(uuid.uuid4())
        row = {"id": vm_id, "state": "pending", **body}
        with engine.begin() as conn:
            conn.execute(insert(vms).values(**row))
        with celery.producer_or_acquire() as producer:
            celery.send_task("reference.create_vm", kwargs={"vm": row}, queue=QUEUE, producer=producer)
        return jsonify({"vm": row}), 202

    return app
