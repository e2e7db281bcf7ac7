"""The `archq` command. Subcommands are imported only when run, so a hypervisor host never imports the
web side and the API never imports libvirt."""

from __future__ import annotations

import importlib

import click

COMMANDS: dict[str, str] = {
    "api": "web.commands:api",
    "conductor": "web.commands:conductor",
    "migrate": "web.commands:migrate",
    "up": "web.commands:up",
    "images": "web.commands:images",
    "worker": "workers.main:worker",
    "build-tiny": "workers.main:build_tiny",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup)
def main() -> None:
    """archq: architecture-aware VM provisioning on Celery, libvirt and QEMU."""


if __name__ == "__main__":
    main()
