"""The job state machine: forward only, through the states a report implies, never out of a final state."""

from __future__ import annotations

import pytest

from web.models import Job
from web.services.job_states import IllegalTransition, advance, path


@pytest.mark.parametrize(
    ("current", "target", "steps"),
    [
        ("pending", "queued", ["queued"]),
        ("queued", "running", ["running"]),
        ("running", "succeeded", ["succeeded"]),
        ("pending", "running", ["queued", "running"]),
        ("queued", "succeeded", ["running", "succeeded"]),
        ("pending", "failed", ["failed"]),
        ("queued", "cancelled", ["cancelled"]),
        ("running", "failed", ["failed"]),
    ],
)
def test_forward_moves_pass_through_implied_states(current, target, steps):
    assert path(current, target) == steps


@pytest.mark.parametrize(
    ("current", "target"),
    [("queued", "pending"), ("running", "queued"), ("running", "running"), ("succeeded", "failed"),
     ("failed", "running"), ("cancelled", "succeeded"), ("succeeded", "succeeded")],
)  # fmt: skip
def test_backward_repeated_and_post_final_moves_are_refused(current, target):
    with pytest.raises(IllegalTransition):
        path(current, target)


def test_advance_records_each_step_as_a_timestamped_event():
    job = Job(state="pending", events=[])
    assert advance(job, "succeeded", actor="worker:h1", message="done")
    assert job.state == "succeeded"
    assert [(e.state, e.actor) for e in job.events] == [
        ("queued", "worker:h1"), ("running", "worker:h1"), ("succeeded", "worker:h1"),
    ]  # fmt: skip
    assert job.queued_at and job.started_at and job.finished_at
    assert not advance(job, "failed", actor="worker:h1")
    assert job.state == "succeeded" and len(job.events) == 3
