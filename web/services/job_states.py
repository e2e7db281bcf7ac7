"""The job state machine, enforced here and nowhere else.

pending -> queued -> running -> succeeded | failed | cancelled; pending and queued may also end in
failed or cancelled. Reports can arrive out of order (a `succeeded` before its `running`), so a move
forward passes through the states it implies, each recorded as an event; a move backward or out of a
terminal state is refused and reported as not applied.
"""

from __future__ import annotations

from datetime import datetime

from queues.vocabulary import TERMINAL_JOB_STATES, JobState
from web.models import Job, JobEvent, utcnow

_ORDER = {JobState.PENDING: 0, JobState.QUEUED: 1, JobState.RUNNING: 2}
_ENDS_FROM = {
    JobState.SUCCEEDED: {JobState.RUNNING},
    JobState.FAILED: {JobState.PENDING, JobState.QUEUED, JobState.RUNNING},
    JobState.CANCELLED: {JobState.PENDING, JobState.QUEUED, JobState.RUNNING},
}


class IllegalTransition(ValueError):
    pass


def path(current: str, target: str) -> list[str]:
    """The states a job passes through from `current` to `target`, or IllegalTransition."""
    if current in TERMINAL_JOB_STATES or current == target:
        raise IllegalTransition(f"job is {current}; cannot become {target}")
    if target in _ORDER:
        if _ORDER[target] < _ORDER[current]:
            raise IllegalTransition(f"job is {current}; cannot go back to {target}")
        return [s for s, i in sorted(_ORDER.items(), key=lambda kv: kv[1]) if _ORDER[current] < i <= _ORDER[target]]
    if current in _ENDS_FROM[target]:
        return [target]
    # A success report proves the job ran, even if its `running` report is still in flight.
    return [*path(current, JobState.RUNNING), target]


def advance(job: Job, target: str, actor: str, message: str = "", at: datetime | None = None) -> bool:
    """Move `job` to `target`; False (and nothing changed) when the move is not allowed."""
    try:
        steps = path(job.state, target)
    except IllegalTransition:
        return False
    when = at or utcnow()
    for state in steps:
        job.state = state
        if state == JobState.QUEUED:
            job.queued_at = job.queued_at or when
        elif state == JobState.RUNNING:
            job.started_at = job.started_at or when
        elif state in TERMINAL_JOB_STATES:
            job.finished_at = when
        job.events.append(JobEvent(at=when, state=state, actor=actor, message=message if state == target else ""))
    return True


def complete_without_worker(job: Job, actor: str, message: str) -> None:
    """A pending job the control plane finished itself (nothing on any host to act on)."""
    if job.state != JobState.PENDING:
        raise IllegalTransition(f"job is {job.state}; only a pending job completes without a worker")
    job.state = JobState.SUCCEEDED
    job.finished_at = utcnow()
    job.events.append(JobEvent(at=job.finished_at, state=JobState.SUCCEEDED, actor=actor, message=message))


def note(job: Job, actor: str, message: str) -> None:
    """Record something that happened to a job without changing its state (a re-route, say)."""
    job.events.append(JobEvent(at=utcnow(), state=job.state, actor=actor, message=message))
