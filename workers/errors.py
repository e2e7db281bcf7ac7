"""Errors a job can fail with: a code for programs and a message that tells a person what to do."""

from __future__ import annotations


class JobFailed(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
