"""The `archq` command. Subcommands are imported only when run, so a hypervisor host never imports the
web side and the API never imports libvirt. A group whose subcommands live on different sides (`host`: the
HTTP client's list/show and the hypervisor side's SSH `trust`) is itself a table of lazy subcommands."""

from __future__ import annotations

import importlib

import click

from queues.config import EX_CONFIG, SettingError

Table = dict[str, "str | Table"]

COMMANDS: Table = {
    "api": "web.commands:api",
    "conductor": "web.commands:conductor",
    "migrate": "web.commands:migrate",
    "up": "web.commands:up",
    "images": {
        "register-tiny": "web.commands:register_tiny",
        "register": "web.commands:register",
        "build": "workers.image_commands:build",
    },
    "token": "web.token_commands:token",
    "worker": "workers.main:worker",
    "build-tiny": "workers.main:build_tiny",
    # Clients of the HTTP API (client/: HTTP only, no database, no libvirt).
    "vm": "client.commands:vm",
    "job": "client.commands:job",
    "image": "client.commands:image",
    "host": {
        "list": "client.commands:host_list",
        "show": "client.commands:host_show",
        "trust": "workers.ssh_commands:trust",
    },
}
HELP = {
    "host": "Hypervisor hosts: list and show (over HTTP), trust an SSH host key (locally).",
    "images": "The image catalog: build a guest image here (hypervisor side) and register built ones (web side).",
}


class LazyGroup(click.Group):
    def __init__(self, *args, table: Table | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.table = COMMANDS if table is None else table

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(self.table)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = self.table.get(cmd_name)
        if target is None:
            return None
        if isinstance(target, dict):
            return LazyGroup(name=cmd_name, table=target, help=HELP.get(cmd_name))
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except SettingError as exc:
            click.echo(f"archq: configuration error: {exc}", err=True)
            ctx.exit(EX_CONFIG)


@click.group(cls=LazyGroup)
def main() -> None:
    """archq: architecture-aware VM provisioning on Celery, libvirt and QEMU."""


if __name__ == "__main__":
    main()
