"""ARCHQ_LOG_FORMAT=json: one JSON object per line, carrying the job, VM, host and queue a line is about, in
every thread the job's work runs in; a bad value is refused when the settings are read."""

from __future__ import annotations

import contextvars
import io
import json
import logging
import logging.config
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from queues import logs
from queues.config import SettingError, Settings


@pytest.fixture
def captured():
    """The root logger configured as a process would be, its stream captured; restored afterwards."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)

    def configure(log_format: str) -> io.StringIO:
        logs.configure(log_format)
        stream = io.StringIO()
        root.handlers[0].setStream(stream)
        return stream

    yield configure
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def test_json_lines_carry_the_bound_job_vm_host_and_queue(captured):
    stream = captured("json")
    log = logging.getLogger("archq.test")
    with logs.bind(job_id="j1", vm_id="v1", host="h1", queue="amd64"):
        log.info("creating %s", "demo")
        with logs.bind(queue=None):
            log.warning("still here")
    log.info("after")
    first, second, after = (json.loads(line) for line in stream.getvalue().splitlines())
    assert {k: first[k] for k in ("level", "logger", "message", "job_id", "vm_id", "host", "queue")} == {
        "level": "INFO", "logger": "archq.test", "message": "creating demo",
        "job_id": "j1", "vm_id": "v1", "host": "h1", "queue": "amd64",
    }  # fmt: skip
    assert first["time"].endswith("+00:00")
    assert second["queue"] == "amd64" and second["level"] == "WARNING"
    assert not set(logs.CONTEXT_FIELDS) & set(after)


def test_the_fields_follow_the_job_into_its_operation_thread_and_exceptions_stay_one_line(captured):
    stream = captured("json")
    log = logging.getLogger("archq.test")

    def operation() -> None:
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            log.exception("operation failed")

    with ThreadPoolExecutor(1) as pool, logs.bind(job_id="j2"):
        pool.submit(contextvars.copy_context().run, operation).result()
        # A thread started without the context (a heartbeat) does not claim the job.
        heartbeat = threading.Thread(target=lambda: log.info("unrelated"))
        heartbeat.start()
        heartbeat.join()
    failed, unrelated = (json.loads(line) for line in stream.getvalue().splitlines())
    assert failed["job_id"] == "j2" and "RuntimeError: boom" in failed["exception"]
    assert unrelated["message"] == "unrelated" and "job_id" not in unrelated


def test_text_is_the_default_format(captured, monkeypatch):
    monkeypatch.delenv("ARCHQ_LOG_FORMAT", raising=False)
    stream = captured(Settings.from_env().log_format)
    logging.getLogger("archq.test").info("plain")
    assert stream.getvalue().rstrip().endswith("INFO archq.test: plain")


def test_an_unknown_format_is_refused_naming_the_setting(monkeypatch):
    monkeypatch.setenv("ARCHQ_LOG_FORMAT", "xml")
    with pytest.raises(SettingError, match="ARCHQ_LOG_FORMAT='xml': must be one of text, json"):
        Settings.from_env()


def test_gunicorn_logs_through_the_same_format(captured):
    # What gunicorn does with it (`captured` restores the root logger afterwards).
    logging.config.dictConfig(logs.gunicorn_config("json"))
    stream = io.StringIO()
    logging.getLogger().handlers[0].setStream(stream)
    logging.getLogger("gunicorn.access").info('127.0.0.1 "GET /api/v1/health HTTP/1.1" 200')
    line = json.loads(stream.getvalue())
    assert line["logger"] == "gunicorn.access" and "GET /api/v1/health" in line["message"]
