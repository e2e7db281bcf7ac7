"""`archq host trust`: record a hypervisor host's SSH host key in archq's known_hosts after the operator
checked its fingerprint. Nothing in archq ever adds a host key by itself."""

from __future__ import annotations

import click

from queues.config import Settings
from queues.ssh_keys import fingerprint, host_entry
from workers.ssh import SshError, fetch_host_key, record_host_key, recorded_key


@click.command()
@click.argument("name")
@click.option("--address", help="where its sshd listens (default: NAME)")
@click.option("--port", default=22, show_default=True, type=click.IntRange(1, 65535))
@click.option("--yes", is_flag=True, help="record without asking (scripts that checked the fingerprint)")
@click.option("--replace", is_flag=True, help="with --yes: also replace a different key recorded before")
def trust(name: str, address: str | None, port: int, yes: bool, replace: bool) -> None:
    """Fetch host NAME's SSH host key, show its fingerprint and, once confirmed, record it."""
    settings = Settings.from_env()
    address = address or name
    entry = host_entry(address, port)
    try:
        key = fetch_host_key(address, port)
    except SshError as exc:
        raise click.ClickException(exc.message) from exc
    known = recorded_key(settings.known_hosts_file, address, port)
    if known is not None and known.asbytes() == key.asbytes():
        click.echo(f"{name} ({entry}) is already trusted: {key.get_name()} {fingerprint(key)}")
        return
    click.echo(f"{name} ({entry}) offers {key.get_name()} {fingerprint(key)}")
    if known is not None:
        click.echo(f"WARNING: the recorded key is {known.get_name()} {fingerprint(known)}; it would be replaced")
        if yes and not replace:
            # A changed key is a re-installed host or someone in between: a script must not wave it through.
            raise click.ClickException("not recorded: the host's key changed; check it, then add --replace")
    if not yes and not click.confirm("Is this the host's key (compare with `ssh-keygen -lf` on the host)?"):
        raise click.ClickException("not recorded")
    # Under the address and the archq name, so a connection by either finds it.
    for alias in dict.fromkeys((address, name)):
        record_host_key(settings.known_hosts_file, alias, port, key)
    click.echo(f"recorded in {settings.known_hosts_file}")
