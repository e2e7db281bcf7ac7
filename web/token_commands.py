"""`archq token create|list|revoke`: server-side admin commands on the database directly (like `archq
migrate`), for the first token and for recovery; the same operations are at /api/v1/tokens for admins."""

from __future__ import annotations

import json
from pathlib import Path

import click

from queues.config import Settings
from web.local_secrets import write_private
from web.models import DEFAULT_PROJECT
from web.services.tokens import ROLES

ADMIN_TOKEN_FILE = "admin-token"


def _app():
    from web import create_app

    return create_app(Settings.from_env(), sent_events=False)


@click.group()
def token() -> None:
    """Create, list and revoke API tokens (on the database directly)."""


@token.command("create")
@click.option("--role", type=click.Choice(ROLES), required=True, help="viewer: reads; operator: VMs, jobs; admin: all")
@click.option("--name", required=True, help="who uses it; job events name the actor token:<name>")
@click.option(
    "--project", default=DEFAULT_PROJECT, show_default=True, help="the project it acts in (archq project create)"
)
def create(role: str, name: str, project: str) -> None:
    """Create a token and print it (shown this once, on the last line)."""
    from web.errors import ApiError
    from web.services import tokens

    with _app().app_context():
        try:
            record, secret = tokens.create_token(name, role, project)
        except ApiError as exc:
            raise click.ClickException(exc.message) from exc
        click.echo(
            f"created {record.role} token {record.name!r} of project {record.project!r} (id {record.id}); "
            "it is shown only now:",
            err=True,
        )
    click.echo(secret)


@token.command("list")
@click.option("--all", "include_revoked", is_flag=True, help="include revoked tokens")
@click.option("--output", "-o", type=click.Choice(["table", "json"]), default="table", show_default=True)
def list_(include_revoked: bool, output: str) -> None:
    """List tokens (never their secrets)."""
    from web.api_schemas import TokenOut
    from web.services import tokens

    with _app().app_context():
        rows = TokenOut(many=True).dump(tokens.list_tokens(include_revoked))
    if output == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'ID':<36}  {'NAME':<20} {'ROLE':<8} {'PROJECT':<20} {'CREATED':<32} REVOKED")
    for row in rows:
        click.echo(f"{row['id']:<36}  {row['name']:<20} {row['role']:<8} {row['project']:<20} "
                   f"{row['created_at']:<32} {row['revoked_at'] or '-'}")  # fmt: skip


@token.command("revoke")
@click.argument("id_or_name")
def revoke(id_or_name: str) -> None:
    """Revoke a token by id or name: it stops working at once."""
    from web.errors import ApiError
    from web.services import tokens

    with _app().app_context():
        try:
            record = tokens.revoke_token(id_or_name)
        except ApiError as exc:
            raise click.ClickException(exc.message) from exc
        click.echo(f"revoked token {record.name!r} ({record.id})")


def bootstrap_admin_token(settings: Settings) -> tuple[Path, str | None]:
    """On the first start (no token in the database yet): an admin token named `admin` of the `default` project
    (an admin sees every project and acts for any with `?project=`), written to
    `$ARCHQ_DATA_DIR/admin-token` readable by its owner only. Returns the file and the new secret, or None
    as the secret when tokens already exist."""
    from web import create_app
    from web.services import tokens

    path = settings.data_dir / ADMIN_TOKEN_FILE
    with create_app(settings, sent_events=False).app_context():
        if tokens.list_tokens(include_revoked=True):
            return path, None
        _record, secret = tokens.create_token("admin", "admin")
    write_private(path, secret + "\n")
    return path, secret
