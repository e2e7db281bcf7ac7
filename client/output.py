"""How client commands print: an aligned table of chosen columns that fits the terminal (rich), `key: value`
fields, the API's JSON or YAML as it came, or only the names (`-o name`, for scripts); and a job's progress
while a command waits for it. rich is imported only when a table or a bar is drawn: `archq --help` and the
other outputs start without it."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence

import click

from queues.vocabulary import JobState

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
    """The rows as an aligned table: on a terminal it fits its width (the widest columns end in …) with a
    bold header; elsewhere every character is kept, uncoloured."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    columns = _chosen(columns)
    cells = [[cell(row.get(c)) for c in columns] for row in rows]
    tty = sys.stdout.isatty()
    grid = Table(box=box.SIMPLE_HEAD if tty else None, show_edge=False, pad_edge=False, header_style="bold")
    for column in columns:
        grid.add_column(column.upper(), no_wrap=True, overflow="ellipsis", min_width=min(_MIN_WIDTH, len(column)))
    for row in cells:
        grid.add_row(*row)
    # Without a terminal: as wide as the widest row, so nothing is cut.
    widest = sum(max([len(c), *(len(r[i]) for r in cells)]) + 2 for i, c in enumerate(columns))
    width = shutil.get_terminal_size().columns if tty else widest
    out = io.StringIO()
    Console(file=out, width=width, force_terminal=tty, color_system="standard" if tty else None).print(grid)
    return "\n".join(line.rstrip() for line in out.getvalue().splitlines())


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


@contextlib.contextmanager
def job_display(tty: bool) -> Iterator[Callable[[dict, str], None]]:
    """`show(job, text)` for each poll of a job being waited for: on a terminal a rich progress bar (the job's
    percent when its worker reports one, else a pulse), elsewhere a new line whenever the text changes."""
    if not tty:
        shown = [""]

        def line(_job: dict, text: str) -> None:
            if text != shown[0]:
                click.echo(text)
                shown[0] = text

        yield line
        return
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns) as progress:
        task = progress.add_task("", total=None)

        def bar(job: dict, text: str) -> None:
            percent = 100 if job["state"] == JobState.SUCCEEDED else (job.get("progress") or {}).get("percent")
            progress.update(task, description=text, total=None if percent is None else 100, completed=percent or 0)

        yield bar


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
