"""Celery tasks of a hypervisor worker: thin glue from a message to `Runner.run`."""

from __future__ import annotations

from collections.abc import Callable

from celery import Celery

from queues.vocabulary import JobKind
from workers import migration, operations, snapshots
from workers.runner import Operation, Runner

OPERATIONS: dict[JobKind, Operation] = {
    JobKind.CREATE: operations.create_vm,
    JobKind.DELETE: operations.delete_vm,
    JobKind.START: operations.start_vm,
    JobKind.STOP: operations.stop_vm,
    JobKind.REBOOT: operations.reboot_vm,
    JobKind.SNAPSHOT: snapshots.snapshot_vm,
    JobKind.REVERT: snapshots.revert_vm,
    JobKind.SNAPSHOT_DELETE: snapshots.delete_snapshot_vm,
    JobKind.MIGRATE: migration.migrate_vm,
    JobKind.MIGRATE_IN: migration.migrate_in_vm,
}

# What undoes a kind's work when its job is cancelled after the work was done, or runs over its time limit.
# Kinds not here cannot be undone: a finished delete, stop or migration stays done.
ROLLBACKS: dict[str, Operation] = {
    JobKind.CREATE: operations.delete_vm,
    JobKind.SNAPSHOT: snapshots.undo_snapshot,
}


def register_tasks(app: Celery, runner: Runner) -> None:
    for kind, operation in OPERATIONS.items():
        app.task(name=kind.task, acks_late=True, ignore_result=True, shared=False)(_task(runner, operation))


def _task(runner: Runner, operation: Operation) -> Callable[[dict], str]:
    def run(job: dict) -> str:
        return runner.run(job, operation)

    run.__name__ = operation.__name__
    return run
