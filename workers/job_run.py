"""What an operation may know about the job it runs: its id, its parameters, a way to report progress, and
whether its cancel was requested. Most operations need only the VM; the few that need the job declare it
with `@needs_job`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

F = TypeVar("F", bound=Callable)


@dataclass(frozen=True)
class JobRun:
    job_id: str
    params: dict = field(default_factory=dict)
    # Sends a progress report ({"phase": ..., "percent": ..., ...}); the job's state does not change.
    progress: Callable[[dict], None] = lambda _report: None
    cancel_requested: Callable[[], bool] = lambda: False
    # The progress the job ends with (e.g. a migration's `completed`): carried by its final report rather than
    # sent alone, so the conductor records one message, not two, at the moment the job's end is awaited.
    closing_progress: dict = field(default_factory=dict)

    def close_progress(self, values: dict) -> None:
        self.closing_progress.update(values)


def needs_job(operation: F) -> F:
    """Mark an operation (or rollback) that takes a third argument, the JobRun."""
    operation.needs_job = True  # type: ignore[attr-defined]  # a marker attribute on a function
    return operation


def call(operation: Callable, ctx: object, vm: dict, run: JobRun) -> dict:
    if getattr(operation, "needs_job", False):
        return operation(ctx, vm, run)
    return operation(ctx, vm)
