"""Errors a job can fail with: a code for programs and a message that tells a person what to do."""

from __future__ import annotations


class JobFailed(Exception):
    """`result` carries what the worker found after the failure (where a migrated VM really runs, say)."""

    def __init__(self, code: str, message: str, result: dict | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.result = result or {}


class JobCancelled(JobFailed):
    """The job stopped because its cancel was requested, after undoing what it had started."""

    def __init__(self, message: str, result: dict | None = None) -> None:
        super().__init__("cancelled", message, result)
