"""Conductor tasks: thin glue from `control` messages to the services."""

from __future__ import annotations

import logging

import redis
from celery import Celery
from flask import Flask
from marshmallow import ValidationError

from queues import logs, messages
from queues.liveness import note_recorded
from queues.names import Task
from web.extensions import db
from web.services.dispatch import dispatch_ids
from web.services.hosts import record_heartbeat
from web.services.jobs import record_job_update
from web.services.migrations import adopt_moved_vms, arrival_of
from web.services.reconciler import reconcile_host
from web.services.rehome import rehome_after_stop

log = logging.getLogger(__name__)


def register_tasks(celery: Celery, app: Flask) -> None:
    liveness = redis.Redis.from_url(app.extensions["archq"].settings.redis_url)

    @celery.task(name=Task.JOB_UPDATE, acks_late=True, ignore_result=True, shared=False)
    def job_update(update: dict) -> None:
        try:
            data = messages.job_update.load(update)
        except ValidationError as exc:
            log.error("dropping a malformed job update: %s", exc.messages)
            return
        ext = app.extensions["archq"]
        with app.app_context(), logs.bind(job_id=data["job_id"], host=data["host"]):
            if not record_job_update(data):
                return
            job_id = str(data["job_id"])
            if arrival := arrival_of(job_id):
                dispatch_ids(ext.celery, ext.claims, [arrival], actor="conductor")
            if moving := rehome_after_stop(job_id, ext.settings):
                dispatch_ids(ext.celery, ext.claims, [moving], actor="rehome:auto")

    @celery.task(name=Task.HEARTBEAT, acks_late=True, ignore_result=True, shared=False)
    def heartbeat(beat: dict) -> None:
        try:
            data = messages.heartbeat.load(beat)
        except ValidationError as exc:
            log.error("dropping a malformed heartbeat: %s", exc.messages)
            return
        ext = app.extensions["archq"]
        with app.app_context(), logs.bind(host=data["host"]):
            host = record_heartbeat(data)
            db.session.commit()
            adopt_moved_vms(host)
            restarts = reconcile_host(host, ext.settings)
            if restarts:
                dispatch_ids(ext.celery, ext.claims, restarts, actor="reconciler")
        if data["digest"]:
            note_recorded(liveness, data["host"], data["digest"])
