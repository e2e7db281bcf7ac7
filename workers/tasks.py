"""Celery tasks of a hypervisor worker: thin glue from a message to `Runner.run`."""

from __future__ import annotations

from collections.abc import Callable

from celery import Celery

from queues.names import Task
from workers import migration, operations, snapshots
from workers.runner import Operation, Runner

OPERATIONS: dict[str, Operation] = {
    Task.CREATE_VM: operations.create_vm,
    Task.DELETE_VM: operations.delete_vm,
    Task.START_VM: operations.start_vm,
    Task.STOP_VM: operations.stop_vm,
    Task.REBOOT_VM: operations.reboot_vm,
    Task.SNAPSHOT_VM: snapshots.snapshot_vm,
    Task.REVERT_VM: snapshots.revert_vm,
    Task.DELETE_SNAPSHOT: snapshots.delete_snapshot_vm,
    Task.MIGRATE_VM: migration.migrate_vm,
}

# What undoes a kind's work when its job is cancelled after the work was done, or runs over its time limit.
# Kinds not here cannot be undone: a finished delete, stop or migration stays done.
ROLLBACKS: dict[str, Operation] = {
    "create": operations.delete_vm,
    "snapshot": snapshots.undo_snapshot,
}


def register_tasks(app: Celery, runner: Runner) -> None:
    for name, operation in OPERATIONS.items():
        app.task(name=name, acks_late=True, ignore_result=True, shared=False)(_task(runner, operation))


def _task(runner: Runner, operation: Operation) -> Callable[[dict], str]:
    def run(job: dict) -> str:
        return runner.run(job, operation)

    run.__name__ = operation.__name__
    return run
