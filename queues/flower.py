"""The Celery app Flower runs with (`celery -A queues.flower flower`, which `archq flower` starts), so that
its Broker page (and `/api/queues/length`) lists archq's queues with their depths.

Flower lists the queues its inspected workers consume (each `host.<name>` among them) or, before it has
inspected any, the app's queues, never both. archq's routed queues matter most when nobody consumes them:
arm64 jobs waiting for an arm64 host are what an operator looks for. So the list is always the union."""

from __future__ import annotations

from flower.views import BaseHandler

from queues.celery_app import make_celery
from queues.config import Settings
from queues.names import STATIC_QUEUES

app = make_celery(Settings.from_env())

_inspected_queues = BaseHandler.get_active_queue_names


def _archq_queues(handler: BaseHandler) -> list[str]:
    return sorted({*STATIC_QUEUES, *_inspected_queues(handler)})


BaseHandler.get_active_queue_names = _archq_queues
