"""The running job as an operation sees it beyond its VM: its id and parameters, a way to report progress,
and whether its cancel was requested. Set by the runner for the operation's thread."""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field


@dataclass(frozen=True)
class JobHandle:
    job_id: str
    params: dict = field(default_factory=dict)
    # progress({"percent", "bytes_remaining", "bytes_total", "phase"}): sent to the conductor as it is.
    progress: Callable[[dict], None] = lambda _progress: None
    cancel_requested: Callable[[], bool] = lambda: False


_current: ContextVar[JobHandle | None] = ContextVar("archq_job", default=None)


def current_job() -> JobHandle:
    return _current.get() or JobHandle(job_id="")


def set_current_job(handle: JobHandle) -> None:
    _current.set(handle)
