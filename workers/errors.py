"""The one error a worker's job fails with: a code for programs and a message that tells a person what to do.
libvirt's, the artifact store's and SSH's failures are kinds of it, so whatever an operation lets through
reaches the job with its own code; runner.py turns it into the job's error, and only there."""

from __future__ import annotations


class WorkerError(Exception):
    """`result` carries what the worker found after the failure (where a migrated VM really runs, say)."""

    def __init__(self, code: str, message: str, result: dict | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.result = result or {}

    def saying(self, message: str, *, code: str | None = None) -> WorkerError:
        """The same failure told with what the operation knows beyond it (its host, what it left behind)."""
        return WorkerError(code or self.code, message, self.result)

    def job_error(self) -> dict[str, str]:
        """As a job report's `error` (queues/messages.py JobError)."""
        return {"code": self.code, "message": self.message}


class JobCancelled(WorkerError):
    """The job stopped because its cancel was requested, after undoing what it had started."""

    def __init__(self, message: str, result: dict | None = None) -> None:
        super().__init__("cancelled", message, result)
