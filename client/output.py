"""How client commands print: an aligned table of chosen columns that fits the terminal, `key: value` fields,
the API's JSON or YAML as it came, or only the names (`-o name`, for scripts)."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Sequence

import click

OUTPUTS = ("table", "json", "yaml", "name")
# ctx.meta keys: the client options given before the subcommand, and the columns `-c` chose.
CLIENT_OPTIONS = "archq.client_options"
_COLUMNS = "archq.columns"
# The narrowest a column shrinks to when a table is wider than the terminal.
_MIN_WIDTH = 8


def select_columns(columns: Sequence[str]) -> None:
    """Show only these columns (tables) or fields (one object) in this command's output."""
    click.get_current_context().meta[_COLUMNS] = tuple(columns)


def _chosen(default: Sequence[str]) -> Sequence[str]:
    ctx = click.get_current_context(silent=True)
    return (ctx.meta.get(_COLUMNS) if ctx else None) or default


def cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ",".join(cell(v) for v in value) or "-"
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    columns = _chosen(columns)
    cells = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    _fit(widths, shutil.get_terminal_size().columns if sys.stdout.isatty() else 0)
    lines = ["  ".join(_clip(c.upper(), w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(_clip(v, w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def _fit(widths: list[int], terminal: int) -> None:
    """Shrink the widest columns until the table fits `terminal` (0: no terminal, keep every character)."""
    while terminal and sum(widths) + 2 * (len(widths) - 1) > terminal:
        widest = max(range(len(widths)), key=widths.__getitem__)
        if widths[widest] <= _MIN_WIDTH:
            return
        widths[widest] -= 1


def _clip(text: str, width: int) -> str:
    return text.ljust(width) if len(text) <= width else text[: width - 1] + "…"


def fields_of(item: dict, columns: Sequence[str] | None = None) -> str:
    """One object as `key: value` lines (all of its keys, `columns`, or those `-c` chose)."""
    keys = _chosen(columns or [k for k in item if k != "events"])
    width = max(len(k) for k in keys)
    return "\n".join(f"{k.ljust(width)}  {cell(item.get(k))}" for k in keys)


def names(data: object) -> list[str]:
    """The names (else ids) of the objects an answer holds: `{"vms": [...]}`, `{"vm": {...}}`, ..."""
    if isinstance(data, dict):
        for value in data.values():
            items = value if isinstance(value, list) else [value] if isinstance(value, dict) else []
            found = [str(i.get("name") or i.get("id")) for i in items if isinstance(i, dict)]
            if found:
                return found
    return []


def emit(output: str, data: object, text: str) -> None:
    if output == "json":
        click.echo(json.dumps(data, indent=2, sort_keys=True))
    elif output == "yaml":
        import yaml  # only here: `archq --help` and the other outputs start without it

        click.echo(yaml.safe_dump(data, sort_keys=True).rstrip())
    elif output == "name":
        click.echo("\n".join(names(data)))
    else:
        click.echo(text)
