"""Celery tasks of a hypervisor worker: thin glue from a message to `Runner.run`."""

from __future__ import annotations

from celery import Celery

from queues.names import Task
from workers import operations
from workers.runner import Runner


def register_tasks(app: Celery, runner: Runner) -> None:
    @app.task(name=Task.CREATE_VM, acks_late=True, ignore_result=True, shared=False)
    def create_vm(job: dict) -> str:
        return runner.run(job, operations.create_vm)

    @app.task(name=Task.DELETE_VM, acks_late=True, ignore_result=True, shared=False)
    def delete_vm(job: dict) -> str:
        return runner.run(job, operations.delete_vm)

    @app.task(name=Task.START_VM, acks_late=True, ignore_result=True, shared=False)
    def start_vm(job: dict) -> str:
        return runner.run(job, operations.start_vm)

    @app.task(name=Task.STOP_VM, acks_late=True, ignore_result=True, shared=False)
    def stop_vm(job: dict) -> str:
        return runner.run(job, operations.stop_vm)

    @app.task(name=Task.REBOOT_VM, acks_late=True, ignore_result=True, shared=False)
    def reboot_vm(job: dict) -> str:
        return runner.run(job, operations.reboot_vm)
