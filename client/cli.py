"""The `archq` command tree, in one place: the services this machine runs (api, conductor, worker, up, db,
token) apart from the client of the HTTP API (vm, job, host, images, system).

Subcommands are imported only when run, and help is read from this table, so `archq --help` imports no
subcommand module, a hypervisor host never imports the web side and the API never imports libvirt. A group
whose subcommands live on different sides (`host`: the HTTP client's list/show/drain and the hypervisor side's
SSH `trust`; `images`: the catalog over HTTP and local builds) is itself a table of lazy subcommands."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

import click

from client.output import CLIENT_OPTIONS, OUTPUTS
from queues.config import EX_CONFIG, SettingError


@dataclass(frozen=True)
class Command:
    target: str  # "module:attribute", imported when the command runs
    help: str


@dataclass(frozen=True)
class Group:
    help: str
    table: dict[str, Command | Group]
    # Old names, hidden from help: `archq migrate` runs `archq db upgrade` after saying so.
    deprecated: dict[str, tuple[str, ...]] = field(default_factory=dict)


HOST = Group(
    "Hypervisor hosts: list, show, drain, undrain and trust-key over HTTP; trust a host's SSH key locally.",
    {
        "list": Command("client.commands:host_list", "List hypervisor hosts."),
        "show": Command("client.commands:host_show", "Show a host."),
        "drain": Command("client.commands:host_drain", "Stop placing new VMs on a host; its VMs stay."),
        "undrain": Command("client.commands:host_undrain", "Place new VMs on a drained host again."),
        "trust": Command("workers.ssh_commands:trust", "Record a host's SSH host key after checking it (local)."),
        "trust-key": Command("client.commands:host_trust_key", "Accept a host's changed attestation signing key."),
    },
)
IMAGES = Group(
    "The image catalog: list, show, add, delete over HTTP; build and register images on this machine.",
    {
        "list": Command("client.commands:image_list", "List images."),
        "show": Command("client.commands:image_show", "Show an image and its artifacts."),
        "add": Command("client.commands:image_add", "Add a disk image for one architecture to the catalog."),
        "delete": Command("client.commands:image_delete", "Delete an image from the catalog."),
        "build": Command("workers.image_commands:build", "Build a guest image here from Debian's packages (local)."),
        "register": Command("web.commands:register", "Register an image built here in the catalog (local)."),
        "register-tiny": Command("web.commands:register_tiny", "Register the built tiny guests (local)."),
    },
)
SERVICES: dict[str, Command | Group] = {
    "up": Command("web.commands:up", "Run the whole stack here in the foreground (API, conductor, worker, Flower)."),
    "api": Command("web.commands:api", "Serve the HTTP API under gunicorn."),
    "conductor": Command("web.commands:conductor", "Record job reports and heartbeats; sweep, re-route, recover."),
    "flower": Command("web.commands:flower", "Run Flower on archq's Celery app, behind basic auth, read-only."),
    "worker": Command("workers.main:worker", "Run a hypervisor worker on this host."),
    "db": Group("The database.", {"upgrade": Command("web.commands:migrate", "Apply the schema migrations.")}),
    "token": Command("web.token_commands:token", "API tokens, on the database directly."),
}
CLIENT: dict[str, Command | Group] = {
    "vm": Command("client.commands:vm", "Virtual machines: create, list, show, act, snapshot, migrate, ssh."),
    "job": Command("client.commands:job", "Jobs: list, show, cancel, wait."),
    "host": HOST,
    "images": IMAGES,
    "project": Command("client.commands:project", "Projects and their quotas: create, list, show, set-quota."),
    "system": Command("client.commands:system", "The control plane: version, queues, settings."),
}
ROOT = Group(
    "archq: architecture-aware VM provisioning on Celery, libvirt and QEMU.",
    {**SERVICES, **CLIENT},
    deprecated={"migrate": ("db", "upgrade"), "image": ("images",), "build-tiny": ("images", "build", "tiny")},
)


class LazyGroup(click.Group):
    def __init__(self, *args, group: Group = ROOT, **kwargs) -> None:
        kwargs["help"] = kwargs.get("help") or group.help
        super().__init__(*args, **kwargs)
        self.group = group

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.group.table)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.group.deprecated:
            new = self.group.deprecated[cmd_name]
            if len(new) == 1 and isinstance(self.group.table.get(new[0]), Group):
                # A renamed group: the new one under the old name, so its subcommands and help work as before.
                click.echo(f"archq: `{cmd_name}` is deprecated; use `archq {new[0]}`", err=True)
                return self.get_command(ctx, new[0])
            return _deprecated(cmd_name, new)
        entry = self.group.table.get(cmd_name)
        if entry is None:
            return None
        if isinstance(entry, Group):
            return LazyGroup(name=cmd_name, group=entry)
        module, attr = entry.target.split(":")
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # From the table, not from the commands: listing them must not import them.
        def rows(table: dict[str, Command | Group]) -> list[tuple[str, str]]:
            return [(name, entry.help) for name, entry in table.items()]

        if self.group is ROOT:
            sections = [("Services on this machine", SERVICES), ("Client of the HTTP API", CLIENT)]
        else:
            sections = [("Commands", self.group.table)]
        for title, table in sections:
            with formatter.section(title):
                formatter.write_dl(rows(table))

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except SettingError as exc:
            click.echo(f"archq: configuration error: {exc}", err=True)
            ctx.exit(EX_CONFIG)


def _deprecated(old: str, new: tuple[str, ...]) -> click.Command:
    """`old` as a hidden command that says what replaced it, then runs that with the same arguments."""

    @click.command(old, context_settings={"ignore_unknown_options": True, "allow_extra_args": True}, hidden=True)
    @click.pass_context
    def alias(ctx: click.Context) -> None:
        click.echo(f"archq: `{old}` is deprecated; use `archq {' '.join(new)}`", err=True)
        ctx.exit(main.main([*_path(ctx.parent), *new, *ctx.args], standalone_mode=False) or 0)

    return alias


def _path(ctx: click.Context | None) -> list[str]:
    """The subcommand names from the root to `ctx` (empty at the root)."""
    names: list[str] = []
    while ctx is not None and ctx.parent is not None:
        names.insert(0, ctx.info_name or "")
        ctx = ctx.parent
    return names


@click.group(cls=LazyGroup)
@click.version_option(package_name="archq", message="archq %(version)s")
@click.option("--url", help="the API, for client commands (env ARCHQ_URL, default http://127.0.0.1:8080)")
@click.option("--token", help="bearer token, for client commands (env ARCHQ_TOKEN)")
@click.option("--context", help="a context of the client config file (env ARCHQ_CONTEXT)")
@click.option("--project", help="admin, for client commands: act for this project")
@click.option("--output", "-o", type=click.Choice(OUTPUTS), help="table (default), json, yaml or name")
@click.option("--column", "-c", "columns", multiple=True, help="only this column or field (repeatable)")
@click.pass_context
def main(
    ctx: click.Context,
    url: str | None,
    token: str | None,
    context: str | None,
    project: str | None,
    output: str | None,
    columns: tuple[str, ...],
) -> None:
    # Read by client/commands.py's api_command: options before the subcommand apply to it.
    ctx.meta[CLIENT_OPTIONS] = {
        "url": url, "token": token, "context": context, "project": project, "output": output, "columns": columns
    }  # fmt: skip


if __name__ == "__main__":
    main()
