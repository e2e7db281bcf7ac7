"""Running one job message exactly once: load it, claim it, run the operation, report the outcome."""

from __future__ import annotations

import contextvars
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field

import redis
from celery import Celery, current_task
from marshmallow import ValidationError

from queues import logs, messages
from queues.claims import Claim, ClaimStore
from queues.names import CONTROL, Task
from queues.vocabulary import JobState
from workers.attest import signed_record
from workers.errors import JobCancelled, WorkerError
from workers.job_run import JobRun, call
from workers.operations import WorkerContext
from workers.watchdog import Activity

log = logging.getLogger(__name__)

# (ctx, vm), or (ctx, vm, run) for an operation marked @needs_job (workers/job_run.py).
Operation = Callable[..., dict]

# Reports must reach the conductor even across a short broker outage; if they do not, the conductor finds the
# report stored beside the `done` claim.
_REPORT_RETRY = {"max_retries": 5, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 2}


@dataclass
class Outcome:
    state: JobState
    result: dict = field(default_factory=dict)
    error: dict | None = None


@dataclass
class Runner:
    app: Celery
    ctx: WorkerContext
    claims: ClaimStore
    lease_s: float
    time_limits: dict[str, float] = field(default_factory=dict)
    # What undoes a kind's work when it is cancelled too late or runs over its time limit (workers/tasks.py).
    rollbacks: dict[str, Operation] = field(default_factory=dict)
    activity: Activity = field(default_factory=Activity)
    # The jobs this process has claimed and not finished: its heartbeat lists them, so the conductor never
    # resumes a run that is still alive, whatever happened to its lease.
    _running: set[str] = field(default_factory=set)
    _running_lock: threading.Lock = field(default_factory=threading.Lock)
    _pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(thread_name_prefix="archq-op"))

    def _update(
        self, job_id: str, outcome: Outcome, progress: dict | None = None, attestation: dict | None = None
    ) -> dict:
        return messages.job_update.dump(
            {
                "job_id": job_id,
                "state": outcome.state,
                "host": self.ctx.host.name,
                "at": time.time(),
                "result": outcome.result,
                "error": outcome.error,
                "progress": progress,
                "attestation": attestation,
            }
        )

    def _job_run(self, job_id: str, params: dict) -> JobRun:
        def progress(values: dict) -> None:
            # Best effort: a lost progress report only leaves the figures older.
            self.report(job_id, self._update(job_id, Outcome(JobState.RUNNING), progress=values))

        return JobRun(job_id, params, progress, lambda: self.claims.cancel_requested(job_id))

    def report(self, job_id: str, update: dict) -> None:
        try:
            self.app.send_task(
                Task.JOB_UPDATE, kwargs={"update": update}, queue=CONTROL, retry=True, retry_policy=_REPORT_RETRY
            )
        except Exception:
            log.warning("job %s: %s report not sent; it stays stored with the claim", job_id, update["state"])

    def run(self, raw: dict, operation: Operation) -> str:
        """Returns what happened, for the log: claimed, stale, taken, done or malformed."""
        self.activity.started()
        try:
            return self._run(raw, operation)
        finally:
            self.activity.finished()

    def _run(self, raw: dict, operation: Operation) -> str:
        try:
            msg = messages.job_message.load(raw)
        except ValidationError as exc:
            log.error("dropping a malformed job message: %s", exc.messages)
            return "malformed"
        job_id = str(msg["job_id"])
        with logs.bind(job_id=job_id, vm_id=msg["vm"].get("id"), host=self.ctx.host.name, queue=_queue()):
            return self._claim_and_run(job_id, msg, operation)

    def _claim_and_run(self, job_id: str, msg: dict, operation: Operation) -> str:
        owner = f"{self.ctx.host.name}/{uuid.uuid4().hex}"
        claim = self.claims.claim(job_id, msg["token"], owner, self.lease_s)
        if claim is not Claim.CLAIMED:
            log.info("job %s: %s, not running it again", job_id, claim)
            return claim.value
        with self._running_lock:
            self._running.add(job_id)
        try:
            return self._claimed(job_id, msg, owner, operation)
        finally:
            with self._running_lock:
                self._running.discard(job_id)

    def running_jobs(self) -> list[str]:
        with self._running_lock:
            return sorted(self._running)

    def _claimed(self, job_id: str, msg: dict, owner: str, operation: Operation) -> str:
        self.report(job_id, self._update(job_id, Outcome(JobState.RUNNING)))
        log.info("job %s: %s running", job_id, msg["kind"])
        run = self._job_run(job_id, msg["params"])
        with self.claims.lease(job_id, owner, msg["token"], self.lease_s):
            outcome = self._execute(run, msg, operation)
            record = None
            if outcome.state == JobState.SUCCEEDED:
                record = signed_record(self.ctx, msg["kind"], msg["vm"], run, outcome.result, msg["chain_head"])
        log.info("job %s: %s %s", job_id, msg["kind"], outcome.state)
        update = self._update(job_id, outcome, progress=run.closing_progress or None, attestation=record)
        if not self._until_redis_answers(lambda: self.claims.finish(job_id, owner, json.dumps(update))):
            # Its lease lapsed and another run holds the job: that run reports, not this one.
            log.warning("job %s: taken over while it ran here; its %s is not reported", job_id, outcome.state)
            return Claim.TAKEN.value
        self.report(job_id, update)
        return Claim.CLAIMED.value

    def _until_redis_answers(self, call: Callable[[], bool], patience_s: float = 300.0) -> bool:
        """The outcome must reach Redis before the message is acknowledged: a broker outage waits, it does not
        turn a finished job into a lost one."""
        deadline = time.monotonic() + patience_s
        delay = 0.2
        while True:
            try:
                return call()
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _execute(self, run: JobRun, msg: dict, operation: Operation) -> Outcome:
        job_id, kind = run.job_id, msg["kind"]
        limit = self.time_limits.get(kind)
        started = time.monotonic()
        # In this thread's context: the operation's log lines carry the job's fields too.
        future: Future = self._pool.submit(
            contextvars.copy_context().run, _guarded, operation, self.ctx, msg["vm"], run, self.ctx.host.name
        )
        try:
            outcome = future.result(timeout=limit)
        except FutureTimeout:
            # libvirt calls cannot be interrupted: wait for the operation, then undo what it did.
            outcome = future.result()
        rollback = self.rollbacks.get(kind)
        if limit is not None and time.monotonic() - started > limit:
            if rollback is not None:
                self._rollback(rollback, msg["vm"], run)
            undone = "what it did was rolled back" if rollback else "it ran to its end and cannot be undone"
            return Outcome(
                JobState.FAILED,
                outcome.result,
                error={
                    "code": "timeout",
                    "message": f"{kind} exceeded its {limit:.0f}s limit on host {self.ctx.host.name}; {undone}",
                },
            )
        # A cancel that came too late for the operation to stop undoes it where it can be undone; a finished
        # delete, stop or migration stays done.
        if outcome.state == JobState.SUCCEEDED and rollback is not None and self._cancel_requested(job_id):
            self._rollback(rollback, msg["vm"], run)
            return Outcome(JobState.CANCELLED, error={"code": "cancelled", "message": f"{kind} cancelled; rolled back"})
        return outcome

    def _cancel_requested(self, job_id: str) -> bool:
        try:
            return self.claims.cancel_requested(job_id)
        except redis.RedisError:
            log.warning("job %s: cannot read its cancel flag; keeping what it did", job_id)
            return False

    def _rollback(self, rollback: Operation, vm: dict, run: JobRun) -> None:
        try:
            call(rollback, self.ctx, vm, run)
        except Exception:
            log.exception("rollback of job %s for VM %s failed", run.job_id, vm.get("id"))


def _queue() -> str | None:
    """The queue the running task's message came from."""
    request = current_task.request if current_task else None
    return ((request and request.delivery_info) or {}).get("routing_key")


def _guarded(operation: Operation, ctx: WorkerContext, vm: dict, run: JobRun, host: str) -> Outcome:
    job_id = run.job_id
    threading.current_thread().name = f"archq-op-{job_id[:8]}"
    try:
        return Outcome(JobState.SUCCEEDED, call(operation, ctx, vm, run))
    except WorkerError as exc:
        state = JobState.CANCELLED if isinstance(exc, JobCancelled) else JobState.FAILED
        return Outcome(state, exc.result, error=exc.job_error())
    except Exception as exc:
        log.exception("job %s failed unexpectedly", job_id)
        return Outcome(
            JobState.FAILED,
            error={
                "code": "internal_error",
                "message": f"{type(exc).__name__}: {exc} (host {host}; see its worker log)",
            },
        )
