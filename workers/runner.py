"""Running one job message exactly once: load it, claim it, run the operation, report the outcome."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from celery import Celery
from marshmallow import ValidationError

from queues import messages
from queues.claims import Claim, ClaimStore
from queues.names import CONTROL, Task
from workers.errors import JobFailed
from workers.operations import WorkerContext

log = logging.getLogger(__name__)

Operation = Callable[[WorkerContext, dict], dict]

# Reports must reach the conductor even across a short broker outage; the job's claim is already `done`.
_REPORT_RETRY = {"max_retries": 120, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 5}


@dataclass
class Runner:
    app: Celery
    ctx: WorkerContext
    claims: ClaimStore
    lease_s: float

    def report(self, job_id: str, state: str, result: dict | None = None, error: dict | None = None) -> None:
        update = messages.job_update.dump(
            {
                "job_id": job_id,
                "state": state,
                "host": self.ctx.host.name,
                "at": time.time(),
                "result": result or {},
                "error": error,
            }
        )
        self.app.send_task(
            Task.JOB_UPDATE, kwargs={"update": update}, queue=CONTROL, retry=True, retry_policy=_REPORT_RETRY
        )

    def run(self, raw: dict, operation: Operation) -> str:
        """Returns what happened, for the log: claimed, stale, taken or done."""
        try:
            msg = messages.job_message.load(raw)
        except ValidationError as exc:
            log.error("dropping a malformed job message: %s", exc.messages)
            return "malformed"
        job_id = str(msg["job_id"])
        owner = f"{self.ctx.host.name}/{uuid.uuid4().hex}"
        outcome = self.claims.claim(job_id, msg["token"], owner, self.lease_s)
        if outcome is not Claim.CLAIMED:
            log.info("job %s: %s, not running it again", job_id, outcome)
            return outcome.value
        self.report(job_id, "running")
        with self.claims.lease(job_id, owner, self.lease_s):
            try:
                result = operation(self.ctx, msg["vm"])
            except JobFailed as exc:
                state, result, error = "failed", {}, {"code": exc.code, "message": exc.message}
            except Exception as exc:
                log.exception("job %s failed unexpectedly", job_id)
                state, result = "failed", {}
                error = {
                    "code": "internal_error",
                    "message": f"{type(exc).__name__}: {exc} (host {self.ctx.host.name}; see its worker log)",
                }
            else:
                state, error = "succeeded", None
        self.claims.finish(job_id, owner)
        self.report(job_id, state, result, error)
        return Claim.CLAIMED.value
