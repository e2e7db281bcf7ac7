"""Where the client finds the API and its token: the command line, then the environment, then a context of the
config file (like kubeconfig's or clouds.yaml's), then the local defaults of `archq up`.

The config file (`$ARCHQ_CONFIG`, default `~/.config/archq/config.yaml`):

    current-context: lab
    contexts:
      lab: {url: "http://10.0.0.5:8080", token-file: "~/.config/archq/lab.token"}
      prod: {url: "https://archq.example.com", token: "..."}

A file that holds a token must not be readable by others (as ssh insists for keys)."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

import click
import yaml

DEFAULT_URL = "http://127.0.0.1:8080"


@dataclass(frozen=True)
class Endpoint:
    url: str
    token: str
    source: str  # where the token came from, for the hint on 401


def config_path() -> Path:
    return Path(os.environ.get("ARCHQ_CONFIG") or Path.home() / ".config" / "archq" / "config.yaml")


def load_contexts(path: Path) -> tuple[str, dict[str, dict]]:
    """The file's current context and its contexts (empty when there is no file)."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        return "", {}
    except (OSError, yaml.YAMLError) as exc:
        raise click.ClickException(f"{path}: {exc}") from None
    contexts = data.get("contexts") or {}
    if not isinstance(data, dict) or not isinstance(contexts, dict):
        raise click.ClickException(f"{path}: expected a mapping with `contexts: {{NAME: {{url, token}}}}`")
    return str(data.get("current-context") or ""), contexts


def resolve(url: str | None, token: str | None, context: str | None) -> Endpoint:
    url = url or os.environ.get("ARCHQ_URL")
    token = token or os.environ.get("ARCHQ_TOKEN")
    source = "--token or ARCHQ_TOKEN"
    if not (url and token):
        path = config_path()
        current, contexts = load_contexts(path)
        name = context or os.environ.get("ARCHQ_CONTEXT") or current
        if name:
            if name not in contexts:
                known = ", ".join(sorted(contexts)) or "none"
                raise click.ClickException(f"no context {name!r} in {path} (contexts: {known})")
            entry = contexts[name]
            url = url or entry.get("url")
            if not token:
                token, source = _context_token(path, name, entry), f"context {name!r} in {path}"
    if not token:
        token, source = _local_admin_token(), "$ARCHQ_DATA_DIR/admin-token"
    return Endpoint(url or DEFAULT_URL, token or "", source)


def _context_token(path: Path, name: str, entry: dict) -> str:
    if entry.get("token"):
        _private(path)
        return str(entry["token"])
    if entry.get("token-file"):
        token_file = Path(os.path.expanduser(entry["token-file"]))
        _private(token_file)
        try:
            return token_file.read_text().strip()
        except OSError as exc:
            raise click.ClickException(f"context {name!r}: token-file: {exc}") from None
    return ""


def _private(path: Path) -> None:
    if path.exists() and path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise click.ClickException(f"{path} holds a token and is readable by others: chmod 600 {path}")


def _local_admin_token() -> str:
    """The admin token `archq up` wrote on this machine, when this user may read it."""
    path = Path(os.environ.get("ARCHQ_DATA_DIR", "/var/lib/archq")) / "admin-token"
    try:
        return path.read_text().strip()
    except OSError:
        return ""
