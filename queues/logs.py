"""One log format for every archq process (the API under gunicorn, the conductor and the workers under Celery,
the `archq` commands): `text` lines, or with ARCHQ_LOG_FORMAT=json one JSON object per line that carries the
job, VM, host and queue a line is about, for a log pipeline to index.

Those four fields come from `bind(...)`, which sets them for the code it wraps (and for threads started with
`contextvars.copy_context().run`), so a log call needs no `extra=` of its own.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_FORMATS = ("text", "json")
# What a JSON line says about the work it belongs to, when known.
CONTEXT_FIELDS = ("job_id", "vm_id", "host", "queue")

_context: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("archq_log_context", default={})  # noqa: B039


@contextlib.contextmanager
def bind(**fields: object) -> Iterator[None]:
    """Log lines written inside carry these fields (None values are left out)."""
    token = _context.set({**_context.get(), **{k: str(v) for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


class ContextFilter(logging.Filter):
    """Puts the bound fields on each record (a field given with `extra=` wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _context.get().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, the bound fields, the exception."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line |= {name: getattr(record, name) for name in CONTEXT_FIELDS if getattr(record, name, None) is not None}
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str)


def formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)


def configure(log_format: str, level: int = logging.INFO) -> None:
    """The root logger writes to stderr in `log_format`; every other logger (Celery's, gunicorn's, archq's)
    propagates to it, so all share the one format."""
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(log_format))
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    _leave_to_us_by_celery()


def _leave_to_us_by_celery() -> None:
    """A receiver of Celery's `setup_logging` tells a Celery worker started in this process not to configure
    logging itself (its task loggers would otherwise get their own handler and format)."""
    try:
        from celery import signals
    except ImportError:  # the client-only install has no Celery, and nothing to tell it
        return
    signals.setup_logging.connect(_configured, weak=False)


def _configured(**_kwargs: object) -> None:
    """Logging is configured already (by `configure`)."""


def gunicorn_config(log_format: str) -> dict:
    """gunicorn's `logconfig_dict`: its error and access logs through the same handler and format."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": ContextFilter}},
        "formatters": {"archq": {"()": formatter, "log_format": log_format}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "archq",
                "filters": ["context"],
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": "INFO", "handlers": ["stderr"]},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": [], "propagate": True},
            "gunicorn.access": {"level": "INFO", "handlers": [], "propagate": True},
        },
    }
