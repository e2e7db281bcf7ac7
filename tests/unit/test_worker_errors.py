"""A worker's job fails with one error type: libvirt's, the artifact store's and SSH's failures are kinds of it,
and whatever an operation lets through reaches the job with its own code and message."""

from __future__ import annotations

import pytest

from queues.vocabulary import JobState
from workers.artifacts import ArtifactError
from workers.errors import JobCancelled, WorkerError
from workers.hypervisor import HypervisorError
from workers.job_run import JobRun
from workers.runner import _guarded
from workers.ssh import SshError


def _run(error: Exception):
    def operation(_ctx: object, _vm: dict) -> dict:
        raise error

    return _guarded(operation, object(), {"id": "vm"}, JobRun("job"), "h1")


@pytest.mark.parametrize(
    "error",
    [
        HypervisorError("domain_missing", "no domain"),
        ArtifactError("image_unreachable", "no image"),
        SshError("ssh_auth_failed", "key refused"),
        WorkerError("disk_unreadable", "unreadable", {"host": "h1"}),
    ],
)
def test_a_failure_with_a_code_fails_the_job_with_that_code(error: WorkerError):
    outcome = _run(error)
    assert outcome.state == JobState.FAILED
    assert outcome.error == {"code": error.code, "message": error.message}
    assert outcome.result == error.result


def test_a_cancel_ends_the_job_cancelled_with_what_it_found():
    outcome = _run(JobCancelled("aborted on request", {"host": "h1", "state": "running"}))
    assert (outcome.state, outcome.error["code"]) == (JobState.CANCELLED, "cancelled")
    assert outcome.result == {"host": "h1", "state": "running"}


def test_anything_else_is_an_internal_error_that_names_the_host():
    outcome = _run(KeyError("vcpus"))
    assert outcome.error["code"] == "internal_error" and "host h1" in outcome.error["message"]


def test_saying_more_keeps_the_code_unless_told_otherwise():
    error = SshError("ssh_host_unknown", "h2 is not trusted")
    assert error.saying("h2 is not trusted; the VM was not touched").job_error() == {
        "code": "ssh_host_unknown",
        "message": "h2 is not trusted; the VM was not touched",
    }
    assert error.saying("refused", code="target_ssh_host_unknown").code == "target_ssh_host_unknown"
